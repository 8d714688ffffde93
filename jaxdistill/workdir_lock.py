"""One training run per workdir at a time.

Two runs writing one workdir (a job submitted twice, a resume started while
the first run still trains) would save checkpoints over each other, and the
second would cut the first's metrics log back to its checkpoint. So a run
that writes takes an exclusive `flock` on `WORKDIR/.lock` for as long as it
trains, and a second is refused with a message naming the holder (pid, host,
start time, command). The kernel releases the lock when its process ends, even
by SIGKILL, so a killed run leaves nothing to clean up.

Where the filesystem refuses `flock` (some network or FUSE mounts), the run
goes on unlocked with a warning. With several processes, process 0 takes the
lock and tells the others whether it could.
"""

import datetime
import json
import os
import socket
import sys
import time

from absl import logging

from jaxdistill.errors import JaxdistillError

try:
    import fcntl
except ImportError:  # Not on POSIX: no locking.
    fcntl = None

LOCK_FILE = '.lock'
# How long `acquire` keeps trying a lock that is held. A run holds it for as
# long as it trains; `holder()` (`jaxdistill.runs`) holds a shared lock for an
# instant to look, and must not turn a run starting in that instant away.
PROBE_GRACE_S = 1.0


class WorkdirInUseError(JaxdistillError):
    """Another run is training in the workdir."""


def _record(path: str) -> dict:
    """What the lock file says of the run that holds it ({} if nothing yet),
    with 'text': 'pid P on HOST, started T: COMMAND'."""
    try:
        with open(path, encoding='utf-8') as f:
            h = json.load(f)
        text = f'pid {h["pid"]} on {h["host"]}, started {h["started"]}: {h["command"]}'
        return {**h, 'text': text}
    except (OSError, ValueError, KeyError, TypeError):
        return {'text': 'a run that has not written its details yet'}


def _command() -> str:
    """This process's command line, `python -m jaxdistill.X` as typed."""
    argv = list(sys.argv)
    head, name = os.path.split(argv[0]) if argv else ('', '')
    if os.path.basename(head) == 'jaxdistill' and name.endswith('.py'):
        argv[0] = f'python -m jaxdistill.{name[:-3]}'
    return ' '.join(argv)


def in_use_error(workdir: str, text: str) -> WorkdirInUseError:
    """The refusal of a run in `workdir`, held by the run `text` describes
    (a `holder()` record's 'text')."""
    return WorkdirInUseError(
        f'{workdir} is in use by another training run ({text}). Wait for it '
        'to end or stop it, or use another --workdir.'
    )


def _lock_within(f, seconds: float):
    """An exclusive flock on `f`, tried until `seconds` have passed;
    BlockingIOError if it stays held."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


class WorkdirLock:
    """The exclusive lock of one workdir; `release()` (or the end of the
    process) gives it up. `acquire` raises WorkdirInUseError if held."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_FILE)
        self._file = None

    def acquire(self) -> 'WorkdirLock':
        if fcntl is None:
            return self
        try:
            f = open(self.path, 'a+', encoding='utf-8')  # pylint: disable=consider-using-with
        except OSError as e:
            raise JaxdistillError(
                f'Cannot open the workdir lock {self.path}: {e.strerror}. The '
                'workdir must be writable by whoever trains in it (a shared '
                'workdir: give the group write access to it and its files).'
            ) from None
        try:
            _lock_within(f, PROBE_GRACE_S)
        except BlockingIOError:
            f.close()
            raise in_use_error(
                os.path.dirname(self.path), _record(self.path)['text']
            ) from None
        except OSError as e:  # The filesystem has no flock.
            f.close()
            logging.warning(
                'Cannot lock %s (%s); training without the one-run-per-workdir check.',
                self.path,
                e,
            )
            return self
        f.seek(0)
        f.truncate()
        json.dump(
            {
                'pid': os.getpid(),
                'host': socket.gethostname(),
                'started': datetime.datetime.now(datetime.timezone.utc).strftime(
                    '%Y-%m-%d %H:%M:%S UTC'
                ),
                'command': _command(),
                'time': time.time(),
            },
            f,
        )
        f.flush()
        self._file = f
        return self

    def release(self):
        if self._file is not None:
            self._file.close()  # Closing the descriptor drops the flock.
            self._file = None


def holder(workdir: str) -> dict | None:
    """Who trains in `workdir` now: the lock file's record (pid, host,
    started, command, time: its start as a `time.time()`) with 'text' ('pid P
    on HOST, started T: COMMAND'); None if no run holds the lock (or locks
    are not to be had here).

    Asks by taking a shared lock for an instant; a run starting in that
    instant waits for it (`PROBE_GRACE_S`) rather than being refused.
    """
    path = os.path.join(workdir, LOCK_FILE)
    if fcntl is None or not os.path.exists(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _record(path)
            return None  # Closing the file drops the shared lock.
    except OSError:
        return None


def lock_workdir(workdir: str) -> WorkdirLock:
    """Process 0 locks `workdir`; every process raises WorkdirInUseError if
    it could not. Call after `jax.distributed` is set up."""
    import jax  # pylint: disable=g-import-not-at-top

    lock, error = WorkdirLock(workdir), None
    if jax.process_index() == 0:
        try:
            lock.acquire()
        except JaxdistillError as e:  # Held, or the lock file cannot be made.
            error = e
    if jax.process_count() > 1:
        from jaxdistill import process_check  # pylint: disable=g-import-not-at-top

        # Every process learns process 0's outcome, its message included: an
        # error raised in process 0 alone left the others waiting in this
        # broadcast until JAX's shutdown barrier aborted them all (~5 min).
        said = process_check.share_error(error)
        if said and error is None:
            kind, message = said
            cls = WorkdirInUseError if kind == 'WorkdirInUseError' else JaxdistillError
            error = cls(f'{message} (process 0 could not lock the workdir.)')
    if error is not None:
        raise error
    return lock
