"""`python -m jaxdistill.sweep`: a grid of runs, resumable, summarised."""

import json
import os
import shlex
import signal
import subprocess
import sys

import numpy as np
import pytest

from jaxdistill import sweep
from jaxdistill.errors import ConfigError
from tests import helpers

ARGS = [
    '--config',
    helpers.CONFIG,
    '--config.num_train_steps=3',
    '--config.log_every_steps=3',
    '--config.eval.every_steps=3',
    '--config.eval.bleu=False',
    '--config.checkpoint.every_steps=3',
]


def test_parallel_runs_of_several_processes_need_a_coordinator_each(monkeypatch):
    monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', 'localhost:1234')
    assert sweep.parse_slots(1, []) == [{}]  # One at a time: fine.
    with pytest.raises(
        ConfigError, match='the runs at once would share one coordinator'
    ):
        sweep.parse_slots(2, [])
    slots = sweep.parse_slots(0, ['JAX_COORDINATOR_ADDRESS=h:1;h:2'])
    assert [s['JAX_COORDINATOR_ADDRESS'] for s in slots] == ['h:1', 'h:2']
    # Only process 0 writes sweep.json: which one this is.
    monkeypatch.delenv('JAX_PROCESS_ID', raising=False)
    assert sweep._process_id({}) == 0  # pylint: disable=protected-access
    monkeypatch.setenv('JAX_PROCESS_ID', '1')
    assert sweep._process_id({'distributed': {'process_id': -1}}) == 1  # pylint: disable=protected-access
    assert sweep._process_id({'distributed': {'process_id': 2}}) == 2  # pylint: disable=protected-access


def test_several_processes_set_up_by_the_config(tmp_path, monkeypatch):
    """`--config.distributed.*` is as good as the JAX_* variables (README):
    the sweep then takes no folder lock (each process would refuse the
    others), refuses runs at once (they would share the coordinator), and
    counts a run finished though process 0 wrote its config.json with its
    own process_id."""
    monkeypatch.delenv('JAX_COORDINATOR_ADDRESS', raising=False)
    with pytest.raises(ConfigError, match='coordinator_address=h:9: the runs at once'):
        sweep.parse_slots(2, [], config_coordinator='h:9')
    assert sweep.parse_slots(1, [], config_coordinator='h:9') == [{}]

    dist = lambda pid: [
        '--config.distributed.coordinator_address=localhost:1',
        '--config.distributed.num_processes=2',
        f'--config.distributed.process_id={pid}',
    ]
    locked = []
    monkeypatch.setattr(
        sweep.workdir_lock, 'WorkdirLock', lambda d: locked.append(d) or 1 / 0
    )
    monkeypatch.setattr(sweep, '_train_all', lambda *a: 0)
    argv = [*ARGS, '--workdir', str(tmp_path / 's'), '--grid', 'seed=0']
    assert sweep.main(argv + dist(1)) == 0 and not locked

    grid = sweep.parse_grid(['seed=0'])
    runs = {
        pid: sweep.plan(
            helpers.CONFIG, [o[len('--config.') :] for o in dist(pid)], grid
        )[0]
        for pid in (0, 1)
    }
    work = tmp_path / 'run'
    work.mkdir()
    (work / 'config.json').write_text(json.dumps(runs[0]['config']))
    monkeypatch.setattr('jaxdistill.runs.describe', lambda w: {'state': 'finished'})
    assert sweep._finished(str(work), runs[1]['config'])  # pylint: disable=protected-access
    changed = json.loads(json.dumps(runs[1]['config']))
    changed['seed'] = 5
    assert not sweep._finished(str(work), changed)  # pylint: disable=protected-access


def test_planned_configs_hold_absolute_paths_as_config_json_does(tmp_path, monkeypatch):
    """Else a run whose config names a relative path never counts as
    finished, and a sweep run again trains it again."""
    monkeypatch.chdir(tmp_path)
    planned = sweep.plan(
        helpers.CONFIG, ['data.tfds_data_dir=tf'], sweep.parse_grid(['seed=0'])
    )[0]['config']
    assert planned['data']['tfds_data_dir'] == str(tmp_path / 'tf')


def test_slot_values_and_summary_metric_names(tmp_path):
    with pytest.raises(ConfigError, match="slot 2 has no value .a stray ';'"):
        sweep.parse_slots(0, ['CUDA_VISIBLE_DEVICES=0;1;'])
    assert sweep.parse_slots(0, ["A=0;''"]) == [{'A': '0'}, {'A': ''}]
    groups = [{'settings': {}, 'runs': 1, 'evaluated': 1, 'mean': {'eval/loss': 1.0},
               'std': {'eval/loss': 0.0}}]  # fmt: skip
    assert sweep.table(groups, ['eval/loss']).splitlines()[1].startswith('all')
    assert sweep.table(groups, ['eval/nosuch']) == (
        '--metric eval/nosuch: matches none of the metrics the runs logged: eval/loss.'
    )
    log = tmp_path / 'sweep_output.log'
    log.write_text('step 1/3\nerror: data.max_len=3 is too short.\n\n')
    assert sweep._last_line(str(log)) == 'error: data.max_len=3 is too short.'  # pylint: disable=protected-access
    assert sweep._last_line(str(tmp_path / 'none.log')) == ''  # pylint: disable=protected-access


def test_grid_values_and_errors():
    assert sweep.split_values('0, 1,(16, 32),"a,b"') == ['0', '1', '(16, 32)', '"a,b"']
    assert sweep.parse_grid(['seed=0,1', '--config.model.d_ff=(1,2)']) == {
        'seed': ['0', '1'],
        'model.d_ff': ['(1,2)'],
    }
    for spec, message in [
        ('seed', 'expected KEY=VALUE'),
        ('seed=', 'expected KEY=VALUE'),
        ('seed=0,0', 'empty or repeated'),
        ('seed=0,', 'empty or repeated'),
    ]:
        with pytest.raises(ConfigError, match=message):
            sweep.parse_grid([spec])
    with pytest.raises(ConfigError, match='given twice'):
        sweep.parse_grid(['seed=0', 'seed=1'])
    # A group and a field inside it, in either order.
    for specs in (['model.d_ff=8,16', 'model={}'], ['model={}', 'model.d_ff=8,16']):
        with pytest.raises(
            ConfigError,
            match=r'--grid model\.d_ff lies inside the group --grid model replaces',
        ):
            sweep.parse_grid(specs)
    # A key that merely starts with another's name is not inside it.
    assert list(sweep.parse_grid(['seed=0,1', 'seeds=2'])) == ['seed', 'seeds']
    assert sweep.parse_slots(0, []) == [{}]
    assert sweep.parse_slots(2, []) == [{}, {}]
    assert sweep.parse_slots(0, ['A=0,1;2,3', 'B=x;y']) == [
        {'A': '0,1', 'B': 'x'},
        {'A': '2,3', 'B': 'y'},
    ]
    with pytest.raises(ConfigError, match=r'one value per slot; got A \(2\), B \(1\)'):
        sweep.parse_slots(0, ['A=0;1', 'B=x'])
    with pytest.raises(ConfigError, match='--parallel 3, but --slot_env gives 2'):
        sweep.parse_slots(3, ['A=0;1'])


def _plan(*specs, overrides=()):
    return sweep.plan(helpers.CONFIG, list(overrides), sweep.parse_grid(list(specs)))


def test_run_names_are_readable_and_no_two_runs_share_a_folder():
    # Plain values keep the names they always had (a rerun skips their runs).
    assert sweep._run_name({'seed': '0', 'model.d_ff': '32'}) == 'seed=0,model.d_ff=32'  # pylint: disable=protected-access
    for value in ('(24,48)', '(24, 48)'):
        assert sweep._run_name({'b': value}) == 'b=(24,48)'  # pylint: disable=protected-access
    assert sweep._run_name({'lr': '1e-3', 'x': 'True'}) == 'lr=1e-3,x=True'  # pylint: disable=protected-access
    assert sweep._run_name({}) == 'run'  # pylint: disable=protected-access
    # A value whose name would lose something gets a hash of its exact text.
    names = [
        sweep._run_name({'data.files_dir': v})  # pylint: disable=protected-access
        for v in ('/a/b', '/a_b', '_a_b', 'a b', 'ab', "('a b',)", "('ab',)")
    ]
    assert len(set(names)) == len(names), names
    assert names[0].startswith('data.files_dir=_a_b@') and '/' not in names[0]
    assert names[2] == 'data.files_dir=_a_b' and names[4] == 'data.files_dir=ab'
    assert names[0] == sweep._run_name({'data.files_dir': '/a/b'})  # pylint: disable=protected-access
    # Too long for a folder: cut, with a hash of the whole combination.
    long = [sweep._run_name({'k': 'x' * 300 + e}) for e in 'ab']  # pylint: disable=protected-access
    assert long[0] != long[1] and all(len(n.encode()) <= 255 for n in long)

    runs = _plan('data.files_dir=/a/b,/a_b')
    assert len({r['name'] for r in runs}) == 2
    # What the names cannot tell apart (text a string field takes as it is,
    # case, which some filesystems ignore) is refused, naming both values.
    for spec, message in [
        (
            'data.files_dir=(24, 48),(24,48)',
            r"two runs \(data.files_dir '\(24, 48\)' and '\(24,48\)'\) would "
            r"share the folder 'data.files_dir=\(24,48\)'",
        ),
        ('data.files_dir=A,a', "two runs \\(data.files_dir 'A' and 'a'\\)"),
    ]:
        with pytest.raises(ConfigError, match=message):
            _plan(spec)


def test_grid_values_the_config_reads_as_one_are_repeats():
    for spec, message in [
        (
            'optimizer.learning_rate=0.001,1e-3',
            "--grid optimizer.learning_rate: '0.001' and '1e-3' are the same "
            'value \\(0.001\\) for the config; give each value once.',
        ),
        ('seed=0,00', "--grid seed: '0' and '00' are the same value \\(0\\)"),
        (
            'data.bucket_lengths=(24, 48),(24,48)',
            "--grid data.bucket_lengths: '\\(24, 48\\)' and '\\(24,48\\)' are the same",
        ),
    ]:
        with pytest.raises(ConfigError, match=message):
            _plan('seed=1,2' if not spec.startswith('seed') else 'model.d_ff=8', spec)
    # A later grid key that replaces the group would make the values one:
    # refused before any config is built.
    with pytest.raises(ConfigError, match=r'--grid model.d_ff lies inside the group'):
        _plan('model.d_ff=32,64', 'model={"d_ff": 8}')
    assert len(_plan('optimizer.learning_rate=0.001,2e-3')) == 2
    # Two keys apart, one config: both named.
    runs = [
        {'name': f'a={a},b={b}', 'grid': {'a': a, 'b': b}, 'config': {'x': 1}}
        for a, b in (('0', '1'), ('1', '0'))
    ]
    with pytest.raises(
        ConfigError,
        match=r"runs a=0,b=1 and a=1,b=0 would train the same config \(a '0' and "
        r"'1', b '1' and '0'\); give each setting once.",
    ):
        sweep._check_distinct(runs)  # pylint: disable=protected-access


def test_a_key_both_gridded_and_overridden_is_refused(tmp_path, capfd):
    grid = sweep.parse_grid(['seed=0,1', 'model={"d_ff": 8}'])
    sweep.check_overrides(grid, ['model_seed=3', 'modelx.y=1'])  # Others: fine.
    with pytest.raises(ConfigError, match='--config.model.d_ff=4 sets model.d_ff'):
        sweep.check_overrides(grid, ['model.d_ff=4'])
    argv = [*ARGS, '--workdir', str(tmp_path / 's'), '--grid', 'seed=0,1']
    assert sweep.main([*argv, '--config.seed=5', '--dry_run']) == 2
    err = capfd.readouterr().err
    assert (
        'error: --config.seed=5 sets seed, which --grid seed=0,1 also sets '
        "(each run would take the grid's value); give seed either as --grid "
        'or as --config., not both.'
    ) in err
    assert not (tmp_path / 's').exists()


def test_dry_run_prints_commands_bash_can_run(tmp_path, capfd):
    work = tmp_path / 'my sweep'
    argv = [*ARGS, '--workdir', str(work), '--dry_run']
    argv += ['--grid', 'data.bucket_lengths=(8,48),(24, 48)', '--grid', 'seed=0,1']
    assert sweep.main([*argv, '--slot_env', 'A=x y;z']) == 0
    out = capfd.readouterr().out
    assert "slot 0: A='x y'" in out and 'slot 1: A=z' in out
    lines = [l for l in out.splitlines() if l.startswith('[')]
    assert len(lines) == 4
    for line, name in zip(
        lines,
        [
            f'data.bucket_lengths={b},seed={s}'
            for b in ('(8,48)', '(24,48)')
            for s in '01'
        ],
    ):
        command = line.partition('] ')[2]
        # What bash makes of the printed line: the arguments `train` gets.
        echoed = subprocess.run(
            ['bash', '-c', 'printf "%s\\n" ' + command],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        assert echoed == shlex.split(command)
        assert echoed[echoed.index('--workdir') + 1] == os.path.join(work, name)
        assert echoed[1:3] == ['-m', 'jaxdistill.train']
    assert '--config.data.bucket_lengths=(24, 48)' in shlex.split(lines[2])
    assert not work.exists()


def test_summary_groups_runs_that_differ_only_in_the_over_keys():
    entries = [
        {
            'grid': {'lr': a, 'seed': s},
            'eval': {'eval/loss': v, 'eval/x': 1.0},
            'state': 'finished',
        }
        for a, s, v in [('1', '0', 2.0), ('1', '1', 3.0), ('2', '0', 5.0)]
    ] + [
        {'grid': {'lr': '2', 'seed': '1'}, 'eval': {}, 'state': 'finished'},
        # A run killed after an early evaluation: not in the mean.
        {
            'grid': {'lr': '2', 'seed': '2'},
            'eval': {'eval/loss': 9.0, 'eval/x': 1.0},
            'state': 'failed (exit status -9)',
        },
    ]
    groups = sweep.summarize(entries, ['seed'])
    assert [g['settings'] for g in groups] == [{'lr': '1'}, {'lr': '2'}]
    assert [(g['runs'], g['evaluated']) for g in groups] == [(2, 2), (3, 1)]
    assert groups[0]['mean']['eval/loss'] == 2.5
    assert groups[0]['std']['eval/loss'] == pytest.approx(np.std([2.0, 3.0], ddof=1))
    assert groups[1]['mean'] == {'eval/loss': 5.0, 'eval/x': 1.0}
    text = sweep.table(groups)
    assert 'lr=1' in text and '2.5 ± 0.71' in text and '1/3' in text


def test_runs_ended_at_different_steps_show_their_steps(tmp_path, monkeypatch):
    """Seeds that a time limit stopped at different steps: the table shows
    the range of evaluated steps and says its ± mixes training lengths; the
    same sweep again skips them, saying where each ended and how to go on."""
    entries = [
        {'grid': {'seed': s}, 'eval': {'eval/loss': v}, 'state': 'time limit',
         'eval_step': step}
        for s, v, step in [('0', 3.5, 825), ('1', 3.3, 1059)]
    ]  # fmt: skip
    (group,) = sweep.summarize(entries, ['seed'])
    assert group['steps'] == [825, 1059]
    lines = sweep.table([group]).splitlines()
    assert lines[0].split()[:3] == ['group', 'runs', 'step']
    assert lines[1].split()[:3] == ['all', '2/2', '825-1059']
    assert lines[-1].startswith('Note: a group whose step is a range averages')
    entries[1]['eval_step'] = 825
    assert 'Note' not in sweep.table(sweep.summarize(entries, ['seed']))

    config = sweep.plan(helpers.CONFIG, [], sweep.parse_grid(['seed=0']))[0]['config']
    (tmp_path / 'config.json').write_text(json.dumps(config))
    state = {'state': 'time limit', 'step': 825, 'num_train_steps': 3000}
    monkeypatch.setattr('jaxdistill.runs.describe', lambda w: state)
    ended = sweep._finished(str(tmp_path), config)  # pylint: disable=protected-access
    assert ended.startswith('time limit at step 825 of 3000 (python -m jaxdistill')
    state['state'] = 'interrupted'
    assert sweep._finished(str(tmp_path), config) == ''  # pylint: disable=protected-access


def test_a_sweep_trains_each_run_once_and_averages_over_seeds(tmp_path, capfd):
    """Two runs at once, each in a slot of its own environment (here: its
    own number of CPU devices, as CUDA_VISIBLE_DEVICES would give a GPU
    each), then their mean and standard deviation."""
    work = tmp_path / 'sweep'
    flags = [helpers.xla_flags(devices=1), helpers.xla_flags(devices=2)]
    argv = [
        *ARGS,
        '--workdir',
        str(work),
        '--grid',
        'seed=0,1',
        '--slot_env',
        'XLA_FLAGS=' + ';'.join(flags),
    ]
    assert sweep.main(argv) == 0
    out = capfd.readouterr().out
    assert 'Sweep of 2 runs' in out
    assert f'[2/2] seed=1 (slot 1; output in {work}/seed=1/sweep_output.log)' in out
    assert '[1/2] seed=0 done.' in out and '[2/2] seed=1 done.' in out
    for name, devices in (('seed=0', '1 device'), ('seed=1', '2 devices')):
        log = (work / name / 'sweep_output.log').read_text()
        assert f'for 3 steps ({devices}, 1 process)' in log, log[-2000:]
    record = json.loads((work / 'sweep.json').read_text())
    assert [r['state'] for r in record['runs']] == ['finished', 'finished']
    # They ran at the same time: the second started before the first ended.
    assert out.index('[2/2] seed=1 (slot 1') < out.index('[1/2] seed=0 done.')
    # The mean over the seeds is that of each run's own last evaluation.
    losses = []
    for name in ('seed=0', 'seed=1'):
        log = [json.loads(l) for l in (work / name / 'metrics.jsonl').open()]
        losses.append([r['eval/loss'] for r in log if 'eval/loss' in r][-1])
        assert json.loads((work / name / 'config.json').read_text())['seed'] == int(
            name[-1]
        )
    assert losses[0] != losses[1]
    (group,) = record['groups']
    assert group['runs'] == 2
    assert group['mean']['eval/loss'] == pytest.approx(np.mean(losses))
    assert group['std']['eval/loss'] == pytest.approx(np.std(losses, ddof=1))

    # Again: nothing to train.
    logs = {p: p.read_text() for p in work.glob('*/metrics.jsonl')}
    assert sweep.main(argv) == 0
    out = capfd.readouterr().out
    assert out.count('finished already; skipped') == 2
    assert {p: p.read_text() for p in work.glob('*/metrics.jsonl')} == logs

    # A grid value the config refuses: an error naming it, nothing run.
    assert sweep.main([*ARGS, '--workdir', str(work), '--grid', 'seed=0,x']) == 2
    err = capfd.readouterr().err
    assert "error: --config.seed='x': not a valid int. (--grid, run seed=x)" in err
    assert not (work / 'seed=x').exists()


def test_a_failed_run_is_reported_and_stop_on_error_stops(tmp_path, capfd):
    work = tmp_path / 'sweep'
    # d_model 32 does not divide into 3 heads: refused while planning, with
    # nothing run (trainer.check_config).
    grid = ['--grid', 'model.num_heads=3,5']
    assert sweep.main([*ARGS, '--workdir', str(work), *grid]) == 2
    assert (
        'd_model=32 is not divisible by num_heads=3. (--grid, run model.num_heads=3)'
        in (capfd.readouterr().err)
    )
    assert not work.exists()
    # Data that is not there: found only when each run reads it, at its start.
    grid = ['--grid', 'data.files_dir=nowhere1,nowhere2']
    files = '--config.data.source=files'
    assert (
        sweep.main([*ARGS, files, '--workdir', str(work), *grid, '--stop_on_error'])
        == 1
    )
    out = capfd.readouterr().out
    assert '[1/2] data.files_dir=nowhere1 failed (exit status 2).' in out
    assert '[2/2]' not in out  # Stopped.
    record = json.loads((work / 'sweep.json').read_text())
    assert [r['state'] for r in record['runs']] == [
        'failed (exit status 2)',
        'not started',
    ]


def test_sigterm_stops_the_run_in_progress_which_saves_and_the_sweep(tmp_path):
    work = tmp_path / 'sweep'
    code, out = helpers.signal_at_step(
        [
            sys.executable,
            '-m',
            'jaxdistill.sweep',
            *ARGS,
            '--config.num_train_steps=400',
            '--config.log_every_steps=2',
            '--workdir',
            str(work),
            '--grid',
            'seed=0,1',
        ],
        4,
        signal.SIGTERM,  # As a scheduler would.
    )
    assert code == 130, out[-3000:]
    assert 'SIGTERM: stopped after step' in out
    assert '[1/2] seed=0 stopped.' in out
    assert 'Sweep stopped with 1 run not started; run the same command to go on.' in out
    record = json.loads((work / 'sweep.json').read_text())
    assert [r['state'] for r in record['runs']] == ['stopped', 'not started']
    assert any(p.name.isdigit() for p in (work / 'seed=0' / 'checkpoints').iterdir())


def test_a_workdir_that_is_a_file_is_named(tmp_path, capfd):
    (tmp_path / 'afile').write_text('')
    argv = [*ARGS, '--workdir', str(tmp_path / 'afile'), '--grid', 'seed=0']
    assert sweep.main(argv) == 2
    err = capfd.readouterr().err
    assert f'error: --workdir {tmp_path}/afile is a file, not a folder.' in err
    assert 'Traceback' not in err
