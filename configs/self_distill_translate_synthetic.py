"""Self-distillation inside a translation decoder, on the built-in task.

A 2-layer encoder and a 4-layer decoder with exits after decoder layers 1, 2
and 4 (`model.composite.kind = 'decoder'`: each exit has its own final
LayerNorm and shares the output embedding); the deepest exit teaches the
shallower ones token by token ("Be Your Own Teacher" loss). Evaluation
reports every exit's BLEU (`eval/x0.25/bleu`, ...), and
`python -m jaxdistill.extract --capacity x0.5` writes an exit out as a plain,
shallower, faster Transformer.

  python -m jaxdistill.train --config configs/self_distill_translate_synthetic.py --workdir /tmp/sd_mt

Arguments as in translation_base.py (runlocal, size=NAME).
"""

import ml_collections

import translate_synthetic


def get_config(arg=None):
    config = translate_synthetic.get_config(arg)
    config.model.num_decoder_layers = 4
    # Exits as fractions of the decoder's layers; the last (1.0) is the teacher.
    config.model.composite.kind = 'decoder'
    config.model.composite.fractions = (0.25, 0.5, 1.0)
    config.method = ml_collections.ConfigDict()
    # Registered training method (jaxdistill/methods/self_distill.py).
    config.method.name = 'self_distill'
    # Weight α of the distillation term (the labels get 1 − α); a number or a schedule dict.
    config.method.alpha = 0.1
    # Softmax temperature T of the distillation term.
    config.method.temperature = 3.0
    # Weight β of the hint ‖F_i − F_deepest‖² between exits' decoder states.
    config.method.beta = 1e-6
    return config
