"""Base config for image classification with a multi-exit ResNet.

Variants (self_distill_cifar10.py, self_distill_mnist.py) import it and change
a few fields. Arguments (comma-separated, e.g. `...:runlocal,method=supervised`):
  runlocal          shrink everything so a run takes seconds (tests, smoke checks).
  dataset=NAME      mnist | cifar10.
  method=NAME       self_distill (default) | supervised (single-exit baseline:
                    the same backbone with only the deepest classifier).
"""

import ml_collections
import spine

from jaxdistill import configuration
from jaxdistill.errors import ConfigError

DATA_DIRS = {'mnist': '../shared/data/mnist', 'cifar10': '../shared/data/cifar10'}


def parse_arg(arg):
    """'runlocal,dataset=mnist' -> {'runlocal': True, 'dataset': 'mnist'}."""
    return configuration.parse_config_arg(arg)


def get_config(arg=None):
    args = parse_arg(arg)
    unknown = set(args) - {'runlocal', 'dataset', 'method'}
    if unknown:
        raise ConfigError(
            f'Unknown config argument(s) {sorted(unknown)}; '
            'known: runlocal, dataset=NAME, method=NAME.'
        )
    dataset = args.get('dataset', 'cifar10')
    if dataset not in DATA_DIRS:
        raise ConfigError(f'dataset={dataset!r}; valid: {" | ".join(DATA_DIRS)}.')
    config = ml_collections.ConfigDict()
    # Registered task that builds data, model and evaluation.
    config.task = 'image_classification'
    # Seed of parameter init and of data order and augmentation.
    config.seed = 0
    # Optimizer steps to train for.
    config.num_train_steps = 6000
    spine.step_controls(config)
    # Steps between progress lines / metric records (one device fetch each).
    config.log_every_steps = 100

    config.model = ml_collections.ConfigDict()
    # Registered model name.
    config.model.name = 'resnet'
    # Basic blocks per stage; (2, 2, 2, 2) is ResNet-18.
    config.model.stage_sizes = (2, 2, 2, 2)
    # Channels of the first stage; each later stage doubles them.
    config.model.width = 16
    # Stages followed by a shallow exit (the deepest exit is implicit).
    config.model.exits = (0, 1, 2)
    # GroupNorm groups (GroupNorm, not BatchNorm: see docs/methods/self_distillation.md).
    config.model.norm_groups = 8
    # Shallow exits' bottleneck: 'blocks' (a strided ResNet bottleneck block per
    # stage it skips), 'branch' (a public BYOT implementation's 1x1, kxk
    # stride k, 1x1: three convolutions) or 'pool' (average pool to the deepest
    # resolution, then 1x1, 3x3, 1x1); docs/methods/self_distillation.md.
    config.model.exit_head = 'blocks'
    # Compute dtype: 'float32', or 'bfloat16' for mixed precision on a GPU/TPU
    # (parameters, GroupNorm statistics and logits stay float32).
    config.model.dtype = 'float32'

    config.method = ml_collections.ConfigDict()
    # Registered training method.
    config.method.name = 'self_distill'
    # Weight α of the distillation term (the labels get 1 − α); a number or a schedule dict.
    config.method.alpha = 0.1
    # Softmax temperature T of the distillation term.
    config.method.temperature = 3.0
    # Weight β of the feature hint ‖F_i − F_deepest‖².
    config.method.beta = 1e-6

    config.data = ml_collections.ConfigDict()
    # 'mnist' (IDX files) | 'cifar10' (JPEG tar).
    config.data.dataset = dataset
    # Folder holding the dataset's files (relative to the working directory).
    config.data.data_dir = DATA_DIRS.get(dataset, '')
    # Where decoded .npy arrays are cached ('' = WORKDIR/cache).
    config.data.cache_dir = ''
    # Split evaluated ('test': MNIST t10k / CIFAR-10 test).
    config.data.eval_split = 'test'
    # Images per global batch (a multiple of the data-parallel devices).
    config.data.batch_size = 128
    # 'crop_flip' (4-pixel padded random crop + horizontal flip) | 'crop' | 'none'.
    config.data.augment = 'crop_flip' if dataset == 'cifar10' else 'none'
    # Use a fixed random subset of N training images, in file order (0 = all).
    config.data.max_train_examples = 0

    config.optimizer = ml_collections.ConfigDict()
    # 'adamw' | 'adam' | 'sgd'.
    config.optimizer.name = 'adamw'
    # Peak learning rate.
    config.optimizer.learning_rate = 3e-3
    # 'inverse_sqrt' | 'cosine' | 'linear' | 'constant'.
    config.optimizer.schedule = 'cosine'
    # Linear warm-up steps.
    config.optimizer.warmup_steps = 300
    # Length of the cosine decay.
    # Derived (`+ 0`), not the same reference: overriding total_steps must
    # not change num_train_steps with it.
    config.optimizer.total_steps = config.get_ref('num_train_steps') + 0
    # Adam moments and epsilon.
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-8
    # Decoupled weight decay (not on biases and norms).
    config.optimizer.weight_decay = 5e-2
    config.optimizer.momentum = 0.0  # With name='sgd' (0.9 in the paper's recipe).
    # Global-norm gradient clipping (0 = off).
    config.optimizer.grad_clip_norm = 0.0
    # Moving average of the parameters, kept beside them (0 = none; e.g.
    # 0.999): evaluation, translate, extract and teachers then use it.
    config.optimizer.ema_decay = 0.0

    # The device mesh and the checkpoints (configs/spine.py).
    config.mesh = spine.mesh()
    config.checkpoint = spine.checkpoint(every_steps=1000, keep=2)

    config.eval = ml_collections.ConfigDict()
    # Evaluate every N steps (0 = only at the end).
    config.eval.every_steps = 0
    # With optimizer.ema_decay > 0: evaluate (and translate, extract) the
    # moving average of the parameters (True) or the parameters (False).
    config.eval.use_ema = True
    # Evaluate after the last step.
    config.eval.at_end = True
    # Evaluate on at most N test images (0 = all).
    config.eval.max_examples = 0
    # Images per eval batch.
    config.eval.batch_size = 500
    # Softmax-confidence thresholds of the early-exit curve.
    config.eval.thresholds = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.999, 1.0)
    # Timing runs per exit prefix (best kept); 0 = no measured times.
    config.eval.timing_repeats = 3

    config.distributed = ml_collections.ConfigDict()
    # host:port of process 0 for multi-process runs ('' = single process).
    config.distributed.coordinator_address = ''
    # Number of processes and this process's id (-1 = from the environment).
    config.distributed.num_processes = 0
    config.distributed.process_id = -1

    if args.get('method') == 'supervised':
        baseline(config)
    elif args.get('method') not in (None, 'self_distill'):
        raise ConfigError(
            f'method={args["method"]!r}; valid: self_distill | supervised.'
        )
    if args.get('runlocal'):
        shrink(config)
    return config


def shrink(config):
    """A run of seconds: tiny ResNet, little data, few steps."""
    config.num_train_steps = 12
    config.log_every_steps = 4
    config.model.stage_sizes = (1, 1)
    config.model.width = 8
    config.model.exits = tuple(e for e in config.model.exits if e < 1)
    config.model.norm_groups = 4
    config.data.batch_size = 32
    config.data.max_train_examples = 512
    config.optimizer.warmup_steps = 2
    config.checkpoint.every_steps = 6
    config.eval.max_examples = 200
    config.eval.batch_size = 64
    config.eval.timing_repeats = 1


def baseline(config):
    """The single-exit baseline: same backbone, deepest classifier only, CE."""
    config.model.exits = ()
    config.method = ml_collections.ConfigDict(
        {'name': 'supervised', 'label_smoothing': 0.0}
    )
