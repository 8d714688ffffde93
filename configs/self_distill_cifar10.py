"""Self-distillation ("Be Your Own Teacher") on CIFAR-10 with a multi-exit ResNet.

  python -m jaxdistill.train --config configs/self_distill_cifar10.py --workdir /tmp/sd
  python -m jaxdistill.train --config configs/self_distill_cifar10.py:method=supervised ...
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
            'method=NAME (self_distill_cifar10.py fixes dataset=cifar10).'
        )
    config = base.get_config(','.join(filter(None, [arg, 'dataset=cifar10'])))
    if args.get('runlocal'):
        return config
    # ResNet-18 layout at width 16: a CPU-sized run (see benchmarks/self_distill_cifar10.py).
    config.model.stage_sizes = (2, 2, 2, 2)
    config.model.width = 16
    config.num_train_steps = 6000
    config.data.batch_size = 128
    config.checkpoint.every_steps = 1000
    return config
