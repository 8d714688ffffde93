"""The one train-step factory, shared by every method."""

from typing import Any

from absl import logging

import flax
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import optax

from jaxdistill import configuration
from jaxdistill import contracts
from jaxdistill import optim
from jaxdistill import sharding as sharding_lib
from jaxdistill.errors import ConfigError
from jaxdistill.methods.base import Method


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; checkpointed whole.

    `rng` holds raw key data (uint32) so Orbax can save it; each step's key is
    `fold_in(rng, step)`, so randomness depends only on the seed and the step.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    extra: Any
    rng: jax.Array


def make_init(
    method: Method,
    tx: optax.GradientTransformation,
    batch: dict,
    mesh,
    *,
    seed: int,
    shard_params: bool = False,
    shard_min_size: int = 2**14,
):
    """Returns (jitted init: () -> TrainState, its sharding, abstract state).

    Follows `eval_shape` -> shardings -> jitted init, so parameters are born
    where they live and never materialise on one device first.
    """

    def init():
        rng = jax.random.key(seed)
        p_rng, e_rng, s_rng = jax.random.split(rng, 3)
        params = method.init_params(p_rng, batch)
        extra = method.init_extra(e_rng, params)
        contracts.check_extra_init(method, extra)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            extra=extra,
            rng=jax.random.key_data(s_rng),
        )

    abstract = jax.eval_shape(init)
    replicated = sharding_lib.replicated(mesh)
    params_sharding = sharding_lib.param_shardings(
        abstract.params,
        mesh,
        shard_params=shard_params,
        min_size=shard_min_size,
        stacked=getattr(method, 'stacked_params', False),
    )
    state_sharding = jax.tree.map(lambda _: replicated, abstract)
    state_sharding = state_sharding.replace(params=params_sharding)
    # Optimizer moments mirror the parameters they belong to.
    state_sharding = state_sharding.replace(
        opt_state=_mirror_params(
            abstract.opt_state, abstract.params, params_sharding, replicated
        )
    )
    init_fn = jax.jit(init, out_shardings=state_sharding)
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        abstract,
        state_sharding,
    )
    return init_fn, state_sharding, abstract


def _mirror_params(opt_state, params, params_sharding, default):
    """Gives opt-state subtrees shaped like `params` the params' shardings."""
    params_struct = jax.tree.structure(params)

    def is_params_like(x):
        return (
            jax.tree.structure(x) == params_struct
            if not isinstance(x, jax.ShapeDtypeStruct)
            else False
        )

    def assign(x):
        if is_params_like(x):
            return params_sharding
        return jax.tree.map(lambda _: default, x)

    return jax.tree.map(assign, opt_state, is_leaf=is_params_like)


def _keep_frozen(frozen, new, old):
    """(params, opt_state) with the frozen leaves (and the params-shaped parts
    of the optimizer state at them) taken from `old`.

    The choice is static, so the discarded updates are dead code to XLA.
    """
    (new_params, new_opt), (old_params, old_opt) = new, old
    struct = jax.tree.structure(old_params)
    pick = lambda n, o, f: o if f else n  # noqa: E731
    params = jax.tree.map(pick, new_params, old_params, frozen)

    def is_params_like(x):
        return jax.tree.structure(x) == struct

    def merge(n, o):
        return jax.tree.map(pick, n, o, frozen) if is_params_like(n) else n

    return params, jax.tree.map(merge, new_opt, old_opt, is_leaf=is_params_like)


def split_microbatches(batch: dict, k: int, sharding) -> dict:
    """Rows [R, ...] -> [k, R/k, ...]: micro-batch j holds rows j, j+k, ...

    Every k-th row, not k consecutive blocks: a device's rows of the global
    batch are consecutive, so when k divides them each micro-batch takes the
    same share of every device's rows, and replica r's rows stay in the r-th
    block of every micro-batch (codistillation). Nothing moves between
    devices.
    """
    spec = NamedSharding(sharding.mesh, P(None, *sharding.spec))

    def one(x):
        x = x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)
        return jax.lax.with_sharding_constraint(x, spec)

    return jax.tree.map(one, batch)


def _join_rows(x, k):
    """Inverse of `split_microbatches` for one leaf: [k, R/k, ...] -> [R, ...]."""
    return x.swapaxes(0, 1).reshape(k * x.shape[1], *x.shape[2:])


def check_microbatches(method: Method, k: int):
    """ConfigError unless `k` micro-batches can serve `method`."""
    configuration.check_counts(('microbatches', k, 1))
    if k > 1 and not method.supports_microbatches:
        raise ConfigError(
            f'microbatches={k}: method {type(method).__name__} needs the whole '
            'batch in one pass (see its page in docs/methods); use microbatches=1.'
        )


def _check_rows(batch: dict, k: int, row_multiple: int):
    """ConfigError unless every leaf's rows split into `k` micro-batches with
    the same share of each of `row_multiple` devices (or replica blocks)."""
    for path, x in jax.tree_util.tree_leaves_with_path(batch):
        rows = x.shape[0]
        if rows % (k * row_multiple):
            raise ConfigError(
                f'microbatches={k}: batch entry {jax.tree_util.keystr(path)} has '
                f'{rows} rows, which do not split into {k} micro-batches over '
                f'{row_multiple} devices/replica blocks (rows must be a multiple '
                f'of {k * row_multiple}). Change the batch size or microbatches.'
            )


def _gradients(method, params, extra, batch, rng, step, kwargs):
    """(aux with 'train/loss', grads) of `method.loss` on `batch`."""

    def loss_fn(*args, **kw):  # Checked while traced: a plugin's mistakes named.
        return contracts.checked_loss(method, method.loss(*args, **kw))

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, extra, batch, rng, step, **kwargs
    )
    return {'train/loss': loss, **aux}, grads


def _accumulate(method, params, extra, batch, rng, step, kwargs, k, sharding):
    """(aux, grads) of the whole batch, from `k` micro-batches in turn.

    Each micro-batch's gradient is weighted by its share of the batch's
    labelled positions (`method.batch_weight`; per replica for stacked
    methods, whose replica r's loss is a mean over its own rows): the losses
    are means over those positions, so the weighted sum is the whole batch's
    gradient (up to float rounding), with one micro-batch's activations in
    memory. Micro-batch j's randomness is `fold_in(rng, j)`.
    """
    micro = split_microbatches(batch, k, sharding)
    counts = jax.vmap(method.batch_weight)(micro).astype(jnp.float32)
    weights = counts / jnp.maximum(jnp.sum(counts, axis=0), 1.0)  # [k] or [k, N]

    def scaled(w, x):  # A per-replica w scales the leading (replica) axis.
        return w.reshape(w.shape + (1,) * (x.ndim - w.ndim)).astype(x.dtype) * x

    def body(grad_sum, xs):
        j, mb, w = xs
        aux, grads = _gradients(
            method, params, extra, mb, jax.random.fold_in(rng, j), step, kwargs
        )
        grad_sum = jax.tree.map(lambda a, g: a + scaled(w, g), grad_sum, grads)
        return grad_sum, aux

    zeros = jax.tree.map(jnp.zeros_like, params)
    grads, auxes = jax.lax.scan(body, zeros, (jnp.arange(k), micro, weights))
    return _combine_aux(auxes, weights, k), grads


def _combine_aux(auxes: dict, weights, k: int) -> dict:
    """Per-micro-batch aux [k, ...] -> the whole batch's.

    Metrics ('train/...') are means over labelled positions, so they are
    combined with the gradients' weights (per-replica metrics with their
    replica's); counts ('...tokens') are summed. Other entries (a method's
    private per-example payload) get their rows joined back in the batch's
    order.
    """
    out = {}
    for key, value in auxes.items():
        if not key.startswith('train/'):
            out[key] = jax.tree.map(lambda x: _join_rows(x, k), value)
        elif key.endswith('tokens'):
            out[key] = jnp.sum(value, axis=0)
        elif weights.ndim == 2 and value.shape[1:] == weights.shape[1:]:
            out[key] = jnp.sum(weights.astype(value.dtype) * value, axis=0)
        else:
            w = weights if weights.ndim == 1 else jnp.mean(weights, axis=1)
            out[key] = jnp.tensordot(w.astype(value.dtype), value, axes=1)
    return out


# A method with more phases than this is warned about (one compile each).
MANY_PHASES = 8


def make_train_step(
    method: Method,
    tx: optax.GradientTransformation,
    *,
    state_sharding,
    batch_sharding,
    microbatches: int = 1,
):
    """`(state, batch, phase=None, refresh=False) -> (state, aux)` for any method.

    One jitted step per phase: a method whose work changes over time
    (auxiliary losses switched off, distillation after a burn-in) names the
    phase of each step with `method.phase(step)` on the host, and gets a
    separate compiled step for each, so work a phase doesn't need is not
    compiled in (rather than multiplied by zero). Methods with one phase use
    `None`. `refresh=True` (from `method.refresh_due(step)`) then runs
    `method.refresh_extra` as its own small program: a rare update (weights
    exchanged every K steps) costs one compile, not one per phase and shape.

    `microbatches` = k > 1 accumulates gradients: each batch is split into k
    micro-batches (`split_microbatches`) whose gradients are computed one
    after another (a `lax.scan`) and combined into one optimizer update, the
    whole batch's, with 1/k of its activation memory.
    """
    check_microbatches(method, microbatches)
    contracts.check_phase_arguments(method)
    row_multiple = sharding_lib.batch_multiple(
        batch_sharding.mesh, getattr(method, 'num_replicas', 1)
    )
    compiled = {}

    def build(phase):
        kwargs = {} if phase is None else {'phase': phase}

        def step(state: TrainState, batch):
            if microbatches > 1:  # At tracing: once per batch shape.
                _check_rows(batch, microbatches, row_multiple)
            rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
            args = (method, state.params, state.extra, batch, rng, state.step, kwargs)
            if microbatches == 1:
                aux, grads = _gradients(*args)
            else:
                aux, grads = _accumulate(*args, microbatches, batch_sharding)
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            frozen = method.frozen(state.params, phase)
            if frozen is not None:
                params, opt_state = _keep_frozen(
                    frozen, (params, opt_state), (state.params, state.opt_state)
                )
            extra = method.update_extra(state.extra, params, aux, state.step, **kwargs)
            contracts.check_extra_update(method, state.extra, extra, aux)
            # Per replica for stacked methods: no statistic couples replicas.
            aux['train/grad_norm'] = (
                optim.replica_norms(grads)
                if getattr(method, 'stacked_params', False)
                else optax.tree.norm(grads)
            )
            new_state = state.replace(
                step=state.step + 1, params=params, opt_state=opt_state, extra=extra
            )
            return new_state, aux

        return jax.jit(
            step,
            in_shardings=(state_sharding, batch_sharding),
            out_shardings=(state_sharding, None),
            donate_argnums=0,
        )

    mesh = batch_sharding.mesh

    def refresh(state: TrainState):
        return state.replace(extra=method.refresh_extra(state.extra, state.params))

    refresh_fn = jax.jit(
        refresh,
        in_shardings=(state_sharding,),
        out_shardings=state_sharding,
        donate_argnums=0,
    )

    def run(state, batch, phase=None, refresh=False):
        if phase not in compiled:
            compiled[phase] = build(phase)
            if len(compiled) == MANY_PHASES:
                logging.warning(
                    '%s has returned %d different phases; each compiles its own '
                    'step (and keeps it). phase() should name a few fixed '
                    'stages, not vary with every step.',
                    contracts.origin(method),
                    MANY_PHASES,
                )
        # The mesh in context lets methods `jax.shard_map` over its axes.
        with jax.set_mesh(mesh):
            state, aux = compiled[phase](state, batch)
            if refresh:
                state = refresh_fn(state)
        return state, aux

    run.compiled = compiled  # For inspection (e.g. HLO tests, under set_mesh).
    run.build = build
    run.refresh_fn = refresh_fn
    run.mesh = mesh
    return run
