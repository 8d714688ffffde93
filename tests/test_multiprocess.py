"""Two processes x 4 CPU devices (gloo) train like one process x 8 devices."""

import json
import os
import re
import signal

import numpy as np
import pytest

from jaxdistill import workdir_lock
from tests import helpers

pytestmark = pytest.mark.slow

# SGD: Adam's g/sqrt(v) would turn float noise in near-zero gradients (the
# all-reduce order differs between the runs) into full-size steps.
OVERRIDES = (
    '--config.num_train_steps=12',
    '--config.log_every_steps=2',
    '--config.checkpoint.every_steps=6',
    '--config.optimizer.name=sgd',
    '--config.optimizer.weight_decay=0.0',
    '--config.optimizer.learning_rate=0.5',
    '--config.eval.at_end=False',  # Decoding would add seconds and test nothing here.
    # One bucket: one train step to compile (or read from the cache) per run.
    '--config.data.bucket_lengths=(48,)',
)


def _losses(workdir) -> dict:
    records = [json.loads(l) for l in (workdir / 'metrics.jsonl').open()]
    return {r['step']: r['train/loss'] for r in records if 'train/loss' in r}


def test_two_processes_stopped_by_signals_and_resumed_match_one_process(tmp_path):
    """SIGTERM to one process of two (a preemption notice) stops both after
    the same step, which they save; resumed, they end as one process does.
    The other process gets a SIGINT (Ctrl-C) at the same time, which takes
    the same way."""
    steps = ('--config.num_train_steps=24',)
    one = tmp_path / 'one'
    r = helpers.run(helpers.train_cmd(one, *OVERRIDES, *steps))
    assert r.returncode == 0, r.stderr[-3000:]

    two = tmp_path / 'two'
    procs = helpers.start_two_processes(two, *OVERRIDES, *steps)
    seen = []
    for line in procs[0].stdout:
        seen.append(line)
        if line.startswith('step 4/'):
            procs[1].send_signal(signal.SIGTERM)
            procs[0].send_signal(signal.SIGINT)
            break
    outs = [p.communicate(timeout=300)[0] for p in procs]
    out0 = ''.join(seen) + outs[0]
    assert '8 devices, 2 processes, each building only its own rows' in out0
    assert [p.returncode for p in procs] == [130, 130], out0[-2000:] + outs[1][-2000:]
    assert 'SIGINT: all processes will stop after the same step' in out0
    stopped = re.search(r'SIGINT: stopped after step (\d+), saved', out0)
    assert stopped, out0[-2000:]
    stop = int(stopped.group(1))
    assert 4 < stop < 24
    saved = sorted(
        int(p.name) for p in (two / 'checkpoints').iterdir() if p.name.isdigit()
    )
    assert saved[-1] == stop, saved

    outs = helpers.run_two_processes(two, *OVERRIDES, *steps)
    assert f'Resumed from {two}/checkpoints/{stop}' in outs[0], outs[0][-2000:]
    step_1, p1 = helpers.final_params(one)
    step_2, p2 = helpers.final_params(two)
    assert step_1 == step_2 == 24
    for k in p1:
        np.testing.assert_allclose(p1[k], p2[k], rtol=1e-4, atol=1e-6)
    # Every logged step's loss, but for the log window the stop split.
    a, b = _losses(one), _losses(two)
    assert len(a) == 12 and set(b) - set(a) <= {stop}
    split = range(stop - stop % 2 + 1, stop - stop % 2 + 3) if stop % 2 else ()
    for step, loss in a.items():
        if step not in split:
            np.testing.assert_allclose(b[step], loss, rtol=1e-5, err_msg=str(step))


def test_time_limit_stops_every_process_at_the_same_step(tmp_path):
    # Far shorter than compiling: both stop at the first log line (step 2),
    # with process 0's decision broadcast to process 1. The steps also
    # accumulate two micro-batches, each spread over both processes' devices.
    outs = helpers.run_two_processes(
        tmp_path,
        *OVERRIDES,
        '--config.time_limit_minutes=0.0001',
        '--config.microbatches=2',
    )
    # Progress is printed by process 0 only.
    assert 'each batch in 2 micro-batches' in outs[0], outs[0][-2000:]
    assert 'Time limit: stopped at step 2 of 12' in outs[0], outs[0][-2000:]
    step, _ = helpers.final_params(tmp_path)
    assert step == 2
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['step'] == 2 and summary['stopped_by_time_limit'] is True


def test_early_stop_holds_for_every_process(tmp_path):
    """checkpoint.patience with two processes: process 0's decision holds
    for both, which stop after the same evaluation and save that step."""
    outs = helpers.run_two_processes(
        tmp_path,
        *OVERRIDES,
        '--config.eval.every_steps=2',
        '--config.eval.bleu=False',  # The loss ranks; no decoding needed.
        '--config.checkpoint.best_metric=eval/loss',
        '--config.checkpoint.best_mode=max',
        '--config.checkpoint.patience=2',
    )
    records = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').open()]
    losses = [(r['step'], r['eval/loss']) for r in records if 'eval/loss' in r]
    # The rule, replayed on the logged evaluations: stop once 2 in a row
    # have not risen above the highest before them.
    best, since, stop = -np.inf, 0, None
    for step, loss in losses:
        best, since = (loss, 0) if loss > best else (best, since + 1)
        if since == 2:
            stop = step
            break
    assert stop is not None and stop < 12, losses
    assert [s for s, _ in losses][-1] == stop  # Nothing evaluated after it.
    assert f'stopped at step {stop}' in outs[0], outs[0][-2000:]
    step, _ = helpers.final_params(tmp_path)
    assert step == stop
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['stopped_early'] is True and summary['step'] == stop


def test_processes_with_different_configs_or_workdirs_are_refused(tmp_path):
    """Mistakes of a multi-host launch, found at the start with the same
    error in every process: an override given to one process only, fewer
    devices on one, and a workdir that is a folder of each process's own (as
    local disks on two hosts would be)."""

    def refused(each, devices=(4, 4)):
        procs = helpers.start_two_processes(
            tmp_path / 'run', *OVERRIDES, each=each, devices=devices
        )
        outs = [p.communicate(timeout=300)[0] for p in procs]
        assert [p.returncode for p in procs] == [2, 2], (
            outs[0][-2000:] + outs[1][-2000:]
        )
        return outs

    outs = refused(((), ('--config.seed=7', '--config.model.d_ff=48')))
    for out in outs:
        assert 'error: The processes of this run do not match: process 1 ' in out
        assert 'process 1 differs from process 0' in out
    assert (
        'process 1 has, against process 0 (process 0 -> this one): '
        'model.d_ff: 64 -> 48; seed: 0 -> 7.'
    ) in outs[1]

    outs = refused(((), ()), devices=(4, 2))
    for out in outs:
        assert (
            'error: The processes of this run have different numbers of devices '
            '(process 0: 4, process 1: 2).'
        ) in out
    assert not (tmp_path / 'run' / 'checkpoints').exists()

    outs = refused(((), ('--workdir', str(tmp_path / 'elsewhere'))))
    for out in outs:
        assert 'is not one folder for all processes: process 1 cannot see the ' in out
    assert f'error: --workdir {tmp_path / "run"} is not one folder' in outs[0]
    assert not list((tmp_path / 'run').glob('.process_check_*'))  # Removed.

    # A failure of what process 0 alone does (training the tokenizer) stops
    # the others with the same error, at once: they do not wait for it.
    small = ('--config.data.vocab_size=8',)
    for out in refused((small, small)):
        assert 'error: data.vocab_size=8 is too small for the text the tokenizer' in out

    # So does a lock file that cannot be opened (process 1 waited ~5 minutes
    # for process 0's answer, then both were aborted without its reason).
    lock_path = tmp_path / 'run' / workdir_lock.LOCK_FILE
    lock_path.unlink(missing_ok=True)  # The earlier cases' (released) lock.
    lock_path.mkdir(parents=True)
    outs = refused(((), ()))
    for out in outs:
        assert 'Cannot open the workdir lock' in out, out[-2000:]
    assert '(process 0 could not lock the workdir.)' in outs[1]


def test_a_busy_workdir_refuses_every_process_without_the_resume_line(tmp_path):
    """`train --workdir DIR` alone, on two processes, while another run holds
    DIR: both processes stop with the holder named, and process 0 does not
    say it resumes first."""
    work = tmp_path / 'run'
    work.mkdir()
    (work / 'config.json').write_text('{}')
    (work / 'config_source.json').write_text(
        json.dumps(
            {
                'config': helpers.CONFIG,
                'overrides': [o.removeprefix('--config.') for o in OVERRIDES],
            }
        )
    )
    lock = workdir_lock.WorkdirLock(str(work)).acquire()
    try:
        procs = helpers.start_two_processes(work, config=None)
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        lock.release()
    assert [p.returncode for p in procs] == [2, 2], outs[0][-2000:] + outs[1][-2000:]
    assert f'{work} is in use by another training run (pid {os.getpid()} on ' in outs[0]
    assert f'{work} is in use by another training run' in outs[1]
    assert 'Resuming' not in outs[0]


def test_distributed_settings_checked_before_jax_starts(monkeypatch, capsys):
    """A process_id outside 0..num_processes-1 is refused before
    `jax.distributed.initialize`; an initialize that fails (a peer that never
    comes, a clash) is a ConfigError saying what to check, after a line that
    names this process and the coordinator."""
    import ml_collections

    from jaxdistill import sharding
    from jaxdistill.errors import ConfigError

    for name in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'):
        monkeypatch.delenv(name, raising=False)
    calls = []

    def initialize(**kwargs):
        calls.append(kwargs)
        raise RuntimeError('DEADLINE_EXCEEDED: Barrier timed out\nmore detail')

    monkeypatch.setattr(sharding.jax.distributed, 'initialize', initialize)
    monkeypatch.setattr(sharding.jax.config, 'update', lambda *a: None)
    cfg = lambda pid: ml_collections.ConfigDict(
        {'coordinator_address': 'localhost:1', 'num_processes': 2, 'process_id': pid}
    )
    with pytest.raises(ConfigError, match='process_id=2 with num_processes=2'):
        sharding.maybe_initialize_distributed(cfg(2))
    assert not calls
    with pytest.raises(
        ConfigError,
        match=r'could not start process 1 of 2 with the coordinator localhost:1: '
        r'DEADLINE_EXCEEDED: Barrier timed out\. Check that every process',
    ):
        sharding.maybe_initialize_distributed(cfg(1))
    assert calls == [
        {'coordinator_address': 'localhost:1', 'num_processes': 2, 'process_id': 1}
    ]
    assert 'jax.distributed: process 1 of 2, coordinator localhost:1' in (
        capsys.readouterr().err
    )
    assert not sharding.maybe_initialize_distributed(
        ml_collections.ConfigDict({'coordinator_address': ''})
    )
