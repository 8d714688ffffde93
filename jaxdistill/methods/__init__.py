"""Training methods, chosen by name from the registry."""

from jaxdistill.methods.base import Method, ModelFns, make_method
from jaxdistill.methods import supervised  # registers 'supervised'
from jaxdistill.methods.supervised import Supervised
