"""Tests for the encoder–decoder Transformer and cached greedy decoding."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdistill import registry
from jaxdistill.errors import ConfigError
from jaxdistill.evaluation import greedy_decode
from jaxdistill.evaluation.decode import never_generated
from jaxdistill.models import count_params
from jaxdistill.models import flops_per_token
from jaxdistill.models import init_cache
from jaxdistill.models import make_transformer_config
from jaxdistill.models.transformer import output_table
from jaxdistill.models import Transformer

EOS = 3


def _small(**overrides):
    kw = dict(
        vocab_size=50,
        d_model=32,
        d_ff=64,
        num_heads=4,
        num_encoder_layers=1,
        num_decoder_layers=2,
        max_len=32,
    )
    return make_transformer_config('tiny', **{**kw, **overrides})


def _batch(seed=0, batch=4, src_len=9, tgt_len=7):
    """Random ids in [4, 50) ending with EOS, second half of the rows padded."""
    rng = np.random.default_rng(seed)
    inputs = rng.integers(4, 50, (batch, src_len)).astype(np.int32)
    targets = rng.integers(4, 50, (batch, tgt_len)).astype(np.int32)
    inputs[:, -1], targets[:, -1] = EOS, EOS
    inputs[batch // 2 :, src_len - 3 :], inputs[batch // 2 :, src_len - 4] = 0, EOS
    targets[batch // 2 :, tgt_len - 2 :], targets[batch // 2 :, tgt_len - 3] = 0, EOS
    return jnp.asarray(inputs), jnp.asarray(targets)


@functools.lru_cache(maxsize=None)
def _method(model, method):
    """Jitted `model.apply(params, *args, method=method)`, compiled once."""
    return jax.jit(functools.partial(model.apply, method=method))


@functools.lru_cache(maxsize=None)
def _forward(model):
    """Jitted teacher-forced eval forward: (params, inputs, targets) -> logits."""
    return jax.jit(functools.partial(model.apply, train=False))


@pytest.fixture(scope='module')
def setup():
    model = Transformer(_small())
    inputs, targets = _batch()
    params = jax.jit(functools.partial(model.init, train=False))(
        jax.random.key(0), inputs, targets
    )
    return model, params, inputs, targets


def test_shapes_and_registry(setup):
    model, params, inputs, targets = setup
    logits = _forward(model)(params, inputs, targets)
    assert logits.shape == (4, 7, 50) and logits.dtype == jnp.float32
    encoded = jax.eval_shape(
        functools.partial(model.apply, method=Transformer.encode), params, inputs
    )
    assert encoded.shape == (4, 9, 32)
    assert registry.get('model', 'transformer') is Transformer


def test_config_errors():
    with pytest.raises(ConfigError, match='tiny'):
        make_transformer_config('huge', vocab_size=10)
    with pytest.raises(ConfigError, match='d_modle'):
        make_transformer_config('tiny', vocab_size=10, d_modle=3)
    assert make_transformer_config('big', vocab_size=7).d_ff == 4096


def test_padding_invariance(setup):
    model, params, inputs, targets = setup
    padded = jnp.pad(inputs, ((0, 0), (0, 5)))
    a = _forward(model)(params, inputs, targets)
    b = _forward(model)(params, padded, targets)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_causality(setup):
    model, params, inputs, targets = setup
    changed = targets.at[:, 3].set((targets[:, 3] + 1) % 50)
    forward = _forward(model)
    a, b = forward(params, inputs, targets), forward(params, inputs, changed)
    np.testing.assert_allclose(a[:, :4], b[:, :4], atol=1e-6)
    assert np.abs(a[:, 4] - b[:, 4]).max() > 1e-3  # target 3 feeds position 4.


def test_shared_embedding_is_one_param(setup):
    _, params, inputs, targets = setup
    assert set(params['params']) == {'embed', 'encoder', 'decoder'}
    vd = [x for x in jax.tree.leaves(params) if x.shape == (50, 32)]
    assert len(vd) == 1
    unshared = Transformer(_small(share_embeddings=False))
    shapes = jax.eval_shape(
        functools.partial(unshared.init, train=False),
        jax.random.key(0),
        inputs,
        targets,
    )
    assert {'source_embed', 'target_embed', 'output_proj'} <= set(shapes['params'])


@pytest.mark.parametrize(
    'precompute_cross, norm_position', [(True, 'pre'), (False, 'pre'), (True, 'post')]
)
def test_cached_steps_match_full_decode(setup, precompute_cross, norm_position):
    _, params, inputs, targets = setup  # Both orders have the same tree.
    model = Transformer(_small(norm_position=norm_position))
    bos = jnp.full_like(targets[:, :1], 2)
    dec_in = jnp.concatenate([bos, targets[:, :-1]], axis=1)
    encoded = _method(model, Transformer.encode)(params, inputs)
    full = _method(model, Transformer.decode)(params, encoded, inputs, dec_in)
    cache = model.apply(params, 4, 10, method=Transformer.init_cache)
    if precompute_cross:
        cache['cross'] = model.apply(
            params, encoded, method=Transformer.precompute_cross
        )
    step = jax.jit(
        lambda t, i, c: model.apply(
            params, encoded, inputs, t, i, c, method=Transformer.decode_step
        )
    )
    for t in range(dec_in.shape[1]):
        logits, cache = step(dec_in[:, t], t, cache)
        np.testing.assert_allclose(logits, full[:, t], atol=1e-5)
    assert set(cache) == ({'self', 'cross'} if precompute_cross else {'self'})


def _check_greedy(model, params, inputs, max_len):
    out = np.asarray(greedy_decode(model, params, inputs, max_len=max_len))
    assert out.shape == (inputs.shape[0], max_len) and out.dtype == np.int32
    logits = _forward(model)(params, inputs, jnp.asarray(out))
    # PAD and BOS are never generated.
    best = np.asarray(jnp.argmax(never_generated(logits, model.config), -1))
    for row, pred in zip(out, best):
        eos = np.flatnonzero(row == EOS)
        end = eos[0] + 1 if eos.size else max_len
        np.testing.assert_array_equal(row[:end], pred[:end])
        assert (row[end:] == 0).all()
    return out


def test_greedy_equals_uncached_argmax_and_stops_after_eos():
    # Unshared output projection; the EOS column is scaled up until some rows
    # end early and others run to max_len, so both branches are exercised.
    model = Transformer(_small(share_embeddings=False))
    inputs, _ = _batch(seed=0, batch=8)
    params = jax.jit(functools.partial(model.init, train=False))(
        jax.random.key(0), inputs, inputs
    )
    kernel = params['params']['output_proj']['kernel']
    for scale in (1.0, 1.5, 2.0, 2.5, 3.0, 4.0):
        params['params']['output_proj']['kernel'] = kernel.at[:, EOS].multiply(scale)
        out = _check_greedy(model, params, inputs, max_len=12)
        ended = (out == EOS).any(axis=1)
        if ended.any() and not ended.all() and (out[ended][:, -1] == 0).any():
            break
    else:
        pytest.fail('no EOS scale gave a mix of finished and unfinished rows')
    with pytest.raises(ValueError, match='max_len'):
        greedy_decode(model, params, inputs, max_len=33)


def test_dropout_only_in_train(setup):
    model, params, inputs, targets = setup
    apply = jax.jit(model.apply, static_argnames='train')
    run = lambda seed, train: apply(
        params, inputs, targets, train=train, rngs={'dropout': jax.random.key(seed)}
    )
    assert np.abs(run(1, True) - run(2, True)).max() > 1e-3
    np.testing.assert_array_equal(run(1, True), run(1, True))
    np.testing.assert_array_equal(run(1, False), run(2, False))


def test_dropout_mask_bits_change_masks_not_the_model(setup):
    _, params, inputs, targets = setup
    outs = {}
    for bits in (8, 32):
        model = Transformer(_small(dropout_mask_bits=bits, dropout_rate=0.3))
        apply = jax.jit(model.apply, static_argnames='train')
        rngs = {'dropout': jax.random.key(1)}
        outs[bits] = {
            train: apply(params, inputs, targets, train=train, rngs=rngs)
            for train in (True, False)
        }
    np.testing.assert_array_equal(outs[8][False], outs[32][False])
    assert np.abs(outs[8][True] - outs[32][True]).max() > 1e-3
    assert np.isfinite(outs[8][True]).all()


def _analytic_param_count(v, d, f, n_enc, n_dec):
    attn = 4 * (d * d + d)  # q, k, v, o kernels and biases.
    ffn = d * f + f + f * d + d
    norm = 2 * d
    enc_layer = attn + ffn + 2 * norm
    dec_layer = 2 * attn + ffn + 3 * norm
    return v * d + n_enc * enc_layer + n_dec * dec_layer + 2 * norm


def test_param_count_tiny():
    config = make_transformer_config('tiny', vocab_size=10000)
    x = jnp.ones((1, 5), jnp.int32)
    shapes = jax.eval_shape(
        functools.partial(Transformer(config).init, train=False),
        jax.random.key(0),
        x,
        x,
    )
    assert count_params(shapes) == _analytic_param_count(10000, 128, 256, 4, 4)
    assert count_params(shapes) == 2_605_568


def test_flops_per_token_matches_param_count():
    config = _small(share_embeddings=False)
    x = jnp.ones((1, 5), jnp.int32)
    shapes = jax.eval_shape(
        functools.partial(Transformer(config).init, train=False),
        jax.random.key(0),
        x,
        x,
    )
    flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
    matmul = sum(
        np.size(leaf)
        for path, leaf in flat
        if path[-1].key == 'kernel' and 'output_proj' not in str(path)
    )
    flops = flops_per_token(config, src_len=10, tgt_len=10)
    assert flops['encoder_dense'] + flops['decoder_dense'] == 6 * matmul
    assert flops['logits'] == 6 * 32 * 50
    assert flops['decoder_attention'] == 2 * 4 * 20 * 32 * 3
    assert flops['total'] == pytest.approx(3 * flops['forward'])


def test_init_cache_plain_function_under_jit():
    config = _small()
    cache = jax.jit(init_cache, static_argnums=(0, 1, 2))(config, 3, 8)
    assert len(cache['self']) == 2
    assert cache['self'][0]['k'].shape == (3, 8, 4, 8)
    assert not np.asarray(cache['self'][1]['v']).any()


def test_post_layer_norm(setup):
    """'post' keeps the parameter tree and normalises every layer's output
    (its cached decoding: test_cached_steps_match_full_decode)."""
    _, params, inputs, targets = setup
    with pytest.raises(ConfigError, match='norm_position'):
        _small(norm_position='middle')
    outs = {}
    for position in ('pre', 'post'):
        model = Transformer(_small(norm_position=position))
        init = jax.jit(functools.partial(model.init, train=False))
        fresh = init(jax.random.key(0), inputs, targets)
        assert jax.tree.map(np.shape, fresh) == jax.tree.map(np.shape, params)
        states = model.apply(
            params, inputs, targets, train=False, method=Transformer.decoder_states
        )
        # The LayerNorms start at scale 1 and bias 0, so a post-LN layer's
        # output has zero mean and unit variance over features.
        mean = np.abs(np.mean(states[-1], -1)).max()
        std = np.std(states[-1], -1)
        if position == 'post':
            assert mean < 1e-4 and np.abs(std - 1).max() < 1e-3
        else:
            assert np.abs(std - 1).max() > 0.05
        outs[position] = _forward(model)(params, inputs, targets)
    assert np.abs(outs['pre'] - outs['post']).max() > 1e-2


def test_bfloat16_compute_keeps_float32_params_logits_and_gradients(setup):
    """`dtype='bfloat16'` (by name, as config.model.dtype gives it): the same
    parameter tree, float32 logits within bfloat16 rounding of the float32
    model's, float32 gradients close to its, and a bfloat16 decoding cache."""
    model, params, inputs, targets = setup
    half = Transformer(_small(dtype='bfloat16'))
    assert half.config.dtype is jnp.bfloat16
    with pytest.raises(ConfigError, match="model.dtype='float16' must be one of"):
        _small(dtype='float16')
    # A dtype object from Python is held to the same names.
    with pytest.raises(ConfigError, match='model.dtype=.*float16.* must be one of'):
        _small(dtype=jnp.float16)
    assert _small(dtype=jnp.bfloat16).dtype is jnp.bfloat16
    a = _forward(model)(params, inputs, targets)
    b = _forward(half)(params, inputs, targets)
    assert b.dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(a)))
    err = float(jnp.max(jnp.abs(a - b)))
    assert 0 < err < 0.05 * scale, (err, scale)  # Rounded, but not far off.

    def loss(m):
        def f(p):
            logits = m.apply(p, inputs, targets, train=False)
            return -jnp.mean(jax.nn.log_softmax(logits)[..., 0])

        return jax.jit(jax.grad(f))(params)

    ga, gb = loss(model), loss(half)
    assert {x.dtype for x in jax.tree.leaves(gb)} == {jnp.dtype(jnp.float32)}
    diff = optax.tree.norm(jax.tree.map(jnp.subtract, gb, ga))
    assert 0 < diff < 0.05 * optax.tree.norm(ga), (diff, optax.tree.norm(ga))
    cache = half.apply(params, 4, 10, method=Transformer.init_cache)
    assert {x.dtype for x in jax.tree.leaves(cache)} == {jnp.dtype(jnp.bfloat16)}
    _check_greedy(half, params, inputs, 8)
    # The output layer multiplies in float32 (with bfloat16 products the
    # log-probabilities were off by up to 0.05): a bfloat16 state's logits
    # are the float32 product, with the shared table and with its own.
    h = jax.random.normal(jax.random.key(3), (2, 3, 32)).astype(jnp.bfloat16)
    for shared in (True, False):
        m = Transformer(_small(dtype='bfloat16', share_embeddings=shared))
        p = jax.jit(functools.partial(m.init, train=False))(
            jax.random.key(1), inputs, targets
        )
        table = output_table(m.config, p['params'])
        got = jax.jit(functools.partial(m.apply, method=Transformer.logits))(p, h)
        want = jnp.einsum('bld,vd->blv', h.astype(jnp.float32), table)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_decoding_past_the_cache_or_the_positions_is_refused():
    """JAX clamps an out-of-range index to the last slot, silently: the
    cache's length and a concrete index are checked instead."""
    config = make_transformer_config('tiny', vocab_size=12, max_len=8)
    model = Transformer(config)
    with pytest.raises(
        ValueError, match=r'init_cache: max_len=9 must be in 1..config.max_len \(8\)'
    ):
        model.init_cache(2, 9)
    x = jnp.ones((2, 3), jnp.int32)
    params = model.init(jax.random.key(0), x, x, train=False)
    cache = model.apply(params, 2, 4, method=Transformer.init_cache)
    encoded = model.apply(params, x, method=Transformer.encode)
    step = lambda i: model.apply(
        params, encoded, x, x[:, 0], i, cache, method=Transformer.decode_step
    )
    step(3)  # The last slot.
    with pytest.raises(
        ValueError, match=r'index=4 is outside the cache of 4 positions'
    ):
        step(4)
