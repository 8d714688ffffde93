"""Flax models."""

from jaxdistill.models.transformer import count_params
from jaxdistill.models.transformer import flops_per_token
from jaxdistill.models.transformer import init_cache
from jaxdistill.models.transformer import make_transformer_config
from jaxdistill.models.transformer import SIZES
from jaxdistill.models.transformer import sinusoidal_positions
from jaxdistill.models.transformer import Transformer
from jaxdistill.models.transformer import TransformerConfig
