"""Meshes, shardings, multi-process start-up and global batches.

The mesh always has a `data` axis spanning every device of every process
(batch rows are split over it) and optionally a `model` axis over which large
parameter matrices are split. Both axes are `AxisType.Auto`: models are written
without sharding annotations, the train step pins only its inputs and outputs,
and XLA's propagation places everything in between.
"""

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

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
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(
        coordinator_address=address, num_processes=int(num), process_id=int(pid)
    )
    return True


def make_mesh(model_axis_size: int = 1, devices=None) -> jax.sharding.Mesh:
    """Mesh ('data', 'model') over all (or the given) devices, process-major.

    Devices are ordered by (process, id), so each process holds a contiguous
    block of the data axis and feeds the matching rows of the global batch.
    """
    devices = sorted(devices or jax.devices(), key=lambda d: (d.process_index, d.id))
    n = len(devices)
    if model_axis_size < 1 or n % model_axis_size:
        raise ConfigError(
            f'mesh.model_axis_size={model_axis_size} must divide the {n} devices.'
        )
    return jax.make_mesh(
        (n // model_axis_size, model_axis_size),
        ('data', 'model'),
        axis_types=(AxisType.Auto, AxisType.Auto),
        devices=devices,
    )


def batch_sharding(mesh) -> NamedSharding:
    """Leading (batch) axis split over `data`, the rest replicated."""
    return NamedSharding(mesh, P('data'))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def param_shardings(
    abstract_params: Any, mesh, *, shard_params: bool, min_size: int = 2**14
) -> Any:
    """Shardings for a parameter pytree.

    Replicated by default. With `shard_params`, each array of at least
    `min_size` elements is split over `model` along its largest axis that the
    axis size divides (a simple, always-valid rule; XLA inserts the gathers).
    """
    size = mesh.shape['model']

    def one(x):
        if not shard_params or size == 1 or np.prod(x.shape) < min_size:
            return replicated(mesh)
        dims = sorted(range(len(x.shape)), key=lambda d: -x.shape[d])
        for d in dims:
            if x.shape[d] % size == 0:
                spec = [None] * len(x.shape)
                spec[d] = 'model'
                return NamedSharding(mesh, P(*spec))
        return replicated(mesh)

    return jax.tree.map(one, abstract_params)


def process_slice(global_rows: int) -> slice:
    """Rows of the global batch this process feeds."""
    n, i = jax.process_count(), jax.process_index()
    if global_rows % n:
        raise ConfigError(
            f'global batch of {global_rows} rows does not split over {n} processes.'
        )
    per = global_rows // n
    return slice(i * per, (i + 1) * per)


def global_batch(batch: dict, sharding: NamedSharding) -> dict:
    """Global jax.Arrays from a global numpy batch, each process giving its rows.

    Every process computes the same global numpy batch (the data order is a
    pure function of the seed and position) and contributes its slice.
    """

    def one(x):
        local = x[process_slice(x.shape[0])]
        return jax.make_array_from_process_local_data(sharding, local, x.shape)

    return jax.tree.map(one, batch)
