"""Test setup: 8 fake CPU devices, configured before jax is imported."""

import os
import pathlib

os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import pytest  # pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'


@pytest.fixture
def shared_data():
    """Path to ../shared/data; skips the test with a reason when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f'real data folder {SHARED_DATA} is absent (it lives beside '
            'the repository on the project machines only)'
        )
    return SHARED_DATA
