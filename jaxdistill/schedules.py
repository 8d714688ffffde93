"""Loss-weight and learning-rate schedules: optax-compatible `step -> value`.

Every factory returns an `optax.Schedule`: a pure function of the (possibly
traced) integer step returning a float32 scalar, so it works inside `jax.jit`.
Configs name a schedule with `from_config`:

    weight = 1.0                                        # constant
    weight = {'kind': 'switch', 'value': 1.0, 'step': 1500}
    weight = {'kind': 'diminish', 'init': 0.95, 'steps_per_epoch': 500}
"""

import inspect
import math
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
import optax

from jaxdistill.errors import ConfigError


def _f32(x):
    return jnp.asarray(x, jnp.float32)


def constant(value) -> optax.Schedule:
    """`value` at every step."""
    return lambda step: _f32(value)


def switch(value, step) -> optax.Schedule:
    """`value` before `step`, 0 from `step` on (MT2ST's Switch)."""
    boundary = step
    return lambda step: _f32(jnp.where(jnp.asarray(step) < boundary, value, 0.0))


def burn_in(value, start) -> optax.Schedule:
    """0 before `start`, `value` from `start` on (codistillation burn-in)."""
    return lambda step: _f32(jnp.where(jnp.asarray(step) >= start, value, 0.0))


def linear(init, end, steps, start=0) -> optax.Schedule:
    """`init` until `start`, linear to `end` at `start + steps`, then `end`."""
    if steps <= 0:
        # optax.linear_schedule would hold `init` for ever.
        raise ValueError(
            f'linear schedule needs steps > 0, got {steps} (a switch at a '
            "step is kind 'switch')."
        )
    sched = optax.linear_schedule(init, end, steps, transition_begin=start)
    return lambda step: _f32(sched(step))


def cosine(init, end, steps, start=0) -> optax.Schedule:
    """`init` until `start`, half-cosine to `end` at `start + steps`, then `end`.

    Unlike `optax.cosine_decay_schedule` this also ramps up (init < end) and
    accepts init == 0.
    """
    if steps <= 0:
        raise ValueError(f'cosine schedule needs steps > 0, got {steps}.')

    def sched(step):
        t = jnp.clip((jnp.asarray(step, jnp.float32) - start) / steps, 0.0, 1.0)
        return _f32(end + (init - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * t)))

    return sched


def exponential(init, rate, steps_per_decay, end=0.0) -> optax.Schedule:
    """init · rate^(step / steps_per_decay), smooth (not staircase).

    For rate < 1, `end` is a floor; for rate > 1, `end` is a cap when
    end > init (the default end=0.0 means no cap).
    """
    if steps_per_decay <= 0 or rate <= 0:
        raise ValueError(
            f'exponential needs steps_per_decay > 0 and rate > 0, '
            f'got {steps_per_decay} and {rate}.'
        )

    def sched(step):
        exponent = jnp.asarray(step, jnp.float32) / steps_per_decay
        value = init * jnp.power(jnp.float32(rate), exponent)
        if rate < 1:
            value = jnp.maximum(value, end)
        elif rate > 1 and end > init:
            value = jnp.minimum(value, end)
        return _f32(value)

    return sched


def diminish(init=0.95, *, steps_per_epoch) -> optax.Schedule:
    """MT2ST's Diminish: w = init^(2^epoch), epoch = step // steps_per_epoch.

    The weight is squared at every epoch boundary: 0.95, 0.9025, 0.8145, ...
    """
    if steps_per_epoch <= 0:
        raise ValueError(f'steps_per_epoch must be > 0, got {steps_per_epoch}.')
    if not 0 <= init <= 1:  # Above 1, squaring grows it to inf in ~8 epochs.
        raise ValueError(
            f'init={init} must be in [0, 1]: Diminish squares the weight every '
            'epoch, which shrinks it only from there.'
        )

    def sched(step):
        epoch = (jnp.asarray(step) // steps_per_epoch).astype(jnp.float32)
        return _f32(jnp.power(jnp.float32(init), jnp.exp2(epoch)))

    return sched


def piecewise(boundaries, values) -> optax.Schedule:
    """values[i] for boundaries[i-1] <= step < boundaries[i].

    Args:
      boundaries: increasing ints, length n.
      values: n + 1 numbers; values[0] before boundaries[0], values[-1] after
        boundaries[-1].
    """
    boundaries, values = list(boundaries), list(values)
    if len(values) != len(boundaries) + 1:
        raise ValueError(
            f'piecewise needs len(values) == len(boundaries) + 1, '
            f'got {len(values)} values, {len(boundaries)} boundaries.'
        )
    if any(b >= c for b, c in zip(boundaries, boundaries[1:])):
        raise ValueError(f'piecewise boundaries must increase: {boundaries}.')
    table = np.asarray(values, np.float32)
    bounds = np.asarray(boundaries, np.int64)

    def sched(step):
        index = jnp.sum(jnp.asarray(step) >= bounds) if len(bounds) else 0
        return _f32(jnp.asarray(table)[index])

    return sched


KINDS = {
    'constant': constant,
    'switch': switch,
    'burn_in': burn_in,
    'linear': linear,
    'cosine': cosine,
    'exponential': exponential,
    'diminish': diminish,
    'piecewise': piecewise,
}


def _is_number(x):
    return isinstance(x, (int, float, np.number)) and not isinstance(x, bool)


def _parse(spec, name):
    """Returns (kind, kwargs) with arguments checked against the factory."""
    if _is_number(spec):
        return 'constant', {'value': float(spec)}
    if not isinstance(spec, Mapping) and not hasattr(spec, 'to_dict'):
        raise ConfigError(
            f"{name}: a schedule is a number or a dict with 'kind', got {spec!r}."
        )
    spec = dict(spec.to_dict() if hasattr(spec, 'to_dict') else spec)
    kind = spec.pop('kind', None)
    if kind not in KINDS:
        what = 'is missing' if kind is None else f'{kind!r} is unknown'
        raise ConfigError(
            f'{name}.kind {what}; valid kinds: {", ".join(sorted(KINDS))}.'
        )
    params = inspect.signature(KINDS[kind]).parameters
    for arg in spec:
        if arg not in params:
            raise ConfigError(
                f'{name}.{arg}: unknown argument for schedule '
                f'{kind!r}; it takes {", ".join(params)}.'
            )
    for arg, p in params.items():
        if p.default is inspect.Parameter.empty and arg not in spec:
            raise ConfigError(
                f'{name}.{arg} is missing; schedule {kind!r} needs {arg}.'
            )
    # Every argument of every kind is a number (or, for piecewise, a list of
    # them); a quoted one ('3') would fail deep inside the traced step.
    for arg, value in spec.items():
        listed = arg in ('values', 'boundaries')
        items = value if listed and isinstance(value, (list, tuple)) else [value]
        if (listed and items is not value) or not all(_is_number(v) for v in items):
            raise ConfigError(
                f'{name}.{arg}={value!r} must be '
                + ('a list of numbers' if listed else 'a number')
                + f' (schedule {kind!r}).'
            )
    return kind, spec


def from_config(
    spec, *, name='schedule', low=None, high=None, low_open=False
) -> optax.Schedule:
    """Builds a schedule from a number, a dict/ConfigDict with `kind`, or a callable.

    Args:
      spec: e.g. 0.5, or {'kind': 'switch', 'value': 1.0, 'step': 1500}. A
        callable is returned unchanged.
      name: the config path, used in error messages (e.g. 'method.weight').
      low, high, low_open: bounds on the values the schedule takes (see
        `check_range`); None = unbounded.
    Raises:
      ConfigError: unknown kind (lists valid kinds), missing or unknown
        argument (names it), invalid argument values, or values out of bounds.
    """
    if callable(spec):
        return spec
    check_range(spec, name=name, low=low, high=high, low_open=low_open)
    kind, kwargs = _parse(spec, name)
    try:
        return KINDS[kind](**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f'{name}: invalid {kind!r} schedule: {e}') from e


def values(spec, *, name='schedule') -> list[float]:
    """The values a schedule spec takes or moves between, for range checks.

    A constant's value; a switch's or burn-in's value and 0; the ends of
    linear, cosine, exponential (its `end`, 0 by default) and diminish (which
    falls from `init` towards 0); piecewise's values. Exact bounds for every
    kind but a growing exponential (rate > 1), whose growth is not bounded
    here. Callables: [] (nothing is known about them).
    """
    if callable(spec):
        return []
    kind, kw = _parse(spec, name)
    defaults = {
        'switch': [0.0],
        'burn_in': [0.0],
        'exponential': [float(kw.get('end', 0.0))],  # And its init, given.
        'diminish': [float(kw.get('init', 0.95)), 0.0],
    }.get(kind, [])
    given = [kw[k] for k in ('value', 'init', 'end') if k in kw]
    given += list(kw.get('values', ()))
    return [float(v) for v in given if _is_number(v)] + defaults


def check_range(spec, *, name, low=None, high=None, low_open=False):
    """Raises ConfigError naming `name` unless every value of `spec` (see
    `values`) is finite and within [low, high] ((low, high] if `low_open`).
    A growing exponential must have its cap (`end` > `init`) within them,
    or it would pass any bound."""
    if not callable(spec):
        kind, kw = _parse(spec, name)
        if kind == 'exponential' and float(kw['rate']) > 1:
            init, end = float(kw['init']), float(kw.get('end', 0.0))
            if high is not None and not init < end <= high:
                raise ConfigError(
                    f'{name}: an exponential with rate {kw["rate"]:g} > 1 grows '
                    f'without bound; give it end <= {high:g} as a cap (above '
                    f'init={init:g}).'
                )
    for v in values(spec, name=name):
        below = low is not None and (v <= low if low_open else v < low)
        if below or (high is not None and v > high) or not math.isfinite(v):
            lo = '' if low is None else ('> ' if low_open else '>= ') + f'{low:g}'
            hi = '' if high is None else f'<= {high:g}'
            bounds = ' and '.join(filter(None, [lo, hi])) or 'finite'
            raise ConfigError(f'{name} must be {bounds}; it takes the value {v:g}.')


def _first_step(sched, horizon, ok):
    """Smallest integer s in [0, horizon] with ok(sched(s)); `ok` must hold on an
    upper set of steps and at `horizon`."""
    lo, hi = 0, int(horizon)
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(float(sched(mid))):
            hi = mid
        else:
            lo = mid + 1
    return lo


def is_zero_after(spec, *, threshold=0.0, name='schedule'):
    """First step from which the weight stays within ±`threshold`, else None.

    Lets a method skip an auxiliary computation once its weight is (nearly)
    zero. Exact for constant, switch, burn_in and piecewise; for the monotone
    kinds (linear, cosine, exponential, diminish) the step is found by bisection
    on the schedule's own float32 values. Exponential and diminish only
    approach 0, so they return None unless threshold > 0 (or they start at 0).
    Callables return None (nothing is provable about them).

    Args:
      spec: a schedule spec as accepted by `from_config`.
      threshold: weights with |w| <= threshold count as zero.
    Returns:
      int step, or None when the weight never provably reaches the threshold.
    """
    if callable(spec):
        return None
    kind, kw = _parse(spec, name)
    ok = lambda w: abs(w) <= threshold
    if kind in ('constant', 'burn_in'):
        return 0 if ok(kw['value']) else None
    if kind == 'switch':
        return 0 if ok(kw['value']) else int(kw['step'])
    if kind == 'piecewise':
        values, bounds = list(kw['values']), [0] + list(kw['boundaries'])
        i = len(values)
        while i > 0 and ok(values[i - 1]):
            i -= 1
        return None if i == len(values) else max(int(bounds[i]), 0)
    sched = from_config(spec, name=name)
    if kind in ('linear', 'cosine'):
        horizon = kw.get('start', 0) + kw['steps']
        return _first_step(sched, horizon, ok) if ok(kw['end']) else None
    if kind == 'diminish':
        init = float(kw.get('init', 0.95))
        if ok(init):
            return 0
        if not 0 < init < 1 or threshold <= 0:
            return None
        epochs = math.ceil(math.log2(math.log(threshold) / math.log(init)))
        horizon = (max(epochs, 0) + 1) * kw['steps_per_epoch']
        return _first_step(sched, horizon, ok)
    # exponential: monotone in |w|; decays towards max(end, 0) when rate < 1.
    init, rate = float(kw['init']), float(kw['rate'])
    at_zero = ok(float(sched(0)))
    if rate >= 1:  # constant, or growing away from 0 unless init == 0
        return 0 if at_zero and (rate == 1 or init == 0) else None
    if not ok(max(float(kw.get('end', 0.0)), 0.0)):
        return None
    if at_zero:
        return 0
    if threshold <= 0:
        return None
    decays = math.log(threshold / abs(init)) / math.log(rate)
    horizon = math.ceil(decays * kw['steps_per_decay']) + 1
    return _first_step(sched, horizon, ok)


def _get(cfg, key, default=None, required=False):
    value = cfg.get(key, default) if hasattr(cfg, 'get') else default
    if required and value is None:
        raise ConfigError(f'optimizer.{key} is missing.')
    return value


def learning_rate(cfg) -> optax.Schedule:
    """Learning-rate schedule from `config.optimizer`.

    Fields: `learning_rate` (peak), `schedule` in {'constant', 'inverse_sqrt',
    'cosine', 'linear'}, `warmup_steps` (linear warmup from 0 to peak; 0 = none),
    `total_steps` (cosine/linear: step at which decay ends),
    `end_learning_rate_factor` (cosine/linear final lr = factor · peak,
    default 0.0).

    inverse_sqrt is fairseq's: peak · step / warmup during warmup, then
    peak · sqrt(warmup / step); it requires warmup_steps > 0.
    """
    peak = float(_get(cfg, 'learning_rate', required=True))
    if not peak >= 0 or not math.isfinite(peak):
        raise ConfigError(f'optimizer.learning_rate must be >= 0, got {peak}.')
    kind = _get(cfg, 'schedule', 'constant')
    warmup = int(_get(cfg, 'warmup_steps', 0) or 0)
    if warmup < 0:
        raise ConfigError(f'optimizer.warmup_steps must be >= 0, got {warmup}.')
    valid = ('constant', 'inverse_sqrt', 'cosine', 'linear')
    if kind not in valid:
        raise ConfigError(
            f'optimizer.schedule {kind!r} is unknown; valid: {", ".join(valid)}.'
        )
    factor = _get(cfg, 'end_learning_rate_factor', 0.0) or 0.0
    if (
        isinstance(factor, bool)
        or not isinstance(factor, (int, float))
        or not 0 <= factor <= 1
    ):
        raise ConfigError(
            f'optimizer.end_learning_rate_factor={factor!r} must be a number in '
            '[0, 1]: the final learning rate as a fraction of the peak.'
        )
    if factor and kind not in ('cosine', 'linear'):
        raise ConfigError(
            f'optimizer.end_learning_rate_factor={factor} is only used by the '
            f"'cosine' and 'linear' schedules, not {kind!r}."
        )
    if kind == 'constant':
        if not warmup:
            return constant(peak)
        return lambda step: _f32(peak * jnp.minimum(1.0, step / warmup))
    if kind == 'inverse_sqrt':
        if not warmup:
            raise ConfigError(
                'optimizer.warmup_steps must be > 0 for the inverse_sqrt schedule.'
            )

        def inverse_sqrt(step):
            step = jnp.asarray(step, jnp.float32)
            decay = jnp.sqrt(warmup / jnp.maximum(step, warmup))
            return _f32(peak * jnp.minimum(1.0, step / warmup) * decay)

        return inverse_sqrt
    total = _get(cfg, 'total_steps')
    if total is None or int(total) <= warmup:
        raise ConfigError(
            f'optimizer.total_steps must be > warmup_steps '
            f'({warmup}) for the {kind} schedule, got {total}. The shipped '
            'configs set total_steps to num_train_steps: for a short run, '
            'lower optimizer.warmup_steps too.'
        )
    total = int(total)
    end = peak * float(factor)
    decay = (cosine if kind == 'cosine' else linear)(
        peak, end, total - warmup, start=warmup
    )
    if not warmup:
        return decay
    ramp = linear(0.0, peak, warmup)
    return lambda step: jnp.where(jnp.asarray(step) < warmup, ramp(step), decay(step))
