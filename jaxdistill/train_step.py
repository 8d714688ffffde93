"""The one train-step factory, shared by every method."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from jaxdistill import optim
from jaxdistill import sharding as sharding_lib
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
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            extra=method.init_extra(e_rng, params),
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


def make_train_step(
    method: Method, tx: optax.GradientTransformation, *, state_sharding, batch_sharding
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
    """
    compiled = {}

    def build(phase):
        kwargs = {} if phase is None else {'phase': phase}

        def step(state: TrainState, batch):
            rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
            (loss, aux), grads = jax.value_and_grad(method.loss, has_aux=True)(
                state.params, state.extra, batch, rng, state.step, **kwargs
            )
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            frozen = method.frozen(state.params, phase)
            if frozen is not None:
                params, opt_state = _keep_frozen(
                    frozen, (params, opt_state), (state.params, state.opt_state)
                )
            extra = method.update_extra(state.extra, params, aux, state.step, **kwargs)
            aux = dict(aux)
            aux.setdefault('train/loss', loss)
            # Per replica for stacked methods: no statistic couples replicas.
            aux['train/grad_norm'] = (
                optim.replica_norms(grads)
                if getattr(method, 'stacked_params', False)
                else optax.global_norm(grads)
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
