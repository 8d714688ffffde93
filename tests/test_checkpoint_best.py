"""checkpoint.best_metric: the best evaluated checkpoint outlives the rotation."""

import io
import json
import types

import numpy as np
import pytest

from jaxdistill import checkpoint
from jaxdistill import evaluate
from jaxdistill import train
from jaxdistill import translate
from jaxdistill import trainer
from jaxdistill.errors import CheckpointMismatchError, ConfigError
from tests import helpers

# 'max' of the evaluation loss, which falls at every evaluation of these short
# runs: the best checkpoint is the first evaluated one, and stays the oldest.
OVERRIDES = [
    '--config',
    helpers.CONFIG,
    '--config.checkpoint.best_metric=eval/loss',
    '--config.checkpoint.best_mode=max',
    '--config.checkpoint.keep=1',
    '--config.checkpoint.every_steps=10',
    '--config.eval.every_steps=5',
    '--config.eval.bleu=False',  # The loss ranks; no decoding needed.
    '--config.data.bucket_lengths=(48,)',  # One compiled train step.
]


def _steps(work):
    return sorted(int(p.name) for p in (work / 'checkpoints').iterdir())


def test_best_checkpoint_is_kept_through_rotation(tmp_path, capsys, monkeypatch):
    work = tmp_path / 'run'
    args = [*OVERRIDES, '--workdir', str(work)]
    assert train.main([*args, '--config.num_train_steps=20']) == 0
    records = [json.loads(l) for l in (work / 'metrics.jsonl').open()]
    losses = {r['step']: r['eval/loss'] for r in records if 'eval/loss' in r}
    assert sorted(losses) == [5, 10, 15, 20]
    best = max(losses, key=losses.get)
    assert best == 5  # The premise above.
    assert _steps(work) == [5, 20]  # keep=1 (the latest) plus the best.
    summary = json.loads((work / 'summary.json').read_text())
    assert summary['best_step'] == 5
    assert summary['best/eval/loss'] == pytest.approx(losses[5])

    # The kept checkpoint is a whole one (evaluate/translate --step 5 load it).
    state = checkpoint.read_state(str(work / 'checkpoints' / '5'))
    assert int(state['step']) == 5 and state['params']
    # `--step best` finds it without summary.json.
    capsys.readouterr()
    assert evaluate.main(['--workdir', str(work), '--step', 'best']) == 0
    assert '"step": 5,' in capsys.readouterr().out
    monkeypatch.setattr('sys.stdin', io.StringIO('a b c\n'))
    assert translate.main(['--workdir', str(work), '--step', 'best']) == 0
    assert 'translating 1 lines with checkpoint(s) [5]' in capsys.readouterr().err


def test_step_best_names_why_there_is_none(tmp_path):
    import ml_collections  # pylint: disable=g-import-not-at-top

    from jaxdistill import cli  # pylint: disable=g-import-not-at-top
    from jaxdistill.errors import JaxdistillError  # pylint: disable=g-import-not-at-top

    config = ml_collections.ConfigDict(
        {'checkpoint': {'best_metric': '', 'best_mode': 'max'}}
    )
    assert cli.resolve_step(str(tmp_path), config, 7) == 7
    assert cli.resolve_step(str(tmp_path), config, None) is None
    with pytest.raises(JaxdistillError, match='trained without checkpoint.best_metric'):
        cli.resolve_step(str(tmp_path), config, 'best')
    # Checkpoints saved without an evaluation: nothing ranked yet.
    ckpt = checkpoint.Checkpointer(
        str(tmp_path / 'checkpoints'), every=1, keep=2, best_metric='eval/bleu'
    )
    ckpt.save(1, {'w': np.zeros(2, np.float32)}, {}, force=True)
    ckpt.close()
    config.checkpoint.best_metric = 'eval/bleu'
    with pytest.raises(JaxdistillError, match='saved with a value of eval/bleu'):
        cli.resolve_step(str(tmp_path), config, 'best')
    assert cli.step_arg('12') == 12 and cli.step_arg('best') == 'best'
    with pytest.raises(SystemExit):
        evaluate.main(['--workdir', str(tmp_path), '--step', 'last'])


def test_resume_ranked_by_another_metric_keeps_the_earlier_best(tmp_path, capsys):
    """A workdir trained with one best_metric resumed with another: the
    checkpoints the first ranked are kept (Orbax's ranking used to raise a
    KeyError on them), and the new metric ranks the new saves."""
    work = tmp_path / 'run'
    args = [*OVERRIDES, '--workdir', str(work)]
    assert train.main([*args, '--config.num_train_steps=10']) == 0
    assert _steps(work) == [5, 10]
    capsys.readouterr()
    assert (
        train.main(
            [
                *args,
                '--config.num_train_steps=25',
                '--config.checkpoint.best_metric=eval/accuracy',
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert '2 checkpoints (5, 10) were ranked by eval/loss, not' in out
    # The resume names what changed since the run was saved.
    assert (
        'Note: settings changed since the run was saved: checkpoint.best_metric: '
        "'eval/loss' -> 'eval/accuracy'; num_train_steps: 10 -> 25" in out
    )
    # keep=1: the latest (25), the best by accuracy of 15, 20, 25, and both
    # of the first run's, which the new metric cannot rank.
    records = [json.loads(l) for l in (work / 'metrics.jsonl').open()]
    acc = {r['step']: r['eval/accuracy'] for r in records if 'eval/accuracy' in r}
    best = max((s for s in acc if s > 10), key=lambda s: (acc[s], s))
    assert set(_steps(work)) == {5, 10, 25, best}
    summary = json.loads((work / 'summary.json').read_text())
    assert summary['best_step'] == best


def test_ranking_is_read_back_when_the_checkpoints_are_reopened(tmp_path):
    """What a resumed run sees: the kept checkpoints' metrics, from disk."""
    state = {'w': np.zeros(3, np.float32)}
    opts = dict(every=1, keep=1, best_metric='eval/loss', best_mode='min')
    ckpt = checkpoint.Checkpointer(str(tmp_path / 'c'), **opts)
    for step, loss in ((1, 3.0), (2, 1.0), (3, 2.0), (4, None), (5, 5.0)):
        metrics = None if loss is None else {'eval/loss': loss}
        ckpt.save(step, state, {}, force=True, metrics=metrics)
    ckpt.close()
    ckpt = checkpoint.Checkpointer(str(tmp_path / 'c'), **opts)
    assert ckpt.all_steps() == [2, 5]  # The latest, and the lowest loss.
    assert ckpt.best_step() == (2, 1.0)
    ckpt.save(6, state, {}, force=True, metrics={'eval/loss': 0.5})
    ckpt.wait()
    assert ckpt.all_steps() == [6] and ckpt.best_step() == (6, 0.5)
    ckpt.close()


def test_a_run_without_best_metric_keeps_an_earlier_runs_best(tmp_path):
    """Resumed without checkpoint.best_metric (an override left out), the
    best an earlier run kept is kept as under another metric, not deleted as
    an old step at the first save."""
    state = {'w': np.zeros(3, np.float32)}
    ckpt = checkpoint.Checkpointer(
        str(tmp_path / 'c'), every=1, keep=1, best_metric='eval/x', best_mode='min'
    )
    for step, value in ((1, 1.0), (2, 3.0)):
        ckpt.save(step, state, {}, force=True, metrics={'eval/x': value})
    ckpt.close()
    ckpt = checkpoint.Checkpointer(str(tmp_path / 'c'), every=1, keep=1)
    assert ckpt.ranked_by_another_metric() == {1: ['eval/x'], 2: ['eval/x']}
    for step in (3, 4):
        ckpt.save(step, state, {}, force=True)
    ckpt.wait()
    assert ckpt.all_steps() == [1, 2, 4]  # Both ranked saves, and the latest.
    ckpt.close()


def test_a_damaged_metrics_file_is_named_or_set_aside(tmp_path, caplog):
    """A step's metrics file that is not JSON: a tool that reads names it (it
    was a bare JSONDecodeError from Orbax); a run moves it aside and keeps
    the checkpoint, unranked."""
    state = {'w': np.arange(3, dtype=np.float32)}
    directory = tmp_path / 'c'
    opts = dict(every=1, keep=2, best_metric='eval/x', best_mode='min')
    ckpt = checkpoint.Checkpointer(str(directory), **opts)
    for step, value in ((1, 1.0), (2, 3.0)):
        ckpt.save(step, state, {}, force=True, metrics={'eval/x': value})
    ckpt.close()
    damaged = directory / '1' / 'metrics' / 'metrics'
    damaged.write_text('{"eval/x": 1.')
    with pytest.raises(CheckpointMismatchError, match=f'{damaged} is damaged'):
        checkpoint.Checkpointer(str(directory), read_only=True, **opts)
    assert damaged.exists()  # Read-only: nothing moved.
    ckpt = checkpoint.Checkpointer(str(directory), **opts)
    assert 'metrics of checkpoint' in caplog.text and 'moved to' in caplog.text
    assert ckpt.all_steps() == [1, 2]
    assert ckpt.best_step() == (2, 3.0)  # Step 1 lost its rank, not its state.
    restored, _ = ckpt.restore(1, checkpoint.abstract_of(state))
    np.testing.assert_array_equal(restored['w'], state['w'])
    aside = list((tmp_path / 'c_damaged').iterdir())
    assert [p.name.split('.')[:2] for p in aside] == [['1', 'metrics']]
    ckpt.close()


@pytest.mark.parametrize('mode', ['min', 'max'])
def test_a_nan_evaluation_never_replaces_the_best_checkpoint(tmp_path, mode):
    """Unranked, a NaN sorted after the best, Orbax kept it as the best and
    deleted the real best (a min-mode run: [1.0, 0.5, nan] kept only step 3)."""
    state = {'w': np.zeros(3, np.float32)}
    best = 0.5 if mode == 'min' else 2.0
    values = (1.0, best, float('nan'))
    ckpt = checkpoint.Checkpointer(
        str(tmp_path / 'c'), every=1, keep=1, best_metric='eval/x', best_mode=mode
    )
    for step, value in enumerate(values, 1):
        ckpt.save(step, state, {}, force=True, metrics={'eval/x': value})
    ckpt.wait()
    assert ckpt.all_steps() == [2, 3]  # The best and the latest.
    assert ckpt.best_step() == (2, best)
    ckpt.close()
    # Only NaNs: no checkpoint is the best (`--step best` says so, and the
    # summary names no best step with a NaN value).
    only_nan = checkpoint.Checkpointer(
        str(tmp_path / 'n'), every=1, keep=2, best_metric='eval/x', best_mode=mode
    )
    for step in (1, 2):
        only_nan.save(step, state, {}, force=True, metrics={'eval/x': float('nan')})
    only_nan.wait()
    assert only_nan.all_steps() == [1, 2] and only_nan.best_step() is None
    only_nan.close()


def _refused(overrides: list[str], message: str):
    """The loop settings `overrides` make are refused, naming `message`."""
    from jaxdistill import configuration  # pylint: disable=g-import-not-at-top

    config = configuration.apply_overrides(
        configuration.load_config(helpers.CONFIG), overrides
    )
    with pytest.raises(ConfigError, match=message):
        trainer._check_loop_settings(config)


def test_best_metric_settings_are_named():
    fake = types.SimpleNamespace(ckpt=types.SimpleNamespace(best_metric='eval/blue'))
    with pytest.raises(ConfigError, match=r"'eval/blue' is not among .*eval/bleu"):
        trainer.Trainer._best_value(fake, {'eval/bleu': 1.0, 'eval/loss': 2.0})
    assert trainer.Trainer._best_value(fake, {'eval/blue': 3}) == {'eval/blue': 3.0}
    for overrides, message in (
        (['checkpoint.best_metric=bleu'], "best_metric='bleu' must name an evaluation"),
        (
            ['checkpoint.best_metric=eval/bleu', 'checkpoint.best_mode=highest'],
            "best_mode='highest' must be 'max' or",
        ),
        (
            [
                'checkpoint.best_mode=min',
                'checkpoint.best_metric=eval/loss',
                'eval.every_steps=0',
                'eval.at_end=False',
            ],
            'this run never evaluates',
        ),
    ):
        _refused(overrides, message)


def test_patience_stops_the_run_and_a_restart_keeps_it_stopped(tmp_path):
    """checkpoint.patience: the evaluation loss falls at every evaluation, so
    with best_mode='max' the first evaluation stays the best, and the run
    stops `patience` evaluations later, keeping it. Started again with the
    same patience the run trains nothing; with a larger one it goes on,
    counting from its checkpoint's record, not from zero."""
    work = tmp_path / 'run'
    args = [*OVERRIDES, '--workdir', str(work), '--config.num_train_steps=60']
    assert train.main([*args, '--config.checkpoint.patience=2']) == 0
    summary = json.loads((work / 'summary.json').read_text())
    assert summary['step'] == 15 and summary['stopped_early'] is True
    assert summary['stopped_by_time_limit'] is False
    assert summary['best_step'] == 5
    assert _steps(work) == [5, 15]
    meta = checkpoint.read_meta(str(work / 'checkpoints' / '15'))
    assert meta['early_stop']['best_step'] == 5
    assert meta['early_stop']['evals_since_best'] == 2

    assert train.main([*args, '--config.checkpoint.patience=2']) == 0
    assert _steps(work) == [5, 15]
    assert json.loads((work / 'summary.json').read_text())['step'] == 15

    assert train.main([*args, '--config.checkpoint.patience=4']) == 0
    summary = json.loads((work / 'summary.json').read_text())
    assert summary['step'] == 25 and summary['stopped_early'] is True
    assert summary['best_step'] == 5
    records = [json.loads(l) for l in (work / 'metrics.jsonl').open()]
    evals = sorted({r['step'] for r in records if 'eval/loss' in r})
    assert evals == [5, 10, 15, 20, 25]


def test_patience_counts_in_the_methods_last_stage_only(tmp_path, monkeypatch):
    """A method whose last stage starts at step 10 (as TSJT's stage 2 or a
    codistillation's end of burn-in would): with patience 1 the evaluation
    at step 10 (the end of stage 0) does not stop the run, the one at 15
    does; the best stays step 5's."""
    from jaxdistill import configuration  # pylint: disable=g-import-not-at-top
    from jaxdistill.methods import supervised  # pylint: disable=g-import-not-at-top

    monkeypatch.setattr(
        supervised.Supervised,
        'stage',
        lambda self, step: int(step >= 10),
        raising=False,
    )
    config = configuration.load_config(helpers.CONFIG)
    configuration.apply_overrides(
        config,
        [o[len('--config.') :] for o in OVERRIDES[2:]]
        + ['num_train_steps=40', 'checkpoint.patience=1'],
    )
    summary = trainer.Trainer(config, str(tmp_path)).run()
    assert summary['step'] == 15 and summary['stopped_early'] is True
    assert summary['best_step'] == 5


def test_early_stop_record_counts_strict_improvements_only():
    es = trainer._EarlyStop('eval/accuracy', 'max', patience=2)
    assert not es.spent
    for step, value in ((5, 0.5), (10, 0.6), (15, 0.6), (20, float('nan'))):
        es.record(step, value)
    # A tie and a NaN are not improvements.
    assert (es.best_step, es.best_value, es.since) == (10, 0.6, 2) and es.spent
    # The record, read back as a resumed run reads it from the checkpoint.
    again = trainer._EarlyStop('eval/accuracy', 'max', 3, es.meta())
    assert (again.best_step, again.since, again.spent) == (10, 2, False)
    again.record(25, 0.7)
    assert (again.best_step, again.since) == (25, 0)
    # Another metric or mode ranked the saved record: counting starts afresh.
    other = trainer._EarlyStop('eval/loss', 'min', 2, es.meta())
    assert other.best_step is None and other.since == 0
    other.record(5, 2.0)
    other.record(10, 1.5)
    assert other.best_step == 10
    # The message names the checkpoint kept as the best: with a tie, Orbax
    # keeps the later step, not the first one the record counts from.
    assert 'best checkpoint kept is step 10 (--step 10' in es.message(20)
    assert 'best checkpoint kept is step 15 (--step 15' in es.message(20, 15)
    # An evaluation outside the method's last stage sets a best, uses up
    # no patience.
    staged = trainer._EarlyStop('eval/loss', 'min', patience=1)
    staged.record(5, 2.0, counts=False)
    staged.record(10, 2.5, counts=False)
    assert (staged.best_step, staged.since, staged.spent) == (5, 0, False)
    staged.record(15, 2.5)
    assert staged.spent
    # patience 0 never stops.
    never = trainer._EarlyStop('eval/loss', 'min', 0)
    for step in range(1, 10):
        never.record(step, 3.0)
    assert not never.spent


def test_early_stop_min_delta_and_a_first_nan():
    # A loss must fall by more than min_delta to reset the count.
    es = trainer._EarlyStop('eval/loss', 'min', patience=2, min_delta=0.05)
    for step, value in ((5, 2.0), (10, 1.96), (15, 1.9), (20, 1.86)):
        es.record(step, value)
    # 1.96 is within 0.05 of 2.0; 1.9 beats it by 0.1; 1.86 is within 0.05.
    assert (es.best_step, es.best_value, es.since) == (15, 1.9, 1)
    assert not es.spent
    es.record(25, 1.88)
    assert es.spent and 'checkpoint.min_delta=0.05' in es.message(25)
    assert es.meta()['min_delta'] == 0.05
    # An accuracy must rise by more than min_delta.
    acc = trainer._EarlyStop('eval/accuracy', 'max', patience=1, min_delta=0.01)
    acc.record(5, 0.5)
    acc.record(10, 0.505)
    assert (acc.best_step, acc.since) == (5, 1)
    # A NaN first is no best value: the first number after it is the best,
    # and later numbers are compared with it (a NaN best would rank nothing
    # above it, and the run would stop however much it improved).
    nan_first = trainer._EarlyStop('eval/loss', 'min', patience=3)
    nan_first.record(5, float('nan'))
    assert nan_first.best_value is None and nan_first.since == 1
    assert 'NaN in every one of 1 evaluation' in nan_first.message(5)
    nan_first.record(10, 3.0)
    nan_first.record(15, 2.5)
    assert (nan_first.best_step, nan_first.best_value, nan_first.since) == (15, 2.5, 0)


def test_patience_settings_are_named():
    for overrides, message in (
        (['checkpoint.patience=3'], 'patience=3 stops training once.*no best'),
        (
            [
                'checkpoint.patience=3',
                'checkpoint.best_metric=eval/loss',
                'eval.every_steps=0',
            ],
            'evaluates only at its end',
        ),
        (['checkpoint.patience=-1'], r'checkpoint.patience=-1 must be an integer'),
        (
            [
                'checkpoint.patience=3',
                'checkpoint.best_metric=eval/loss',
                'checkpoint.min_delta=-0.1',
                'eval.every_steps=5',
            ],
            r'checkpoint.min_delta=-0.1 must be a number >= 0',
        ),
        (
            ['checkpoint.best_metric=eval/loss', 'checkpoint.min_delta=0.1'],
            r'min_delta=0.1 is the improvement.*patience is 0',
        ),
    ):
        _refused(overrides, message)
