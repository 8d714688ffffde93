"""TSJT on the built-in translation task: one run, three model sizes.

The README's main job. A width composite (composite A) of a 2+2-layer
Transformer holds capacities x0.25, x0.5 and x1 (1, 2 and 4 attention heads;
128, 256 and 512 FFN units); all three train together, the largest teaching
the others from step 400. No download; a few minutes on a 2-core CPU.

  python -m jaxdistill.train --config configs/tsjt_synthetic.py --workdir /tmp/tsjt
  python -m jaxdistill.extract --workdir /tmp/tsjt --capacity x0.25 --out /tmp/tsjt_small

Arguments (comma-separated): runlocal; composite=width|depth; size=NAME.
"""

import tsjt_common
import translate_synthetic
import translation_base


def get_config(arg=None):
    args = translation_base.parse_arg(arg)
    kind = args.get('composite', 'width')
    config = translate_synthetic.get_config(
        arg, extra_args=(tsjt_common.COMPOSITE_ARG,)
    )
    if kind == 'width' and args.get('runlocal'):
        config.model.num_heads = 4  # So the x0.25 slice has one head.
    elif kind == 'width':
        # Wider FFN than the plain quick start, so the x0.25 slice has 128 units.
        config.model.d_ff = 512
    tsjt_common.set_tsjt(config, kind)
    return config
