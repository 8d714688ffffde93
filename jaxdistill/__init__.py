"""jaxdistill: train several JAX/Flax models together.

Public names are re-exported here; the modules hold the code.
"""

from jaxdistill import losses
from jaxdistill import registry
from jaxdistill import schedules
from jaxdistill.cli import workdir_config
from jaxdistill.configuration import apply_overrides, load_config
from jaxdistill.errors import (
    CheckpointMismatchError,
    ConfigError,
    DataError,
    JaxdistillError,
    NonFiniteLossError,
    PluginError,
)
from jaxdistill.methods import Method, ModelFns, make_method
from jaxdistill.train_step import TrainState, make_init, make_train_step
from jaxdistill.trainer import Trainer, train_and_evaluate

__version__ = '0.1.0'
