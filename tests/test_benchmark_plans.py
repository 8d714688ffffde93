"""Benchmark scripts' planning and bookkeeping (subprocesses and training faked)."""

import argparse
import importlib.util
import pathlib

import numpy as np
import pytest

from jaxdistill import configuration
from tests import helpers

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load_benchmark(name, monkeypatch, tmp_path):
    """benchmarks/NAME.py as a module that writes its results to tmp_path."""
    monkeypatch.syspath_prepend(str(REPO / 'benchmarks'))
    spec = importlib.util.spec_from_file_location(
        f'{name}_bench', REPO / 'benchmarks' / f'{name}.py'
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench.common, 'RESULTS', tmp_path)
    return bench


@pytest.fixture(scope='module')
def nmt():
    spec = importlib.util.spec_from_file_location(
        'nmt_multi30k_bench', REPO / 'benchmarks' / 'nmt_multi30k.py'
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_epoch_rate_is_total_work_over_total_time(nmt):
    # One second of a fast bucket (80% of peak), nine of a slow one (20%).
    rows = [
        {'batches_per_epoch': 10, 'step_seconds': 0.1, 'fraction_of_peak': 0.8},
        {'batches_per_epoch': 10, 'step_seconds': 0.9, 'fraction_of_peak': 0.2},
    ]
    assert nmt.epoch_rate(rows, 'fraction_of_peak') == pytest.approx(
        (0.8 * 1.0 + 0.2 * 9.0) / 10.0
    )
    assert nmt.epoch_mean(rows, 'step_seconds') == pytest.approx(0.5)


def _plan(nmt, schedule, steps=0):
    config = configuration.load_config(f'{REPO}/configs/translate_multi30k.py:budget')
    config.optimizer.schedule = schedule
    args = argparse.Namespace(minutes=10.0, steps=steps, curve_points=10)
    # 0.5 s a step, nothing else: 1,160 steps fit after the 20 s checkpoint reserve.
    rows = [{'bucket_length': 16, 'batches_per_epoch': 1, 'step_seconds': 0.5}]
    planned, _ = nmt.plan_steps(config, args, rows, {'overhead': 1.0}, 0.0, 0.0)
    return config, planned


def test_real_token_flops_split_the_padded_count_by_side(nmt):
    """Real-token FLOPs: with every position real they are the padded count;
    source and target tokens are charged their own sides' terms."""
    from jaxdistill.models import transformer  # pylint: disable=g-import-not-at-top

    config = transformer.TransformerConfig(
        vocab_size=1000, d_model=32, num_heads=4, d_ff=64,
        num_encoder_layers=2, num_decoder_layers=3,
    )  # fmt: skip
    f = transformer.flops_per_token(config, 16, 16)
    assert nmt.real_token_flops(config, 16, 8 * 16, 8 * 16) == pytest.approx(
        f['total'] * 8 * 16
    )
    # A source token: the encoder's terms, and the decoder's cross-attention
    # keys and values (2 matmuls of d_model x d_model, 6 FLOPs a weight).
    source = nmt.real_token_flops(config, 16, 1, 0)
    assert source == pytest.approx(
        f['encoder_dense'] + f['encoder_attention'] + 3 * 6 * 2 * 32 * 32
    )
    assert nmt.real_token_flops(config, 16, 0, 1) == pytest.approx(f['total'] - source)


def test_epoch_buckets_count_each_shapes_batches_and_real_tokens(nmt):
    from jaxdistill.data import batching  # pylint: disable=g-import-not-at-top

    rng = np.random.default_rng(0)
    src = [np.arange(1, n + 1, dtype=np.int32) for n in rng.integers(1, 30, 200)]
    tgt = [np.arange(1, n + 1, dtype=np.int32) for n in rng.integers(1, 30, 200)]
    batcher = batching.BucketedBatcher(
        src, tgt, batch_tokens=128, bucket_lengths=(8, 16, 32), seed=3
    )
    buckets = nmt.epoch_buckets(batcher)
    assert sum(b['batches'] for b in buckets.values()) == batcher.batches_per_epoch()
    assert sum(b['source_tokens'] for b in buckets.values()) == sum(map(len, src))
    assert sum(b['target_tokens'] for b in buckets.values()) == sum(map(len, tgt))
    assert {shape for shape in buckets} == {(16, 8), (8, 16), (4, 32)}
    for shape, b in buckets.items():
        assert b['example']['inputs'].shape == shape


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


def test_refigure_recounts_real_tokens_of_an_earlier_result(
    tmp_path, monkeypatch, shared_data
):
    """--refigure on a result written before the real-token rates rebuilds
    its epoch from its config and data, and adds them: the committed main
    result's figures come back; a result whose batches differ is refused."""
    import json
    import sys

    committed = json.loads(
        (REPO / 'benchmarks' / 'results' / 'nmt_multi30k.json').read_text()
    )
    nmt = _load_benchmark('nmt_multi30k', monkeypatch, tmp_path)
    old = json.loads(json.dumps(committed))
    for key in ('fraction_of_peak_real_tokens', 'real_tokens_recounted'):
        del old[key]
    old['target_tokens_per_s_probe'] = old.pop('target_tokens_per_s_probe_first_batch')
    del old['targets_met']['speed_real_tokens']
    for r in old['buckets']:
        r['target_tokens_per_s'] = r.pop('target_tokens_per_s_first_batch')
        for key in (
            'source_tokens_per_epoch',
            'target_tokens_per_epoch',
            'real_token_flops_per_s',
            'fraction_of_peak_real_tokens',
        ):
            del r[key]
    (tmp_path / 'old.json').write_text(json.dumps(old))
    argv = [
        'nmt_multi30k.py',
        '--refigure',
        'old',
        '--data_dir',
        str(shared_data / 'multi30k'),
    ]
    monkeypatch.setattr(sys, 'argv', argv)
    nmt.main()
    new = json.loads((tmp_path / 'old.json').read_text())
    assert new['fraction_of_peak_real_tokens'] == pytest.approx(
        committed['fraction_of_peak_real_tokens'], rel=1e-12
    )
    assert 0.8 < new['fraction_of_peak_real_tokens'] / new['fraction_of_peak'] < 0.9
    assert new['buckets'] == committed['buckets']
    nmt.main()  # Again: recounted already, nothing changes.
    assert json.loads((tmp_path / 'old.json').read_text()) == new

    old['buckets'][0]['batches_per_epoch'] += 1
    (tmp_path / 'old.json').write_text(json.dumps(old))
    with pytest.raises(SystemExit, match='old: the batches rebuilt from its config'):
        nmt.main()


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

    results = tmp_path / 'results'
    results.mkdir()
    cod = _load_benchmark('codistill', monkeypatch, results)
    fake = _FakeProcesses(cod.subprocess.run)
    monkeypatch.setattr(cod.subprocess, 'run', fake)
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


def _sd_result(seeds, acc_base, acc_exits, time_fraction, curve_acc, **settings):
    """A self_distill_cifar10 result of `seeds` (its figures the seeds' means)."""
    n = len(seeds)
    return {
        'command': f'python benchmarks/self_distill_cifar10.py --first_seed {seeds[0]}',
        'date': '2026-12-05T00:00:00+00:00',
        'machine': {'device_kind': ['gpu'], 'seeds': seeds},
        'acc_baseline': acc_base,
        'acc_exits_sd': acc_exits,
        'exit_time_fraction_sd': time_fraction,
        'exit_flops_fraction_sd': [0.4, 1.1],
        'early_exit_curve': [
            {
                'threshold': 0.9,
                'accuracy': curve_acc,
                'time_fraction': 0.8,
                'exit_fractions': [0.5, 0.5],
            },
        ],
        'acc_baseline_per_seed': [acc_base] * n,
        'acc_exits_sd_per_seed': [acc_exits] * n,
        'seconds_plain_network_eval': [0.1] * n,
        'train_seconds': {'baseline': [60.0] * n, 'self_distill': [90.0] * n},
        'settings': {
            'quick': False,
            'size': 'gpu',
            'steps': 10000,
            'warmup_steps': 500,
            'preset': {'model.width': 64},
            'config_overrides': [],
            'seeds': n,
            'seed_list': seeds,
            'steps_per_s': {'baseline': [200.0] * n, 'self_distill': [130.0] * n},
            **settings,
        },
    }


def test_self_distill_combine_merges_seeds_run_on_different_machines(
    tmp_path, monkeypatch
):
    """Seeds added on a later lease (--first_seed) merge into one result over all
    of them: means weighted by seed count, per-seed lists joined, targets redone."""
    import json

    sd = _load_benchmark('self_distill_cifar10', monkeypatch, tmp_path)
    write = lambda name, result: (tmp_path / f'{name}.json').write_text(
        json.dumps(result)
    )
    # An old result (no seed_list: seeds 0..n-1) and two more seeds.
    old = _sd_result([0], 86.0, [80.0, 87.5], [0.7, 1.3], 86.0)
    del old['settings']['seed_list']
    write('one', old)
    write('two', _sd_result([1, 2], 87.0, [83.0, 87.0], [0.4, 1.3], 87.5))
    merged = sd._combine(['one', 'two'])
    assert merged['settings']['seeds'] == 3
    assert merged['settings']['seed_list'] == [0, 1, 2]
    assert merged['acc_baseline'] == pytest.approx((86.0 + 2 * 87.0) / 3)
    assert merged['acc_exits_sd'] == pytest.approx([82.0, (87.5 + 2 * 87.0) / 3])
    assert merged['exit_time_fraction_sd'] == pytest.approx([0.5, 1.3])
    assert merged['early_exit_curve'][0]['accuracy'] == pytest.approx(87.0)
    assert merged['acc_baseline_per_seed'] == [86.0, 87.0, 87.0]
    assert merged['train_seconds']['self_distill'] == [90.0] * 3
    assert [(p['name'], p['seeds']) for p in merged['parts']] == [
        ('one', [0]),
        ('two', [1, 2]),
    ]
    # Deepest 87.1667 vs baseline 86.6667: +0.5, under the +1.0 target; exit 0
    # at 0.5 of the time is 82.0, more than 1.5 points below the baseline.
    assert merged['targets']['deepest_minus_baseline'] == pytest.approx(0.5)
    assert not merged['targets']['deepest_at_least_baseline_plus_1']
    assert not merged['targets']['cheap_exit_target_met']

    # Refused: another setting, a seed twice, a missing file.
    write('longer', _sd_result([3], 87.0, [83.0, 87.0], [0.4, 1.3], 87.5, steps=20000))
    with pytest.raises(SystemExit, match='settings.steps = 20000'):
        sd._combine(['one', 'longer'])
    with pytest.raises(SystemExit, match='repeat seeds'):
        sd._combine(['two', 'two'])
    with pytest.raises(SystemExit, match='no result'):
        sd._combine(['one', 'absent'])


def test_self_distill_sst2_only_refuses_cifar_settings(tmp_path, monkeypatch):
    """--sst2_only trains the SST-2 arms alone; a --config.* override (which
    applies to the CIFAR arms only) or --no_sst2 with it is refused before any
    training, not silently dropped."""
    import sys

    sd = _load_benchmark('self_distill_cifar10', monkeypatch, tmp_path)
    for extra in (['--config.model.width=8'], ['--no_sst2']):
        argv = ['self_distill_cifar10.py', '--sst2_only', '--workdir', str(tmp_path)]
        monkeypatch.setattr(sys, 'argv', argv + extra)
        with pytest.raises(SystemExit, match='--sst2_only runs the SST-2 arms alone'):
            sd.main()
    assert not list(tmp_path.glob('*.json'))


def test_restart_compile_hands_its_overrides_to_the_cli(tmp_path, monkeypatch, capsys):
    """`--config.X=Y` given to restart_compile.py reaches the runs it starts
    as `--config.X=Y`, which the train CLI takes (a bare `X=Y` it refused)."""
    import json
    import sys

    from jaxdistill import train

    bench = _load_benchmark('restart_compile', monkeypatch, tmp_path)
    argv = ['restart_compile.py', '--config', helpers.CONFIG, '--config.model.d_ff=48']
    monkeypatch.setattr(sys, 'argv', argv)
    cmd = bench._cmd(bench.parse_args(), tmp_path / 'run')
    assert cmd[:3] == [sys.executable, '-m', 'jaxdistill.train']
    assert train.main([*cmd[3:], '--print_config']) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed['model']['d_ff'] == 48 and printed['log_every_steps'] == 10


def test_self_distill_refuses_untimed_evaluation_before_training(tmp_path, monkeypatch):
    """The benchmark reports measured inference time: eval.timing_repeats=0
    is refused at the first run's config, not after every run has trained."""
    import sys

    import jax

    sd = _load_benchmark('self_distill_cifar10', monkeypatch, tmp_path)
    argv = ['self_distill_cifar10.py', '--no_sst2', '--workdir', str(tmp_path)]
    monkeypatch.setattr(sys, 'argv', argv + ['--config.eval.timing_repeats=0'])
    cache = jax.config.jax_compilation_cache_dir
    with pytest.raises(SystemExit, match='eval.timing_repeats=0 must be at least 1'):
        sd.main()
    assert not list(tmp_path.iterdir())
    # Before the benchmark points this process's compilation cache elsewhere.
    assert jax.config.jax_compilation_cache_dir == cache


def test_mt2st_arm_is_timed_around_the_trainers_evaluations(
    tmp_path, monkeypatch, shared_data
):
    """benchmarks/mt2st_sst2.py's run_arm wraps Trainer.evaluate to take the
    evaluations out of the training time: a real (tiny) Switch run through
    it gets a curve point per evaluation, with the accuracies the log holds."""
    import json

    bench = _load_benchmark('mt2st_sst2', monkeypatch, tmp_path)
    args = argparse.Namespace(
        steps=4, eval_every=2, quick=True, scale='cpu', data_dir=str(shared_data)
    )
    out = bench.run_arm('switch', 0, args, str(tmp_path / 'run'))
    assert [p['step'] for p in out['curve']] == [2, 4]
    logged = [
        json.loads(l)
        for l in (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()
    ]
    dev = [r['eval/dev/accuracy'] for r in logged if 'eval/dev/accuracy' in r]
    assert [p['dev'] for p in out['curve']] == dev
    assert 0 < out['curve'][0]['train_s'] < out['curve'][1]['train_s']


def test_resnet_train_step_times_its_variants(tmp_path, monkeypatch):
    """benchmarks/resnet_train_step.py --quick: each variant's step is built,
    trained and timed; the result names them, plain float32 as 1x. --quick
    compiles two (each variant is a compilation; the exit heads' own steps
    are tested in test_self_distill); the lists of variants are checked
    without compiling."""
    import json
    import sys

    bench = _load_benchmark('resnet_train_step', monkeypatch, tmp_path)
    labels = lambda variants: [v[0] for v in variants]
    assert labels(bench._variants(4, every_variant=False)) == [
        'plain',
        'exits=0,1,2',
        'exits=0,1,2+branch',
        'exits=0,1,2+pool',
    ]
    assert labels(bench._variants(3)) == [
        'plain',
        'exits=1',
        'exits=0,1',
        'exits=0,1+ce',
        'exits=0,1+branch',
        'exits=0,1+pool',
    ]
    argv = ['resnet_train_step.py', '--quick', '--dtypes', 'float32']
    monkeypatch.setattr(sys, 'argv', argv)
    bench.main()
    result = json.loads((tmp_path / 'resnet_train_step_quick.json').read_text())
    assert list(result['ms_per_step']) == ['plain float32', 'exits=0,1 float32']
    assert result['time_over_plain_float32']['plain float32'] == 1.0
    assert all(ms > 0 for ms in result['ms_per_step'].values())
    assert (tmp_path / 'resnet_train_step_quick.png').exists()
    assert 'measure nothing' in result['smoke_run']  # Labelled as a smoke run.


def test_resnet_stage_time_times_backbones_and_every_exit_head(tmp_path, monkeypatch):
    """benchmarks/resnet_stage_time.py --quick: every backbone prefix and the
    multi-exit prefixes of every exit head are compiled, counted and timed."""
    import json
    import sys

    bench = _load_benchmark('resnet_stage_time', monkeypatch, tmp_path)
    monkeypatch.setattr(sys, 'argv', ['resnet_stage_time.py', '--quick'])
    bench.main()
    result = json.loads((tmp_path / 'resnet_stage_time_quick.json').read_text())
    assert result['backbone_time_fraction'][-1] == 1.0
    flops = result['backbone_flops_fraction']
    assert flops == sorted(flops) and flops[-1] == 1.0 and flops[0] < 0.9
    for suffix in ('', '_branch', '_pool'):
        assert len(result[f'exit_prefix_time_fraction{suffix}']) == 3
        prefix = result[f'exit_prefix_flops_fraction{suffix}']
        # Each prefix is its backbone plus heads: more FLOPs, growing with k.
        assert prefix == sorted(prefix)
        assert all(p > b for p, b in zip(prefix, flops))
    assert (tmp_path / 'resnet_stage_time_quick.png').exists()


def test_machine_records_the_cpu_model_and_its_simd_extensions(monkeypatch, tmp_path):
    common = _load_benchmark('resnet_stage_time', monkeypatch, tmp_path).common
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text(
        'processor\t: 0\nmodel name\t: AMD EPYC 9654\n'
        'flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16\n\n'
        'processor\t: 1\nmodel name\t: another\nflags\t\t: amx_tile\n'
    )
    assert common.cpu(str(cpuinfo)) == {
        'cpu_model': 'AMD EPYC 9654',
        'cpu_isa': ['avx', 'avx2', 'fma', 'avx512f', 'avx512_bf16'],
    }
    assert common.cpu(str(tmp_path / 'absent')) == {}
