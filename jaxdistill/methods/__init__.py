"""Training methods, chosen by name from the registry."""

from jaxdistill.methods.base import Method, ModelFns, make_method
from jaxdistill.methods import supervised  # registers 'supervised'
from jaxdistill.methods import codistill  # registers 'codistill'
from jaxdistill.methods.supervised import Supervised
from jaxdistill.methods.codistill import Codistill
from jaxdistill.methods import self_distill  # registers 'self_distill'
from jaxdistill.methods import tsjt  # noqa: F401  (registers 'tsjt')
from jaxdistill.methods import multitask  # noqa: F401  (registers 'multitask')
from jaxdistill.methods import rl_multi_teacher  # noqa: F401  (registers it)
from jaxdistill.methods import distill  # noqa: F401  (registers 'distill')
