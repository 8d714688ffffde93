"""Ctrl-C that is never lost, for the command-line tools.

Python runs a signal's handler at the next bytecode boundary, which may fall
inside a garbage-collector callback; JAX registers one (`_xla_gc_callback`),
and start-up (imports, tracing) collects often. An exception raised there is
"ignored" (printed as unraisable) by the interpreter, so the default
KeyboardInterrupt vanished and a Ctrl-C during start-up went unheeded: the
run trained on. One raised while jaxlib's native modules initialise (during
`import jax`) aborts the process instead. The handler here raises
KeyboardInterrupt as the default one does, except inside a gc callback or
an import, where it sends the signal again a moment later, to land outside.

`install()` is called when a `python -m jaxdistill.TOOL` command parses its
flags (`cli.parser_for`, before JAX is imported), never when the library is
merely imported; the training loop replaces the handler with its own while
it runs (`trainer._StopSignals`) and puts this one back after.
"""

import gc
import os
import signal
import threading

_RETRY_SECONDS = 0.05
_MAX_RETRIES = 400  # 20 s: then it is raised wherever it lands.
_retries = 0


def _must_wait(frame) -> bool:
    """Whether a KeyboardInterrupt raised in `frame` would be lost or fatal:
    inside a gc callback (swallowed), or inside an import (jaxlib's native
    modules, initialising, turn an exception into `std::terminate`: the
    process aborted, exit -6, with a C++ traceback)."""
    callbacks = {getattr(cb, '__code__', None) for cb in gc.callbacks}
    while frame is not None:
        code = frame.f_code
        if code in callbacks or code.co_filename.startswith('<frozen importlib'):
            return True
        frame = frame.f_back
    return False


def deliver(signum, frame, exception: BaseException) -> None:
    """Raises `exception` from a signal handler; or, where that would be lost
    or fatal (`_must_wait`), returns having arranged for `signum` to be sent
    again a moment later, when the handler will be called again."""
    global _retries
    if _retries < _MAX_RETRIES and _must_wait(frame):
        _retries += 1
        timer = threading.Timer(_RETRY_SECONDS, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()
        return
    _retries = 0
    raise exception


def interrupt(signum, frame, *args) -> None:
    """Raises KeyboardInterrupt(*args); or, where that would be lost or
    fatal (`_must_wait`), sends `signum` again a moment later instead."""
    deliver(signum, frame, KeyboardInterrupt(*args))


def _handle(signum, frame):
    interrupt(signum, frame)


def install() -> None:
    """Replaces Python's default SIGINT handler (only that one, and only in
    the main thread) with `_handle`."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _handle)
