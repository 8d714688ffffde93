"""The built-in default: tiny Transformer on the generated translation task.

Needs no download; BLEU climbs within a few CPU minutes.
  python -m jaxdistill.train --config configs/translate_synthetic.py --workdir /tmp/jd
"""

import translation_base


def get_config(arg=None):
    config = translation_base.get_config(arg)
    if 'runlocal' in translation_base.parse_arg(arg):
        return config
    # A few minutes on a 2-core CPU.
    config.num_train_steps = 1200
    config.log_every_steps = 50
    # Generated pairs: 50k training sentences, 500 for evaluation.
    config.data.synthetic_train_size = 50000
    config.data.vocab_size = 1000
    config.data.batch_tokens = 2048
    config.data.max_len = 40
    config.data.bucket_lengths = (12, 16, 20, 24, 32, 40)
    config.optimizer.warmup_steps = 200
    config.model.dropout_rate = 0.1
    config.checkpoint.every_steps = 400
    config.eval.every_steps = 400
    config.eval.max_examples = 300
    config.eval.max_decode_len = 40
    return config
