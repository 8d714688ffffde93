"""config.compilation_cache_dir: where JAX's persistent compilation cache
goes, and that a second compilation of the same step is read from it."""

import jax
import jax.numpy as jnp
import pytest

from jaxdistill import compile_cache
from jaxdistill.errors import ConfigError


@pytest.fixture
def session_cache():
    """Restores the test session's cache (conftest's) after the test."""
    before = jax.config.jax_compilation_cache_dir
    yield before
    jax.config.update('jax_compilation_cache_dir', before)
    jax.config.update('jax_enable_compilation_cache', True)
    compile_cache._ours = compile_cache._UNSET  # pylint: disable=protected-access
    compile_cache.compilation_cache.reset_cache()


def _cache_hits(fn, *args) -> int:
    """Cache hits while compiling `fn` afresh (JAX's in-memory caches cleared)."""
    hits = []
    jax.monitoring.register_event_listener(
        lambda event, **kw: (
            hits.append(event) if event == '/jax/compilation_cache/cache_hits' else None
        )
    )
    jax.clear_caches()
    jax.jit(fn).lower(*args).compile()
    # Listeners cannot be removed one by one; this one only appends.
    return len(hits)


def test_auto_keeps_the_users_directory_else_the_workdirs(session_cache, tmp_path):
    assert session_cache  # conftest sets JAX_COMPILATION_CACHE_DIR.
    assert compile_cache.use('auto', str(tmp_path / 'a')) == session_cache
    # Without a user's setting, each run's workdir gets its own.
    jax.config.update('jax_compilation_cache_dir', None)
    a = compile_cache.use('auto', str(tmp_path / 'a'))
    assert a == str(tmp_path / 'a' / 'compilation_cache')
    b = compile_cache.use('auto', str(tmp_path / 'b'))
    assert b == str(tmp_path / 'b' / 'compilation_cache')
    assert jax.config.jax_compilation_cache_dir == b
    assert compile_cache.use('', str(tmp_path / 'b')) is None
    assert not jax.config.jax_enable_compilation_cache
    # A directory that cannot be made is named, before anything compiles.
    (tmp_path / 'file').write_text('')
    with pytest.raises(ConfigError, match=r"compilation_cache_dir='.*file/jit'"):
        compile_cache.use(str(tmp_path / 'file' / 'jit'), str(tmp_path))


def test_read_only_tools_and_auto_after_an_explicit_directory(session_cache, tmp_path):
    """evaluate/translate on a workdir they cannot write run without the
    cache (a warning), where training is refused; and a directory this
    module set for one run is not taken for the user's by a later 'auto'."""
    jax.config.update('jax_compilation_cache_dir', None)
    (tmp_path / 'file').write_text('')
    blocked = str(tmp_path / 'file' / 'run')  # Its cache cannot be made.
    assert compile_cache.use('auto', blocked, read_only=True) is None
    assert not jax.config.jax_enable_compilation_cache
    with pytest.raises(ConfigError, match='file/run/compilation_cache'):
        compile_cache.use('auto', blocked)
    explicit = str(tmp_path / 'shared')
    assert compile_cache.use(explicit, str(tmp_path / 'a')) == explicit
    assert compile_cache.use('auto', str(tmp_path / 'b')) == str(
        tmp_path / 'b' / 'compilation_cache'
    )
    # And the user's own directory, after a run that named another, is
    # 'auto''s again (it took the run's workdir).
    users = str(tmp_path / 'users')
    jax.config.update('jax_compilation_cache_dir', users)
    assert compile_cache.use('auto', str(tmp_path / 'c')) == users
    assert compile_cache.use(explicit, str(tmp_path / 'd')) == explicit
    assert compile_cache.use('auto', str(tmp_path / 'e')) == users
    assert jax.config.jax_compilation_cache_dir == users


def test_a_directory_is_written_then_read_back(session_cache, tmp_path):
    del session_cache
    cache = tmp_path / 'jit'
    assert compile_cache.use(str(cache), str(tmp_path)) == str(cache)

    def fn(x):
        return jnp.tanh(x @ x.T).sum(0) * 3.0

    x = jnp.ones((7, 5))
    assert _cache_hits(fn, x) == 0
    assert any(cache.iterdir())  # conftest caches every compilation.
    assert _cache_hits(fn, x) == 1
    # Off: nothing read back.
    compile_cache.use('', str(tmp_path))
    assert _cache_hits(fn, x) == 0
