"""Dropout whose mask can use fewer random bits per element.

`Dropout(rate)` is `flax.linen.Dropout`: the same keep mask
(`jax.random.bernoulli` on the module's 'dropout' RNG stream, so the same
numbers for the same key and module path) and the same scaling by
1 / keep probability. `Dropout(rate, mask_bits=8)` (or 16) compares 8-bit
(16-bit) slices of each 32-bit random word with a threshold, so one word
serves 4 (2) elements. That changes the drawn masks and rounds the rate to
a multiple of 2**-mask_bits (`effective_rate`; 0.3 -> 77/256 = 0.30078 with 8
bits, 19661/65536 = 0.300003 with 16); kept units are scaled by the rounded
keep probability, so the expectation stays exact.

Why: on a CPU, XLA's threefry costs about 4 ns a random word. The `tiny`
Transformer at dropout 0.3 draws ~11.5 million mask elements a step: 45 ms
of a ~0.4 s train step on a 2-core CPU, where 8-bit masks take 12 ms and the
whole step runs 1.22-1.27x faster (benchmarks/dropout_mask.py).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdistill.errors import ConfigError

MASK_BITS = (8, 16, 32)


def check_mask_bits(mask_bits: int, name: str = 'dropout_mask_bits') -> None:
    if mask_bits not in MASK_BITS:
        raise ConfigError(
            f'{name}={mask_bits!r} must be one of {MASK_BITS} (random bits drawn '
            'per dropout mask element; 32 is flax.linen.Dropout).'
        )


def _threshold(rate: float, mask_bits: int) -> int:
    """round(rate * 2**mask_bits); a rate in (0, 1) that rounds to 0 (nothing
    dropped) or to 2**mask_bits (everything) is a ValueError."""
    threshold = round(rate * 2**mask_bits)
    if 0.0 < rate < 1.0 and threshold in (0, 2**mask_bits):
        raise ValueError(
            f'dropout rate {rate} rounds to {threshold / 2**mask_bits:g} with '
            f'{mask_bits}-bit masks; use more mask bits.'
        )
    return threshold


def effective_rate(rate: float, mask_bits: int = 32) -> float:
    """The rate a `Dropout(rate, mask_bits)` actually drops (ValueError where
    the bits cannot represent a rate in (0, 1))."""
    check_mask_bits(mask_bits, 'mask_bits')
    if mask_bits == 32:
        return float(rate)
    return _threshold(rate, mask_bits) / 2**mask_bits


def keep_mask(rng, rate: float, shape, mask_bits: int):
    """A bool keep mask of `shape` and its keep probability.

    mask_bits=32 draws `jax.random.bernoulli(rng, 1 - rate, shape)`, as
    flax.linen.Dropout does. 8 or 16 draw ceil(n / (32 / mask_bits)) uint32
    words, view each as 4 uint8 or 2 uint16 and keep an element when its
    slice is >= round(rate * 2**mask_bits).
    """
    check_mask_bits(mask_bits, 'mask_bits')
    if mask_bits == 32:
        keep_prob = 1.0 - rate
        return jax.random.bernoulli(rng, keep_prob, shape), keep_prob
    threshold = _threshold(rate, mask_bits)
    per_word = 32 // mask_bits
    size = math.prod(shape)
    words = jax.random.bits(rng, (-(-size // per_word),), jnp.uint32)
    dtype = jnp.uint8 if mask_bits == 8 else jnp.uint16
    slices = jax.lax.bitcast_convert_type(words, dtype).reshape(-1)[:size]
    keep = slices.reshape(shape) >= jnp.asarray(threshold, dtype)
    return keep, 1.0 - threshold / 2**mask_bits


class Dropout(nn.Module):
    """`flax.linen.Dropout` with a choice of random bits per mask element."""

    rate: float
    mask_bits: int = 32
    rng_collection: str = 'dropout'

    @nn.compact
    def __call__(self, inputs, deterministic: bool):
        if deterministic or self.rate == 0.0:
            return inputs
        if self.rate == 1.0:
            return jnp.zeros_like(inputs)
        rng = self.make_rng(self.rng_collection)
        keep, keep_prob = keep_mask(rng, self.rate, inputs.shape, self.mask_bits)
        return jax.lax.select(
            keep, inputs / jnp.asarray(keep_prob, inputs.dtype), jnp.zeros_like(inputs)
        )
