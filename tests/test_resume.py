"""Kill -9 mid-run, restart, and end bitwise identical to an unbroken run."""

import json
import os
import re
import signal
import time

import pytest

from jaxdistill import train
from jaxdistill.tasks import translation
from tests import helpers

pytestmark = pytest.mark.slow

# Big enough that steps take tens of milliseconds (about 35 ms on 2 cores,
# 8 fake devices), so the kill lands mid-run.
OVERRIDES = (
    '--config.num_train_steps=60',
    '--config.checkpoint.every_steps=10',
    '--config.log_every_steps=5',
    '--config.model.d_model=64',
    '--config.model.d_ff=128',
    '--config.model.num_encoder_layers=1',
    '--config.model.num_decoder_layers=1',
    '--config.checkpoint.async_save=True',
    '--config.eval.at_end=False',  # Decoding would add seconds and test nothing here.
    # One bucket: one train step to compile (or read from the cache) per run.
    '--config.data.bucket_lengths=(48,)',
)


def test_sigint_then_sigkill_and_restart_is_bitwise_identical(tmp_path):
    def _kill_when_step_logged(workdir, step, sig=signal.SIGKILL):
        cmd = helpers.train_cmd(workdir, *OVERRIDES)
        return helpers.signal_at_step(cmd, step, sig)

    full = tmp_path / 'full'
    r = helpers.run(helpers.train_cmd(full, *OVERRIDES))
    assert r.returncode == 0, r.stderr[-3000:]

    # Ctrl-C (SIGINT) saves the step it has finished, between the periodic
    # checkpoints, and exits 130.
    broken = tmp_path / 'broken'
    ckpts = broken / 'checkpoints'
    code, out = _kill_when_step_logged(broken, 15, signal.SIGINT)
    assert code == 130, out[-2000:]
    saved = max(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
    assert 15 <= saved < 35
    assert f'SIGINT: stopped after step {saved}, saved in {ckpts}/{saved}' in out
    if saved % 5:  # The steps since the last log line are logged at the stop.
        assert re.search(rf'\nstep {saved}/60 \|[^\n]*\| stopping\n', out), out

    # The run resumes from it; then kill -9 leaves the periodic checkpoints.
    code, out = _kill_when_step_logged(broken, 35)
    assert code == -signal.SIGKILL, out[-2000:]
    assert f'Resumed from {ckpts}/{saved}' in out
    steps = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
    assert steps and max(steps) < 60, steps  # Killed before the end.
    # A half-written checkpoint, as a kill during a save leaves it.
    junk = ckpts / '40.orbax-checkpoint-tmp-1700000000'
    junk.mkdir()
    (junk / 'state').mkdir()
    (junk / 'state' / 'partial').write_bytes(b'\0' * 100)

    r = helpers.run(helpers.train_cmd(broken, *OVERRIDES))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f'Resumed from {ckpts}/{max(steps)}' in r.stdout

    # Through both stops, the parameters end bitwise those of an unbroken run.
    step_a, a = helpers.final_params(full)
    step_b, b = helpers.final_params(broken)
    assert step_a == step_b == 60
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    # The metrics log has each step once, as an unbroken run's does, and the
    # same values, but for the log window that the SIGINT stop split in two
    # (its steps up to the stop are logged at the stop).
    records = [json.loads(l) for l in (broken / 'metrics.jsonl').open()]
    losses = {r['step']: r['train/loss'] for r in records if 'train/loss' in r}
    assert list(losses) == sorted(set(losses))
    full_losses = {
        r['step']: r['train/loss']
        for r in (json.loads(l) for l in (full / 'metrics.jsonl').open())
        if 'train/loss' in r
    }
    split = range(saved - saved % 5, saved - saved % 5 + 6) if saved % 5 else ()
    assert set(losses) - set(full_losses) <= {saved}
    for step, loss in full_losses.items():
        if step not in split:
            assert losses[step] == loss, step


def _train_main(capsys, work, *overrides):
    """`python -m jaxdistill.train` in this process (the CLI's main): nothing
    here needs a process of its own. -> (exit code, captured output)."""
    capsys.readouterr()
    code = train.main(['--config', helpers.CONFIG, '--workdir', str(work), *overrides])
    return code, capsys.readouterr()


def test_damaged_finished_checkpoint_is_set_aside(tmp_path, capsys):
    work = tmp_path / 'w'

    def train_main(*overrides):
        return _train_main(
            capsys,
            work,
            '--config.num_train_steps=20',
            '--config.checkpoint.every_steps=10',
            *overrides,
        )

    code, out = train_main()
    assert code == 0, out.err[-3000:]
    ckpt20 = work / 'checkpoints' / '20' / 'state'
    for f in ckpt20.rglob('*'):
        if f.is_file():
            f.write_bytes(b'garbage')
    code, out = train_main()
    assert code == 0, out.err[-3000:]
    assert f'Resumed from {work}/checkpoints/10' in out.out
    assert any((work / 'checkpoints_damaged').iterdir())

    # A setting that changes the optimizer state's tree is named, and the
    # refused config does not replace the run's config.json.
    saved_config = (work / 'config.json').read_text()
    code, out = train_main('--config.optimizer.grad_clip_norm=0.0')
    assert code == 2, out.out[-3000:]
    assert 'optimizer.grad_clip_norm: 1.0 -> 0.0' in out.err, out.err[-3000:]
    assert 'partial_restore' not in out.err  # Orbax's option, not ours.
    assert (work / 'config.json').read_text() == saved_config

    # When no checkpoint can be read, nothing is set aside and the run does
    # not start again from step 0.
    for f in (work / 'checkpoints').rglob('*'):
        if f.is_file() and f.parent.name == 'state':
            f.write_bytes(b'garbage')
    before = sorted(p.name for p in (work / 'checkpoints').iterdir())
    code, out = train_main()
    assert code == 2, out.out[-3000:]
    assert 'None of the 2 checkpoints' in out.err, out.err[-3000:]
    assert sorted(p.name for p in (work / 'checkpoints').iterdir()) == before
    assert 'Training' not in out.out


def test_resume_on_another_device_count_rebatches_with_a_note(tmp_path):
    """A codistillation run checkpointed on 8 devices (two groups of 4)
    resumes on 1 (both replicas stacked there). Its epochs now have fewer
    batches than the saved position's index: the run continues at the same
    point of the epoch and says that the data order changed."""
    from jaxdistill import checkpoint as checkpoint_lib

    config = str(helpers.REPO / 'configs' / 'codistill_synthetic.py') + ':runlocal'
    work = tmp_path / 'w'

    def train(steps, devices, burn_in):
        cmd = helpers.train_cmd(
            work,
            f'--config.num_train_steps={steps}',
            f'--config.checkpoint.every_steps={steps}',
            '--config.eval.at_end=False',
            # Each run compiles one phase: the first trains in its burn-in,
            # the resumed one distils from the stale copies it restored.
            f'--config.method.burn_in_steps={burn_in}',
            '--config.method.exchange_every=1000',
            config=config,
        )
        r = helpers.run(cmd, devices=devices)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        return r.stdout

    out = train(76, devices=8, burn_in=1000)
    assert 'one per device group of 4 devices' in out
    meta = checkpoint_lib.read_meta(str(work / 'checkpoints' / '76'))
    assert meta['devices'] == 8 and meta['data_position']['index'] == 76
    before = meta['batches_per_epoch']
    out = train(80, devices=1, burn_in=6)
    assert f'Resumed from {work}/checkpoints/76' in out
    assert '2 stacked per device group (1 group of 1 device)' in out
    assert 'settings changed since the run was saved: ' in out
    assert '; method.burn_in_steps: 1000 -> 6;' in out  # Distils from here on.
    assert 'the data order from here differs from an unbroken run' in out
    meta = checkpoint_lib.read_meta(str(work / 'checkpoints' / '80'))
    now = meta['batches_per_epoch']
    assert meta['devices'] == 1 and now < before
    # Four steps on from the same fraction of the epoch.
    assert meta['data_position'] == {'epoch': 0, 'index': 76 * now // before + 4}


def test_damaged_array_data_is_named_by_readers_and_set_aside_quietly(tmp_path, capsys):
    """The array data of the newest checkpoint cut short (the metadata
    intact): `evaluate` and `translate`, which only read a run, name it and
    move nothing; a resumed run sets it aside with one warning, without the
    hundreds of tracebacks TensorStore's orphaned reads used to print."""
    from jaxdistill import evaluate, translate

    work = tmp_path / 'w'
    overrides = (
        '--config.num_train_steps=20',
        '--config.checkpoint.every_steps=10',
        '--config.eval.bleu=False',
        '--config.data.bucket_lengths=(48,)',  # One step shape to compile.
    )
    assert (
        train.main(['--config', helpers.CONFIG, '--workdir', str(work), *overrides])
        == 0
    )
    data = list((work / 'checkpoints' / '20' / 'state').glob('ocdbt.process_*/d/*'))
    assert data
    for f in data:
        with f.open('r+b') as handle:
            handle.truncate(10)
    capsys.readouterr()
    named = f'Checkpoint {work}/checkpoints/20 is unreadable: Encountered error'
    assert evaluate.main(['--workdir', str(work)]) == 2
    err = capsys.readouterr().err
    assert named in err and 'Other checkpoints: [10] (--step N).' in err, err[-2000:]
    assert 'TensorStore details' not in err
    assert evaluate.main(['--workdir', str(work), '--step', '20']) == 2
    assert named in capsys.readouterr().err
    assert translate.main(['--workdir', str(work)]) == 2
    assert named in capsys.readouterr().err
    assert sorted(p.name for p in (work / 'checkpoints').iterdir()) == ['10', '20']
    assert not (work / 'checkpoints_damaged').exists()
    assert evaluate.main(['--workdir', str(work), '--step', '10']) == 0

    result = helpers.run(helpers.train_cmd(work, '--config.num_train_steps=25'))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'Resumed from {work}/checkpoints/10' in result.stdout
    warnings = [l for l in result.stderr.splitlines() if 'is unreadable' in l]
    assert len(warnings) == 1 and 'moved to' in warnings[0], result.stderr[-3000:]
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert (work / 'checkpoints_damaged').exists()


def test_a_stop_signal_abandons_an_evaluation_and_the_resumed_run_makes_it(
    tmp_path, capfd, monkeypatch
):
    """SIGTERM during an evaluation (of an unsaved step, of a resumed run's
    first step, of the final step) stops the evaluation at once, saves the
    step, and exits; each resumed run makes the abandoned evaluation, and the
    log ends with the evaluations of an unbroken run, each once. Started again
    when finished, the run evaluates nothing again unless the evaluation
    settings changed."""
    argv = (
        '--config.num_train_steps=12',
        '--config.checkpoint.every_steps=10',
        '--config.eval.every_steps=5',  # Step 5: evaluated, not saved.
        '--config.log_every_steps=5',
        '--config.data.bucket_lengths=(48,)',
    )
    task_cls = translation.TranslationTask
    evaluate = task_cls.evaluate
    signal_on = set()  # Which calls of evaluate (counted from 1) get SIGTERM.
    calls = []

    def signalled_evaluate(self, params):
        calls.append(1)
        if len(calls) in signal_on:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(120)  # Abandoned at once, or the run takes this long.
        return evaluate(self, params)

    monkeypatch.setattr(task_cls, 'evaluate', signalled_evaluate)
    handler = signal.getsignal(signal.SIGTERM)

    def train_main(work, *more, signal_on_call=None):
        signal_on.clear()
        signal_on.update([signal_on_call] if signal_on_call else [])
        calls.clear()
        started = time.monotonic()
        # capfd: the handler's line is an os.write to the descriptor.
        code, out = _train_main(capfd, work, *argv, *more)
        assert time.monotonic() - started < 120, 'the evaluation was not abandoned'
        return code, out

    def evals(work):
        lines = (work / 'metrics.jsonl').read_text().splitlines()
        records = [json.loads(l) for l in lines]
        return [(r['step'], r['eval/loss']) for r in records if 'eval/loss' in r]

    def saved(work):
        return sorted(int(p.name) for p in (work / 'checkpoints').iterdir())

    code, out = train_main(tmp_path / 'unbroken')
    assert code == 0, out.err[-3000:]
    unbroken = evals(tmp_path / 'unbroken')
    assert [s for s, _ in unbroken] == [5, 10, 12]

    work = tmp_path / 'w'
    ckpts = work / 'checkpoints'
    # Step 5's evaluation, of a step no periodic checkpoint saves.
    code, out = train_main(work, signal_on_call=1)
    assert code == 130, out.err[-3000:]
    assert 'SIGTERM: abandoning the evaluation, saving and stopping' in out.err
    assert (
        f'SIGTERM: stopped after step 5 (its evaluation abandoned), saved in '
        f'{ckpts}/5; run the same command to evaluate it and resume.'
    ) in out.out
    assert saved(work) == [5] and evals(work) == []
    # The resumed run's first evaluation, of step 5 again.
    code, out = train_main(work, signal_on_call=1)
    assert code == 130, out.err[-3000:]
    assert (
        'Evaluating step 5 first: the run stopped during its evaluation, before '
        'it was logged.'
    ) in out.out
    assert (
        'SIGTERM: stopped during the evaluation of step 5, before training on; '
        'run the same command to evaluate it and resume.'
    ) in out.out
    assert saved(work) == [5] and evals(work) == []
    # The final evaluation (5 first, 10, then 12).
    code, out = train_main(work, signal_on_call=3)
    assert code == 130, out.err[-3000:]
    assert (
        f'SIGTERM: stopped during the final evaluation of step 12, which is '
        f'saved in {ckpts}/12; run the same command to evaluate it.'
    ) in out.out
    assert saved(work)[-2:] == [10, 12] and not (work / 'summary.json').exists()
    assert evals(work) == unbroken[:2]
    # Resumed: only the final evaluation is left; then the run is finished.
    code, out = train_main(work)
    assert code == 0, out.err[-3000:]
    assert calls == [1]
    assert evals(work) == unbroken
    summary = json.loads((work / 'summary.json').read_text())
    assert summary['eval/loss'] == unbroken[-1][1]
    assert signal.getsignal(signal.SIGTERM) == handler  # Put back each time.

    # Started again when finished: nothing is evaluated twice.
    code, out = train_main(work)
    assert code == 0 and 'Evaluating step' not in out.out and not calls
    assert 'Step 12 is evaluated already (metrics.jsonl)' in out.out
    assert 'Step 12 reached num_train_steps=12 already: nothing left' in out.out
    assert evals(work) == unbroken
    # Started again with other evaluation settings: the logged evaluation
    # measured something else, so step 12 is evaluated again (a sweep that
    # reruns a finished run with a new eval.* reports the new figures).
    code, out = train_main(work, '--config.eval.max_examples=7')
    assert code == 0, out.err[-3000:]
    assert (
        'Evaluating step 12 again: its logged evaluation used other settings '
        '(eval.max_examples:'
    ) in out.out
    # Logged once: the new evaluation replaces the old one's record (two
    # values at one step drew a vertical segment and read as either).
    assert [s for s, _ in evals(work)] == [5, 10, 12]
    assert evals(work)[:2] == unbroken[:2]
    summary = json.loads((work / 'summary.json').read_text())
    assert summary['eval/loss'] == evals(work)[-1][1] != unbroken[-1][1]
    # Changing only when to evaluate does not.
    code, out = train_main(
        work, '--config.eval.max_examples=7', '--config.eval.every_steps=2'
    )
    assert code == 0 and 'Evaluating step' not in out.out
    assert [s for s, _ in evals(work)] == [5, 10, 12]


def test_windows_cut_by_evaluations_and_a_finished_run_started_again(tmp_path, capsys):
    """An evaluation between log lines (eval every 5, log every 10) leaves
    the window's steps and compilation in its log line; an early stop due at
    the last step is no early stop, and starting the finished run again
    keeps its training record in summary.json."""
    work = tmp_path / 'w'
    argv = [
        '--config.num_train_steps=10',
        '--config.log_every_steps=10',
        '--config.eval.every_steps=5',
        '--config.checkpoint.every_steps=10',  # Step 5 is saved as ranked.
        '--config.checkpoint.best_metric=eval/loss',
        '--config.checkpoint.best_mode=min',
        # No later evaluation improves by 100: patience is spent at step 10.
        '--config.checkpoint.patience=1',
        '--config.checkpoint.min_delta=100.0',
        '--config.data.bucket_lengths=(48,)',
    ]
    code, out = _train_main(capsys, work, *argv)
    assert code == 0, out.err[-3000:]
    records = [json.loads(l) for l in (work / 'metrics.jsonl').read_text().splitlines()]
    (logged,) = [r for r in records if 'train/steps_per_s' in r]
    assert logged['step'] == 10
    # The train step compiled in steps 1-5, before the evaluation at 5.
    assert logged['train/compile_seconds'] > 0
    first = json.loads((work / 'summary.json').read_text())
    assert first['stopped_early'] is False and 'train/loss' in first

    code, out = _train_main(capsys, work, *argv)
    assert code == 0, out.err[-3000:]
    assert 'Early stop' not in out.out
    assert 'Step 10 reached num_train_steps=10 already' in out.out
    again = json.loads((work / 'summary.json').read_text())
    assert again['stopped_early'] is False
    assert first['trained_from_step'] == 0
    for key in ('train_seconds', 'steps_per_s', 'trained_from_step', 'train/loss'):
        assert again[key] == first[key], key


def test_other_batching_on_the_same_devices_is_named_a_data_change(capsys):
    """A resume whose epochs have another number of batches on the same
    devices: the data (or how it is batched) changed, and the note says so
    rather than blaming a device count that did not change."""
    import jax

    from jaxdistill import trainer as trainer_lib

    class Batches:
        def batches_per_epoch(self):
            return 31

    meta = {
        'data_position': {'epoch': 1, 'index': 20},
        'batches_per_epoch': 21,
        'devices': jax.device_count(),
    }
    assert trainer_lib._resume_position(meta, Batches()) == {'epoch': 1, 'index': 29}
    out = capsys.readouterr().out
    assert 'this run has 31, on the same' in out
    assert 'the training data or its batching settings changed' in out
