"""`time_limit_minutes` and `Trainer.run(deadline=...)`: training stops at the
last step that fits, saves it, and a later run resumes from it."""

import re
import time
import types

import pytest

from jaxdistill import configuration
from jaxdistill import trainer as trainer_lib
from jaxdistill.errors import ConfigError
from tests import helpers


def _config(**overrides):
    config = configuration.load_config(helpers.CONFIG)  # 20 steps, log every 5.
    config.eval.at_end = False
    config.data.bucket_lengths = (48,)  # One compiled train step.
    for key, value in overrides.items():
        config[key] = value
    return config


def test_past_deadline_stops_at_first_log_step_then_resumes(tmp_path):
    config = _config()
    tr = trainer_lib.Trainer(config, str(tmp_path))
    summary = tr.run(deadline=time.time() - 1.0)
    # The first window (5 steps) is where the loop measures its pace; with no
    # time left the run ends there, with a checkpoint of that step.
    assert summary['step'] == config.log_every_steps == 5
    assert summary['stopped_by_time_limit'] is True
    assert tr.ckpt.all_steps() == [5]

    again = trainer_lib.Trainer(config, str(tmp_path))
    assert again.start_step == 5
    summary = again.run()
    assert summary['step'] == 20 and summary['stopped_by_time_limit'] is False
    assert again.ckpt.all_steps()[-1] == 20


def test_config_time_limit_counts_from_construction(tmp_path):
    # A limit far shorter than compiling the step: stops at the first window.
    tr = trainer_lib.Trainer(_config(time_limit_minutes=1e-4), str(tmp_path))
    summary = tr.run()
    assert summary['step'] == 5 and summary['stopped_by_time_limit']
    assert tr.deadline == pytest.approx(tr.created + 6e-3)


def test_steps_before_deadline_uses_the_pace_so_far(tmp_path, monkeypatch):
    tr = trainer_lib.Trainer(_config(), str(tmp_path))
    tr.deadline = 1000.0
    monkeypatch.setattr(trainer_lib, 'time', types.SimpleNamespace(time=lambda: 995.0))
    # 100 steps in 10 s: 0.1 s a step, 5 s left -> 50 more steps.
    assert tr._steps_before_deadline(100, 1000, busy=10.0) == 150
    # A faster pace later moves the end back up, never beyond the total.
    assert tr._steps_before_deadline(200, 1000, busy=10.0) == 300
    assert tr._steps_before_deadline(100, 120, busy=10.0) == 120
    # No time left: stop at the current step.
    tr.deadline = 900.0
    assert tr._steps_before_deadline(100, 1000, busy=10.0) == 100


@pytest.mark.parametrize('bad', [-1.0, float('nan'), float('inf')])
def test_bad_time_limit_is_a_config_error(bad):
    with pytest.raises(ConfigError, match='time_limit_minutes'):
        trainer_lib._check_loop_settings(_config(time_limit_minutes=bad))


def test_end_between_log_lines_is_saved_and_reported(tmp_path, monkeypatch, capsys):
    """A deadline estimate that falls between log lines ends the run there."""
    tr = trainer_lib.Trainer(_config(), str(tmp_path))
    calls = []

    def estimate(step, total, busy):
        calls.append(step)
        tr.pace = 0.1
        return step + 3  # At the first log line (step 5): stop at step 8.

    monkeypatch.setattr(tr, '_steps_before_deadline', estimate)
    summary = tr.run(deadline=time.time() + 3600)
    assert calls == [5]  # Not re-estimated once the end is set and reached.
    assert summary['step'] == 8 and summary['stopped_by_time_limit'] is True
    assert tr.ckpt.all_steps()[-1] == 8
    assert 'Time limit: stopped at step 8 of 20' in capsys.readouterr().out


def test_the_eta_counts_the_evaluations_at_their_pace(tmp_path, capsys):
    """The progress line's ETA is the session's wall-clock pace (compilation
    left out) times the steps to go: evaluations and saves count, as they
    will in the steps left. (From the step time alone it said 0m00s here,
    with an evaluation taking 1 s.)"""
    config = _config()
    config.eval.every_steps = 5
    config.eval.bleu = False  # Loss only: no decoding to compile.
    tr = trainer_lib.Trainer(config, str(tmp_path))
    evaluate = tr.task.evaluate

    def slow_evaluate(*args, **kwargs):
        if not calls:  # The evaluation at step 5 only.
            time.sleep(1.0)
        calls.append(1)
        return evaluate(*args, **kwargs)

    calls = []

    tr.task.evaluate = slow_evaluate
    tr.run()
    out = capsys.readouterr().out
    # At step 10, a 1-s evaluation in 10 steps: the 10 steps to go take >= 1 s.
    line = next(l for l in out.splitlines() if l.startswith('step 10/20'))
    eta = re.search(r'ETA (\d+)m(\d\d)s', line)
    assert eta and 60 * int(eta.group(1)) + int(eta.group(2)) >= 1, line
