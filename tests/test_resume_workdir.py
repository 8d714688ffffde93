"""`python -m jaxdistill.train --workdir DIR` alone resumes a run with the
config file and overrides it was started with (DIR/config_source.json)."""

import json
import os
import shutil

import pytest

from jaxdistill import cli
from jaxdistill import train
from jaxdistill import trainer
from jaxdistill.errors import ConfigError
from tests import helpers


def _saved(work):
    config = json.loads((work / 'config.json').read_text())
    return config['num_train_steps'], config['optimizer']['total_steps']


def _source(work):
    return json.loads((work / 'config_source.json').read_text())


def _checkpoints(work):
    return sorted(int(p.name) for p in (work / 'checkpoints').iterdir())


def test_workdir_alone_resumes_with_the_file_then_with_config_json(tmp_path, capsys):
    # A copy of the configs folder, so that the run's config file can go away.
    configs = tmp_path / 'configs'
    shutil.copytree(helpers.REPO / 'configs', configs)
    work = tmp_path / 'run'
    spec = f'{configs}/translate_synthetic.py:runlocal'
    first = ['--config.num_train_steps=4', '--config.eval.bleu=False']
    assert train.main(['--config', spec, '--workdir', str(work), *first]) == 0
    assert _source(work) == {
        'config': spec,
        'overrides': ['num_train_steps=4', 'eval.bleu=False'],
        'cwd': os.getcwd(),  # Where relative paths start.
    }
    assert _saved(work) == (4, 4)  # The file links total_steps to the steps.

    # Resumed from the file: the linked field follows the new step count.
    capsys.readouterr()
    assert train.main(['--workdir', str(work), '--config.num_train_steps=8']) == 0
    out = capsys.readouterr().out
    assert (
        'Resuming with the config the run was started with: python -m '
        f'jaxdistill.train --config {spec} --config.eval.bleu=False '
        f'--config.num_train_steps=8 --workdir {work}'
    ) in out
    assert 'Resumed from' in out and 'optimizer.total_steps: 4 -> 8' in out
    assert _saved(work) == (8, 8)
    assert _checkpoints(work)[-1] == 8
    # The record keeps one value per key, the latest last.
    assert _source(work)['overrides'] == ['eval.bleu=False', 'num_train_steps=8']

    # `--print_config` shows what a resume would use, and changes nothing.
    assert (
        train.main(['--workdir', str(work), '--print_config', '--config.seed=3']) == 0
    )
    printed = capsys.readouterr()
    assert json.loads(printed.out)['seed'] == 3
    assert 'Resuming with the config' in printed.err
    assert _source(work)['overrides'] == ['eval.bleu=False', 'num_train_steps=8']

    # The file gone: config.json, whose linked fields are plain values.
    shutil.rmtree(configs)
    assert train.main(['--workdir', str(work), '--config.num_train_steps=10']) == 0
    out = capsys.readouterr().out
    assert (
        f'Note: resuming from {work}/config.json, since its config file does '
        f'not load: Config file not found: {configs}/translate_synthetic.py.'
    ) in out
    assert 'an override changes only the key it names' in out
    assert _saved(work) == (10, 8)
    assert _checkpoints(work)[-1] == 10
    # Kept for when the file is back, with the new override.
    assert _source(work)['overrides'] == ['eval.bleu=False', 'num_train_steps=10']

    # A run given its config another way drops the record, which would no
    # longer describe it; the next resume uses config.json.
    config = cli.workdir_config(str(work))
    trainer.train_and_evaluate(config, str(work))
    assert not (work / 'config_source.json').exists()
    capsys.readouterr()
    assert train.main(['--workdir', str(work), '--print_config']) == 0
    assert 'since it has no config_source.json' in capsys.readouterr().err


def test_workdir_alone_refusals(tmp_path, capsys):
    with pytest.raises(SystemExit, match='2'):  # argparse: --workdir needed.
        train.main([])
    assert train.main(['--print_config']) == 2
    assert '--config is required (or --workdir of a run to resume)' in (
        capsys.readouterr().err
    )
    assert train.main(['--workdir', str(tmp_path / 'none')]) == 2
    assert 'holds no run to resume (no config.json); start one with --config' in (
        capsys.readouterr().err
    )

    # A saved override the config file no longer has: named, with the record.
    work = tmp_path / 'run'
    work.mkdir()
    (work / 'config.json').write_text('{}')
    record = work / 'config_source.json'
    record.write_text(
        json.dumps({'config': helpers.CONFIG, 'overrides': ['model.num_layer=2']})
    )
    assert train.main(['--workdir', str(work), '--print_config']) == 2
    err = capsys.readouterr().err
    assert "Unknown config key 'model.num_layer'" in err
    assert f'saved in {record}; pass --config' in err

    # An unreadable record: config.json, saying why.
    record.write_text('{"config": 3}')
    assert train.main(['--workdir', str(work), '--print_config']) == 2
    captured = capsys.readouterr()
    assert f'{record} is unreadable: expected {{"config": str' in captured.err
    assert json.loads(captured.out) == {}  # Printed, then refused:
    assert "error: The config has no key 'task', which this run needs." in (
        captured.err
    )


@pytest.mark.parametrize(
    'saved, new, merged',
    [
        (['a=1', 'b=2'], ['a=3'], ['b=2', 'a=3']),
        (['a=1'], [], ['a=1']),
        ([], ['a.b=(1, 2)'], ['a.b=(1, 2)']),
        (['a.b=1', 'a=dict()'], ['a.b=2'], ['a=dict()', 'a.b=2']),
    ],
)
def test_merged_overrides(saved, new, merged):
    assert cli.merged_overrides(saved, new) == merged


def test_a_config_file_that_needs_pythonpath_falls_back_to_config_json(
    tmp_path, monkeypatch
):
    """A config file built on the library's configs (docs/extending.md)
    needs their folder on PYTHONPATH; without it a start is refused with that
    advice, and a resume uses the run's config.json, saying why."""
    import sys

    from jaxdistill import configuration

    # As in a fresh process: other tests of this worker may have imported it.
    monkeypatch.delitem(sys.modules, 'translate_synthetic', raising=False)
    configs = str(helpers.REPO / 'configs')
    monkeypatch.setattr(sys, 'path', [p for p in sys.path if p != configs])

    spec = tmp_path / 'mine.py'
    spec.write_text(
        'import translate_synthetic\n\n\ndef get_config(arg=None):\n'
        '    return translate_synthetic.get_config(arg)\n'
    )
    with pytest.raises(ConfigError) as e:
        configuration.load_config(f'{spec}:runlocal')
    assert str(e.value) == (
        f"The config file {spec} needs the module 'translate_synthetic', which "
        f"cannot be found: put the library's configs folder "
        f'({helpers.REPO / "configs"}) on PYTHONPATH.'
    )
    work = tmp_path / 'run'
    work.mkdir()
    config = configuration.load_config(
        str(helpers.REPO / 'configs' / 'translate_synthetic.py:runlocal')
    )
    (work / 'config.json').write_text(configuration.to_json(config))
    source = {'config': f'{spec}:runlocal', 'overrides': ['seed=3']}
    (work / configuration.SOURCE_FILE).write_text(json.dumps(source))
    resumed, _, line = cli.config_for_resume(str(work), ['num_train_steps=9'])
    assert resumed.num_train_steps == 9 and resumed.seed == config.seed
    assert line.startswith(
        f'Note: resuming from {work}/config.json, since its config file does '
        f"not load: The config file {spec} needs the module 'translate_synthetic'"
    ), line
    # A bug of another kind in the file: the same fallback, naming the error.
    spec.write_text('raise RuntimeError("half-edited")\n')
    _, _, line = cli.config_for_resume(str(work), [])
    assert 'does not load: RuntimeError: half-edited. There,' in line, line


def test_a_relative_workdir_trains_resumes_and_is_evaluated(
    tmp_path, monkeypatch, capsys
):
    """Orbax refuses relative paths: `--workdir run` failed at its first
    save, and evaluate called the run's good checkpoints damaged."""
    from jaxdistill import evaluate  # pylint: disable=g-import-not-at-top

    monkeypatch.chdir(tmp_path)
    first = ['--config.num_train_steps=4', '--config.eval.bleu=False']
    assert train.main(['--config', helpers.CONFIG, '--workdir', 'run', *first]) == 0
    assert _checkpoints(tmp_path / 'run')[-1] == 4
    capsys.readouterr()
    assert train.main(['--workdir', 'run/', '--config.num_train_steps=6']) == 0
    assert f'Resumed from {tmp_path}/run/checkpoints/4' in capsys.readouterr().out
    assert _checkpoints(tmp_path / 'run')[-1] == 6
    assert evaluate.main(['--workdir', './run']) == 0
    assert '"eval/loss"' in capsys.readouterr().out


def test_relative_paths_resolve_from_the_folder_the_run_started_in(
    tmp_path, monkeypatch, capsys
):
    """config.json holds absolute paths; a resume from another folder reads
    the recorded file and overrides' relative paths from the first folder,
    and a new override's from its own."""
    a, b = tmp_path / 'a', tmp_path / 'b'
    a.mkdir()
    b.mkdir()
    monkeypatch.chdir(a)
    first = ['--config.num_train_steps=4', '--config.eval.bleu=False']
    args = ['--config', helpers.CONFIG, '--workdir', 'run', *first]
    assert train.main([*args, '--config.compilation_cache_dir=~/../cc']) == 0
    saved = json.loads((a / 'run' / 'config.json').read_text())
    home = os.path.expanduser('~')
    assert saved['compilation_cache_dir'] == os.path.normpath(f'{home}/../cc')
    assert _source(a / 'run')['cwd'] == str(a)
    monkeypatch.chdir(b)
    capsys.readouterr()
    resume = ['--workdir', '../a/run', '--config.num_train_steps=6']
    assert train.main([*resume, '--config.data.tfds_data_dir=tf']) == 0
    out = capsys.readouterr().out
    # The line to run it again starts where the run did.
    assert f'cd {a} && python -m jaxdistill.train --config {helpers.CONFIG}' in out
    saved = json.loads((a / 'run' / 'config.json').read_text())
    assert saved['data']['tfds_data_dir'] == str(b / 'tf')
    assert f"data.tfds_data_dir='{b / 'tf'}'" in _source(a / 'run')['overrides']
    assert _checkpoints(a / 'run')[-1] == 6
