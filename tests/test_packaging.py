"""What an installed jaxdistill carries: every package, and the library's
config files, which the README's commands name as `configs/NAME.py`."""

import os
import pathlib
import tomllib

import pytest

from jaxdistill import cli
from jaxdistill import configuration
from jaxdistill.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_the_wheel_lists_every_package_and_carries_the_configs():
    """pyproject.toml lists the packages (so that configs/ can ship as
    jaxdistill.configs): a package folder left off the list would be missing
    from an installed jaxdistill, which no editable install would show."""
    project = tomllib.loads((REPO / 'pyproject.toml').read_text())['tool']
    listed = set(project['setuptools']['packages'])
    folders = {
        '.'.join(p.relative_to(REPO).parts)
        for p in (REPO / 'jaxdistill').rglob('*')
        if p.is_dir() and p.name != '__pycache__' and any(p.glob('*.py'))
    }
    assert folders | {'jaxdistill'} <= listed, sorted(folders - listed)
    assert project['setuptools']['package-dir'] == {'jaxdistill.configs': 'configs'}
    assert listed - folders - {'jaxdistill'} == {'jaxdistill.configs'}


def test_the_library_configs_are_found_from_any_folder(tmp_path, monkeypatch, capsys):
    """From a folder with no configs/ (an installed jaxdistill, a user's own
    folder), `configs/NAME.py` and `NAME.py` name the library's config, with
    a note; the run's record holds the file it used."""
    monkeypatch.chdir(tmp_path)
    library = configuration.library_configs()
    assert library == str(REPO / 'configs')
    configuration._NOTED.clear()
    config = configuration.load_config('configs/translate_synthetic.py:runlocal')
    assert config.num_train_steps == 20  # runlocal's
    assert f"using the library's config {library}/translate_synthetic.py" in (
        capsys.readouterr().err
    )
    assert configuration.load_config('translate_synthetic.py').model.d_model > 32
    record = cli.source_record('configs/translate_synthetic.py:runlocal', [])
    assert record['config'] == f'{library}/translate_synthetic.py:runlocal'
    # A file of that name in the folder is the one used.
    (tmp_path / 'configs').mkdir()
    mine = tmp_path / 'configs' / 'translate_synthetic.py'
    mine.write_text(
        'import ml_collections\n'
        'def get_config():\n'
        '    return ml_collections.ConfigDict({"mine": 1})\n'
    )
    assert configuration.load_config('configs/translate_synthetic.py').mine == 1
    # Another folder is not searched for the library's names.
    with pytest.raises(ConfigError, match='Config file not found: other/spine.py$'):
        configuration.load_config('other/spine.py')


def test_a_config_name_not_found_lists_the_librarys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        configuration.load_config('configs/tsjt_synthtic.py')
    message = str(e.value)
    assert message.startswith('Config file not found: configs/tsjt_synthtic.py')
    assert 'tsjt_synthetic.py' in message and 'translate_multi30k.py' in message
    assert os.path.join(str(REPO), 'configs') in message
