"""TFDS translation loading, offline through tfds.testing.mock_data."""

import tempfile

import pytest

from jaxdistill.data import load_tfds_translation
from jaxdistill.errors import DataError

tfds = pytest.importorskip('tensorflow_datasets')


@pytest.fixture(autouse=True)
def _tfds_temp_dirs_in_tmp_path(tmp_path, monkeypatch):
    # A builder whose data is not prepared looks for its metadata on GCS and
    # leaves an empty tempfile.mkdtemp('tfds') behind each time (TFDS
    # DatasetInfo.initialize_from_bucket): keep those inside pytest's tmp_path.
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))


def test_wmt14_de_en_mock(tmp_path):
    # USE_CODE: TFDS ships no metadata for wmt14, so features come from the
    # builder's code; mock_data replaces download and reading, no network.
    with tfds.testing.mock_data(
        num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE
    ):
        pairs = load_tfds_translation(
            'wmt14_translate/de-en', 'train', 'en', 'de', data_dir=str(tmp_path)
        )
        assert len(pairs) == 6
        assert all(isinstance(s, str) and isinstance(t, str) for s, t in pairs)
        assert pairs[0][0] != pairs[0][1]
        reverse = load_tfds_translation(
            'wmt14_translate/de-en',
            'train',
            'de',
            'en',
            data_dir=str(tmp_path),
            max_examples=2,
        )
        assert reverse == [(t, s) for s, t in pairs[:2]]
        with pytest.raises(DataError, match=r"no target language 'fr'.*\['de', 'en'\]"):
            load_tfds_translation(
                'wmt14_translate/de-en', 'train', 'en', 'fr', data_dir=str(tmp_path)
            )
        # A split the dataset does not make is named before anything is
        # prepared (wmt19 has no 'test').
        with pytest.raises(
            DataError,
            match=r"no split 'test'; its splits are \['train', 'validation'\]",
        ):
            load_tfds_translation(
                'wmt19_translate/de-en', 'test[:5]', 'en', 'de', data_dir=str(tmp_path)
            )
        with pytest.raises(DataError, match="'wmt14_translate/xx-en' cannot be opened"):
            load_tfds_translation(
                'wmt14_translate/xx-en', 'train', 'en', 'de', data_dir=str(tmp_path)
            )


def test_wmt10_config_loads_every_pair_from_its_own_dataset(tmp_path):
    from jaxdistill import configuration, data
    from jaxdistill.errors import ConfigError

    config = configuration.load_config('configs/tsjt_wmt10_tfds.py:runlocal')
    d = config.data
    d.tfds_data_dir = str(tmp_path)
    with tfds.testing.mock_data(
        num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE
    ):
        out = data.load_translation(d, 'train')
    langs = ['cs', 'de', 'et', 'fi', 'fr', 'gu', 'hi', 'lv', 'ro', 'tr']
    assert out.target_lang == [l for l in langs for _ in range(2)]
    assert len(out.source) == 20 and all(out.source)
    d.tfds_names = d.tfds_names[:3]
    with pytest.raises(ConfigError, match='tfds_names lists 3 datasets for 10'):
        data.load_translation(d, 'train')


def test_an_empty_tfds_data_dir_is_tfds_default_and_unprepared_data_is_named(
    tmp_path, monkeypatch
):
    from jaxdistill import configuration, data
    from jaxdistill.data import tfds_translation

    config = configuration.load_config('configs/translate_wmt_tfds.py:runlocal')
    assert config.data.tfds_data_dir == ''
    seen = []
    with monkeypatch.context() as m:
        m.setattr(
            tfds_translation,
            'load_tfds_translation',
            lambda *a, data_dir, **k: seen.append(data_dir) or [('a', 'b')],
        )
        data.load_translation(config.data, 'train')
    assert seen and set(seen) == {None}  # Not '' (the current directory).

    def no_network(*args, **kwargs):
        raise OSError('no network')

    monkeypatch.setattr(tfds, 'load', no_network)
    empty = tmp_path / 'tfds_empty'
    with pytest.raises(DataError, match=f'It is not prepared in {empty}'):
        load_tfds_translation('wmt14_translate/de-en', 'train', 'en', 'de', str(empty))


def test_tfds_can_prepare_a_dataset(tmp_path):
    # Preparing (not mocked): TFDS needs importlib_resources there, which it
    # does not declare for Python >= 3.9 (tensorflow/datasets#11212).
    builder = tfds.testing.DummyDataset(data_dir=str(tmp_path))
    builder.download_and_prepare()
    assert builder.info.splits['train'].num_examples > 0


def test_tfds_download_false_refuses_unprepared_data_at_once(tmp_path, monkeypatch):
    """Offline, TFDS's download retries for minutes before it fails;
    data.tfds_download=False names the unprepared dataset at once, with the
    call that prepares it, and never asks TFDS to load."""
    from jaxdistill import configuration, data

    def must_not_load(*args, **kwargs):
        raise AssertionError('tfds.load called')

    monkeypatch.setattr(tfds, 'load', must_not_load)
    config = configuration.load_config('configs/translate_wmt_tfds.py:runlocal')
    assert config.data.tfds_download is True  # TFDS's own default.
    config.data.tfds_download = False
    config.data.tfds_data_dir = str(tmp_path / 'none')
    with pytest.raises(DataError) as e:
        data.load_translation(config.data, 'train')
    message = str(e.value)
    assert "'wmt14_translate/de-en' is not prepared in " in message
    assert 'data.tfds_download=False' in message
    assert (
        f"tfds.builder('wmt14_translate/de-en', data_dir='{tmp_path}/none')"
        '.download_and_prepare()' in message
    )
