"""The compile clock behind the trainer's compile-free throughput; the
metrics log's reader and the plots drawn from it."""

import json
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill import metrics
from jaxdistill import plot
from jaxdistill.errors import ConfigError, DataError

TRACE = '/jax/core/compile/jaxpr_trace_duration'
COMPILE = '/jax/core/compile/backend_compile_duration'


def test_overlapping_compile_spans_count_once():
    with metrics.CompileClock() as clock:
        jax.monitoring.record_event_time_span(TRACE, 10.0, 12.0)
        jax.monitoring.record_event_time_span(TRACE, 10.5, 11.0)  # Nested.
        jax.monitoring.record_event_time_span(COMPILE, 11.0, 13.0)
        jax.monitoring.record_event_time_span(COMPILE, 20.0, 21.0)
        jax.monitoring.record_event_time_span('/not/a/compile', 30.0, 40.0)
        assert clock.seconds(11.5, 12.5) == pytest.approx(1.0)
        assert clock.seconds(0.0, 100.0) == pytest.approx(4.0)
        assert clock.seconds(13.0, 20.0) == 0.0
    jax.monitoring.record_event_time_span(COMPILE, 50.0, 60.0)  # Closed: ignored.
    # A later query may reach back before an earlier one's start (13.0): the
    # run's whole time after its windows (the time limit's pace).
    assert clock.seconds(0.0, 100.0) == pytest.approx(4.0)


def test_counts_a_real_compile_and_not_a_cached_call():
    f = jax.jit(lambda x: jnp.sin(x) * 3.0 + x.sum())
    x = jnp.arange(1000.0)
    with metrics.CompileClock() as clock:
        start = time.time()
        f(x).block_until_ready()
        mid = time.time()
        f(x).block_until_ready()
        end = time.time()
        first, second = clock.seconds(start, mid), clock.seconds(mid, end)
    assert 0.0 < first <= mid - start
    assert second == 0.0


def test_compiles_of_other_threads_do_not_count():
    with metrics.CompileClock() as clock:
        worker = threading.Thread(
            target=lambda: jax.monitoring.record_event_time_span(COMPILE, 1.0, 2.0)
        )
        worker.start()
        worker.join()
        jax.monitoring.record_event_time_span(COMPILE, 3.0, 3.5)
        assert clock.seconds(0.0, 10.0) == pytest.approx(0.5)


def _log(workdir, records, tail=''):
    workdir.mkdir()
    text = ''.join(json.dumps(r) + '\n' for r in records) + tail
    (workdir / 'metrics.jsonl').write_text(text)
    return str(workdir)


def _run(step_losses, evals, t0=1000.0):
    train = [
        {'step': s, 'time': t0 + 6 * s, 'train/loss': loss} for s, loss in step_losses
    ]
    return train + [
        {'step': s, 'time': t0 + 6 * s + 1, 'eval/loss': l, **extra}
        for s, l, extra in evals
    ]


def test_metrics_reader_skips_a_cut_last_line_and_names_a_damaged_one(tmp_path):
    good = _run([(1, 3.0), (2, 2.5)], [])
    run = _log(tmp_path / 'cut', good, tail='{"step": 3, "time": 1')
    assert metrics.read_metrics(run) == good
    bad = tmp_path / 'bad'
    _log(bad, good[:1], tail='{oops\n' + json.dumps(good[1]) + '\n')
    with pytest.raises(DataError, match=r'bad/metrics.jsonl:2: not a JSON record'):
        metrics.read_metrics(str(bad))
    with pytest.raises(DataError, match='holds no training run'):
        metrics.read_metrics(str(tmp_path / 'none'))


def test_plot_draws_a_panel_per_metric_and_a_line_per_run_and_part(tmp_path):
    """Two runs; the second logs per-capacity BLEU and a self-distillation
    exit's accuracy. Default panels appear only where some run logged them;
    the early-exit curve's accuracies are not mistaken for exits."""
    a = _log(tmp_path / 'a', _run([(10, 3.0), (20, 2.0)], [(20, 2.2, {})]))
    b = _log(
        tmp_path / 'b',
        _run(
            [(10, 3.1), (20, 2.1)],
            [
                (
                    20,
                    2.3,
                    {
                        'eval/x0.5/bleu': 5.0,
                        'eval/x1/bleu': 7.0,
                        'eval/accuracy': 0.4,
                        'eval/accuracy_exit0': 0.3,
                        'eval/early_exit_0.9/accuracy': 0.35,
                        'eval/early_exit_0.9/time_fraction': 0.6,
                        'eval/early_exit_1/accuracy': 0.4,
                        'eval/early_exit_1/time_fraction': 1.1,
                    },
                )
            ],
        ),
    )
    out = tmp_path / 'ab.png'
    titles = plot.plot_runs([a, b], str(out))
    assert titles == [
        'training loss',
        'evaluation loss',
        'BLEU (sacreBLEU)',
        'accuracy',
        'early exit (last evaluation)',
    ]
    assert plot.early_exit_curve(metrics.read_metrics(b)) == [
        (0.6, 0.35, '0.9'),
        (1.1, 0.4, '1'),
    ]
    assert plot.early_exit_curve(metrics.read_metrics(a)) == []
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    keys = set(metrics.read_metrics(b)[-1])
    panels = dict(plot.panels_for(keys))
    assert panels['BLEU (sacreBLEU)'] == ['eval/x0.5/bleu', 'eval/x1/bleu']
    assert panels['accuracy'] == ['eval/accuracy', 'eval/accuracy_exit0']
    # Codistillation's per-replica training loss, self-distillation's
    # per-exit evaluation loss.
    panels = dict(
        plot.panels_for(
            {
                'train/loss',
                'train/loss/r0',
                'train/loss/r1',
                'eval/loss_exit0',
                'eval/loss',
                'eval/r0/loss',
                'train/learning_rate',
            }
        )
    )
    assert panels['training loss'] == ['train/loss', 'train/loss/r0', 'train/loss/r1']
    assert panels['evaluation loss'] == ['eval/loss', 'eval/loss_exit0', 'eval/r0/loss']
    # Patterns pick panels; one that matches nothing lists what was logged.
    assert plot.plot_runs([b], str(out), patterns=['eval/*bleu'], x='minutes') == [
        'eval/*bleu'
    ]
    with pytest.raises(
        ConfigError, match=r"'eval/bleu_tok_lc' matches no .* eval/loss"
    ):
        plot.plot_runs([b], str(out), patterns=['eval/bleu_tok_lc'])


def test_plot_cli(tmp_path, capsys):
    run = _log(tmp_path / 'r', _run([(1, 3.0), (2, 2.5)], [(2, 2.4, {})]))
    assert plot.main(['--workdir', run]) == 0
    assert 'wrote' in capsys.readouterr().out
    assert (tmp_path / 'r' / 'metrics.png').is_file()
    other = _log(tmp_path / 'r2', _run([(1, 3.1)], []))
    with pytest.raises(SystemExit):
        plot.main(['--workdir', run, '--workdir', other])
    assert '--out is needed with several runs' in capsys.readouterr().err
    # A folder of runs (a sweep) stands for the runs in it, two levels down.
    for name in ('a', 'b/c'):
        (tmp_path / 'sweep' / name).parent.mkdir(parents=True, exist_ok=True)
        _log(tmp_path / 'sweep' / name, _run([(1, 3.0), (2, 2.0)], []))
        (tmp_path / 'sweep' / name / 'config.json').write_text('{}')
    # Without --out, the picture goes in that folder.
    assert plot.main(['--workdir', str(tmp_path / 'sweep')]) == 0
    assert (tmp_path / 'sweep' / 'metrics.png').is_file()
    assert 'wrote' in capsys.readouterr().out
    out = tmp_path / 'sweep.png'
    assert plot.main(['--workdir', str(tmp_path / 'sweep'), '--out', str(out)]) == 0
    assert out.is_file() and 'wrote' in capsys.readouterr().out
    assert plot.main(['--workdir', str(tmp_path / 'nothing')]) == 2
    assert 'holds no training run' in capsys.readouterr().err
    empty = _log(tmp_path / 'empty', [{'step': 1, 'time': 0.0}])
    assert plot.main(['--workdir', empty]) == 2
    assert 'nothing to plot' in capsys.readouterr().err


def test_tensorboard_hides_the_steps_a_resumed_run_redoes(tmp_path):
    """TensorBoard drops an earlier file's events from a SessionLog.START's
    step on; the resumed writer marks the first step it will redo."""
    tf = pytest.importorskip('tensorflow')
    first = metrics.MetricWriter(str(tmp_path))
    for step in (1, 2, 3, 4):
        first.write(step, {'train/loss': 1.0 / step})
    first.close()
    time.sleep(1.1)  # Event files are named by the second they open.
    again = metrics.MetricWriter(str(tmp_path), resume_step=2)
    again.write(3, {'train/loss': 0.5})
    again.close()
    files = sorted((tmp_path / 'tensorboard').iterdir())
    assert len(files) == 2
    starts = [
        e.step
        for e in tf.compat.v1.train.summary_iterator(str(files[-1]))
        if e.HasField('session_log') and e.session_log.status == e.session_log.START
    ]
    assert starts == [3]
    assert [r['step'] for r in metrics.read_metrics(str(tmp_path))] == [1, 2, 3]


def test_a_window_across_a_phase_change_keeps_every_key():
    """Codistillation's burn-in reports no 'train/distill': a window that
    starts in burn-in dropped the key of its distilling steps, and one that
    ends in burn-in raised a KeyError. Each key is averaged over the steps
    that report it; token counts are summed."""
    from jaxdistill import trainer

    burn = {'train/ce': np.array([4.0, 2.0]), 'train/tokens': np.array(10.0)}
    dist = {
        'train/ce': np.array([2.0, 1.0]),
        'train/distill': np.array([0.5, 0.25]),
        'train/tokens': np.array(20.0),
    }
    for window in ([burn, dist, dist], [dist, burn]):
        m = trainer._mean_metrics(window)
        assert m['train/distill'] == pytest.approx(0.375)
        assert m['train/distill/r1'] == pytest.approx(0.25)
        n = len(window)
        assert m['train/ce/r0'] == pytest.approx((4.0 + 2.0 * (n - 1)) / n)
        assert m['train/tokens'] == 10.0 + 20.0 * (n - 1)
    # A replica whose block held only padding (the all-PAD rows that fill a
    # bucket's last batch) reports 0 that step: left out of its mean.
    empty = {
        'train/ce': np.array([3.0, 0.0]),
        'train/tokens': np.array([12.0, 0.0]),
    }
    full = {'train/ce': np.array([1.0, 2.0]), 'train/tokens': np.array([9.0, 8.0])}
    m = trainer._mean_metrics([full, empty])
    assert m['train/ce/r0'] == 2.0 and m['train/ce/r1'] == 2.0
    assert m['train/ce'] == pytest.approx(2.0)
    assert m['train/tokens/r1'] == 8.0
    # Replica 1 held no tokens in the whole window: its value as reported
    # (0), not a mean over no steps (NaN).
    m = trainer._mean_metrics([empty])
    assert m['train/ce/r0'] == 3.0 and m['train/ce/r1'] == 0.0


def test_a_run_stopped_by_an_error_closes_its_tensorboard_log(tmp_path):
    """TensorBoard's writer queues events for a daemon thread: a run that
    ended in an error (or a stop signal) without closing it lost its last
    records when the process exited."""
    from jaxdistill import configuration
    from jaxdistill import trainer as trainer_lib
    from jaxdistill.errors import NonFiniteLossError
    from tests import helpers

    config = configuration.apply_overrides(
        configuration.load_config(helpers.CONFIG),
        [
            'num_train_steps=6',
            'optimizer.learning_rate=1e38',
            'optimizer.schedule=constant',
            'log_every_steps=1',
            'eval.at_end=False',
            'data.bucket_lengths=(48,)',
        ],
    )
    tr = trainer_lib.Trainer(config, str(tmp_path))
    with pytest.raises(NonFiniteLossError):
        tr.run()
    assert tr.writer._tb is None  # Closed: its queue written out.
    assert (tmp_path / 'tensorboard').is_dir()
