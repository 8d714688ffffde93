"""`python -m jaxdistill.runs`: each run's step, state and evaluations."""

import json
import os

import pytest

from jaxdistill import runs
from jaxdistill import workdir_lock


def _run(root, name, *, total=10, steps=(), summary=None, evals=(), best=''):
    """A workdir as a run leaves it: config.json, checkpoints, logs."""
    work = root / name
    (work / 'checkpoints').mkdir(parents=True)
    config = {
        'task': 'translation',
        'method': {'name': 'codistill'},
        'num_train_steps': total,
        'checkpoint': {'best_metric': best, 'best_mode': 'max'},
    }
    (work / 'config.json').write_text(json.dumps(config))
    for s in steps:
        (work / 'checkpoints' / str(s)).mkdir()
    # A save in progress is no checkpoint yet.
    (work / 'checkpoints' / '99.orbax-checkpoint-tmp-1').mkdir()
    if summary is not None:
        (work / 'summary.json').write_text(json.dumps(summary))
    lines = [json.dumps({'step': s, 'train/loss': 1.0}) for s in steps]
    lines += [json.dumps({'step': s, **e}) for s, e in evals]
    (work / 'metrics.jsonl').write_text('\n'.join(lines) + '\n{"step": 1')
    return work


def _windows(work):
    """Two training windows since the lock was taken, at 1 s a step, and
    one from before it (a resumed run's pause), which the pace leaves out."""
    since = json.loads((work / workdir_lock.LOCK_FILE).read_text())['time']
    (work / 'metrics.jsonl').write_text(
        ''.join(
            json.dumps({'step': s, 'time': since + t, 'train/loss': 1.0}) + '\n'
            for s, t in ((1, -1000.0), (2, 1.0), (4, 3.0))
        )
    )


def test_states_evaluations_and_best(tmp_path, capsys, monkeypatch):
    evals = [
        (5, {'eval/loss': 2.0, 'eval/bleu': 30.0, 'eval/seconds': 1.0}),
        (10, {'eval/loss': 1.5, 'eval/bleu': 29.0, 'eval/seconds': 1.0}),
    ]
    _run(
        tmp_path,
        'done',
        steps=(5, 10),
        summary={'step': 10},
        evals=evals,
        best='eval/bleu',
    )
    _run(tmp_path, 'killed', steps=(5,), summary=None, evals=evals[:1])
    crashed = _run(tmp_path, 'crashed', steps=(5,))
    (crashed / 'error.json').write_text(
        json.dumps({'error': 'NonFiniteLossError', 'message': 'Non-finite loss'})
    )
    # Finished at 10 once, then resumed for 20 and stopped before a save.
    _run(tmp_path, 'extended', total=20, steps=(10,), summary={'step': 10})
    _run(tmp_path, 'early', steps=(5,), summary={'step': 5, 'stopped_early': True})
    _run(
        tmp_path,
        'deadline',
        steps=(7,),
        summary={'step': 7, 'stopped_by_time_limit': True},
    )
    _run(tmp_path / 'group', 'fresh')  # Two levels down.
    early_error = _run(tmp_path, 'nan_at_3')  # Failed before its first save.
    (early_error / 'error.json').write_text('{"error": "NonFiniteLossError"}')
    (tmp_path / 'broken' / 'checkpoints').mkdir(parents=True)
    (tmp_path / 'broken' / 'config.json').write_text('[1, 2]')  # Not a config.
    # What `extract` writes: one checkpoint, no summary, extracted.json.
    small = _run(tmp_path, 'small', steps=(10,))
    (small / 'extracted.json').write_text(
        json.dumps({'capacity': 'x0.25', 'step': 10, 'from': '/runs/tsjt'})
    )
    # An extracted model trained on to its end: a run like any other.
    tuned = _run(tmp_path, 'tuned', total=20, steps=(10, 20), summary={'step': 20})
    (tuned / 'extracted.json').write_text(
        json.dumps({'capacity': 'x0.25', 'step': 10, 'from': '/runs/tsjt'})
    )
    busy = _run(tmp_path, 'busy', steps=(5,))
    lock = workdir_lock.WorkdirLock(str(busy)).acquire()
    _windows(busy)
    try:
        found = runs.find_runs(str(tmp_path))
        described = {os.path.basename(w): runs.describe(w) for w in found}
    finally:
        lock.release()
    assert sorted(described) == sorted(
        [
            'done',
            'killed',
            'crashed',
            'extended',
            'early',
            'deadline',
            'fresh',
            'busy',
            'nan_at_3',
            'broken',
            'small',
            'tuned',
        ]
    )
    state = {k: v['state'] for k, v in described.items()}
    assert state == {
        'done': 'finished',
        'killed': 'stopped',
        'crashed': 'failed',
        'extended': 'stopped',
        'early': 'stopped early',
        'deadline': 'time limit',
        'fresh': 'no checkpoint',
        'nan_at_3': 'failed',
        'broken': 'no checkpoint',
        'busy': 'training',
        'small': 'extracted',
        'tuned': 'finished',
    }
    assert described['small']['extracted_from'] == {
        'from': '/runs/tsjt',
        'capacity': 'x0.25',
        'step': 10,
    }
    assert described['done']['extracted_from'] is None
    assert described['busy']['holder'].startswith(f'pid {os.getpid()} on ')
    assert described['busy']['eta_seconds'] == pytest.approx(6.0)  # 6 steps left.
    assert described['done']['eta_seconds'] is None  # Not training.
    assert described['crashed']['error']['error'] == 'NonFiniteLossError'
    assert described['broken']['method'] == '?'
    assert described['killed']['error'] is None
    row = runs.table([described['crashed']]).splitlines()[1]
    assert 'failed (NonFiniteLossError)' in row
    # With a time limit, the run stops at it if that comes first.
    config = json.loads((busy / 'config.json').read_text())
    (busy / 'config.json').write_text(
        json.dumps({**config, 'time_limit_minutes': 0.05})
    )
    lock = workdir_lock.WorkdirLock(str(busy)).acquire()
    try:
        _windows(busy)
        limited = runs.describe(str(busy))['eta_seconds']
    finally:
        lock.release()
    assert 0 <= limited <= 3.0  # 3 s from the lock's start, not 6 s of steps.
    (busy / 'config.json').write_text(json.dumps(config))
    row = runs.table([described['busy']]).splitlines()[1]
    assert f'training (pid {os.getpid()} on ' in row and '), 6s to go' in row
    assert described['killed']['holder'] is None  # Released: not training.
    done = described['done']
    assert done['step'] == 10 and done['eval_step'] == 10
    assert done['eval'] == {'eval/loss': 1.5, 'eval/bleu': 29.0, 'eval/seconds': 1.0}
    assert done['best'] == {'metric': 'eval/bleu', 'step': 5, 'value': 30.0}
    assert described['fresh']['step'] is None

    assert runs.main([str(tmp_path / 'done'), str(tmp_path / 'killed')]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        'run',
        'method/task',
        'checkpoint',
        'state',
        'last',
        'evaluation',
        'best',
        'logged',
    ]
    assert lines[1].split()[:4] == [
        'done',
        'codistill/translation',
        '10/10',
        'finished',
    ]
    # The run's best_metric first, then the defaults; not eval/seconds.
    assert 'eval/bleu 29, eval/loss 1.5 @ 10' in lines[1]
    assert '30 @ 5' in lines[1]
    assert lines[2].split()[:4] == [
        'killed',
        'codistill/translation',
        '5/10',
        'stopped',
    ]
    # One run named twice (a trailing slash, a relative spelling) is one row.
    monkeypatch.chdir(tmp_path)
    assert runs.main([str(tmp_path / 'done'), 'done/', './done']) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert runs.main([str(tmp_path / 'done'), '--metric', 'eval/s*']) == 0
    assert 'eval/seconds 1 @ 10' in capsys.readouterr().out
    assert runs.main([str(tmp_path / 'done'), '--json']) == 0
    assert json.loads(capsys.readouterr().out)[0]['best']['value'] == 30.0


def test_a_folder_without_runs_is_named(tmp_path, capsys):
    (tmp_path / 'a' / 'b' / 'c').mkdir(parents=True)
    (tmp_path / 'a' / 'b' / 'c' / 'config.json').write_text('{}')  # Too deep.
    assert runs.main([str(tmp_path)]) == 2
    assert f'{tmp_path} holds no training run' in capsys.readouterr().err
    # Beside a run: the run is still listed, the empty folder named, exit 2.
    _run(tmp_path, 'done', steps=(5,))
    (tmp_path / 'empty').mkdir()
    assert runs.main([str(tmp_path / 'empty'), str(tmp_path / 'done')]) == 2
    out, err = capsys.readouterr()
    assert 'done' in out
    assert f'error: {tmp_path / "empty"} holds no training run' in err


@pytest.mark.parametrize(
    'seconds, text',
    [(5, '5s ago'), (600, '10m ago'), (10800, '3h ago'), (3 * 86400, '3d ago')],
)
def test_ago(seconds, text):
    assert runs._ago(seconds) == text  # pylint: disable=protected-access


def test_a_damaged_log_is_named_not_fatal(tmp_path):
    work = _run(tmp_path, 'damaged', steps=(5,))
    (work / 'metrics.jsonl').write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    run = runs.describe(str(work))
    assert run['state'] == 'stopped' and run['eval'] == {}
    assert 'metrics.jsonl:2: not a JSON record' in run['log_error']


def test_tied_best_goes_to_the_latest_step_as_orbax_keeps_it(tmp_path):
    """`--step best` (Orbax's best_step) takes the latest of tied steps;
    `runs` names the same one."""
    evals = [(s, {'eval/bleu': 0.0}) for s in (20, 40, 60)]
    work = _run(tmp_path, 'tied', total=60, steps=(20, 40, 60), evals=evals)
    config = json.loads((work / 'config.json').read_text())
    config['checkpoint']['best_metric'] = 'eval/bleu'
    (work / 'config.json').write_text(json.dumps(config))
    assert runs.describe(str(work))['best'] == {
        'metric': 'eval/bleu',
        'step': 60,
        'value': 0.0,
    }
    config['checkpoint']['best_mode'] = 'min'
    (work / 'config.json').write_text(json.dumps(config))
    assert runs.describe(str(work))['best']['step'] == 60


def test_best_in_min_mode_is_the_lowest_value(tmp_path):
    evals = [(s, {'eval/loss': v}) for s, v in ((20, 3.0), (40, 1.0), (60, 2.0))]
    work = _run(tmp_path, 'low', total=60, steps=(20, 40, 60), evals=evals)
    config = json.loads((work / 'config.json').read_text())
    config['checkpoint'].update(best_metric='eval/loss', best_mode='min')
    (work / 'config.json').write_text(json.dumps(config))
    assert runs.describe(str(work))['best'] == {
        'metric': 'eval/loss',
        'step': 40,
        'value': 1.0,
    }


def test_eta_is_steps_left_times_seconds_per_step():
    # 3 s a step (steps 2 -> 4 in 6 s), 6 steps left: 18 s.
    records = [
        {'step': 2, 'time': 10.0, 'train/loss': 1.0},
        {'step': 4, 'time': 16.0, 'train/loss': 1.0},
    ]
    assert runs._eta(records, 10, since=0.0) == pytest.approx(18.0)
