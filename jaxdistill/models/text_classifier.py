"""Transformer encoder classifier with exits after chosen layers.

Tokens [B, L] (0 = PAD) are embedded with sinusoidal positions and run through
pre-LN encoder layers (`transformer.EncoderLayer`). Exit i after layer l gets
LayerNorm, a masked mean over tokens, Dense(d_model) + tanh (the exit's feature
F_i [B, d_model]) and a dense classifier. Follows the multi-exit interface of
`jaxdistill.models.multi_exit`.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdistill import registry
from jaxdistill.models import multi_exit
from jaxdistill.models import transformer

Array = jax.Array


@registry.register('model', 'text_classifier')
class TextClassifier(nn.Module):
    """Attributes: see the fields; `exits` are 0-based layers (< last) with a
    shallow exit; the deepest exit after the last layer always exists."""

    num_classes: int
    vocab_size: int
    num_layers: int = 4
    d_model: int = 128
    num_heads: int = 4
    d_ff: int = 256
    exits: Sequence[int] = (0, 1, 2)
    dropout_rate: float = 0.1
    max_len: int = 128

    def __post_init__(self):
        if self.num_layers < 1:
            raise ValueError(f'num_layers={self.num_layers} must be >= 1')
        multi_exit.check_exit_indices(self.exits, 'layer')
        if sorted(set(self.exits)) != list(self.exits) or any(
            not 0 <= l < self.num_layers - 1 for l in self.exits
        ):
            raise ValueError(
                f'exits {tuple(self.exits)} must be increasing layer indices in '
                f'0..{self.num_layers - 2}'
            )
        self._config()  # The Transformer's checks (heads, sizes, dropout) now.
        super().__post_init__()

    @property
    def num_exits(self) -> int:
        return len(self.exits) + 1

    def _config(self):
        return transformer.TransformerConfig(
            vocab_size=self.vocab_size,
            d_model=self.d_model,
            num_heads=self.num_heads,
            d_ff=self.d_ff,
            num_encoder_layers=self.num_layers,
            num_decoder_layers=0,
            dropout_rate=self.dropout_rate,
            max_len=self.max_len,
        )

    def _head(self, x, real, index):
        """x [B, L, D], real [B, L] bool -> (logits [B, K], feature [B, D])."""
        h = nn.LayerNorm(name=f'exit{index}_norm')(x)
        w = real[..., None].astype(h.dtype)
        pooled = jnp.sum(h * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)
        feature = jnp.tanh(nn.Dense(self.d_model, name=f'exit{index}_pool')(pooled))
        return nn.Dense(self.num_classes, name=f'exit{index}_head')(feature), feature

    @nn.compact
    def __call__(self, tokens: Array, *, train: bool, upto=None, only_last=False):
        """tokens int [B, L] -> {'logits': [B, K] each, 'features': [B, D] each}."""
        c = self._config()
        last = multi_exit.exit_index(upto, self.num_exits)
        exit_layers = list(self.exits) + [self.num_layers - 1]
        real = tokens != 0
        if tokens.shape[1] > c.max_len:
            raise ValueError(
                f'Sequence length {tokens.shape[1]} exceeds max_len={c.max_len}.'
            )
        x = nn.Embed(
            c.vocab_size,
            c.d_model,
            embedding_init=nn.initializers.normal(c.d_model**-0.5),
        )(tokens)
        x = (
            x * jnp.sqrt(c.d_model)
            + transformer.sinusoidal_positions(c.max_len, c.d_model)[: tokens.shape[1]]
        )
        x = nn.Dropout(c.dropout_rate)(x, deterministic=not train)
        mask = real[:, None, None, :]
        out = {'logits': [], 'features': []}
        for l in range(exit_layers[last] + 1):
            x = transformer.EncoderLayer(c, name=f'layers_{l}')(x, mask, train)
            if l in exit_layers and (not only_last or l == exit_layers[last]):
                logits, feature = self._head(x, real, exit_layers.index(l))
                out['logits'].append(logits)
                out['features'].append(feature)
        return out
