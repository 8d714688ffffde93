"""Optimizers built from `config.optimizer`.

    tx = make_optimizer(config.optimizer)
    opt_state = tx.init(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    lr = current_learning_rate(opt_state)   # for logging

The whole chain (clipping, then the optimizer) is wrapped in
`optax.inject_hyperparams`, so `opt_state.hyperparams['learning_rate']` holds
the learning rate used by the latest update (schedule(0) right after init).
"""

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxdistill import schedules
from jaxdistill.errors import ConfigError

NAMES = ('adamw', 'adam', 'sgd')


def decay_mask(params, *, stacked: bool = False):
    """True for params that get weight decay: weight matrices and tables.

    Excluded: every leaf named 'bias' (attention's q/k/v biases are [H, Dh],
    2-D) and LayerNorm/GroupNorm/BatchNorm scales, the leaves of ndim <= 1
    (ndim <= 2 where `stacked`: codistillation's leading replica axis).
    """
    floor = 2 if stacked else 1
    return jax.tree_util.tree_map_with_path(
        lambda path, p: p.ndim > floor and getattr(path[-1], 'key', None) != 'bias',
        params,
    )


def clip_by_replica_norm(max_norm: float) -> optax.GradientTransformation:
    """`clip_by_global_norm` for stacked replicas: each replica's own norm.

    Every leaf has a leading replica axis; replica r's gradients are scaled by
    min(1, max_norm / ||g_r||), so replicas never couple through clipping (and
    no gradient statistic crosses between replica groups).
    """

    def update(updates, state, params=None):
        del params
        sq = sum(
            jnp.sum(jnp.square(g), axis=tuple(range(1, g.ndim)))
            for g in jax.tree.leaves(updates)
        )
        scale = jnp.minimum(1.0, max_norm / jnp.maximum(jnp.sqrt(sq), 1e-30))
        return jax.tree.map(
            lambda g: g * scale.reshape((-1,) + (1,) * (g.ndim - 1)).astype(g.dtype),
            updates,
        ), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


class ParamsEmaState(NamedTuple):
    """`params_ema`'s state: the updates so far and the running average."""

    count: jax.Array
    params_ema: Any


def params_ema(decay: float) -> optax.GradientTransformation:
    """Keeps an exponential moving average of the parameters in the
    optimizer state (Polyak averaging); passes the updates through unchanged.

    Goes last in a chain: after update t (counting from 0) the average moves
    towards the new parameters p_t + u_t with weight 1 − d_t, where
    d_t = min(decay, (1 + t) / (10 + t)) (TensorFlow's ExponentialMovingAverage
    with `num_updates`), so the first updates are not drowned by the
    initialisation. The average is a params-shaped tree, so it is sharded
    and checkpointed like the parameters; `ema_params` finds it.
    """

    def init(params):
        return ParamsEmaState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.copy, params))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError(
                'params_ema needs the parameters: tx.update(g, s, params).'
            )
        t = state.count.astype(jnp.float32)
        d = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
        new = optax.apply_updates(params, updates)
        ema = jax.tree.map(
            lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype), state.params_ema, new
        )
        return updates, ParamsEmaState(state.count + 1, ema)

    return optax.GradientTransformation(init, update)


def ema_params(opt_state) -> Any | None:
    """The moving average of the parameters that `optimizer.ema_decay` keeps
    in `opt_state` (a live state, or one read back from a checkpoint as
    dicts), or None when the run keeps none."""
    found = []

    def visit(node):
        if isinstance(node, ParamsEmaState):
            found.append(node.params_ema)
            return True
        if isinstance(node, dict) and 'params_ema' in node and 'count' in node:
            found.append(node['params_ema'])
            return True
        return False

    jax.tree.leaves(opt_state, is_leaf=visit)
    return found[0] if found else None


def model_params(state, use_ema: bool = True) -> Any:
    """The parameters a run's models are: the moving average where the run
    keeps one (`optimizer.ema_decay`) and `use_ema` (`eval.use_ema`), else
    the trained parameters. What evaluation, `translate`, `extract`,
    checkpoint averaging and a teacher read. `state`: a TrainState, or a
    checkpoint's state read back as dicts.
    """
    if isinstance(state, dict):
        params, opt_state = state['params'], state.get('opt_state')
    else:
        params, opt_state = state.params, state.opt_state
    ema = ema_params(opt_state) if use_ema else None
    return params if ema is None else ema


def replica_norms(tree) -> jax.Array:
    """[N] global norm of each replica's slice of a stacked pytree."""
    return jnp.sqrt(
        sum(
            jnp.sum(jnp.square(g), axis=tuple(range(1, g.ndim)))
            for g in jax.tree.leaves(tree)
        )
    )


def _number(value, key: str, *, low=None, above=None, below=None) -> float:
    """`value` as a float; ConfigError naming `optimizer.KEY` unless it is a
    finite number >= low, > above and < below (those given)."""
    bounds = [
        f'>= {low}' if low is not None else '',
        f'> {above}' if above is not None else '',
        f'< {below}' if below is not None else '',
    ]
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (low is None or value >= low)
        and (above is None or value > above)
        and (below is None or value < below)
    )
    if not ok:
        raise ConfigError(
            f'optimizer.{key}={value!r} must be a number '
            + ' and '.join(b for b in bounds if b)
            + '.'
        )
    return float(value)


# The keys of `config.optimizer` that make_optimizer and
# schedules.learning_rate read (trainer.check_keys refuses others).
KEYS = frozenset(
    {
        'name',
        'learning_rate',
        'schedule',
        'warmup_steps',
        'total_steps',
        'end_learning_rate_factor',
        'b1',
        'b2',
        'eps',
        'weight_decay',
        'momentum',
        'grad_clip_norm',
        'ema_decay',
    }
)


def make_optimizer(cfg, *, stacked: bool = False) -> optax.GradientTransformation:
    """Builds the optimizer described by `config.optimizer`.

    With `stacked` (parameters with a leading replica axis, as in
    codistillation), clipping and the weight-decay mask act per replica.

    Fields: name ('adamw' | 'adam' | 'sgd'); learning_rate, schedule,
    warmup_steps, total_steps, end_learning_rate_factor (see
    `schedules.learning_rate`); b1=0.9, b2=0.98, eps=1e-9 (adam/adamw);
    weight_decay=0.0 (adamw: decoupled and multiplied by the learning rate as
    in optax.adamw; sgd: coupled L2, wd · param added to the gradient before
    momentum, as in the usual CIFAR/ImageNet SGD recipes; not for adam;
    skipped for params with ndim <= 1);
    momentum=0.0 (sgd only; 0 = plain SGD); grad_clip_norm=0.0 (> 0 clips the
    global gradient norm before the optimizer); ema_decay=0.0 (> 0 also keeps
    a moving average of the parameters, `params_ema`, which evaluation uses).

    Raises:
      ConfigError: unknown `optimizer.name`; a value out of its range (b1 and
        b2 in [0, 1), eps > 0, weight_decay >= 0, momentum in [0, 1)); or
        weight_decay set for 'adam' or momentum for anything but 'sgd'. (b1,
        b2 and eps are left unread by 'sgd': the base configs set them for
        every optimizer.)
    """
    get = lambda key, default: cfg.get(key, default)
    name = get('name', 'adamw')
    if name not in NAMES:
        raise ConfigError(
            f'optimizer.name {name!r} is unknown; valid names: {", ".join(NAMES)}.'
        )
    lr = schedules.learning_rate(cfg)
    clip = float(get('grad_clip_norm', 0.0) or 0.0)
    if clip < 0:
        raise ConfigError(f'optimizer.grad_clip_norm must be >= 0, got {clip}.')
    weight_decay = _number(get('weight_decay', 0.0) or 0.0, 'weight_decay', low=0.0)
    if weight_decay and name == 'adam':
        raise ConfigError(
            f'optimizer.weight_decay={weight_decay} is only used '
            "by 'adamw' and 'sgd', not 'adam'."
        )
    momentum = _number(get('momentum', 0.0) or 0.0, 'momentum', low=0.0, below=1.0)
    if momentum and name != 'sgd':
        raise ConfigError(f"optimizer.momentum is only used by 'sgd', not {name!r}.")
    ema = get('ema_decay', 0.0) or 0.0
    if isinstance(ema, bool) or not isinstance(ema, (int, float)) or not 0 <= ema < 1:
        raise ConfigError(
            f'optimizer.ema_decay={ema!r} must be a number in [0, 1) (0: no '
            'moving average; e.g. 0.999).'
        )

    def with_ema(tx):
        return optax.chain(tx, params_ema(float(ema))) if ema else tx

    def with_clip(tx):
        if not clip:
            return tx
        clipper = clip_by_replica_norm if stacked else optax.clip_by_global_norm
        return optax.chain(clipper(clip), tx)

    mask = functools.partial(decay_mask, stacked=stacked)

    if name == 'sgd':

        def factory(learning_rate):
            tx = optax.sgd(learning_rate, momentum=momentum or None)
            if weight_decay:  # L2 added to the gradient, before momentum.
                tx = optax.chain(optax.add_decayed_weights(weight_decay, mask), tx)
            return with_clip(tx)

        return with_ema(optax.inject_hyperparams(factory)(learning_rate=lr))

    def factory(learning_rate, b1, b2, eps, weight_decay):
        if name == 'adam':
            return with_clip(optax.adam(learning_rate, b1=b1, b2=b2, eps=eps))
        return with_clip(
            optax.adamw(
                learning_rate,
                b1=b1,
                b2=b2,
                eps=eps,
                weight_decay=weight_decay,
                mask=mask,
            )
        )

    return with_ema(
        optax.inject_hyperparams(factory)(
            learning_rate=lr,
            b1=_number(get('b1', 0.9), 'b1', low=0.0, below=1.0),
            b2=_number(get('b2', 0.98), 'b2', low=0.0, below=1.0),
            eps=_number(get('eps', 1e-9), 'eps', above=0.0),
            weight_decay=weight_decay,
        )
    )


def current_learning_rate(opt_state):
    """The learning rate of the latest update, read from `opt_state`.

    Works for states of `make_optimizer` and for states that nest one (e.g.
    inside `optax.chain` or `optax.MultiSteps`).

    Returns:
      float32 scalar.
    Raises:
      ValueError: no `learning_rate` hyperparameter in the state.
    """
    found = []

    def visit(node):  # Inject(Stateful)HyperparamsState, whichever optax made.
        hyperparams = getattr(node, 'hyperparams', None)
        if isinstance(hyperparams, dict) and 'learning_rate' in hyperparams:
            found.append(hyperparams['learning_rate'])
            return True
        return False

    jax.tree.leaves(opt_state, is_leaf=visit)
    if not found:
        raise ValueError(
            'opt_state holds no injected learning_rate; build the '
            'optimizer with make_optimizer.'
        )
    return found[0]
