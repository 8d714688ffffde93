"""Ctrl-C that is never lost, for the command-line tools.

Python runs a signal's handler at the next bytecode boundary, which may fall
inside a garbage-collector callback; JAX registers one (`_xla_gc_callback`),
and start-up (imports, tracing) collects often. An exception raised there is
"ignored" (printed as unraisable) by the interpreter, so the default
KeyboardInterrupt vanished and a Ctrl-C during start-up went unheeded: the
run trained on. The handler here raises KeyboardInterrupt as the default one
does, except inside a gc callback, where it sends the signal again a moment
later, to land outside it.

`install()` is called by the package when a `python -m jaxdistill.TOOL`
command starts (before JAX is imported), never when the library is merely
imported; the training loop replaces the handler with its own while it runs
(`trainer._StopSignals`) and puts this one back after.
"""

import gc
import os
import signal
import sys
import threading

_RETRY_SECONDS = 0.05


def _in_gc_callback(frame) -> bool:
    codes = {getattr(cb, '__code__', None) for cb in gc.callbacks}
    while frame is not None:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


def interrupt(signum, frame, *args) -> None:
    """Raises KeyboardInterrupt(*args), or, inside a gc callback (where it
    would be swallowed), sends `signum` again a moment later instead."""
    if _in_gc_callback(frame):
        timer = threading.Timer(_RETRY_SECONDS, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()
        return
    raise KeyboardInterrupt(*args)


def _handle(signum, frame):
    interrupt(signum, frame)


def started_as_tool() -> bool:
    """True in a `python -m jaxdistill.TOOL` process."""
    argv = list(getattr(sys, 'orig_argv', ()))
    return any(
        a == '-m' and i + 1 < len(argv) and argv[i + 1].startswith('jaxdistill')
        for i, a in enumerate(argv)
    )


def install() -> None:
    """Replaces Python's default SIGINT handler (only that one, and only in
    the main thread) with `_handle`."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _handle)
