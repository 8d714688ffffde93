"""Ctrl-C in the command-line tools: never lost, and ends with one line."""

import gc
import os
import signal
import subprocess
import sys
import threading
import time

from jaxdistill import cli
from jaxdistill import interrupts
from jaxdistill import trainer as trainer_lib
from tests import helpers


def test_an_interrupt_inside_a_gc_callback_is_delivered_again_outside():
    """Python may run a signal handler inside a gc callback (JAX has one),
    where a KeyboardInterrupt would be swallowed as 'unraisable'."""
    delivered = threading.Event()
    raised = []

    def record(signum, frame):
        del signum, frame
        delivered.set()

    def callback(phase, info):
        del info
        if phase == 'start' and not raised:
            try:
                interrupts.interrupt(signal.SIGUSR1, sys._getframe())
            except KeyboardInterrupt:
                raised.append('inside')  # Would be swallowed here.
            raised.append('returned')

    previous = signal.signal(signal.SIGUSR1, record)
    gc.callbacks.append(callback)
    try:
        gc.collect()
        assert raised == ['returned']  # Nothing raised inside the callback...
        assert delivered.wait(5.0)  # ...the signal came again, outside it.
    finally:
        gc.callbacks.remove(callback)
        signal.signal(signal.SIGUSR1, previous)
    # Outside a gc callback it raises, as Python's own handler does.
    try:
        interrupts.interrupt(signal.SIGINT, sys._getframe(), 'SIGINT')
    except KeyboardInterrupt as e:
        assert e.args == ('SIGINT',)
    else:
        raise AssertionError('no KeyboardInterrupt')


def test_an_abandoning_signal_in_a_gc_callback_is_raised_outside_it_once():
    """Inside an evaluation the first stop signal raises `_Abandoned`; one
    that lands in a gc callback is sent again and raised outside, and the
    signal sent again is not taken for a second one (which would stop the
    run at once, before it saves)."""
    stop = trainer_lib._StopSignals()  # pylint: disable=protected-access
    landed = []

    def callback(phase, info):
        del info
        if phase == 'start' and not landed:
            landed.append(1)
            stop._handle(signal.SIGTERM, sys._getframe())  # As if it landed here.

    abandoned = False
    with stop:
        try:
            with stop.abandonable():
                gc.callbacks.append(callback)
                try:
                    gc.collect()
                    assert stop.caught == 'SIGTERM'  # Nothing raised in there.
                    time.sleep(10)  # The signal sent again lands here.
                finally:
                    gc.callbacks.remove(callback)
        except trainer_lib._Abandoned:  # pylint: disable=protected-access
            abandoned = True
        except KeyboardInterrupt:
            raise AssertionError('taken for a second signal') from None
    assert abandoned and landed and stop._resent == 0


def test_an_interrupt_during_an_import_waits_for_its_end(tmp_path, monkeypatch):
    """Raised while jaxlib's native modules initialise, a KeyboardInterrupt
    aborts the process; during an import it is delivered again after."""
    delivered = threading.Event()
    previous = signal.signal(signal.SIGUSR1, lambda *_: delivered.set())
    (tmp_path / 'slow_module.py').write_text(
        'import sys\n'
        'from jaxdistill import interrupts\n'
        'interrupts.interrupt(__import__("signal").SIGUSR1, sys._getframe())\n'
        'RAISED = False\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import slow_module  # pylint: disable=import-outside-toplevel

        assert slow_module.RAISED is False  # The import ran to its end...
        assert delivered.wait(5.0)  # ...and the signal came again after it.
    finally:
        signal.signal(signal.SIGUSR1, previous)
        sys.modules.pop('slow_module', None)


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args, '-c', code],
        cwd=helpers.REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, 'JAXDISTILL_HUGE_PAGES': '0'},
    )


def test_importing_the_package_imports_no_jax_and_installs_no_handler():
    """A tool restarts itself with huge pages before the heavy imports; a
    library user's signal handlers are left alone."""
    done = _python(
        # Unchanged by the import (a job started in the background of a
        # shell inherits SIGINT ignored, not Python's default handler).
        'import signal, sys\n'
        'before = signal.getsignal(signal.SIGINT)\n'
        'import jaxdistill, jaxdistill.hostmem\n'
        "assert 'jax' not in sys.modules, 'jax imported'\n"
        'assert signal.getsignal(signal.SIGINT) is before\n'
        'assert jaxdistill.ConfigError.__module__ == "jaxdistill.errors"\n'
        "assert 'Trainer' in dir(jaxdistill)\n"
        'print(jaxdistill.Trainer.__name__, jaxdistill.losses.__name__)\n'
        "assert jaxdistill.data.words.__name__ == 'jaxdistill.data.words'\n"
        "assert not hasattr(jaxdistill, 'nothing_of_that_name')\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ['Trainer', 'jaxdistill.losses']
    # A tool puts its handler in as it parses its flags, before JAX.
    done = _python(
        'import signal, sys\n'
        'from jaxdistill import cli, interrupts\n'
        "cli.parser_for('train', 'doc')\n"
        'assert signal.getsignal(signal.SIGINT) is interrupts._handle\n'
        "assert 'jax' not in sys.modules\n"
    )
    assert done.returncode == 0, done.stderr


def test_help_does_not_wait_for_jax():
    done = subprocess.run(
        [sys.executable, '-X', 'importtime', '-m', 'jaxdistill.train', '--help'],
        cwd=helpers.REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('usage: python -m jaxdistill.train')
    imported = {line.split('|')[-1].strip() for line in done.stderr.splitlines()}
    assert 'jax' not in imported and 'jaxdistill.trainer' not in imported


def test_the_line_a_ctrl_c_ends_with(tmp_path):
    assert cli._interrupted(None) == 'interrupted.'
    said = cli._interrupted(str(tmp_path))
    assert said.startswith('interrupted before the first checkpoint: nothing')
    # A save still in flight is not a checkpoint yet.
    (tmp_path / 'checkpoints' / '5.orbax-checkpoint-tmp').mkdir(parents=True)
    assert cli._interrupted(str(tmp_path)) == said
    for step in (5, 10):
        (tmp_path / 'checkpoints' / str(step)).mkdir()
    assert cli._interrupted(str(tmp_path)) == (
        f'interrupted; the checkpoints in {tmp_path}/checkpoints are complete '
        'and kept (the latest: step 10; a save cut short, which Orbax may '
        'report above as failed, is not among them, and one Orbax names there '
        'may have finished all the same); the same command resumes from the '
        'latest.'
    )


def test_an_interrupted_tool_exits_130_without_teardown():
    done = _python(
        'import atexit\n'
        "atexit.register(lambda: print('teardown'))\n"
        'from jaxdistill import cli\n'
        "print('flushed', end='')\n"
        'cli.exit_process(130)\n'
    )
    assert (done.returncode, done.stdout) == (130, 'flushed')
    done = _python('from jaxdistill import cli\ncli.exit_process(2)\n')
    assert done.returncode == 2
