"""Self-distillation on SST-2 with a multi-exit Transformer encoder classifier.

  python -m jaxdistill.train --config configs/self_distill_sst2.py --workdir /tmp/sd_sst2
Arguments as in image_classification_base.py (runlocal, method=NAME); the
dataset is fixed. Word-level tokens from the training phrases, or SentencePiece
pieces with --config.data.tokenizer=sentencepiece.
"""

import ml_collections

import image_classification_base as base

from jaxdistill.errors import ConfigError


def get_config(arg=None):
    args = base.parse_arg(arg)
    unknown = set(args) - {'runlocal', 'method'}
    if unknown:
        raise ConfigError(
            f'Unknown config argument(s) {sorted(unknown)}; known: runlocal, '
            'method=NAME (self_distill_sst2.py fixes the dataset).'
        )
    rest = ','.join(
        f'{k}={v}' if v is not True else k for k, v in args.items() if k != 'runlocal'
    )
    config = base.get_config(rest)
    config.task = 'text_classification'
    # Four pre-LN encoder layers; shallow exits after layers 0, 1, 2.
    config.model = ml_collections.ConfigDict(
        {
            'name': 'text_classifier',
            'num_layers': 4,
            'd_model': 128,
            'num_heads': 4,
            'd_ff': 256,
            'exits': (0, 1, 2) if args.get('method') != 'supervised' else (),
            'dropout_rate': 0.1,
        }
    )
    config.data = ml_collections.ConfigDict(
        {
            'data_dir': '../shared/data/sst2',
            # 'dev' (held-out training phrases) | 'test' (GLUE dev sentences).
            'eval_split': 'test',
            'batch_size': 64,
            # 'words' (lowercased words, the most frequent vocab_size - 2)
            # or 'sentencepiece' (a unigram model of vocab_size pieces,
            # trained on the training phrases, kept as WORKDIR/spm.model).
            'tokenizer': 'words',
            'vocab_size': 16000,
            # Words seen fewer times in training are UNK ('words' only): with
            # 1, UNK never occurs in training and its row is never trained,
            # yet 5.7% of glue_dev's words read it.
            'min_count': 2,
            'max_len': 64,
            'max_train_examples': 0,
        }
    )
    config.num_train_steps = 3000
    config.optimizer.learning_rate = 1e-3
    config.optimizer.weight_decay = 1e-2
    config.optimizer.warmup_steps = 200
    config.eval.batch_size = 256
    if args.get('runlocal'):
        config.num_train_steps = 8
        config.log_every_steps = 4
        config.model.update(num_layers=2, d_model=32, num_heads=2, d_ff=64)
        config.model.exits = tuple(e for e in config.model.exits if e < 1)
        config.data.update(
            vocab_size=500, max_len=24, batch_size=32, max_train_examples=512
        )
        config.optimizer.warmup_steps = 2
        config.checkpoint.every_steps = 4
        config.eval.update(max_examples=128, batch_size=64, timing_repeats=1)
    return config
