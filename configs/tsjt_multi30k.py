"""TSJT on one-to-many Multi30k (en->de, en->fr, en->cs): the local stand-in for WMT10.

One joint SentencePiece vocabulary; the source starts with the target-language
tag ('<2de>', ...). Capacities default to a width composite; `composite=depth`
picks composite B. The largest capacity is twice `size=` (default tiny): twice
its heads and FFN units (width) or its layers (depth), so x0.5 is that size.

  python -m jaxdistill.train --config configs/tsjt_multi30k.py:composite=width \
      --workdir /tmp/tsjt_m30k --config.data.files_dir=../shared/data/multi30k

Arguments (comma-separated): runlocal; composite=width|depth; size=NAME.
"""

import tsjt_common
import translate_multi30k
import translation_base

from jaxdistill.models.transformer import SIZES


def get_config(arg=None):
    args = translation_base.parse_arg(arg)
    kind = args.get('composite', 'width')
    config = translate_multi30k.get_config(arg, extra_args=(tsjt_common.COMPOSITE_ARG,))
    config.data.pairs = ('en-de', 'en-fr', 'en-cs')
    if not args.get('runlocal'):
        # The largest capacity is twice the named size (default 'tiny'), so
        # its x0.5 capacity is exactly that size: for 'width' twice the heads
        # (of the size's head width) and FFN units; for 'depth' twice the
        # encoder and decoder layers.
        named = SIZES[args.get('size', 'tiny')]
        if kind == 'width':
            config.model.num_heads = 2 * named['num_heads']
            config.model.d_ff = 2 * named['d_ff']
            config.model.head_size = named['d_model'] // named['num_heads']
        else:
            config.model.num_encoder_layers = 2 * named['num_encoder_layers']
            config.model.num_decoder_layers = 2 * named['num_decoder_layers']
        config.num_train_steps = 8000
    tsjt_common.set_tsjt(config, kind)
    if kind == 'width':
        config.model.composite.fractions = (0.5, 1.0)
    return config
