"""Host memory for XLA's CPU backend: large buffers on transparent huge pages.

On CPU, every executed step allocates its temporaries and outputs afresh. glibc
serves blocks larger than its mmap threshold (at most 32 MB) with a new `mmap`
and returns them with `munmap` on free, so each step touches all of that memory
for the first time again: for the tiny Transformer's 4,096-token step (a
[4096, 10000] logits block alone is 164 MB) that is ~280,000 page faults a
step and ~40% of the CPU time in the kernel (`benchmarks/host_memory.py`).

glibc 2.35 and later can back those blocks with transparent huge pages
(`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`: 2 MB pages, 512x fewer faults). The
tunable is read when the process starts, so `reexec_with_huge_pages` restarts
the command once with it set. The command-line entry points call it before
anything else; library code never does. Set `JAXDISTILL_HUGE_PAGES=0` to keep
the process as started.
"""

import os
import platform
import sys

TUNABLE = 'glibc.malloc.hugetlb'
OPT_OUT = 'JAXDISTILL_HUGE_PAGES'
_THP_PATH = '/sys/kernel/mm/transparent_hugepage/enabled'


def glibc_version() -> tuple[int, ...] | None:
    name, version = platform.libc_ver()
    if name != 'glibc' or not version:
        return None
    try:
        return tuple(int(p) for p in version.split('.')[:2])
    except ValueError:
        return None


def thp_mode(path: str = _THP_PATH) -> str | None:
    """The bracketed mode of `always [madvise] never`, or None if unreadable."""
    try:
        with open(path, encoding='ascii') as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find('['), text.find(']')
    return text[start + 1 : end] if 0 <= start < end else None


def huge_pages_env(environ=None, *, glibc=None, thp=None) -> dict | None:
    """The environment to restart with, or None when there is nothing to do.

    Nothing to do: not Linux with glibc >= 2.35, transparent huge pages off
    (`never`) or on for everything already (`always`), the tunable already in
    GLIBC_TUNABLES (set by the user, or by an earlier restart), or
    JAXDISTILL_HUGE_PAGES=0.
    """
    environ = os.environ if environ is None else environ
    if environ.get(OPT_OUT, '1').strip().lower() in ('0', 'false', 'no', 'off'):
        return None
    glibc = glibc_version() if glibc is None else glibc
    if sys.platform != 'linux' or glibc is None or glibc < (2, 35):
        return None
    thp = thp_mode() if thp is None else thp
    if thp != 'madvise':
        return None
    if TUNABLE in environ.get('GLIBC_TUNABLES', ''):
        return None
    return with_huge_pages(environ, True)


def with_huge_pages(environ, on: bool) -> dict:
    """A copy of `environ` whose GLIBC_TUNABLES sets the tunable `on` (=1) or
    leaves it out (glibc's default, off), keeping any other tunables."""
    kept = [
        t
        for t in environ.get('GLIBC_TUNABLES', '').split(':')
        if t and TUNABLE not in t
    ]
    env = dict(environ)
    env['GLIBC_TUNABLES'] = ':'.join(kept + ([f'{TUNABLE}=1'] if on else []))
    return env


def _not_restartable() -> bool:
    """Whether this interpreter could not be started again as it was: a
    script read from stdin (already consumed), an interactive session, a
    Jupyter kernel."""
    return (
        (sys.argv[0] if sys.argv else '') in ('', '-')
        or bool(sys.flags.interactive)
        or hasattr(sys, 'ps1')
        or 'ipykernel' in sys.modules
    )


def reexec_with_huge_pages() -> None:
    """Restarts this command with huge pages for malloc, if that helps here.

    Call it first thing in a `__main__` entry point, before output or threads:
    the process image is replaced (same interpreter, flags and arguments).
    Returns (doing nothing) where `huge_pages_env` finds nothing to do.
    """
    if _not_restartable():
        return
    env = huge_pages_env()
    if env is None:
        return
    argv = list(getattr(sys, 'orig_argv', None) or [sys.executable, *sys.argv])
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, argv, env)
    except OSError:  # No usable interpreter path: run on as started.
        pass
