"""Config files, overrides and their errors."""

import pathlib

import pytest

from jaxdistill import configuration
from jaxdistill.errors import ConfigError

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / 'configs'


def test_every_field_defined_in_a_base_config_has_a_comment():
    """Every `config.x = value` in a base file sits under a comment line."""
    for path in [*CONFIGS.glob('*base.py'), CONFIGS / 'spine.py']:
        text = path.read_text().split('\ndef shrink')[0]  # changes, not fields
        lines = [l.strip() for l in text.splitlines()]
        for i, line in enumerate(lines):
            if not line.startswith('config.') or ' = ' not in line:
                continue
            if 'ConfigDict()' in line or '.update(' in line:
                continue
            j = i - 1
            while (
                j >= 0
                and lines[j].startswith('config.')
                and ('ConfigDict()' not in lines[j])
            ):
                j -= 1
            assert lines[j].startswith('#'), (
                f'{path.name}:{i + 1} has no comment: {line}'
            )


def test_load_with_argument_and_overrides():
    config = configuration.load_config(
        str(CONFIGS / 'translate_synthetic.py') + ':runlocal'
    )
    assert config.num_train_steps == 20
    configuration.apply_overrides(
        config,
        [
            'model.num_encoder_layers=2',
            'optimizer.learning_rate=1',
            'data.pairs=("en-de", "en-fr")',
            'method.name=supervised',
        ],
    )
    assert config.model.num_encoder_layers == 2
    assert config.optimizer.learning_rate == 1.0
    assert config.data.pairs == ('en-de', 'en-fr')


def test_num_train_steps_override_reaches_schedule_length():
    config = configuration.load_config(str(CONFIGS / 'translate_synthetic.py'))
    configuration.apply_overrides(config, ['num_train_steps=777'])
    assert config.optimizer.total_steps == 777


def test_unknown_key_lists_close_valid_keys():
    config = configuration.load_config(str(CONFIGS / 'translate_synthetic.py'))
    with pytest.raises(ConfigError, match='model.num_encoder_layers'):
        configuration.apply_overrides(config, ['model.num_encoder_layer=2'])
    with pytest.raises(ConfigError, match="Unknown config key 'nope.x'"):
        configuration.apply_overrides(config, ['nope.x=1'])


def test_bad_override_values():
    config = configuration.load_config(str(CONFIGS / 'translate_synthetic.py'))
    with pytest.raises(ConfigError, match='expected int'):
        configuration.apply_overrides(config, ['num_train_steps=1.5'])
    with pytest.raises(ConfigError, match='needs a value'):
        configuration.apply_overrides(config, ['num_train_steps'])


def test_missing_config_file():
    with pytest.raises(ConfigError, match='Config file not found: nope.py'):
        configuration.load_config('nope.py')


def test_unknown_config_argument():
    with pytest.raises(ValueError, match='Unknown config argument'):
        configuration.load_config(str(CONFIGS / 'translate_synthetic.py') + ':runlokal')


def test_resume_reads_keys_added_later_as_their_old_value():
    saved = {'model': {'d_model': 128}, 'seed': 0}
    current = {'model': {'d_model': 128, 'norm_position': 'pre'}, 'seed': 1}
    defaults = {'model.norm_position': 'pre', 'model.unused': 3}
    assert configuration.compare_for_resume(saved, current, ['model'], defaults) == []
    # Without the default, or with another value, the key is a difference.
    assert configuration.compare_for_resume(saved, current, ['model']) == [
        "model.norm_position: '<absent>' -> 'pre'"
    ]
    current['model']['norm_position'] = 'post'
    assert configuration.compare_for_resume(saved, current, ['model'], defaults) == [
        "model.norm_position: 'pre' -> 'post'"
    ]
