"""models/dropout.py: flax's Dropout at 32 bits; 8/16-bit masks keep the rate."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill.errors import ConfigError
from jaxdistill.models import dropout as dropout_lib
from jaxdistill.models import make_transformer_config


class _Wrap(nn.Module):
    """Applies a dropout class under the same module path as another."""

    cls: type
    kwargs: dict

    @nn.compact
    def __call__(self, x):
        return self.cls(**self.kwargs, name='drop')(x, deterministic=False)


def _apply(cls, x, seed=0, **kwargs):
    rngs = {'dropout': jax.random.key(seed)}
    return _Wrap(cls, kwargs).apply({}, x, rngs=rngs)


def test_32_bits_is_flax_dropout_exactly():
    x = jax.random.normal(jax.random.key(1), (3, 5, 7))
    ours = _apply(dropout_lib.Dropout, x, rate=0.3)
    flax_out = _apply(nn.Dropout, x, rate=0.3)
    np.testing.assert_array_equal(ours, flax_out)
    assert 0 < int(jnp.sum(ours == 0)) < x.size


@pytest.mark.parametrize('bits', [8, 16])
def test_few_bit_masks_drop_the_rounded_rate_independently(bits):
    rate = 0.3
    x = jnp.ones((64, 1000, 7))  # n not a multiple of the slices per word
    out = np.asarray(_apply(dropout_lib.Dropout, x, rate=rate, mask_bits=bits))
    eff = dropout_lib.effective_rate(rate, bits)
    assert eff == round(rate * 2**bits) / 2**bits
    kept = out != 0
    # Kept units are scaled by the rounded keep probability, exactly.
    np.testing.assert_allclose(out[kept], 1 / (1 - eff), rtol=1e-6)
    n = kept.size
    sigma = np.sqrt(eff * (1 - eff) / n)
    assert abs((1 - kept.mean()) - eff) < 5 * sigma
    # Neighbours share a random word (4 or 2 to a word): their keeps must
    # still be independent, P(both kept) = keep^2.
    flat = kept.reshape(-1)
    both = np.mean(flat[:-1] & flat[1:])
    keep = 1 - eff
    assert abs(both - keep**2) < 5 * np.sqrt(keep**2 * (1 - keep**2) / n)
    # Another key draws another mask.
    other = np.asarray(
        _apply(dropout_lib.Dropout, x, seed=1, rate=rate, mask_bits=bits)
    )
    assert np.mean(kept != (other != 0)) > 0.3


def test_deterministic_and_zero_rate_pass_through():
    x = jnp.arange(12.0).reshape(3, 4)
    for bits in (8, 16, 32):
        d = dropout_lib.Dropout(0.5, bits)
        np.testing.assert_array_equal(d.apply({}, x, deterministic=True), x)
        zero = dropout_lib.Dropout(0.0, bits)
        np.testing.assert_array_equal(zero.apply({}, x, deterministic=False), x)


def test_bad_mask_bits_and_rates_that_round_to_zero_are_config_errors():
    with pytest.raises(ConfigError, match='dropout_mask_bits=12'):
        make_transformer_config('tiny', vocab_size=50, dropout_mask_bits=12)
    with pytest.raises(ConfigError, match='dropout_rate=0.001 .* rounds to 0 '):
        make_transformer_config(
            'tiny', vocab_size=50, dropout_rate=0.001, dropout_mask_bits=8
        )
    # Near 1 the threshold would be 256, which a uint8 cannot hold.
    with pytest.raises(ConfigError, match='rounds to 1 with 8-bit'):
        make_transformer_config(
            'tiny', vocab_size=50, activation_dropout_rate=0.999, dropout_mask_bits=8
        )
    with pytest.raises(ValueError, match='rounds to 1 with 8-bit'):
        dropout_lib.keep_mask(jax.random.key(0), 0.999, (4,), 8)
    assert dropout_lib.effective_rate(0.99, 8) == 253 / 256
    config = make_transformer_config(
        'tiny', vocab_size=50, dropout_rate=0.001, dropout_mask_bits=16
    )
    assert config.dropout_mask_bits == 16
