"""TSJT on WMT10's language pairs, one-to-many, through TFDS.

Not the paper's data (docs/methods/tsjt.md, "Multilingual data"): each pair's
whole TFDS train split, uncapped (`data.max_examples` caps it per pair), no
temperature sampling of languages, and TFDS's `validation` split, which is a
different newstest set per release (newstest2018 for cs/de/fi).

English into cs, de, et, fi, fr, gu, hi, lv, ro, tr, each from the TFDS WMT
release that has it (below). TFDS downloads and prepares each dataset on
first use (network, disk and hours); `data.tfds_data_dir` keeps them.
Two pairs also need files that TFDS cannot download: wmt19 cs-en reads CzEng
1.7 (`czeng_17`) and wmt14 hi-en HindEnCorp 0.1 (`hindencorp_01`) from TFDS's
manual folder (`<tfds_data_dir>/downloads/manual/`; see each builder's
MANUAL_DOWNLOAD_INSTRUCTIONS). TFDS prepares every split at once, so even
evaluation on `validation` needs them; without them drop 'en-cs'/'en-hi' from
`data.pairs` and their entries from `data.tfds_names`.

  python -m jaxdistill.train --config configs/tsjt_wmt10_tfds.py:size=base,composite=width \
      --workdir /tmp/tsjt_wmt10 --config.data.tfds_data_dir=/data/tfds

Arguments (comma-separated): runlocal; composite=width|depth; size=NAME.
"""

import translation_base
import tsjt_common

# Target language -> TFDS dataset holding its pair with English.
WMT10 = {
    'cs': 'wmt19_translate/cs-en',
    'de': 'wmt19_translate/de-en',
    'et': 'wmt18_translate/et-en',
    'fi': 'wmt19_translate/fi-en',
    'fr': 'wmt15_translate/fr-en',
    'gu': 'wmt19_translate/gu-en',
    'hi': 'wmt14_translate/hi-en',
    'lv': 'wmt17_translate/lv-en',
    'ro': 'wmt16_translate/ro-en',
    'tr': 'wmt18_translate/tr-en',
}


def get_config(arg=None):
    args = translation_base.parse_arg(arg)
    kind = args.get('composite', 'width')
    config = translation_base.get_config(arg, extra_args=(tsjt_common.COMPOSITE_ARG,))
    config.data.source = 'tfds'
    config.data.pairs = tuple(f'en-{lang}' for lang in WMT10)
    # One TFDS dataset per pair, in the order of data.pairs.
    config.data.tfds_names = tuple(WMT10.values())
    config.data.train_split = 'train'
    config.data.eval_split = 'validation'
    config.data.vocab_size = 64000
    config.data.max_len = 128
    config.data.bucket_lengths = (16, 32, 48, 64, 96, 128)
    config.data.batch_tokens = 32768
    config.num_train_steps = 200000
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 4000
    config.eval.beam_size = 5
    config.eval.max_decode_len = 128
    if args.get('runlocal'):
        translation_base.shrink(config)
        config.data.max_examples = 16
        config.model.num_heads = 4
    tsjt_common.set_tsjt(config, kind)
    if kind == 'width':
        config.model.composite.fractions = (0.25, 0.5, 1.0)
    return config
