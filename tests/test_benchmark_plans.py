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
