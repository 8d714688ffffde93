"""A read-only Checkpointer (evaluate, translate, --step best) beside a run
that trains and rotates its checkpoints in the same workdir."""

import shutil

import jax.numpy as jnp
import pytest

from jaxdistill import checkpoint as checkpoint_lib
from jaxdistill.errors import CheckpointMismatchError


def _saved(directory, steps):
    saver = checkpoint_lib.Checkpointer(
        str(directory), every=1, keep=0, async_save=False
    )
    state = {'w': jnp.arange(3.0)}
    for step in steps:
        saver.save(step, {'w': state['w'] + step}, {'step': step}, force=True)
    saver.close()
    return state


def _reader(directory, monkeypatch, deleted):
    """A read-only Checkpointer whose reads of `deleted` steps find them
    removed by the training run (its `keep` rotation) mid-read."""
    reader = checkpoint_lib.Checkpointer(
        str(directory), every=1, keep=0, read_only=True
    )
    restore = reader.restore

    def racing_restore(step, abstract):
        if step in deleted:
            shutil.rmtree(directory / str(step))
            raise FileNotFoundError(f'{directory}/{step}/state/manifest.ocdbt')
        return restore(step, abstract)

    monkeypatch.setattr(reader, 'restore', racing_restore)
    return reader


def test_a_step_deleted_while_read_is_named_as_such(tmp_path, monkeypatch):
    abstract = _saved(tmp_path, (1, 2))
    reader = _reader(tmp_path, monkeypatch, deleted={2})
    with pytest.raises(
        CheckpointMismatchError,
        match=r'2 was deleted while it was read: a run training in this workdir',
    ):
        reader.restore_named(2, abstract)
    with pytest.raises(RuntimeError, match='opened read-only'):
        reader.save(3, abstract, {})
    reader.close()


def test_the_latest_deleted_while_read_is_read_again_at_the_newest(
    tmp_path, monkeypatch
):
    abstract = _saved(tmp_path, (1, 2))
    reader = _reader(tmp_path, monkeypatch, deleted={2})
    step, state, meta = reader.restore_latest(abstract, set_aside=False)
    assert (step, meta) == (1, {'step': 1})
    assert state['w'].tolist() == [1.0, 2.0, 3.0]
    reader.close()
    assert not (tmp_path.parent / f'{tmp_path.name}_damaged').exists()
