"""Codistillation vs more data parallelism, counted in steps (Anil et al. 2018).

    python benchmarks/codistill.py [--quick] [--steps 3000] [--ablation]
        [--tag NAME] [--config.k=v ...]

Arms, each a `python -m jaxdistill.train` subprocess on fake CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count), Multi30k en->de from
../shared/data/multi30k (or `--config.data.files_dir=...`):
  A:  one model, batch B, 4 devices (twice, seeds 0 and 1, for churn);
  B:  one model, batch 2B, 8 devices;
  C:  codistillation, 2 replicas x 4 devices, batch B each (the 8 devices of B).
Reports the steps each arm needs to reach A's best validation loss, the
validation curves (plot), the step-time overhead of C over B (same devices),
and prediction churn between the two A models vs between C's two replicas.
Fake devices share the CPU's cores, so steps, not seconds, are the measure.
`--ablation` also trains C's variants (DEFAULT_ABLATION below: distillation
off, half the weight, a 5x more frequent exchange, the PFN code's 40% burn-in)
on the same devices and data, and reports each one's curve, final loss and
churn; `--ablation C_w2,...` trains the named ones of ABLATION instead (C_w2:
twice the weight).
On a GPU/TPU machine pass `--devices-per-group` and a bigger model. With
fewer accelerators than C needs (one GPU), C's two replicas are stacked on
the devices there are (`mesh.replica_axis_size`, chosen automatically) and
train exactly as on groups of their own; steps stay the measure.
`--only A,C --workdir DIR` trains some arms now (a pilot) and the rest on a
later call with the same arguments; the result is written once all are done.
Writes benchmarks/results/codistill[_TAG].json and .png.
"""

import argparse
import functools
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402

CONFIG = 'configs/translate_multi30k.py'
CODISTILL = 'configs/codistill_synthetic.py'


# C's variants for --ablation: name -> (what it changes, overrides given the
# step count). Each differs from C in one setting.
ABLATION = {
    'C_w0': ('no distillation (weight 0)', lambda steps: ['method.weight=0.0']),
    'C_w0.5': ('distillation weight 0.5', lambda steps: ['method.weight=0.5']),
    'C_w2': ('distillation weight 2', lambda steps: ['method.weight=2.0']),
    'C_ex10': ('exchange every 10 steps', lambda steps: ['method.exchange_every=10']),
    'C_burn40': (
        'burn-in 40% of the steps',
        lambda steps: [f'method.burn_in_steps={2 * steps // 5}'],
    ),
}
# `--ablation` without names: the variants of the 2026-12-04 ablation.
DEFAULT_ABLATION = ('C_w0', 'C_w0.5', 'C_ex10', 'C_burn40')


@functools.cache
def _platform() -> tuple[str, int]:
    """(platform, device count) the arms will run on: `JAX_PLATFORMS` if set,
    else what JAX picks, asked in a subprocess (this one holds no device)."""
    code = 'import jax; print(jax.default_backend(), jax.device_count())'
    out = subprocess.run(
        [sys.executable, '-c', code],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'),
    )
    if out.returncode:
        raise SystemExit(f'cannot start JAX: {out.stderr[-2000:]}')
    name, count = out.stdout.split()[-2:]
    return name, int(count)


def _env(devices):
    """A subprocess environment with `devices` devices: fake CPU devices on
    CPU; on GPUs the first `devices` of them (all, if there are fewer: C's
    replicas are then stacked on the ones there are)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    platform, count = _platform()
    if platform == 'cpu':
        env['JAX_PLATFORMS'] = 'cpu'
        env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
    elif platform in ('gpu', 'cuda', 'rocm') and devices < count:
        env['CUDA_VISIBLE_DEVICES'] = ','.join(map(str, range(devices)))
    return env


def _run(workdir, config, devices, overrides):
    env = _env(devices)
    cmd = [sys.executable, '-m', 'jaxdistill.train', '--config', config]
    cmd += ['--workdir', str(workdir), *overrides]
    if (pathlib.Path(workdir) / 'summary.json').exists():
        print(f'{workdir}: finished earlier, reusing its metrics', flush=True)
    else:  # A fresh run, or the rest of an interrupted one (train resumes).
        print('$', ' '.join(cmd), flush=True)
        r = subprocess.run(
            cmd, cwd=common.REPO, env=env, capture_output=True, text=True
        )
        if r.returncode:
            raise SystemExit(r.stdout[-2000:] + r.stderr[-3000:])
    return _records(workdir)


def _records(workdir):
    with open(pathlib.Path(workdir) / 'metrics.jsonl', encoding='utf-8') as f:
        return [json.loads(line) for line in f]


def _curve(records, key='eval/loss'):
    return [(r['step'], r[key]) for r in records if key in r]


def _steps_to(curve, target):
    return next((s for s, v in curve if v <= target), None)


def _step_seconds(records):
    rates = [r['train/steps_per_s'] for r in records if 'train/steps_per_s' in r]
    # Logged rates leave compilation out; the first window still carries
    # start-up costs (first transfers, data pipeline warm-up).
    return float(1 / np.median(rates[1:] or rates))


def _compile_seconds(records):
    """(seconds compiling, windows that compiled) from the logged windows;
    None for logs written before the trainer recorded compilation."""
    c = [r['train/compile_seconds'] for r in records if 'train/compile_seconds' in r]
    if not c:
        return None
    return {'seconds': float(sum(c)), 'windows': sum(x > 0.5 for x in c), 'of': len(c)}


def _churn(work_a, work_b, devices):
    """Disagreement of two single models' argmax predictions on val.

    Runs on the arms' own device count: the data position in a checkpoint is
    only valid for the batching of that many devices.
    """
    out = subprocess.run(
        [
            sys.executable,
            str(pathlib.Path(__file__).with_name('churn.py')),
            str(work_a),
            str(work_b),
        ],
        cwd=common.REPO,
        capture_output=True,
        text=True,
        env=_env(devices),
    )
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return float(out.stdout.strip().splitlines()[-1])


def shared_overrides(steps, data):
    """The training settings every arm shares ('key=value', no '--config.').

    The plain arms start from configs/translate_multi30k.py and C from
    configs/codistill_synthetic.py: these pin every training setting they
    would otherwise not share. benchmarks/codistill_overhead.py uses them too.
    """
    return [
        f'num_train_steps={steps}',
        'data.source=files',
        f'data.files_dir={data}',
        'data.pairs=("en-de",)',
        'data.vocab_size=8000',
        'model.dropout_rate=0.1',
        'optimizer.learning_rate=0.001',
        f'optimizer.warmup_steps={max(steps // 10, 1)}',
        f'optimizer.total_steps={steps}',
        'data.bucket_lengths=(16, 24, 32, 48, 64)',
        'eval.beam_size=0',
    ]


def main():
    argv = sys.argv[1:]
    extra = [a for a in argv if a.startswith('--config.')]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--quick',
        action='store_true',
        help='a smoke run (~8 minutes on 2 CPU cores, mostly compiling)',
    )
    parser.add_argument('--steps', type=int, default=3000)
    parser.add_argument('--batch-tokens', type=int, default=2048, help='B, per model')
    parser.add_argument('--devices-per-group', type=int, default=4)
    parser.add_argument(
        '--data_dir', '--data', dest='data', default='../shared/data/multi30k'
    )
    parser.add_argument(
        '--burn-in',
        type=float,
        default=0.2,
        help="C's burn-in, a fraction of the steps (PFN's code: 0.4)",
    )
    parser.add_argument(
        '--ablation',
        nargs='?',
        const=','.join(DEFAULT_ABLATION),
        default='',
        help="also train C's variants: DEFAULT_ABLATION, or those of "
        'ABLATION named (comma-separated, e.g. C_w2)',
    )
    parser.add_argument(
        '--tag', default='', help='results go to codistill_TAG.{json,png}'
    )
    parser.add_argument(
        '--only',
        default='',
        help='comma-separated arms to train now (e.g. A,C for a pilot); '
        'needs --workdir; the result is written once every arm has finished there',
    )
    parser.add_argument(
        '--workdir',
        default=None,
        help='folder of the arms (default: a new temporary one); arms that '
        'finished there earlier are reused, interrupted ones resume',
    )
    args = parser.parse_args([a for a in argv if not a.startswith('--config.')])
    steps = 40 if args.quick else args.steps
    only = set(filter(None, args.only.split(',')))
    variants = [v for v in args.ablation.split(',') if v]
    if unknown := set(variants) - set(ABLATION):
        parser.error(
            f'--ablation: unknown variants {sorted(unknown)}; known: {list(ABLATION)}'
        )
    if only and not args.workdir:
        parser.error('--only needs --workdir (the other arms run there later)')
    if not 0 <= args.burn_in < 1:
        parser.error(f'--burn-in={args.burn_in} must be in [0, 1)')
    burn_in = round(steps * args.burn_in)
    every = max(steps // 20, 5)
    common_overrides = [
        f'--config.{o}'
        for o in shared_overrides(steps, args.data)
        + [
            f'eval.every_steps={every}',
            f'log_every_steps={every}',
            f'checkpoint.every_steps={steps}',
            'eval.max_examples=500',
            'eval.bleu=False',  # The curves are of val loss.
            'checkpoint.keep=1',
        ]
    ]
    if args.quick:
        common_overrides += [
            '--config.data.max_examples=3000',
            '--config.eval.max_examples=100',
        ]
    common_overrides += extra
    g, b = args.devices_per_group, args.batch_tokens
    if args.workdir:
        tmp = pathlib.Path(args.workdir)
        tmp.mkdir(parents=True, exist_ok=True)
    else:
        tmp = pathlib.Path(tempfile.mkdtemp(prefix='codistill_bench_'))
    c_over = [
        f'--config.data.batch_tokens={2 * b}',
        f'--config.method.burn_in_steps={burn_in}',
    ]
    plan = [
        ('A', CONFIG, g, [f'--config.data.batch_tokens={b}', '--config.seed=0']),
        ('A2', CONFIG, g, [f'--config.data.batch_tokens={b}', '--config.seed=1']),
        ('B', CONFIG, 2 * g, [f'--config.data.batch_tokens={2 * b}']),
        ('C', CODISTILL, 2 * g, c_over),
    ] + [
        (name, CODISTILL, 2 * g, c_over + [f'--config.{o}' for o in overrides(steps)])
        for name, (_, overrides) in ABLATION.items()
        if name in variants
    ]
    if unknown := only - {name for name, *_ in plan}:
        parser.error(f'--only: unknown arms {sorted(unknown)}')
    arms = {}
    for name, config, devices, over in plan:
        if not only or name in only:
            arms[name] = _run(tmp / name, config, devices, common_overrides + over)
    if only:
        missing = [n for n, *_ in plan if not (tmp / n / 'summary.json').exists()]
        if missing:
            print(f'trained {sorted(only)} in {tmp}; still to train: {missing}')
            return
        arms = {n: arms.get(n) or _records(tmp / n) for n, *_ in plan}
    curves = {k: _curve(v) for k, v in arms.items() if k in ('A', 'A2', 'B')}
    curves['C'] = _curve(arms['C'], 'eval/r0/loss')
    curves['C_r1'] = _curve(arms['C'], 'eval/r1/loss')
    best_a = min(v for _, v in curves['A'])
    steps_a, steps_b, steps_c = (_steps_to(curves[k], best_a) for k in ('A', 'B', 'C'))
    churn_c = _last(arms['C'], 'eval/churn')
    name = (
        'codistill'
        + (f'_{args.tag}' if args.tag else '')
        + ('_quick' if args.quick else '')
    )
    result = {
        'steps': steps,
        'batch_tokens_per_model': b,
        'burn_in_steps': burn_in,
        'best_val_loss_a': best_a,
        'steps_to_best_a': {'A': steps_a, 'B': steps_b, 'C': steps_c},
        'steps_ratio_c_vs_a': steps_c / steps_a if steps_c and steps_a else None,
        'steps_ratio_c_vs_b': steps_c / steps_b if steps_c and steps_b else None,
        'churn_a_pair': _churn(tmp / 'A', tmp / 'A2', g),
        'churn_c_pair': churn_c,
        'step_overhead': _step_seconds(arms['C']) / _step_seconds(arms['B']),
        # Left out of the logged rates above; C compiles a step per phase
        # (burn-in, distillation) and bucket plus the exchange, B one per bucket.
        'compile_seconds': {k: _compile_seconds(v) for k, v in arms.items()},
        'curves': curves,
        'workdirs': str(tmp),
        'plot': f'benchmarks/results/{name}.png',
    }
    if variants:
        result['ablation'] = _ablation(arms, best_a, variants)
        for k in variants:
            curves[k] = _curve(arms[k], 'eval/r0/loss')
    _plot(curves, best_a, common.RESULTS / f'{name}.png', args.devices_per_group)
    common.write_result(name, result)
    print(json.dumps({k: v for k, v in result.items() if k != 'curves'}, indent=2))


def _values(records, key):
    return [r[key] for r in records if key in r]


def _last(records, key):
    return _values(records, key)[-1]


def _ablation(arms, best_a, variants):
    """C and its variants side by side: final val loss of each replica, the
    steps replica 0 needs to reach A's best, and churn between the replicas
    (at the end, and the mean of the last five evals)."""
    rows = {}
    for k in ['C', *variants]:
        rows[k] = {
            'change': ABLATION[k][0] if k in ABLATION else 'none (C as above)',
            'final_val_loss': [_last(arms[k], f'eval/r{i}/loss') for i in (0, 1)],
            'steps_to_best_a': _steps_to(_curve(arms[k], 'eval/r0/loss'), best_a),
            'churn_pair': _last(arms[k], 'eval/churn'),
            # Churn between replicas that distil moves by +-0.05 from one
            # eval to the next; the mean of the last five is steadier.
            'churn_pair_last5_mean': float(
                np.mean(_values(arms[k], 'eval/churn')[-5:])
            ),
        }
    rows['A'] = {
        'change': 'one model (A, A2), for comparison',
        'final_val_loss': [_last(arms[k], 'eval/loss') for k in ('A', 'A2')],
    }
    return rows


def _plot(curves, best_a, path, group: int):
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    labels = {
        'A': f'A: 1 model, batch B, {group} dev',
        'A2': 'A (seed 1)',
        'B': f'B: 1 model, batch 2B, {2 * group} dev',
        'C': 'C: codistill replica 0',
        'C_r1': 'C: codistill replica 1',
        **{k: f'C, {change} (r0)' for k, (change, _) in ABLATION.items()},
    }
    for k, c in curves.items():
        ls = '--' if k in ('A2', 'C_r1') else ':' if k in ABLATION else '-'
        ax.plot(*zip(*c), label=labels[k], ls=ls)
    ax.axhline(best_a, color='gray', lw=0.8)
    # The first evals (loss ~7) would squash the part where the arms differ.
    last = max(s for c in curves.values() for s, _ in c)
    ax.set_ylim(top=max(v for c in curves.values() for s, v in c if s >= last / 5))
    ax.set_xlabel('step')
    ax.set_ylabel('validation loss')
    ax.legend(fontsize='small')
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    from jaxdistill import hostmem  # pylint: disable=g-import-not-at-top

    hostmem.reexec_with_huge_pages()
    main()
