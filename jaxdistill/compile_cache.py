"""JAX's persistent compilation cache for a run (`config.compilation_cache_dir`).

A run compiles its train step once per batch shape (a translation run: once
per bucket length), its evaluation and its decoding loops. With the cache on,
a resumed or repeated run, `evaluate` and `translate` on the same workdir read
those executables back instead of compiling them again. Only compilations
that took at least `jax_persistent_cache_min_compile_time_secs` (JAX's
default: 1 s) are stored.
"""

import logging
import os

import jax
from jax.experimental.compilation_cache import compilation_cache

from jaxdistill.errors import ConfigError

# The directory this module last pointed the cache at in this process
# (_UNSET: none yet), told apart from one the user set
# (JAX_COMPILATION_CACHE_DIR or jax.config), which 'auto' keeps: `_users`,
# the setting last found that was not ours (None: the user set none).
_UNSET = object()
_ours = _UNSET
_users = None


def _enable(on: bool):
    """Turns the cache on or off. JAX decides whether to use it once, at the
    first compilation after a reset (jax 0.11 keeps that answer), so a change
    resets it: without, a cache turned off went on being read."""
    if jax.config.jax_enable_compilation_cache != on:
        jax.config.update('jax_enable_compilation_cache', on)
        compilation_cache.reset_cache()


def use(setting: str, workdir: str, *, read_only: bool = False):
    """Points the process's compilation cache where `setting` says.

    Args:
      setting: 'auto' (JAX's own setting where the user made one, e.g.
        JAX_COMPILATION_CACHE_DIR; else WORKDIR/compilation_cache), a
        directory (local or any path JAX's cache takes, e.g. gs://), or ''
        (no cache).
      workdir: the run's directory.
      read_only: a tool that only reads the run (evaluate, translate): a
        local cache it cannot write is left off, with a warning, instead of
        refused (a run of someone else's, an archived one).
    Returns:
      The directory in use, or None when the cache is off.
    """
    global _ours, _users
    current = jax.config.jax_compilation_cache_dir
    if current != _ours:  # The user's (or none), as it stands now.
        _users = current
    if not setting:
        _enable(False)
        return None
    if setting == 'auto':
        if _users:  # Kept after a run that named a directory of its own.
            _enable(True)
            if current != _users:
                jax.config.update('jax_compilation_cache_dir', _users)
                compilation_cache.reset_cache()
            _ours = _UNSET
            return _users
        setting = os.path.join(os.path.abspath(workdir), 'compilation_cache')
    if '://' not in setting:  # A local directory: usable, or said why not.
        problem = None
        try:
            os.makedirs(setting, exist_ok=True)
        except OSError as e:
            problem = f'compilation_cache_dir={setting!r}: {e}'
        if problem is None and not os.access(setting, os.W_OK):
            problem = f'compilation_cache_dir={setting!r} is not writable.'
        if problem and read_only:
            logging.warning('%s Compiling without the cache.', problem)
            _enable(False)
            return None
        if problem:
            raise ConfigError(problem)
    _enable(True)
    _ours = setting
    if setting != current:
        jax.config.update('jax_compilation_cache_dir', setting)
        # The cache opens its directory at the first compilation; a later
        # change needs it reopened.
        compilation_cache.reset_cache()
        logging.info('Compilation cache: %s', setting)
    return setting
