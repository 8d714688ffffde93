"""Self-distillation on MNIST: a small multi-exit ResNet, minutes on a CPU.

  python -m jaxdistill.train --config configs/self_distill_mnist.py --workdir /tmp/sd_mnist
Arguments as in image_classification_base.py (runlocal, method=NAME).
"""

import image_classification_base as base

from jaxdistill.errors import ConfigError


def get_config(arg=None):
    args = base.parse_arg(arg)
    unknown = set(args) - {'runlocal', 'method'}
    if unknown:
        raise ConfigError(
            f'Unknown config argument(s) {sorted(unknown)}; known: runlocal, '
            'method=NAME (self_distill_mnist.py fixes dataset=mnist).'
        )
    config = base.get_config(','.join(filter(None, [arg, 'dataset=mnist'])))
    if args.get('runlocal'):
        return config
    # Three stages of one block at width 16: MNIST needs little depth.
    config.model.stage_sizes = (1, 1, 1)
    config.model.width = 16
    # The supervised baseline keeps only the deepest classifier.
    config.model.exits = () if args.get('method') == 'supervised' else (0, 1)
    config.num_train_steps = 1500
    config.optimizer.warmup_steps = 100
    config.data.augment = 'none'
    return config
