"""WMT through TFDS (downloads on first use; TFDS caches it in tfds_data_dir).

`:runlocal` reads 64 examples, but TFDS prepares the whole dataset first (GBs,
hours); offline, `--config.data.tfds_download=False` fails at once where data
is not prepared.

  python -m jaxdistill.train --config configs/translate_wmt_tfds.py:size=base \
      --workdir /tmp/wmt
"""

import translation_base


def get_config(arg=None):
    config = translation_base.get_config(arg)
    config.data.source = 'tfds'
    # Any TFDS translation dataset with both languages as features.
    config.data.tfds_name = 'wmt14_translate/de-en'
    config.data.pairs = ('en-de',)
    config.data.train_split = 'train'
    config.data.eval_split = 'validation'
    config.data.vocab_size = 32000
    config.data.max_len = 128
    config.data.bucket_lengths = (16, 32, 48, 64, 96, 128)
    config.data.batch_tokens = 16384
    config.num_train_steps = 100000
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 4000
    # Hypotheses as long as the longest training sequence (the base config's
    # 64 would cut long newstest sentences without an EOS).
    config.eval.max_decode_len = 128
    if 'runlocal' in translation_base.parse_arg(arg):
        translation_base.shrink(config)
        config.data.max_examples = 64
    return config
