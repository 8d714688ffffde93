"""TSJT on one-to-many Multi30k (en->de, en->fr, en->cs): the local stand-in for WMT10.

One joint SentencePiece vocabulary; the source starts with the target-language
tag ('<2de>', ...). Capacities default to a width composite; `composite=depth`
picks composite B.

  python -m jaxdistill.train --config configs/tsjt_multi30k.py:composite=width \
      --workdir /tmp/tsjt_m30k --config.data.files_dir=../shared/data/multi30k

Arguments (comma-separated): runlocal; composite=width|depth; size=NAME.
"""

import tsjt_common
import translate_multi30k
import translation_base


def get_config(arg=None):
    args = translation_base.parse_arg(arg)
    kind = args.get('composite', 'width')
    config = translate_multi30k.get_config(arg, extra_args=(tsjt_common.COMPOSITE_ARG,))
    config.data.pairs = ('en-de', 'en-fr', 'en-cs')
    if not args.get('runlocal'):
        # The largest capacity: 'tiny' with twice the FFN and heads, so the
        # x0.5 width slice is exactly 'tiny' (4 heads of 32, 256 FFN units).
        config.model.num_heads = 8
        config.model.d_ff = 512
        config.model.head_size = 32
        config.num_train_steps = 8000
    tsjt_common.set_tsjt(config, kind)
    if kind == 'width':
        config.model.composite.fractions = (0.5, 1.0)
    return config
