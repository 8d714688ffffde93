"""jaxdistill: train several JAX/Flax models together.

Public names are re-exported here; the modules hold the code.
"""

from jaxdistill import losses
from jaxdistill import registry
from jaxdistill import schedules
from jaxdistill.errors import (
    CheckpointMismatchError,
    ConfigError,
    DataError,
    JaxdistillError,
    NonFiniteLossError,
)
from jaxdistill.methods import Method, ModelFns, make_method
from jaxdistill.train_step import TrainState, make_init, make_train_step

__version__ = '0.1.0'
