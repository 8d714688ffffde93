"""The TSJT blocks shared by the tsjt_* configs (not a config itself)."""

import ml_collections

from jaxdistill.errors import ConfigError

# The config-file argument that picks the composite, as errors list it.
COMPOSITE_ARG = 'composite=width|depth'


def set_tsjt(config, kind):
    """Makes `config` a TSJT run of a `kind` ('width' | 'depth') composite,
    with stage 2 from half of `num_train_steps` (linked: an override of
    `num_train_steps` moves it too, unless `method.stage2_start` is given)."""
    if kind not in ('width', 'depth'):
        raise ConfigError(f'composite={kind!r}; valid: width | depth.')
    # 'width': nested heads/FFN units (composite A); 'depth': bottom layers
    # with their own output norms (composite B). See models/composite.py.
    config.model.composite.kind = kind
    # Capacities as fractions of the full model; the last must be 1.0.
    config.model.composite.fractions = (
        (0.25, 0.5, 1.0) if kind == 'width' else (0.5, 1.0)
    )
    if kind == 'depth':
        # Half the layers must be whole (runlocal's model has one of each).
        for key in ('num_encoder_layers', 'num_decoder_layers'):
            config.model[key] = max(config.model[key], 2)
    label_smoothing = config.method.get('label_smoothing', 0.1)
    config.method = ml_collections.ConfigDict()
    # Registered method: Two-Stage Joint-Training (jaxdistill/methods/tsjt.py).
    config.method.name = 'tsjt'
    # First step of stage 2, where the largest capacity starts teaching:
    # half of training, whatever num_train_steps becomes.
    config.method.stage2_start = config.get_ref('num_train_steps') // 2
    # Weight of each capacity's label loss: a number or a schedule spec.
    config.method.label_weight = 1.0
    # Weight of each smaller capacity's distillation term in stage 2.
    config.method.distill_weight = 1.0
    # Softmax temperature of the distillation term.
    config.method.temperature = 1.0
    # Label smoothing of the label losses.
    config.method.label_smoothing = label_smoothing
    # Middle capacities trained per step (0 = all; for more than three sizes).
    config.method.sample_middle = 0
    return config
