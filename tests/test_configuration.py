"""Config files, overrides and their errors."""

import dataclasses
import json
import pathlib
import re

import pytest

from jaxdistill import configuration
from jaxdistill import registry
from jaxdistill.errors import ConfigError
from tests import helpers

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
    # String fields: the text as is, quotes around it removed.
    for text, want in [
        ("'val'", 'val'),
        ('"val"', 'val'),
        ("''", ''),
        ('', ''),
        ("it's", "it's"),
        ("'a' + 'b'", "'a' + 'b'"),
        ('/data/x y', '/data/x y'),
    ]:
        configuration.apply_overrides(config, [f'data.eval_split={text}'])
        assert config.data.eval_split == want, text


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


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match='Config file not found: nope.py'):
        configuration.load_config('nope.py')
    # --config and --workdir swapped: a folder (a run's) is named as that.
    (tmp_path / 'config.json').write_text('{}')
    with pytest.raises(ConfigError, match="is a folder, not a config file \\(a run's"):
        configuration.load_config(str(tmp_path))


@pytest.mark.parametrize(
    'config, arg, choices',
    [
        ('translate_synthetic', 'runlokal', "['runlokal']; known: runlocal, size=NAME"),
        (
            'translate_synthetic',
            'size=huge',
            "size='huge'; valid sizes: tiny | small | base | big",
        ),
        (
            'tsjt_multi30k',
            'runlocal,composit=depth',
            "['composit']; known: runlocal, size=NAME, budget, composite=width|depth",
        ),
        ('tsjt_synthetic', 'composite=wide', "composite='wide'; valid: width | depth"),
    ],
)
def test_bad_config_file_argument_names_file_and_choices(config, arg, choices):
    spec = f'{CONFIGS / config}.py:{arg}'
    with pytest.raises(ConfigError) as e:
        configuration.load_config(spec)
    assert str(e.value).startswith(f'{spec}: ') and choices in str(e.value)


def test_bug_in_a_config_file_keeps_its_traceback(tmp_path):
    """A genuine error is not turned into a one-liner: its traceback ends at
    the file's line, and a note names the file."""
    path = tmp_path / 'buggy.py'
    path.write_text('def get_config(arg=None):\n    return undefined_name\n')
    with pytest.raises(NameError) as e:
        configuration.load_config(str(path))
    assert e.traceback[-1].path == path and str(path) in e.value.__notes__[0]


@pytest.mark.parametrize('value', ['foo', '1', '(1, 2)'])
def test_overriding_a_group_with_a_value_names_the_group(value):
    config = configuration.load_config(str(CONFIGS / 'translate_synthetic.py'))
    with pytest.raises(ConfigError) as e:
        configuration.apply_overrides(config, [f'model={value}'])
    assert 'model is a group of settings' in str(e.value)
    assert 'model.d_model' in str(e.value)


def test_a_schedule_group_takes_a_number():
    config = configuration.load_config(str(CONFIGS / 'mt2st_sst2.py'))
    assert config.method.aux_weights.skipgram.kind == 'diminish'
    configuration.apply_overrides(config, ['method.aux_weights.skipgram=0.5'])
    assert config.method.aux_weights.skipgram == 0.5


def test_step_fields_follow_num_train_steps_unless_given():
    def load(spec, *overrides):
        config = configuration.load_config(str(CONFIGS / spec))
        return configuration.apply_overrides(config, list(overrides))

    # TSJT's stage 2 starts at half of training, however long it is.
    assert load('tsjt_synthetic.py').method.stage2_start == 400
    assert load('tsjt_synthetic.py', 'num_train_steps=20').method.stage2_start == 10
    config = load('tsjt_multi30k.py', 'num_train_steps=300', 'method.stage2_start=7')
    assert config.method.stage2_start == 7
    # MT2ST's schedules keep the paper's proportions (25 paper epochs).
    switch = load('mt2st_sst2.py:arm=switch', 'num_train_steps=1000')
    assert switch.method.aux_weights.skipgram.to_dict() == {
        'kind': 'switch',
        'value': 0.95,
        'step': 600,
    }
    diminish = load('mt2st_sst2.py:arm=diminish', 'num_train_steps=1010')
    assert diminish.method.aux_weights.skipgram.steps_per_epoch == 41
    assert (
        load('mt2st_sst2.py:runlocal').method.aux_weights.skipgram.steps_per_epoch == 1
    )
    # What a run saves holds the values, not the links.
    saved = json.loads(configuration.to_json(switch))
    assert saved['method']['aux_weights']['skipgram']['step'] == 600
    # A linked key given on its own moves only itself: the decay length is
    # not the run's length.
    for spec in ('translate_synthetic.py', 'self_distill_cifar10.py', 'mt2st_sst2.py'):
        base = load(spec).num_train_steps
        config = load(spec, 'optimizer.total_steps=500')
        assert (config.num_train_steps, config.optimizer.total_steps) == (base, 500)
        config = load(spec, 'optimizer.total_steps=500', 'num_train_steps=300')
        assert (config.num_train_steps, config.optimizer.total_steps) == (300, 500)
        assert load(spec, 'num_train_steps=300').optimizer.total_steps == 300
    # The RL policy's feature width follows the student's.
    rl = load('rlkd_sst2.py:arm=rl,teachers=a+b', 'model.hidden_dim=32')
    assert rl.method.feature_dim == 32


def test_config_variants_that_were_inconsistent():
    def load(spec):
        return configuration.load_config(str(CONFIGS / spec))

    # runlocal's model has one layer of each: depth composites get two.
    from jaxdistill.models import composite as composite_lib
    from jaxdistill.models import transformer as transformer_lib

    fields = {f.name for f in dataclasses.fields(transformer_lib.TransformerConfig)}
    for name in ('tsjt_synthetic', 'tsjt_multi30k', 'tsjt_wmt10_tfds'):
        model = load(f'{name}.py:runlocal,composite=depth').model
        full = transformer_lib.TransformerConfig(
            vocab_size=50, **{k: v for k, v in model.to_dict().items() if k in fields}
        )
        small = composite_lib.Composite(full, 'depth', model.composite.fractions)
        assert small.capacity_config(0).num_decoder_layers == 1
    # The MNIST baseline has one classifier, as CIFAR's does.
    assert load('self_distill_mnist.py:method=supervised').model.exits == ()
    assert load('self_distill_mnist.py').model.exits == (0, 1)
    # The distillation student is half the teacher at every size.
    for arg in ('', ':runlocal', ':size=small'):
        teacher = load(f'translate_synthetic.py{arg}').model
        student = load(f'distill_synthetic.py{arg}').model
        assert 2 * student.num_heads == teacher.num_heads
        assert 2 * student.d_ff == teacher.d_ff
        assert student.head_size == teacher.d_model // teacher.num_heads


def test_each_config_folder_reads_its_own_base(tmp_path, monkeypatch):
    # The library's base imported by other code first, as a test might.
    import importlib

    monkeypatch.syspath_prepend(str(CONFIGS))
    importlib.import_module('translation_base')
    monkeypatch.undo()
    copy = tmp_path / 'configs'
    copy.mkdir()
    for f in CONFIGS.glob('*.py'):
        (copy / f.name).write_text(f.read_text())
    base = copy / 'translation_base.py'
    assert base.read_text().count('config.seed = 0') == 1
    base.write_text(base.read_text().replace('config.seed = 0', 'config.seed = 123'))
    ours = str(CONFIGS / 'translate_synthetic.py')
    assert configuration.load_config(ours).seed == 0
    assert configuration.load_config(str(copy / 'translate_synthetic.py')).seed == 123
    assert configuration.load_config(ours).seed == 0


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


def test_a_method_weight_takes_a_schedule_and_other_options_refuse_one():
    import types

    from jaxdistill.methods import make_method

    repo = pathlib.Path(__file__).resolve().parents[1]
    spec = "{'kind': 'linear', 'init': 0.0, 'end': 0.3, 'steps': 2000}"
    config = configuration.load_config(
        f'{repo}/configs/self_distill_cifar10.py:runlocal'
    )
    config = configuration.apply_overrides(config, [f'method.alpha={spec}'])
    method = make_method(config.method, types.SimpleNamespace(apply_exits=object()))
    assert float(method.alpha(1000)) == pytest.approx(0.15)
    # Only a method's options take schedules, and only those its class names.
    with pytest.raises(ConfigError, match='expected float, got dict'):
        configuration.apply_overrides(config, [f'optimizer.learning_rate={spec}'])
    config = configuration.load_config(f'{repo}/configs/codistill_synthetic.py')
    config = configuration.apply_overrides(config, [f'method.temperature={spec}'])
    with pytest.raises(
        ConfigError, match='takes a plain value, not a schedule.*: weight'
    ):
        make_method(config.method, None)
    # A schedule with a misspelt, missing or incomplete kind is named as that.
    for text, message in (
        ("{'kind': 'linaer'}", "method.weight.kind 'linaer' is unknown; valid kinds: "),
        ("{'value': 2.0}", 'method.weight.kind is missing; valid kinds: '),
        (
            "{'kind': 'linear', 'init': 1.0, 'end': 0.0}",
            'method.weight.steps is missing',
        ),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            configuration.apply_overrides(config, [f'method.weight={text}'])


def test_train_prints_the_config_the_overrides_make(capsys, tmp_path, monkeypatch):
    import json

    from jaxdistill import train

    monkeypatch.chdir(tmp_path)  # Nothing may be written, here or anywhere.
    spec = f'{CONFIGS}/translate_synthetic.py:runlocal'
    args = ['--config', spec, '--print_config', '--config.model.d_model=64']
    assert train.main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed['model']['d_model'] == 64
    assert printed == json.loads(
        configuration.to_json(
            configuration.apply_overrides(
                configuration.load_config(spec), ['model.d_model=64']
            )
        )
    )
    assert list(tmp_path.iterdir()) == []
    # A config a run would refuse: printed all the same, then the refusal.
    assert train.main([*args[:3], '--config.model.num_heads=3']) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)['model']['num_heads'] == 3
    assert err.strip() == 'error: d_model=32 is not divisible by num_heads=3.'
    # A misspelt key is named, as when training.
    assert train.main([*args[:3], '--config.model.d_modl=64']) == 2
    assert "Unknown config key 'model.d_modl'" in capsys.readouterr().err
    # Without --print_config the workdir is required.
    with pytest.raises(SystemExit):
        train.main(['--config', spec])
    assert 'required: --workdir' in capsys.readouterr().err


def test_a_dict_for_a_group_notes_the_fields_it_drops(capsys, monkeypatch):
    monkeypatch.setattr(configuration, '_NOTES_SAID', set())
    config = configuration.load_config(helpers.CONFIG)
    configuration.apply_overrides(config, ['model={"d_model": 64}'])
    assert dict(config.model) == {'d_model': 64}
    err = capsys.readouterr().err
    assert err.startswith('note: --config.model replaces the whole group, so its ')
    assert 'model.d_ff' in err and 'use --config.model.FIELD=V' in err
    # The same note once a process: a sweep builds a config per combination.
    again = configuration.load_config(helpers.CONFIG)
    configuration.apply_overrides(again, ['model={"d_model": 64}'])
    assert dict(again.model) == {'d_model': 64}
    assert capsys.readouterr().err == ''
    # A dict with every field: nothing is dropped, nothing to say.
    full = dict(configuration.load_config(helpers.CONFIG).optimizer)
    configuration.apply_overrides(config, [f'optimizer={full!r}'])
    assert capsys.readouterr().err == ''


def test_config_arguments():
    assert configuration.parse_config_arg('runlocal, size=base') == {
        'runlocal': True,
        'size': 'base',
    }
    assert configuration.parse_config_arg(None) == {}
    with pytest.raises(
        ConfigError, match="config argument 'size=': size= needs a value"
    ):
        configuration.load_config(f'{helpers.CONFIG.split(":")[0]}:size=')


@pytest.mark.parametrize('size', ['tiny', 'small', 'base'])
@pytest.mark.parametrize('kind', ['width', 'depth'])
def test_tsjt_multi30k_half_capacity_is_the_named_size(kind, size):
    from jaxdistill.models import composite as composite_lib
    from jaxdistill.models import transformer as transformer_lib

    config = configuration.load_config(
        f'{CONFIGS / "tsjt_multi30k"}.py:composite={kind},size={size}'
    )
    fields = {f.name for f in dataclasses.fields(transformer_lib.TransformerConfig)}
    full = transformer_lib.TransformerConfig(
        vocab_size=100,
        **{k: v for k, v in config.model.to_dict().items() if k in fields},
    )
    half = composite_lib.Composite(full, kind, config.model.composite.fractions)
    half = half.capacity_config(0)
    named = transformer_lib.SIZES[size]
    assert {k: getattr(half, k) for k in named} == named
    head = half.head_size or half.d_model // half.num_heads
    assert head == named['d_model'] // named['num_heads']


def test_a_method_option_the_config_does_not_set_is_named_as_such():
    import ml_collections

    config = ml_collections.ConfigDict({'method': {'name': 'supervised'}, 'seed': 0})
    with pytest.raises(
        ConfigError,
        match=r"option of method 'supervised', but this config does not set it: add "
        r'`config.method.label_smoothing = ...`',
    ):
        configuration.apply_overrides(config, ['method.label_smoothing=0.1'])
    with pytest.raises(ConfigError, match="Unknown config key 'method.smoothing'"):
        configuration.apply_overrides(config, ['method.smoothing=0.1'])


def test_config_paths_are_made_absolute_and_specs_split_after_py(tmp_path, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    config = configuration.load_config(
        str(helpers.REPO / 'configs' / 'rlkd_sst2.py')
        + ':arm=rl,teachers=t1+~/t2+/abs/t3'
    )
    config.imports = ('my.module', 'plug.py')
    assert set(configuration.path_fields(config)) >= {
        'data.data_dir', 'data.teachers', 'imports', 'compilation_cache_dir',
    }  # fmt: skip
    changed = configuration.absolute_paths(config, '/base/dir')
    assert sorted(changed) == ['data.data_dir', 'data.teachers', 'imports']
    assert config.data.data_dir == '/base/shared/data/sst2'
    assert config.data.teachers == ('/base/dir/t1', f'{tmp_path}/home/t2', '/abs/t3')
    assert config.imports == ('my.module', '/base/dir/plug.py')
    assert config.compilation_cache_dir == 'auto'  # Not a path.
    assert configuration.absolute_paths(config, '/elsewhere') == []  # Idempotent.
    # A folder with ':' in its name stays in the path.
    split = configuration.split_spec
    assert split('/x/exp:2026T14:45/c.py:arm=rl') == (
        '/x/exp:2026T14:45/c.py',
        ':',
        'arm=rl',
    )
    assert split('/x/exp:1/c.py') == ('/x/exp:1/c.py', '', '')
    assert split('c.py') == ('c.py', '', '')


@pytest.mark.parametrize(
    'spec, override, message',
    [
        ('codistill_synthetic.py', 'method.distance=kl2', "method.distance='kl2'"),
        ('codistill_synthetic.py', 'method.exchange_every=0', 'exchange_every >= 1'),
        ('tsjt_synthetic.py', 'method.temperature=0.0', 'method.temperature'),
        ('tsjt_synthetic.py', 'method.stage2_start=-1', 'stage2_start=-1 is negative'),
        ('self_distill_mnist.py', 'method.alpha=1.5', 'method.alpha'),
        (
            'rlkd_sst2.py:arm=rl,teachers=/tmp/t1+/tmp/t2',
            'method.reward=ce',
            "method.reward='ce'",
        ),
        ('translate_synthetic.py', 'method.label_smoothing=1.0', 'label_smoothing'),
    ],
)
def test_checks_without_data_refuse_bad_method_options(spec, override, message):
    """`trainer.check_config` (so `--print_config` and sweeps, before
    anything trains) refuses what the method would refuse at the run's
    start, up to the checks that need the model."""
    from jaxdistill import trainer

    config = configuration.load_config(f'{CONFIGS}/{spec}')
    trainer.check_config(config)  # The config as written passes.
    bad = configuration.apply_overrides(config, [override])
    with pytest.raises(ConfigError, match=re.escape(message)):
        trainer.check_config(bad)


def test_config_flags_given_a_value_and_the_hints_for_words():
    """`:runlocal=False` read as on (any text is); the flags take on/off
    words; bare words for a tuple or a lowercase bool get a hint."""
    assert configuration.parse_config_arg('runlocal=False,size=base') == {
        'size': 'base'
    }
    assert configuration.parse_config_arg('runlocal=1,budget=no') == {'runlocal': True}
    with pytest.raises(ConfigError, match='runlocal is on or off'):
        configuration.parse_config_arg('runlocal=maybe')
    small = configuration.load_config(f'{CONFIGS}/translate_synthetic.py:runlocal')
    off = configuration.load_config(f'{CONFIGS}/translate_synthetic.py:runlocal=False')
    assert off.num_train_steps != small.num_train_steps
    config = configuration.load_config(f'{CONFIGS}/translate_multi30k.py')
    with pytest.raises(ConfigError, match=re.escape("""=('en-de', 'en-fr')".""")):
        configuration.apply_overrides(config, ['data.pairs=en-de,en-fr'])
    with pytest.raises(ConfigError, match='not a valid bool. Give True or False.'):
        configuration.apply_overrides(config, ['eval.bleu=false'])


@pytest.mark.parametrize(
    'spec, message',
    [
        ('self_distill_mnist.py:dataset=x', 'known: runlocal, method=NAME'),
        ('self_distill_cifar10.py:foo', 'known: runlocal, method=NAME'),
        ('rlkd_sst2.py:teachers', "needs the teachers' workdirs"),
        ('rlkd_sst2.py:arm=teacher_cnn,teachers=/a', 'is for the kd and rl arms'),
    ],
)
def test_config_arguments_a_file_does_not_take_are_named(spec, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        configuration.load_config(f'{CONFIGS}/{spec}')


SHIPPED_SPECS = (
    'translate_synthetic.py',
    'translate_synthetic.py:runlocal',
    'translate_multi30k.py',
    'translate_multi30k.py:size=base',
    'translate_multi30k.py:budget',
    'translate_wmt_tfds.py',
    'codistill_synthetic.py',
    'distill_synthetic.py',
    'self_distill_translate_synthetic.py',
    'tsjt_synthetic.py:composite=width',
    'tsjt_synthetic.py:composite=depth,runlocal',
    'tsjt_multi30k.py:composite=width,size=base',
    'tsjt_wmt10_tfds.py:composite=depth',
    'self_distill_cifar10.py',
    'self_distill_mnist.py:runlocal,method=supervised',
    'self_distill_sst2.py:runlocal',
    'mt2st_sst2.py:arm=switch',
    'mt2st_sst2.py:runlocal,arm=stl',
    'rlkd_sst2.py:arm=teacher_cnn',
    'rlkd_sst2.py:arm=rl,teachers=/tmp/t1+/tmp/t2',
)


@pytest.mark.parametrize('spec', SHIPPED_SPECS)
def test_shipped_configs_set_only_keys_the_code_reads(spec):
    from jaxdistill import trainer

    config = configuration.load_config(f'{CONFIGS}/{spec}')
    trainer.check_keys(config, registry.get('task', config.task))


@pytest.mark.parametrize(
    'line, message',
    [
        ('c.num_train_step = 5', 'Unknown key num_train_step. Did you mean num_train_steps'),
        ('c.checkpoint.evry_steps = 5', 'Unknown key checkpoint.evry_steps. Did you mean every_steps?'),
        ('c.mesh.model_axis = 2', 'Unknown key mesh.model_axis. Did you mean model_axis_size'),
        ('c.optimizer.learning_rat = 1e-3', 'Unknown key optimizer.learning_rat. Did you mean learning_rate'),
        ("c.data.sourse = 'files'", "Unknown key data.sourse for task 'translation'. Did you mean source?"),
        ('c.eval.beam = 3', "Unknown key eval.beam for task 'translation'. Did you mean beam_size"),
    ],
)  # fmt: skip
def test_a_misspelt_key_in_a_config_file_is_named(tmp_path, capsys, line, message):
    """A key written in a config file is added, not checked against the
    config's keys as an override is: one that nothing reads is refused
    (`--print_config` included), instead of the run training on the default."""
    from jaxdistill import train

    (tmp_path / 'typo.py').write_text(
        'import sys\n'
        f'sys.path.insert(0, {str(CONFIGS)!r})\n'
        'import translate_synthetic\n\n'
        'def get_config(arg=None):\n'
        "    c = translate_synthetic.get_config('runlocal')\n"
        f'    {line}\n'
        '    return c\n'
    )
    args = ['--config', str(tmp_path / 'typo.py'), '--print_config']
    assert train.main(args) != 0
    assert message in capsys.readouterr().err
