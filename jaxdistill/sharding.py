"""Meshes, shardings, multi-process start-up and global batches.

The mesh always has a `data` axis spanning every device of every process
(batch rows are split over it) and optionally a `model` axis over which large
parameter matrices are split. Both axes are `AxisType.Auto`: models are written
without sharding annotations, the train step pins only its inputs and outputs,
and XLA's propagation places everything in between.
"""

import math
import os
import sys
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from jaxdistill.data import batching
from jaxdistill.errors import ConfigError

_DIST_ENV = ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID')


def maybe_initialize_distributed(cfg=None) -> bool:
    """Starts `jax.distributed` when configured; must run before any JAX use.

    Configured by `cfg.coordinator_address`, `cfg.num_processes` and
    `cfg.process_id` (a `config.distributed` ConfigDict) or by the environment
    variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID.
    On CPU the cross-process collectives use gloo.

    Returns:
      True when a multi-process run was initialised.
    """
    get = (
        (lambda k, d=None: cfg.get(k, d)) if cfg is not None else (lambda k, d=None: d)
    )
    address = get('coordinator_address') or os.environ.get(_DIST_ENV[0])
    num = get('num_processes') or os.environ.get(_DIST_ENV[1])
    pid = get('process_id', None)
    if pid is None or pid < 0:
        pid = os.environ.get(_DIST_ENV[2])
    if not address:
        return False
    if num is None or pid is None:
        raise ConfigError(
            'distributed.coordinator_address is set but num_processes / '
            'process_id are not (set them in the config or as '
            f'{_DIST_ENV[1]} / {_DIST_ENV[2]}).'
        )
    try:
        num, pid = int(num), int(pid)
    except (TypeError, ValueError):
        raise ConfigError(
            f'distributed: num_processes={num!r} and process_id={pid!r} must be '
            'integers.'
        ) from None
    if num < 1 or not 0 <= pid < num:
        raise ConfigError(
            f'distributed: process_id={pid} with num_processes={num}; each '
            'process needs its own process_id in 0..num_processes-1.'
        )
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    # Said first: a launch mistake (two processes with one process_id, a
    # different num_processes) can end in JAX's own abort, or a long wait.
    print(
        f'jax.distributed: process {pid} of {num}, coordinator {address}; '
        'waiting for the other processes.',
        file=sys.stderr,
        flush=True,
    )
    try:
        jax.distributed.initialize(
            coordinator_address=address, num_processes=num, process_id=pid
        )
    except Exception as e:  # pylint: disable=broad-except
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f'jax.distributed could not start process {pid} of {num} with the '
            f'coordinator {address}: {first}. Check that every process was '
            "started, each with its own process_id (0 on the coordinator's "
            'host), the same num_processes and the same coordinator address, '
            'and that the port is free and reachable.'
        ) from None
    return True


def make_mesh(
    model_axis_size: int = 1, devices=None, *, replica_axis_size: int = 1
) -> jax.sharding.Mesh:
    """Mesh ('replica', 'data', 'model') over all (or the given) devices.

    `replica` separates groups that train different models (codistillation's
    replicas; size 1 otherwise), `data` splits batch rows within a group,
    `model` splits large parameters. Devices are ordered by (process, id), so
    each process holds a contiguous block of rows of the global batch (and,
    with one replica per process, exactly one replica).
    """
    devices = sorted(devices or jax.devices(), key=lambda d: (d.process_index, d.id))
    n = len(devices)
    for name, size in (('model', model_axis_size), ('replica', replica_axis_size)):
        if size < 1 or n % size:
            raise ConfigError(
                f'mesh.{name}_axis_size={size} must divide the {n} devices'
                + (
                    f' (a run saved with it resumes in another layout: give '
                    f'--config.mesh.{name}_axis_size=N, N dividing {n}).'
                    if size >= 1
                    else '.'
                )
            )
    if n % (model_axis_size * replica_axis_size):
        raise ConfigError(
            f'{replica_axis_size} replicas x model axis {model_axis_size} do not '
            f'divide the {n} devices.'
        )
    local = sum(d.process_index == devices[0].process_index for d in devices)
    if local < n and local % model_axis_size:
        # Each process builds its own rows of every batch; a model axis that
        # crossed processes would have two processes hold the same rows.
        raise ConfigError(
            f'mesh.model_axis_size={model_axis_size} must divide the {local} '
            'devices of each process: a model shard cannot span processes.'
        )
    data = n // (model_axis_size * replica_axis_size)
    return jax.make_mesh(
        (replica_axis_size, data, model_axis_size),
        ('replica', 'data', 'model'),
        axis_types=(AxisType.Auto,) * 3,
        devices=devices,
    )


def replica_axis_size(
    num_replicas: int, requested: int = 0, *, devices: int, model_axis_size: int = 1
) -> int:
    """Size of the mesh's `replica` axis for `num_replicas` stacked replicas.

    `requested` (> 0) is taken as given if it divides `num_replicas`;
    0 chooses the largest divisor of `num_replicas` that divides the device
    groups available (`devices // model_axis_size`): one group per replica
    where the devices allow, otherwise several replicas stacked on each group
    (all of them on a single device).
    """
    if not isinstance(num_replicas, int) or num_replicas < 1:
        # Codistillation (the one method with replicas) wants >= 2 and says
        # so when it is built; this check runs first, with the mesh.
        raise ConfigError(
            f'method.num_replicas={num_replicas!r} must be an integer >= 1 '
            '(codistillation needs >= 2).'
        )
    if requested < 0 or (requested and num_replicas % requested):
        raise ConfigError(
            f'mesh.replica_axis_size={requested} must divide method.num_replicas='
            f'{num_replicas} (0 chooses automatically).'
        )
    if requested:
        return requested
    groups = max(devices // max(model_axis_size, 1), 1)
    return max(
        d for d in range(1, num_replicas + 1) if not num_replicas % d and not groups % d
    )


def batch_multiple(mesh, num_replicas: int = 1) -> int:
    """Rows of every global batch must be a multiple of this: the devices
    they are split over, and the replicas whose blocks they hold."""
    return math.lcm(batch_axes(mesh), num_replicas)


def batch_axes(mesh) -> int:
    """Devices a global batch's rows are split over (replicas x data)."""
    return mesh.shape['replica'] * mesh.shape['data']


def batch_sharding(mesh) -> NamedSharding:
    """Leading (batch) axis split over `replica` then `data`; rest replicated.

    With several replicas, replica r gets the r-th block of rows: its own
    disjoint share of every global batch.
    """
    return NamedSharding(mesh, P(('replica', 'data')))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def param_shardings(
    abstract_params: Any,
    mesh,
    *,
    shard_params: bool,
    min_size: int = 2**14,
    stacked: bool = False,
) -> Any:
    """Shardings for a parameter pytree.

    Replicated by default. With `stacked`, the leading axis of every array
    indexes replicas and is split over `replica`. With `shard_params`, each
    array of at least `min_size` elements is also split over `model` along its
    largest remaining axis that the axis size divides (a simple, always-valid
    rule; XLA inserts the gathers).
    """
    size = mesh.shape['model']

    def one(x):
        spec = [None] * len(x.shape)
        if stacked:
            spec[0] = 'replica'
        if shard_params and size > 1 and np.prod(x.shape) >= min_size:
            dims = sorted(range(int(stacked), len(x.shape)), key=lambda d: -x.shape[d])
            for d in dims:
                if x.shape[d] % size == 0:
                    spec[d] = 'model'
                    break
        return NamedSharding(mesh, P(*spec))

    return jax.tree.map(one, abstract_params)


def model_split_note(
    abstract_params: Any, shardings: Any, mesh, *, min_size: int = 2**14
) -> str:
    """What `mesh.shard_params` split, said at a run's start.

    Says how many parameter arrays (and entries) lie split over the `model`
    axis and how many stay whole on every device of it, so a model whose
    arrays are all under `param_shardings`' size threshold, or have no axis
    the model axis divides, is not thought sharded when it is not.
    """
    size = mesh.shape['model']
    if size == 1:
        return (
            'mesh.shard_params=True does nothing with mesh.model_axis_size=1: '
            'there is no model axis to split the parameters over.'
        )
    leaves = jax.tree.leaves(abstract_params)
    specs = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
    split = [
        int(np.prod(a.shape))
        for a, s in zip(leaves, specs)
        if 'model' in jax.tree.leaves(tuple(s.spec))
    ]
    total = sum(int(np.prod(a.shape)) for a in leaves)
    head = (
        f'mesh.shard_params: {len(split)} of {len(leaves)} parameter arrays '
        f'({sum(split):,} of {total:,} entries) are split over the model axis '
        f'of {size} devices'
    )
    if not split:
        return (
            head + f'; every array is under {min_size:,} entries or has no '
            f'axis that '
            f'{size} divides, so each model-axis device holds all the '
            'parameters (nothing is saved by sharding them).'
        )
    return head + '; the rest stay whole on each of them.'


def process_slice(global_rows: int) -> slice:
    """Rows of the global batch this process feeds: its part, as a batcher's
    `set_part(process_index, process_count)` builds it."""
    part = (jax.process_index(), jax.process_count())
    return batching.part_rows(global_rows, part)


def global_batch(batch: dict, sharding: NamedSharding, *, local: bool = False) -> dict:
    """Global jax.Arrays from numpy batches, each process giving its rows.

    Args:
      batch: the whole global batch (every process computes the same one:
        the data order is a pure function of the seed and position), of which
        each process sends its slice; or, with `local`, only this process's
        rows (part `process_index` of `process_count`, as a batcher's
        `set_part` makes them), so that no process builds the others' rows.
      sharding: how the global arrays' rows lie over the devices.
    """

    def one(x):
        if local:
            shape = (x.shape[0] * jax.process_count(), *x.shape[1:])
            return jax.make_array_from_process_local_data(sharding, x, shape)
        local_rows = x[process_slice(x.shape[0])]
        return jax.make_array_from_process_local_data(sharding, local_rows, x.shape)

    return jax.tree.map(one, batch)
