"""What the library needs of a method or task, checked where it is used.

A method or task of a user's own (docs/extending.md) that breaks its side of
the face would otherwise fail deep inside JAX (a gradient of a vector, a
sharding mismatch of `extra`), or only after training (a task without
`evaluate`), or not at all (a per-example vector logged as one metric per
"replica"). These checks run once: at the task's construction, or while the
step is traced (the shapes are static then), and raise a `PluginError` that
names the class, its file and the member at fault.
"""

import inspect
import numbers
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxdistill.errors import PluginError

# The members a task must have (docs/extending.md, "A task of your own").
TASK_MEMBERS = ('model_fns', 'train_batches', 'init_batch', 'data_summary', 'evaluate')
BATCHER_MEMBERS = ('__next__', 'position', 'set_position', 'batches_per_epoch')


def origin(obj) -> str:
    """'Name (path/to/file.py)' of an object's class, for messages."""
    cls = obj if inspect.isclass(obj) else type(obj)
    try:
        where = inspect.getsourcefile(cls) or '?'
    except TypeError:
        where = 'built in'
    return f'{cls.__qualname__} ({where})'


def check_extra_init(method, extra) -> None:
    """PluginError unless `init_extra` gave a pytree of arrays (or numbers)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(extra)
    for path, leaf in leaves:
        if not (
            isinstance(leaf, (jax.Array, np.ndarray, np.generic))
            or _is_number_like(leaf)
        ):
            raise PluginError(
                f'{origin(method)} init_extra returned {type(leaf).__name__} at '
                f'extra{jax.tree_util.keystr(path)}; `extra` must be a pytree '
                '(dicts, lists, tuples, dataclasses) of arrays: it is carried '
                'through the jitted step and checkpointed (docs/extending.md).'
            )


def check_phase_arguments(method) -> None:
    """PluginError if `method` has phases but its `loss` or `update_extra`
    cannot take the `phase=` keyword the step passes them."""
    from jaxdistill.methods.base import Method  # pylint: disable=g-import-not-at-top

    if type(method).phase is Method.phase:
        return
    for name in ('loss', 'update_extra'):
        params = inspect.signature(getattr(method, name)).parameters.values()
        if not any(
            p.name == 'phase' or p.kind is inspect.Parameter.VAR_KEYWORD for p in params
        ):
            raise PluginError(
                f'{origin(method)} defines phase(), so its {name} must accept '
                f'the keyword argument phase= (e.g. `def {name}(..., step, '
                'phase=None)` or `**kwargs`): the step passes the phase it was '
                'compiled for (docs/extending.md).'
            )


def check_task(task, name: str) -> None:
    """PluginError unless `task` has the members the trainer uses."""
    from jaxdistill.methods.base import ModelFns  # pylint: disable=g-import-not-at-top

    what = f'task {name!r}, {origin(task)},'
    missing = [m for m in TASK_MEMBERS if not hasattr(task, m)]
    if missing:
        raise PluginError(
            f'{what} has no {", ".join(missing)}: a task needs '
            f'{", ".join(TASK_MEMBERS)} (docs/extending.md, "A task of your own").'
        )
    if not isinstance(task.model_fns, ModelFns):
        raise PluginError(
            f'{what} model_fns is a {type(task.model_fns).__name__}, not a '
            'jaxdistill.methods.ModelFns(init, apply, labels).'
        )
    batcher = task.train_batches
    missing = [m for m in BATCHER_MEMBERS if not hasattr(batcher, m)]
    if missing:
        raise PluginError(
            f'{what} train_batches ({type(batcher).__name__}) has no '
            f'{", ".join(missing)}; jaxdistill.data.images.ImageBatcher and '
            'jaxdistill.data.BucketedBatcher have them all.'
        )
    for member in ('init_batch', 'data_summary', 'evaluate'):
        if not callable(getattr(task, member)):
            raise PluginError(f'{what} {member} is not callable.')
    if hasattr(task, 'throughput_unit'):  # This attribute's name until 2026-12.
        raise PluginError(
            f'{what} sets throughput_unit; it is now throughput = (NAME, UNIT), '
            "e.g. ('examples', 'ex'): train/NAME_per_s in the log, UNIT/s on "
            'the progress line.'
        )
    throughput = getattr(task, 'throughput', ('tokens', 'tok'))
    if not (
        isinstance(throughput, tuple)
        and len(throughput) == 2
        and all(isinstance(w, str) and w.isidentifier() for w in throughput)
    ):
        raise PluginError(
            f'{what} throughput is {throughput!r}; it must be a pair of words '
            "(NAME, UNIT), e.g. ('examples', 'ex'): what train/tokens counts, "
            'logged as train/NAME_per_s and shown as UNIT/s.'
        )


def checked_eval(task, result) -> dict:
    """`task.evaluate`'s result as {'eval/NAME': float}, or a PluginError
    naming the key that is not."""
    what = f'{origin(task)}: evaluate(params) returned'
    if not isinstance(result, Mapping):
        raise PluginError(f'{what} a {type(result).__name__}, not a dict.')
    out = {}
    for key, value in result.items():
        if not isinstance(key, str) or not key.startswith('eval/'):
            raise PluginError(f"{what} the key {key!r}: metrics are named 'eval/NAME'.")
        out[key] = _scalar(value, f'{what} {key}')
    return out


def check_predictions(task, value) -> None:
    """PluginError unless `task.predict` gave (labels [N] int, valid [N] bool)."""
    ok = isinstance(value, (tuple, list)) and len(value) == 2
    if ok:
        labels, valid = (np.asarray(v) for v in value)
        ok = (
            labels.shape == valid.shape
            and np.issubdtype(labels.dtype, np.integer)
            and valid.dtype == np.bool_
        )
    if not ok:
        got = type(value).__name__
        if isinstance(value, (tuple, list)):
            got += ' of ' + ', '.join(_describe(v) for v in value)
        raise PluginError(
            f'{origin(task)}: predict(params) returned a {got}; it must return '
            '(labels [N] int, valid [N] bool): the predicted label at each '
            'held-out position and which positions count.'
        )


def checked_loss(method, out) -> tuple[jax.Array, dict]:
    """`method.loss`'s result, checked while the step is traced: a float
    scalar and a dict whose 'train/...' metrics are scalars (one per replica
    for a method with `num_replicas`)."""
    what = f'{origin(method)}: loss() returned'
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise PluginError(
            f'{what} {_describe(out)}; it must return (loss, aux): a scalar '
            'and a dict of metrics.'
        )
    loss, aux = out
    if (
        not _is_number_like(loss)
        or np.shape(loss) != ()
        or not jnp.issubdtype(_dtype(loss), jnp.floating)
    ):
        raise PluginError(
            f'{what} a loss of {_describe(loss)}; it must be a float scalar '
            '(reduce per-example losses, e.g. losses.masked_mean(ce, where)).'
        )
    if not isinstance(aux, Mapping):
        raise PluginError(f'{what} an aux of {_describe(aux)}; it must be a dict.')
    replicas = getattr(method, 'num_replicas', None)
    for key, value in aux.items():
        if not isinstance(key, str):
            raise PluginError(f'{what} an aux key {key!r}; keys are strings.')
        if not key.startswith('train/'):
            continue  # A private payload for update_extra (check_extra_update).
        shape = np.shape(value) if _is_number_like(value) else None
        if shape not in ((), (replicas,)):
            per = f' or [{replicas}] (one per replica)' if replicas else ''
            raise PluginError(
                f'{what} aux[{key!r}] of {_describe(value)}: metrics are '
                f'scalars{per}; reduce it (losses.masked_mean).'
            )
    return loss, aux


def check_extra_update(method, before, after, aux) -> None:
    """At tracing: `update_extra` kept `extra`'s structure, shapes and dtypes,
    and took the non-metric entries of `aux` out (they would be logged)."""
    what = f'{origin(method)}: update_extra() returned'
    if jax.tree.structure(before) != jax.tree.structure(after):
        raise PluginError(
            f"{what} an extra of another structure than init_extra's: "
            f'{jax.tree.structure(after)} against {jax.tree.structure(before)}.'
        )
    paths = jax.tree_util.tree_flatten_with_path(before)[0]
    for (path, a), b in zip(paths, jax.tree.leaves(after)):
        if (np.shape(a), _dtype(a)) != (np.shape(b), _dtype(b)):
            raise PluginError(
                f'{what} extra{jax.tree_util.keystr(path)} of {_describe(b)}; '
                f'init_extra gave {_describe(a)}, and it must stay so.'
            )
    private = sorted(k for k in aux if not k.startswith('train/'))
    if private:
        raise PluginError(
            f'{origin(method)}: loss() put {", ".join(map(repr, private))} in '
            "aux, which is not a metric (metrics are named 'train/...'); a "
            'payload for update_extra must be taken out there (aux.pop(key)).'
        )


def _scalar(value, what: str) -> float:
    if isinstance(value, bool) or not _is_number_like(value) or np.ndim(value):
        raise PluginError(f'{what} {_describe(value)}; each value must be a number.')
    return float(value)


def _is_number_like(value: Any) -> bool:
    """A Python number, or an array (or tracer) of numbers or bools."""
    if isinstance(value, numbers.Number):
        return True
    dtype = getattr(value, 'dtype', None)
    try:
        return dtype is not None and (
            jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_)
        )
    except TypeError:  # Not a dtype at all.
        return False


def _dtype(x):
    dtype = getattr(x, 'dtype', None)  # Tracers have one; no __array__ then.
    return np.dtype(dtype) if dtype is not None else np.asarray(x).dtype


def _describe(value) -> str:
    if hasattr(value, 'shape') and hasattr(value, 'dtype'):
        return f'shape {tuple(value.shape)} {value.dtype}'
    if isinstance(value, (tuple, list)):
        return f'a {type(value).__name__} of {len(value)}'
    return f'a {type(value).__name__}'
