"""Test setup: 8 fake CPU devices and the XLA flags of `helpers.xla_flags`,
configured before jax is imported."""

import os
import pathlib
import shutil
import tempfile

from tests import helpers

os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') + ' ' + helpers.xla_flags(devices=8)
).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# One persistent compilation cache for the session, inherited by the xdist
# workers and the CLI subprocesses: the many short training runs compile the
# same steps, and compiling is most of their time on 2 cores.
_JIT_CACHE = None
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
    _JIT_CACHE = tempfile.mkdtemp(prefix='jaxdistill_tests_jit_')
    os.environ['JAX_COMPILATION_CACHE_DIR'] = _JIT_CACHE
# Cache every compilation, not only those over JAX's default 1 s: a test run
# compiles the same small steps, evaluation and decoding loops over and over
# (a CLI training run in test_resume takes 13 s instead of 20 s with them
# cached; the suite 582 s instead of 610 s on 2 cores).
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

import pytest  # pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'


def pytest_unconfigure(config):
    del config
    if _JIT_CACHE:
        shutil.rmtree(_JIT_CACHE, ignore_errors=True)


@pytest.fixture
def shared_data():
    """Path to ../shared/data; skips the test with a reason when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f'real data folder {SHARED_DATA} is absent (it lives beside '
            'the repository on the project machines only)'
        )
    return SHARED_DATA
