"""Multi30k en->de (or several pairs) from local files.

  python -m jaxdistill.train --config configs/translate_multi30k.py \
      --workdir /tmp/m30k --config.data.files_dir=../shared/data/multi30k
  python -m jaxdistill.translate --workdir /tmp/m30k --average 10 < sentences.en

The recipe follows the published tiny reference (../shared/data/README.md):
fairseq transformer_tiny, 10k joint vocabulary, dropout 0.3, label smoothing
0.1, 8k updates of 4,096 tokens, beam 5, last 10 checkpoints averaged.
benchmarks/nmt_multi30k.py trains it within a time budget.

`configs/translate_multi30k.py:budget` keeps the model, data and regularisation
but schedules the learning rate for a run cut short by a wall-clock budget
(a few thousand steps on a CPU instead of the reference's 8,000): 400 warm-up
steps, the reference's peak 5e-3, cosine decay to zero at `num_train_steps` (which
benchmarks/nmt_multi30k.py sets to the steps that fit in its budget); and
8-bit dropout masks (models/dropout.py), which make a CPU step cheaper. The
reference's inverse-sqrt schedule is still at 0.6 of its peak at step 3,000,
so checkpoints averaged there are far from converged.
"""

import translation_base


def get_config(arg=None):
    config = translation_base.get_config(arg, extra_args=('budget',))
    args = translation_base.parse_arg(arg)
    config.data.source = 'files'
    # SPLIT.LANG.gz files; the README of ../shared/data describes them.
    config.data.files_dir = '../shared/data/multi30k'
    config.data.pairs = ('en-de',)
    config.data.train_split = 'train'
    config.data.eval_split = 'val'
    # fairseq's generation defaults, as the reference decoded: beam 5,
    # log p / length (EOS counted).
    config.eval.beam_size = 5
    config.eval.length_penalty = 1.0
    if 'runlocal' in args:
        return config
    config.data.vocab_size = 10000
    # Finer buckets: 15% padding instead of 22% (13 compiled shapes, not 7).
    config.data.bucket_lengths = (10, 12, 14, 16, 18, 20, 22, 24, 28, 32, 40, 48, 64)
    config.model.dropout_rate = 0.3
    config.num_train_steps = 8000
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 1000
    # About one epoch (131 batches) apart, like fairseq's epoch checkpoints;
    # keep the last 10 for averaging.
    config.checkpoint.every_steps = 130
    config.checkpoint.keep = 10
    config.eval.every_steps = 1000
    if args.get('budget'):
        config.optimizer.schedule = 'cosine'
        config.optimizer.warmup_steps = 400
        # The reference's peak. At 720 steps it beat 2e-3 by 6.8 val BLEU
        # (27.5 against 20.7; docs/translation.md).
        config.optimizer.learning_rate = 5e-3
        # One threefry word per 4 dropout mask elements: the rate 0.3 becomes
        # 77/256 = 0.30078, and the step 1.22-1.27x faster on a 2-core CPU
        # (benchmarks/results/dropout_mask.json).
        config.model.dropout_mask_bits = 8
    return config
