"""Saving on the CPU: whole arrays, nothing compiled per save."""

import copy
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxdistill import checkpoint
from jaxdistill import metrics
from jaxdistill import sharding


def _state(rows: int) -> dict:
    """Replicated over the 8 devices, rows a multiple of them (replica-
    parallel saving splits the rows between the devices' copies); shapes no
    other test saves, so no compiled slice is left over from them."""
    rep = sharding.replicated(sharding.make_mesh())
    rng = np.random.RandomState(rows)
    return {
        'w': jax.device_put(rng.randn(rows, 3).astype(np.float32), rep),
        'b': jax.device_put(rng.randn(2 * rows).astype(np.float32), rep),
    }


def _save_and_time_compiling(directory, state) -> float:
    with metrics.CompileClock() as clock:
        start = time.time()
        ckpt = checkpoint.Checkpointer(str(directory), every=1, keep=1)
        ckpt.save(1, state, {'step': 1})
        ckpt.wait()
        ckpt.close()
        return clock.seconds(start, time.time())


def _restored(directory, state) -> dict:
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state
    )
    ckpt = checkpoint.Checkpointer(str(directory), every=1, keep=1)
    got, meta = ckpt.restore(1, abstract)
    ckpt.close()
    assert meta == {'step': 1}
    return jax.device_get(got)


def test_cpu_saves_whole_arrays_and_reads_replica_parallel_saves(tmp_path, monkeypatch):
    state = _state(40)
    # The library's setting: a save runs no jitted program.
    assert _save_and_time_compiling(tmp_path / 'whole', state) == 0.0

    # Orbax's default off GPUs, replica-parallel saving, slices every array
    # with a jitted program per shape: the cost the setting removes.
    other = _state(48)
    handler = copy.copy(ocp.type_handlers.get_type_handler(jax.Array))
    handler._use_replica_parallel = True  # pylint: disable=protected-access
    ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
    with monkeypatch.context() as m:
        m.setattr(checkpoint, '_save_whole_arrays_on_cpu', lambda: None)
        try:
            assert _save_and_time_compiling(tmp_path / 'sliced', other) > 0.0
        finally:
            ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
    checkpoint._save_whole_arrays_on_cpu()  # Back to the library's.
    assert _save_and_time_compiling(tmp_path / 'again', _state(56)) == 0.0

    # Checkpoints written either way restore the same values.
    for directory, saved in (('whole', state), ('sliced', other)):
        got = _restored(tmp_path / directory, saved)
        for k in saved:
            np.testing.assert_array_equal(got[k], np.asarray(saved[k]))
