"""Small text classifiers of different character: bag of embeddings, CNN, BiLSTM.

Each takes tokens int [B, L] (0 = PAD) and follows the single-exit case of the
multi-exit interface (`jaxdistill.models.multi_exit`): `__call__` returns
{'logits': [z [B, C]], 'features': [F [B, D]]} and `num_exits` is 1, so the
classification tasks and every method drive them like `text_classifier`.
The Transformer encoder classifier (`text_classifier` with `exits=()`) is the
fourth family.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdistill import registry
from jaxdistill.models import multi_exit

Array = jax.Array


def _masked_mean(x, real):
    """x [B, L, D], real [B, L] bool -> [B, D] mean over real tokens."""
    w = real[..., None].astype(x.dtype)
    return jnp.sum(x * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)


def _masked_max(x, real):
    """x [B, L, D], real [B, L] bool -> [B, D] max over real tokens (0 if none)."""
    x = jnp.where(real[..., None], x, -1e9)
    return jnp.where(jnp.any(real, axis=1)[:, None], jnp.max(x, axis=1), 0.0)


_SIZES = (
    'num_classes', 'vocab_size', 'max_len', 'embed_dim', 'hidden_dim',
    'num_filters', 'hidden_size',
)  # fmt: skip


class _SingleExit(nn.Module):
    """Shared head: tanh feature layer and a dense classifier."""

    def __post_init__(self):
        # ValueError, which build_model names as config.model's.
        for name in _SIZES:
            value = getattr(self, name, 1)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'{name}={value!r} must be an integer >= 1.')
        widths = getattr(self, 'widths', (1,))
        if not widths or any(
            isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths
        ):
            raise ValueError(
                f'widths={widths!r} must be one or more convolution widths >= 1.'
            )
        rate = self.dropout_rate
        if (
            isinstance(rate, bool)
            or not isinstance(rate, (int, float))
            or not (0 <= rate < 1)
        ):
            raise ValueError(f'dropout_rate={rate!r} must be in [0, 1).')
        super().__post_init__()

    @property
    def num_exits(self) -> int:
        return 1

    def _finish(self, pooled, feature_dim: int, num_classes: int, upto):
        multi_exit.exit_index(upto, 1)
        feature = jnp.tanh(nn.Dense(feature_dim, name='pool')(pooled))
        logits = nn.Dense(num_classes, name='head')(feature)
        return {'logits': [logits], 'features': [feature]}


@registry.register('model', 'bag_of_embeddings')
class BagOfEmbeddings(_SingleExit):
    """Mean of word embeddings -> tanh layer -> classifier (fastText-like)."""

    num_classes: int
    vocab_size: int
    max_len: int = 128
    embed_dim: int = 64
    hidden_dim: int = 64
    dropout_rate: float = 0.1

    @nn.compact
    def __call__(self, tokens: Array, *, train: bool, upto=None, only_last=False):
        """tokens int [B, L] -> {'logits': [[B, C]], 'features': [[B, hidden]]}."""
        del only_last
        real = tokens != 0
        x = nn.Embed(self.vocab_size, self.embed_dim)(tokens)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        return self._finish(
            _masked_mean(x, real), self.hidden_dim, self.num_classes, upto
        )


@registry.register('model', 'cnn_text')
class CNNText(_SingleExit):
    """Kim (2014) CNN: convolutions of several widths, max over time."""

    num_classes: int
    vocab_size: int
    max_len: int = 128
    embed_dim: int = 128
    num_filters: int = 64
    widths: Sequence[int] = (3, 4, 5)
    hidden_dim: int = 128
    dropout_rate: float = 0.3

    @nn.compact
    def __call__(self, tokens: Array, *, train: bool, upto=None, only_last=False):
        """tokens int [B, L] -> {'logits': [[B, C]], 'features': [[B, hidden]]}."""
        del only_last
        real = tokens != 0
        x = nn.Embed(self.vocab_size, self.embed_dim)(tokens)
        # PAD positions read as zeros, like the convolutions' own edge
        # padding: a sentence's output does not depend on how much padding
        # follows it, nor on the (trained) PAD row.
        x = jnp.where(real[..., None], x, 0.0)
        pooled = []
        for w in self.widths:
            h = nn.relu(nn.Conv(self.num_filters, (w,), name=f'conv{w}')(x))
            pooled.append(_masked_max(h, real))
        pooled = nn.Dropout(self.dropout_rate)(
            jnp.concatenate(pooled, axis=-1), deterministic=not train
        )
        return self._finish(pooled, self.hidden_dim, self.num_classes, upto)


@registry.register('model', 'bilstm_text')
class BiLSTMText(_SingleExit):
    """Bidirectional LSTM over words, max-pooled over time."""

    num_classes: int
    vocab_size: int
    max_len: int = 128
    embed_dim: int = 128
    hidden_size: int = 128
    hidden_dim: int = 128
    dropout_rate: float = 0.2

    @nn.compact
    def __call__(self, tokens: Array, *, train: bool, upto=None, only_last=False):
        """tokens int [B, L] -> {'logits': [[B, C]], 'features': [[B, hidden]]}."""
        del only_last
        real = tokens != 0
        lengths = jnp.sum(real, axis=1)
        x = nn.Embed(self.vocab_size, self.embed_dim)(tokens)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        h = nn.Bidirectional(
            nn.RNN(nn.OptimizedLSTMCell(self.hidden_size)),
            nn.RNN(nn.OptimizedLSTMCell(self.hidden_size)),
        )(x, seq_lengths=lengths)
        pooled = nn.Dropout(self.dropout_rate)(
            _masked_max(h, real), deterministic=not train
        )
        return self._finish(pooled, self.hidden_dim, self.num_classes, upto)
