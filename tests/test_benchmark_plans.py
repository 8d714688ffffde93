"""How benchmarks/nmt_multi30k.py turns its probe into a training plan."""

import argparse
import importlib.util
import pathlib

import pytest

from jaxdistill import configuration

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def nmt():
    spec = importlib.util.spec_from_file_location(
        'nmt_multi30k_bench', REPO / 'benchmarks' / 'nmt_multi30k.py'
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _plan(nmt, schedule, steps=0):
    config = configuration.load_config(f'{REPO}/configs/translate_multi30k.py:budget')
    config.optimizer.schedule = schedule
    args = argparse.Namespace(minutes=10.0, steps=steps, curve_points=10)
    # 0.5 s a step, nothing else: 1,160 steps fit after the 20 s checkpoint reserve.
    rows = [{'bucket_length': 16, 'batches_per_epoch': 1, 'step_seconds': 0.5}]
    planned, _ = nmt.plan_steps(config, args, rows, {'overhead': 1.0}, 0.0, 0.0)
    return config, planned


def test_deadline_decides_when_the_schedule_ignores_the_total(nmt):
    config, planned = _plan(nmt, 'inverse_sqrt')
    assert planned == 1160
    # The cap stays: the deadline, not the estimate, ends the run.
    assert config.num_train_steps == 12000
    # The estimate spaces evaluations and the ten checkpoints of the tail.
    assert config.eval.every_steps == 116
    assert config.checkpoint.every_steps == 29 and config.checkpoint.keep == 10


def test_the_estimate_is_the_total_for_a_decaying_schedule(nmt):
    config, planned = _plan(nmt, 'cosine')
    assert planned == config.num_train_steps == 1160
    assert config.optimizer.total_steps == 1160  # The decay ends at the plan.


def test_steps_flag_sets_the_total(nmt):
    config, planned = _plan(nmt, 'inverse_sqrt', steps=300)
    assert planned == config.num_train_steps == 300


class _FakeProcesses:
    """Stands in for benchmarks/codistill.py's subprocesses: a training arm
    writes a small metrics log and summary.json, churn.py prints a number."""

    def __init__(self, real_run):
        self.trained, self.real_run = [], real_run

    def __call__(self, cmd, **kwargs):
        import json
        import subprocess

        if '--workdir' not in cmd and cmd[1] != '-c' and 'churn' not in cmd[1]:
            return self.real_run(cmd, **kwargs)  # Not the benchmark's.
        if cmd[1] == '-c':  # The platform question.
            return subprocess.CompletedProcess(cmd, 0, stdout='cpu 8\n', stderr='')
        if cmd[1].endswith('churn.py'):
            return subprocess.CompletedProcess(cmd, 0, stdout='0.25\n', stderr='')
        workdir = pathlib.Path(cmd[cmd.index('--workdir') + 1])
        self.trained.append(workdir.name)
        workdir.mkdir(parents=True)
        c = workdir.name.startswith('C')
        records = []
        for step, loss in ((50, 3.0), (100, 2.0)):
            loss += 0.1 if c else 0.0  # C never reaches A's best.
            records.append({'step': step, 'train/steps_per_s': 2.0 if c else 2.5})
            if c:
                evals = {'eval/r0/loss': loss, 'eval/r1/loss': loss, 'eval/churn': 0.2}
            else:
                evals = {'eval/loss': loss}
            records.append({'step': step, **evals})
        with open(workdir / 'metrics.jsonl', 'w', encoding='utf-8') as f:
            f.writelines(json.dumps(r) + '\n' for r in records)
        (workdir / 'summary.json').write_text('{}')
        return subprocess.CompletedProcess(cmd, 0, stdout='', stderr='')


def test_codistill_only_trains_some_arms_now_and_the_rest_later(tmp_path, monkeypatch):
    import json
    import sys

    spec = importlib.util.spec_from_file_location(
        'codistill_bench', REPO / 'benchmarks' / 'codistill.py'
    )
    cod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cod)
    fake = _FakeProcesses(cod.subprocess.run)
    monkeypatch.setattr(cod.subprocess, 'run', fake)
    results = tmp_path / 'results'
    results.mkdir()
    monkeypatch.setattr(cod.common, 'RESULTS', results)
    work = tmp_path / 'arms'
    argv = ['codistill.py', '--steps', '100', '--workdir', str(work), '--tag', 't']

    def main(*extra):
        monkeypatch.setattr(sys, 'argv', argv + list(extra))
        cod.main()

    with pytest.raises(SystemExit):  # A variant that does not exist.
        main('--ablation', 'C_w9')
    main('--only', 'A,C')
    assert fake.trained == ['A', 'C']
    assert not list(results.iterdir())  # Not all arms yet: no result.
    main('--ablation', 'C_w2')
    assert fake.trained == ['A', 'C', 'A2', 'B', 'C_w2']  # A and C reused.
    result = json.loads((results / 'codistill_t.json').read_text())
    assert result['steps_to_best_a'] == {'A': 100, 'B': 100, 'C': None}
    assert list(result['ablation']) == ['C', 'C_w2', 'A']
    assert result['churn_a_pair'] == 0.25 and result['churn_c_pair'] == 0.2
    assert result['step_overhead'] == pytest.approx(2.5 / 2.0)
