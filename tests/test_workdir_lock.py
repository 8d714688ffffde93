"""One training run per workdir: a second is refused while the first holds it."""

import fcntl
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from jaxdistill import configuration
from jaxdistill import train
from jaxdistill import trainer as trainer_lib
from jaxdistill import workdir_lock
from jaxdistill.errors import CheckpointMismatchError
from tests import helpers

ARGS = ['--config', helpers.CONFIG, '--config.eval.bleu=False']


def test_a_second_run_in_a_busy_workdir_is_refused(tmp_path, capsys):
    work = tmp_path / 'run'
    config = configuration.apply_overrides(
        configuration.load_config(helpers.CONFIG),
        ['eval.bleu=False', 'num_train_steps=4'],
    )
    first = trainer_lib.Trainer(config, str(work))
    written = {p.name: p.stat().st_mtime_ns for p in work.iterdir()}

    assert train.main([*ARGS, '--workdir', str(work)]) == 2
    err = capsys.readouterr().err
    assert f'{work} is in use by another training run (pid {os.getpid()} on ' in err
    assert 'Wait for it to end or stop it, or use another --workdir.' in err
    # Refused before writing anything.
    assert {p.name: p.stat().st_mtime_ns for p in work.iterdir()} == written
    # A read-only user (evaluate, translate) is not refused for the lock: it
    # gets as far as finding no checkpoint yet (and deletes nothing).
    with pytest.raises(CheckpointMismatchError, match='No checkpoints in '):
        trainer_lib.Trainer(config, str(work), read_only=True)

    first.run()  # The lock ends with the run: another may write.
    assert trainer_lib.Trainer(config, str(work), read_only=True).start_step == 4
    again = trainer_lib.Trainer(config, str(work))
    assert again.start_step == 4
    again.close()  # And close() ends it too.
    trainer_lib.Trainer(config, str(work)).close()


def test_the_lock_names_the_holder_and_dies_with_it(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            '-c',
            'import sys, time\n'
            'from jaxdistill import workdir_lock\n'
            f'lock = workdir_lock.WorkdirLock({str(tmp_path)!r}).acquire()\n'
            'print("locked", flush=True)\n'
            'time.sleep(120)\n',
        ],
        cwd=helpers.REPO,
        env=helpers.env(devices=1),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == 'locked'
        with pytest.raises(workdir_lock.WorkdirInUseError) as e:
            workdir_lock.WorkdirLock(str(tmp_path)).acquire()
        assert f'(pid {holder.pid} on ' in str(e.value)
        # Its host, start time and command follow.
        assert ', started ' in str(e.value) and ' UTC: -c)' in str(e.value)
    finally:
        holder.kill()  # SIGKILL: the kernel drops its lock.
        holder.wait()
    lock = workdir_lock.WorkdirLock(str(tmp_path)).acquire()
    lock.release()


def test_a_resume_by_workdir_is_refused_before_it_says_it_resumes(tmp_path, capsys):
    work = tmp_path / 'run'
    work.mkdir()
    (work / 'config.json').write_text('{}')
    (work / 'config_source.json').write_text(
        json.dumps({'config': helpers.CONFIG, 'overrides': []})
    )
    lock = workdir_lock.WorkdirLock(str(work)).acquire()
    try:
        assert train.main(['--workdir', str(work)]) == 2
    finally:
        lock.release()
    out = capsys.readouterr()
    assert f'{work} is in use by another training run (pid {os.getpid()}' in out.err
    assert 'Resuming' not in out.out


def test_a_look_at_the_lock_does_not_turn_a_starting_run_away(tmp_path):
    """`holder()` (as `jaxdistill.runs` asks) holds a shared lock for an
    instant; a run taking the lock in that instant waits it out. A lock held
    for longer than `PROBE_GRACE_S` is refused after that wait."""
    path = tmp_path / workdir_lock.LOCK_FILE
    path.touch()
    with open(path, encoding='utf-8') as look:
        fcntl.flock(look.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        threading.Timer(0.3, look.close).start()  # The look ends.
        start = time.monotonic()
        lock = workdir_lock.WorkdirLock(str(tmp_path)).acquire()
        waited = time.monotonic() - start
    assert 0.2 < waited < workdir_lock.PROBE_GRACE_S
    assert workdir_lock.holder(str(tmp_path))['pid'] == os.getpid()
    lock.release()

    with open(path, encoding='utf-8') as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        start = time.monotonic()
        with pytest.raises(workdir_lock.WorkdirInUseError):
            workdir_lock.WorkdirLock(str(tmp_path)).acquire()
        assert time.monotonic() - start >= workdir_lock.PROBE_GRACE_S


def test_a_lock_file_that_cannot_be_opened_is_a_named_error(tmp_path):
    """(e.g. a shared workdir whose .lock another user owns)"""
    from jaxdistill.errors import JaxdistillError

    (tmp_path / workdir_lock.LOCK_FILE).mkdir()  # open() fails as it would.
    with pytest.raises(JaxdistillError, match=r'Cannot open the workdir lock .*\.lock'):
        workdir_lock.WorkdirLock(str(tmp_path)).acquire()


def test_stop_signals_leave_an_ignored_sigint_ignored():
    """A job a script started in its background ignores SIGINT; training
    keeps it so (SIGTERM still asks the run to save and stop)."""
    import signal

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with trainer_lib._StopSignals():  # pylint: disable=protected-access
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (
                signal.SIG_DFL,
                signal.SIG_IGN,
            )
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
