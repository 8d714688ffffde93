"""A read-only Checkpointer (evaluate, translate, --step best) beside a run
that trains and rotates its checkpoints in the same workdir."""

import logging as std_logging
import shutil
import sys

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


def test_tools_reading_a_step_folder_name_a_deleted_or_damaged_one(tmp_path):
    """`read_state` / `read_meta` (averaging, extract): a step folder that is
    gone by the time it is read is named as deleted by the keep rotation, not
    as damaged; a folder without its `meta` is named as unreadable (not an
    Orbax traceback)."""
    _saved(tmp_path, (1, 2))
    assert checkpoint_lib.read_meta(str(tmp_path / '1')) == {'step': 1}
    shutil.rmtree(tmp_path / '2')
    for read in (checkpoint_lib.read_state, checkpoint_lib.read_meta):
        with pytest.raises(CheckpointMismatchError, match='2 was deleted while it was'):
            read(str(tmp_path / '2'))
    shutil.rmtree(tmp_path / '1' / 'meta')
    with pytest.raises(CheckpointMismatchError, match='1 is unreadable'):
        checkpoint_lib.read_meta(str(tmp_path / '1'))


def _asyncio_record(message, error):
    try:
        raise error
    except type(error):
        exc_info = sys.exc_info()
    return std_logging.LogRecord(
        'asyncio', std_logging.ERROR, 'base_events.py', 1, message, (), exc_info
    )


def test_orbax_reads_left_orphaned_are_dropped_from_asyncio_logs():
    """A damaged checkpoint's abandoned reads end in asyncio's 'exception was
    never retrieved' records. A Task's names Orbax's coroutine; a bare
    Future's (seen once, under load) does not, and printed a TensorStore
    traceback beside the one-line warning. Other records stay."""
    keep = checkpoint_lib._OrphanedReads().filter
    task = 'Task exception was never retrieved\nfuture: <Task finished coro=<'
    assert not keep(
        _asyncio_record(
            task + '_read_shard() defined at /x/orbax/checkpoint/a.py:1>>',
            ValueError('x'),
        )
    )
    future = 'Future exception was never retrieved\nfuture: <Future finished>'
    spec = "Encountered error while reading array index: {'ocdbt_coordinator': {}}"
    assert not keep(_asyncio_record(future, ValueError(spec)))
    # Raised in Orbax's code: its traceback names the module.
    code = compile('raise ValueError("short")', '/x/orbax/checkpoint/s.py', 'exec')
    try:
        exec(code)  # pylint: disable=exec-used
    except ValueError as e:
        assert not keep(_asyncio_record(future, e))
    assert keep(_asyncio_record(future, ValueError('a user coroutine failed')))
    assert keep(_asyncio_record('Unclosed client session', ValueError('orbax')))
