"""The built-in default: tiny Transformer on the generated translation task.

Needs no download; BLEU climbs within a few CPU minutes.
  python -m jaxdistill.train --config configs/translate_synthetic.py --workdir /tmp/jd
"""

import translation_base


def get_config(arg=None, extra_args=()):
    config = translation_base.get_config(arg, extra_args)
    if 'runlocal' in translation_base.parse_arg(arg):
        return config
    # A few minutes on a 2-core CPU: a 2+2-layer slice of 'tiny', small batches.
    config.num_train_steps = 800
    config.log_every_steps = 50
    config.model.num_encoder_layers = 2
    config.model.num_decoder_layers = 2
    # Generated pairs: 50k training sentences, 500 for evaluation.
    config.data.synthetic_train_size = 50000
    config.data.vocab_size = 800
    config.data.batch_tokens = 1024
    config.data.max_len = 40
    config.data.bucket_lengths = (16, 24, 32, 40)
    config.optimizer.learning_rate = 2e-3
    config.optimizer.warmup_steps = 150
    config.checkpoint.every_steps = 200
    config.eval.every_steps = 400
    config.eval.max_examples = 300
    config.eval.max_decode_len = 40
    return config
