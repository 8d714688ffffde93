"""Loss-weight schedules, learning-rate schedules and make_optimizer."""

import math
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxdistill import optim, schedules
from jaxdistill.errors import ConfigError

# (spec, {step: expected value}); expected values computed by hand.
CASES = [
    (0.3, {0: 0.3, 10**6: 0.3}),
    (
        {'kind': 'switch', 'value': 1.0, 'step': 1500},
        {0: 1.0, 1499: 1.0, 1500: 0.0, 9999: 0.0},
    ),
    (
        {'kind': 'burn_in', 'value': 2.0, 'start': 100},
        {0: 0.0, 99: 0.0, 100: 2.0, 5000: 2.0},
    ),
    (
        {'kind': 'linear', 'init': 1.0, 'end': 0.0, 'steps': 10, 'start': 5},
        {0: 1.0, 5: 1.0, 10: 0.5, 13: 0.2, 15: 0.0, 100: 0.0},
    ),
    (
        {'kind': 'cosine', 'init': 1.0, 'end': 0.0, 'steps': 10},
        {0: 1.0, 2: 0.5 * (1 + math.cos(0.2 * math.pi)), 5: 0.5, 10: 0.0, 50: 0.0},
    ),
    (
        {'kind': 'cosine', 'init': 0.0, 'end': 2.0, 'steps': 4, 'start': 2},
        {0: 0.0, 2: 0.0, 4: 1.0, 6: 2.0},
    ),
    (
        {'kind': 'exponential', 'init': 1.0, 'rate': 0.5, 'steps_per_decay': 10},
        {0: 1.0, 5: 2**-0.5, 10: 0.5, 20: 0.25, 18: 0.5**1.8},
    ),
    (
        {
            'kind': 'exponential',
            'init': 1.0,
            'rate': 0.5,
            'steps_per_decay': 10,
            'end': 0.3,
        },
        {10: 0.5, 20: 0.3, 1000: 0.3},
    ),
    (
        {'kind': 'diminish', 'init': 0.95, 'steps_per_epoch': 100},
        {0: 0.95, 99: 0.95, 100: 0.9025, 250: 0.95**4, 300: 0.95**8},
    ),
    ({'kind': 'diminish', 'steps_per_epoch': 1}, {0: 0.95, 2: 0.95**4}),
    (
        {'kind': 'piecewise', 'boundaries': [10, 20], 'values': [1.0, 0.5, 0.0]},
        {0: 1.0, 9: 1.0, 10: 0.5, 19: 0.5, 20: 0.0, 10**5: 0.0},
    ),
]


@pytest.mark.parametrize('spec,expected', CASES)
def test_schedule_values_eager_and_jitted(spec, expected):
    sched = schedules.from_config(spec)
    steps = np.array(sorted(expected), np.int32)
    want = np.array([expected[s] for s in sorted(expected)])
    eager = np.array([sched(int(s)) for s in steps])
    np.testing.assert_allclose(eager, want, rtol=1e-5, atol=1e-6)
    traced = jax.jit(jax.vmap(sched))(jnp.asarray(steps))  # traced step
    np.testing.assert_allclose(traced, want, rtol=1e-5, atol=1e-6)
    assert sched(jnp.int32(3)).dtype == jnp.float32
    assert sched(jnp.int32(3)).shape == ()


def test_factories_equal_from_config_and_configdict():
    spec = ml_collections.ConfigDict({'kind': 'switch', 'value': 0.5, 'step': 7})
    sched = schedules.from_config(spec)
    assert float(sched(6)) == 0.5 and float(sched(7)) == 0.0
    assert float(schedules.switch(0.5, 7)(6)) == 0.5
    assert float(schedules.diminish(0.9, steps_per_epoch=2)(2)) == pytest.approx(0.81)
    f = lambda step: step * 2.0
    assert schedules.from_config(f) is f


@pytest.mark.parametrize(
    'spec,fragments',
    [
        ({'kind': 'sqaure', 'value': 1.0}, ['sqaure', 'switch', 'diminish', 'burn_in']),
        ({'value': 1.0}, ['kind', 'missing']),
        ({'kind': 'switch', 'value': 1.0}, ['method.weight.step', 'missing']),
        ({'kind': 'constant', 'value': 1.0, 'valeu': 2}, ['valeu', 'unknown']),
        ({'kind': 'diminish', 'init': 0.9}, ['steps_per_epoch']),
        (
            {'kind': 'diminish', 'init': 1.5, 'steps_per_epoch': 10},
            ['init=1.5 must be in [0, 1]', 'method.weight'],
        ),
        # A quoted number failed deep inside the traced step.
        (
            {'kind': 'linear', 'init': '3', 'end': 1, 'steps': 10},
            ["method.weight.init='3' must be a number"],
        ),
        (
            {'kind': 'piecewise', 'boundaries': [1], 'values': [1, 'x']},
            ['method.weight.values=', 'must be a list of numbers'],
        ),
        ({'kind': 'piecewise', 'boundaries': [1, 2], 'values': [1.0]}, ['piecewise']),
        ('fast', ['number']),
    ],
)
def test_from_config_errors(spec, fragments):
    with pytest.raises(ConfigError) as info:
        schedules.from_config(spec, name='method.weight')
    assert isinstance(info.value, KeyError)
    for fragment in fragments:
        assert fragment in str(info.value)


def _brute_force_zero_after(spec, threshold, horizon):
    sched = schedules.from_config(spec)
    values = np.abs(np.array(jax.vmap(sched)(jnp.arange(horizon))))
    bad = np.nonzero(values > threshold)[0]
    return 0 if not len(bad) else int(bad[-1]) + 1


@pytest.mark.parametrize(
    'spec,threshold,want',
    [
        ({'kind': 'switch', 'value': 1.0, 'step': 1500}, 0.0, 1500),
        ({'kind': 'switch', 'value': 0.0, 'step': 1500}, 0.0, 0),
        (0.0, 0.0, 0),
        (0.5, 0.0, None),
        ({'kind': 'burn_in', 'value': 1.0, 'start': 10}, 0.0, None),
        ({'kind': 'linear', 'init': 1.0, 'end': 0.0, 'steps': 10, 'start': 5}, 0.0, 15),
        (
            {'kind': 'linear', 'init': 1.0, 'end': 0.0, 'steps': 10, 'start': 5},
            0.25,
            13,
        ),
        ({'kind': 'linear', 'init': 1.0, 'end': 0.1, 'steps': 10}, 0.0, None),
        ({'kind': 'cosine', 'init': 1.0, 'end': 0.0, 'steps': 10}, 0.0, 10),
        (
            {'kind': 'exponential', 'init': 1.0, 'rate': 0.5, 'steps_per_decay': 10},
            0.3,
            18,
        ),
        (
            {'kind': 'exponential', 'init': 1.0, 'rate': 0.5, 'steps_per_decay': 10},
            0.0,
            None,
        ),
        (
            {
                'kind': 'exponential',
                'init': 1.0,
                'rate': 0.5,
                'steps_per_decay': 10,
                'end': 0.5,
            },
            0.3,
            None,
        ),
        (
            {'kind': 'exponential', 'init': 1.0, 'rate': 2.0, 'steps_per_decay': 10},
            0.3,
            None,
        ),
        # 0.95^(2^e) <= 1e-3 needs 2^e >= ln(1e-3)/ln(0.95) = 134.7, so e = 8.
        ({'kind': 'diminish', 'init': 0.95, 'steps_per_epoch': 100}, 1e-3, 800),
        ({'kind': 'diminish', 'init': 0.95, 'steps_per_epoch': 100}, 0.0, None),
        (
            {'kind': 'piecewise', 'boundaries': [10, 20], 'values': [1.0, 0.0, 0.0]},
            0.0,
            10,
        ),
        (
            {'kind': 'piecewise', 'boundaries': [10, 20], 'values': [1.0, 0.0, 1.0]},
            0.0,
            None,
        ),
    ],
)
def test_is_zero_after(spec, threshold, want):
    got = schedules.is_zero_after(spec, threshold=threshold)
    assert got == want
    if want is not None:
        assert _brute_force_zero_after(spec, threshold, want + 200) == want


def test_is_zero_after_callable_is_unknown():
    assert schedules.is_zero_after(lambda step: 0.0) is None


@pytest.mark.parametrize(
    'spec',
    [
        0.3,
        {'kind': 'switch', 'value': 0.7, 'step': 5},
        {'kind': 'burn_in', 'value': 2.0, 'start': 5},
        {'kind': 'linear', 'init': 0.2, 'end': 0.9, 'steps': 10, 'start': 3},
        {'kind': 'cosine', 'init': 1.0, 'end': 0.1, 'steps': 10},
        {'kind': 'exponential', 'init': 1.0, 'rate': 0.5, 'steps_per_decay': 2},
        {'kind': 'diminish', 'steps_per_epoch': 3},
        {'kind': 'piecewise', 'boundaries': [4, 8], 'values': [0.5, 3.0, 1.0]},
    ],
)
def test_values_bound_every_step(spec):
    """The range check's values bound what the schedule really takes."""
    got = schedules.values(spec)
    sched = schedules.from_config(spec)
    taken = np.array([float(sched(step)) for step in range(60)])
    assert taken.min() >= min(got) - 1e-6 and taken.max() <= max(got) + 1e-6
    schedules.check_range(spec, name='w', low=min(got), high=max(got))


def test_check_range_names_key_and_value():
    with pytest.raises(
        ConfigError, match=r'method.alpha must be >= 0 and <= 1; .* 1.5'
    ):
        schedules.check_range(1.5, name='method.alpha', low=0.0, high=1.0)
    # A switch ends at 0: not a valid temperature.
    with pytest.raises(ConfigError, match=r'method.temperature must be > 0; .* 0'):
        schedules.check_range(
            {'kind': 'switch', 'value': 2.0, 'step': 9},
            name='method.temperature',
            low=0.0,
            low_open=True,
        )
    with pytest.raises(ConfigError, match='finite'):
        schedules.check_range(float('nan'), name='w')
    linear = {'kind': 'linear', 'init': 0.1, 'end': 2.0, 'steps': 10}
    with pytest.raises(ConfigError, match='2'):
        schedules.check_range(linear, name='method.alpha', low=0.0, high=1.0)
    schedules.check_range(lambda step: -1.0, name='w', low=0.0)  # Unknowable.


def _opt_cfg(**kw):
    cfg = ml_collections.ConfigDict(
        {
            'name': 'adamw',
            'learning_rate': 1.0,
            'schedule': 'constant',
            'warmup_steps': 0,
            'total_steps': 0,
            'end_learning_rate_factor': 0.0,
            'b1': 0.9,
            'b2': 0.98,
            'eps': 1e-9,
            'weight_decay': 0.0,
            'grad_clip_norm': 0.0,
        }
    )
    cfg.update(kw)
    return cfg


def test_learning_rate_inverse_sqrt():
    lr = schedules.learning_rate(
        _opt_cfg(learning_rate=1e-3, schedule='inverse_sqrt', warmup_steps=100)
    )
    jitted = jax.jit(lr)
    for step, want in [(0, 0.0), (50, 5e-4), (100, 1e-3), (400, 5e-4), (2500, 2e-4)]:
        assert float(lr(step)) == pytest.approx(want, rel=1e-5, abs=1e-9)
        assert float(jitted(jnp.int32(step))) == pytest.approx(want, rel=1e-5, abs=1e-9)
    assert int(np.argmax(jax.vmap(lr)(jnp.arange(1000)))) == 100


@pytest.mark.parametrize('kind,mid', [('cosine', 0.55), ('linear', 0.55)])
def test_learning_rate_warmup_then_decay(kind, mid):
    lr = jax.jit(
        schedules.learning_rate(
            _opt_cfg(
                schedule=kind,
                warmup_steps=10,
                total_steps=110,
                end_learning_rate_factor=0.1,
            )
        )
    )
    for step, want in [
        (0, 0.0),
        (5, 0.5),
        (10, 1.0),
        (60, mid),
        (110, 0.1),
        (500, 0.1),
    ]:
        assert float(lr(jnp.int32(step))) == pytest.approx(want, abs=1e-6)
    # cosine and linear differ off the midpoint: cosine stays higher early.
    value = float(lr(jnp.int32(35)))
    want = (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25))
        if kind == 'cosine'
        else 1.0 - 0.9 * 0.25
    )
    assert value == pytest.approx(want, abs=1e-6)


def test_learning_rate_constant_and_errors():
    lr = schedules.learning_rate(_opt_cfg(learning_rate=2.0, warmup_steps=4))
    assert [float(lr(s)) for s in (0, 2, 4, 100)] == [0.0, 1.0, 2.0, 2.0]
    assert float(schedules.learning_rate(_opt_cfg())(0)) == 1.0
    with pytest.raises(ConfigError, match='optimizer.schedule'):
        schedules.learning_rate(_opt_cfg(schedule='rsqrt'))
    with pytest.raises(ConfigError, match='optimizer.total_steps'):
        schedules.learning_rate(_opt_cfg(schedule='cosine', total_steps=0))
    with pytest.raises(ConfigError, match='optimizer.warmup_steps'):
        schedules.learning_rate(_opt_cfg(schedule='inverse_sqrt'))
    # A negative end factor would end training with gradient ascent.
    with pytest.raises(
        ConfigError, match=r'end_learning_rate_factor=-1.0 must be .* \[0, 1\]'
    ):
        schedules.learning_rate(
            _opt_cfg(schedule='cosine', total_steps=10, end_learning_rate_factor=-1.0)
        )
    with pytest.raises(ConfigError, match=r"only used by the 'cosine' and 'linear'"):
        schedules.learning_rate(_opt_cfg(end_learning_rate_factor=0.1))


PARAMS = {
    'dense': {'kernel': jnp.full((3, 4), 2.0), 'bias': jnp.full((4,), 2.0)},
    'norm': {'scale': jnp.full((4,), 2.0)},
}


def test_adamw_update_and_weight_decay_mask():
    lr, wd = 0.1, 0.5
    tx = optim.make_optimizer(_opt_cfg(learning_rate=lr, weight_decay=wd))
    state = tx.init(PARAMS)
    # Zero gradients: Adam's part is 0, so only (masked) decay remains.
    zeros = jax.tree.map(jnp.zeros_like, PARAMS)
    updates, _ = jax.jit(tx.update)(zeros, state, PARAMS)
    np.testing.assert_allclose(updates['dense']['kernel'], -lr * wd * 2.0, rtol=1e-6)
    np.testing.assert_array_equal(updates['dense']['bias'], 0.0)
    np.testing.assert_array_equal(updates['norm']['scale'], 0.0)
    # First Adam step is lr · sign(g) (bias-corrected m/sqrt(v) = ±1).
    grads = jax.tree.map(lambda p: jnp.full_like(p, -3.0), PARAMS)
    updates, state = jax.jit(tx.update)(grads, state, PARAMS)
    np.testing.assert_allclose(
        updates['dense']['kernel'], lr * (1 - wd * 2.0), rtol=1e-5
    )
    np.testing.assert_allclose(updates['norm']['scale'], lr, rtol=1e-5)
    assert float(state.hyperparams['b2']) == pytest.approx(0.98)


def test_current_learning_rate_tracks_schedule():
    tx = optim.make_optimizer(_opt_cfg(name='adam', warmup_steps=10))
    state = tx.init(PARAMS)
    assert float(optim.current_learning_rate(state)) == 0.0
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    update = jax.jit(tx.update)
    lrs = []
    for _ in range(3):
        _, state = update(grads, state, PARAMS)
        lrs.append(float(optim.current_learning_rate(state)))
    # The state holds the rate of the latest update: steps 0, 1, 2.
    np.testing.assert_allclose(lrs, [0.0, 0.1, 0.2], atol=1e-7)
    nested = (optax.EmptyState(), state)
    assert float(optim.current_learning_rate(nested)) == pytest.approx(0.2)


@pytest.mark.parametrize('name', ['sgd', 'adamw'])
def test_grad_clip_bounds_update(name):
    huge = jax.tree.map(lambda p: jnp.full_like(p, 1e6), PARAMS)
    clipped = optim.make_optimizer(_opt_cfg(name=name, grad_clip_norm=1.0))
    plain = optim.make_optimizer(_opt_cfg(name=name))
    up_c, state = jax.jit(clipped.update)(huge, clipped.init(PARAMS), PARAMS)
    up_p, _ = jax.jit(plain.update)(huge, plain.init(PARAMS), PARAMS)
    if name == 'sgd':  # update = -lr · clipped grad: global norm exactly 1.
        assert float(optax.global_norm(up_c)) == pytest.approx(1.0, rel=1e-5)
        assert float(optax.global_norm(up_p)) == pytest.approx(1e6 * 20**0.5, rel=1e-5)
        np.testing.assert_allclose(up_c['dense']['bias'], -(20**-0.5), rtol=1e-5)
    else:  # Adam's first step is scale-free; its 2nd moment sees the clip:
        # nu = (1 - b2) · g², with g = 1/sqrt(20) after clipping 20 equal entries.
        nu = optax.tree_utils.tree_get(state, 'nu')
        np.testing.assert_allclose(nu['dense']['kernel'], 0.02 / 20, rtol=1e-4)
        assert np.all(np.isfinite(up_c['dense']['kernel']))


def test_stacked_clipping_scales_each_replica_by_its_own_norm():
    # Replica 0's gradient has norm 5 (clipped to 1), replica 1's norm 0.5
    # (left as it is): a global norm would scale replica 1 down too.
    grads = {
        'w': jnp.array([[3.0, 0.0], [0.3, 0.0]]),
        'b': jnp.array([[4.0], [0.0]]),
        'c': jnp.array([0.0, 0.4]),
    }
    clipped, _ = optim.clip_by_replica_norm(1.0).update(grads, optax.EmptyState())
    np.testing.assert_allclose(clipped['w'], [[0.6, 0.0], [0.3, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(clipped['b'], [[0.8], [0.0]], rtol=1e-6)
    np.testing.assert_allclose(clipped['c'], [0.0, 0.4], rtol=1e-6)


def test_sgd_momentum_and_config_errors():
    tx = optim.make_optimizer(_opt_cfg(name='sgd', learning_rate=0.5, momentum=0.9))
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    state = tx.init(PARAMS)
    _, state = tx.update(grads, state, PARAMS)
    up, _ = tx.update(grads, state, PARAMS)
    np.testing.assert_allclose(up['norm']['scale'], -0.5 * 1.9, rtol=1e-6)
    with pytest.raises(ConfigError) as info:
        optim.make_optimizer(_opt_cfg(name='lamb'))
    assert 'optimizer.name' in str(info.value) and 'adamw' in str(info.value)
    with pytest.raises(ConfigError, match='optimizer.weight_decay'):
        optim.make_optimizer(_opt_cfg(name='adam', weight_decay=0.1))
    # Out of range, each would make the first update NaN or turn descent
    # around; named instead.
    for bad, message in [
        ({'b1': 1.0}, r'optimizer.b1=1.0 must be a number >= 0.0 and < 1.0'),
        ({'b2': 1.0}, r'optimizer.b2=1.0 must be a number >= 0.0 and < 1.0'),
        ({'eps': 0.0}, r'optimizer.eps=0.0 must be a number > 0.0\.'),
        (
            {'weight_decay': -0.1},
            r'optimizer.weight_decay=-0.1 must be a number >= 0.0',
        ),
        ({'name': 'sgd', 'momentum': 1.5}, r'optimizer.momentum=1.5 must be .* < 1.0'),
    ]:
        with pytest.raises(ConfigError, match=message):
            optim.make_optimizer(_opt_cfg(**bad))


def test_sgd_weight_decay_is_coupled_l2_before_momentum():
    lr, wd, mom = 0.5, 0.1, 0.9
    tx = optim.make_optimizer(
        _opt_cfg(name='sgd', learning_rate=lr, momentum=mom, weight_decay=wd)
    )
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    state = tx.init(PARAMS)
    up1, state = tx.update(grads, state, PARAMS)
    # Kernels (ndim 2): g + wd · p = 1.2; bias and scale (ndim 1): g = 1.
    np.testing.assert_allclose(up1['dense']['kernel'], -lr * 1.2, rtol=1e-6)
    np.testing.assert_allclose(up1['dense']['bias'], -lr * 1.0, rtol=1e-6)
    params = optax.apply_updates(PARAMS, up1)
    up2, _ = tx.update(grads, state, params)
    # Momentum carries the decayed gradient: 1.2 · 0.9 + (1 + wd · p_1).
    p1 = 2.0 - lr * 1.2
    np.testing.assert_allclose(
        up2['dense']['kernel'], -lr * (mom * 1.2 + 1 + wd * p1), rtol=1e-6
    )
    np.testing.assert_allclose(up2['norm']['scale'], -lr * (mom + 1), rtol=1e-6)


def test_ema_decay_keeps_a_moving_average_of_the_parameters():
    decay = 0.9
    tx = optim.make_optimizer(_opt_cfg(name='sgd', learning_rate=0.5, ema_decay=decay))
    plain = optim.make_optimizer(_opt_cfg(name='sgd', learning_rate=0.5))
    state, plain_state = tx.init(PARAMS), plain.init(PARAMS)
    params, want = PARAMS, PARAMS
    for t in range(4):
        grads = jax.tree.map(lambda p: jnp.full_like(p, float(t + 1)), PARAMS)
        updates, state = jax.jit(tx.update)(grads, state, params)
        plain_updates, plain_state = plain.update(grads, plain_state, params)
        # The updates are the optimizer's own: the average only watches.
        jax.tree.map(np.testing.assert_array_equal, updates, plain_updates)
        params = optax.apply_updates(params, updates)
        d = min(decay, (1 + t) / (10 + t))
        want = jax.tree.map(lambda e, p: d * e + (1 - d) * p, want, params)
    got = optim.ema_params(state)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, want)
    # What evaluation reads: the average, from a live state or from one read
    # back from a checkpoint as dicts; the parameters where there is none.
    live = types.SimpleNamespace(params=params, opt_state=state)
    assert optim.model_params(live) is got
    read_back = {
        'params': params,
        'opt_state': [state[0], {'count': state[1].count, 'params_ema': want}],
    }
    assert optim.model_params(read_back) is want
    assert optim.model_params({'params': params, 'opt_state': plain_state}) is params
    for bad in (1.0, -0.1, 'high', True):
        with pytest.raises(
            ConfigError, match='optimizer.ema_decay=.* must be a number'
        ):
            optim.make_optimizer(_opt_cfg(ema_decay=bad))


def test_decay_mask_leaves_out_every_bias_and_norm_scale():
    """Attention's q/k/v biases are [H, Dh]: 2-D, but biases, so not decayed."""
    params = {
        'query': {'kernel': jnp.ones((8, 2, 4)), 'bias': jnp.ones((2, 4))},
        'embed': {'embedding': jnp.ones((10, 8))},
        'norm': {'scale': jnp.ones((8,)), 'bias': jnp.ones((8,))},
    }
    want = {
        'query': {'kernel': True, 'bias': False},
        'embed': {'embedding': True},
        'norm': {'scale': False, 'bias': False},
    }
    assert optim.decay_mask(params) == want
    stacked = jax.tree.map(lambda p: jnp.stack([p, p]), params)  # [N, ...]
    assert optim.decay_mask(stacked, stacked=True) == want
    tx = optim.make_optimizer(_opt_cfg(learning_rate=0.1, weight_decay=0.5))
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
    np.testing.assert_array_equal(updates['query']['bias'], 0.0)
    np.testing.assert_allclose(updates['query']['kernel'], -0.05, rtol=1e-6)


def test_linear_schedule_refuses_zero_steps():
    """optax holds `init` for ever with transition_steps <= 0, while
    is_zero_after would call the weight zero from `start`."""
    with pytest.raises(ConfigError, match=r'linear schedule needs steps > 0, got 0'):
        schedules.from_config(
            {'kind': 'linear', 'init': 1.0, 'end': 0.0, 'steps': 0, 'start': 100}
        )


def test_a_growing_exponential_needs_a_cap_within_the_bounds():
    """Its values are init, init·rate, ...: without a cap it passed any
    upper bound (self-distillation's alpha <= 1 trained with alpha > 1)."""
    grow = {'kind': 'exponential', 'init': 0.5, 'rate': 3.0, 'steps_per_decay': 1}
    with pytest.raises(
        ConfigError, match=r'method.alpha: an exponential with rate 3 > 1 grows'
    ):
        schedules.check_range(grow, name='method.alpha', low=0.0, high=1.0)
    with pytest.raises(ConfigError, match=r'end <= 1 as a cap'):
        schedules.check_range(
            {**grow, 'end': 1.5}, name='method.alpha', low=0.0, high=1.0
        )
    schedules.check_range({**grow, 'end': 0.9}, name='method.alpha', low=0.0, high=1.0)
    schedules.check_range(grow, name='method.weight', low=0.0)  # No upper bound.
