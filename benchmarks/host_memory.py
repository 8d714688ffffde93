"""Train step time with and without huge pages for malloc (jaxdistill.hostmem).

    python benchmarks/host_memory.py [--config configs/translate_multi30k.py:budget]
        [--data_dir ../shared/data/multi30k] [--lengths 12,16,24] [--repeats 10]
        [--rounds 2] [--tag TAG] [--config.k=v ...]

On XLA's CPU backend every step allocates its temporaries afresh, and glibc
maps blocks over 32 MB anew each time, so each step page-faults all of that
memory in again. `jaxdistill.hostmem` restarts the command-line entry points
with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (transparent huge pages for those
blocks). This benchmark measures what that buys: it times the config's
compiled train step on one full batch of each bucket length in fresh worker
processes, alternately without the tunable (JAXDISTILL_HUGE_PAGES=0) and with
it, `--rounds` times each, and records per step: median wall seconds, minor
page faults, and user and system CPU seconds (all threads, from getrusage).
Writes benchmarks/results/host_memory[_TAG].json and .png.

The comparison means something only where transparent huge pages are in
`madvise` mode (`/sys/kernel/mm/transparent_hugepage/enabled`): under `always`
they are on for both arms, under `never` for neither. The JSON records the mode.
"""

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxdistill import configuration  # pylint: disable=g-import-not-at-top
from jaxdistill import hostmem  # pylint: disable=g-import-not-at-top

ARMS = ('default_malloc', 'huge_pages')


def parse_args(argv):
    rest, overrides = configuration.split_overrides(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='configs/translate_multi30k.py:budget')
    parser.add_argument(
        '--data_dir',
        default=str(common.REPO.parent / 'shared' / 'data' / 'multi30k'),
        help='sets config.data.files_dir (for file-backed configs)',
    )
    parser.add_argument('--lengths', default='12,16,24', help='bucket lengths to time')
    parser.add_argument(
        '--repeats', type=int, default=10, help='timed steps per length'
    )
    parser.add_argument('--rounds', type=int, default=2, help='worker pairs to run')
    parser.add_argument('--tag', default=None, help='results/host_memory_TAG.json')
    parser.add_argument('--worker', choices=ARMS, help=argparse.SUPPRESS)
    args = parser.parse_args(rest)
    args.lengths = [int(x) for x in args.lengths.split(',') if x]
    return args, overrides


def worker(args, overrides):
    """Times the step in this process; prints one JSON line."""
    import jax  # pylint: disable=g-import-not-at-top

    from jaxdistill import sharding  # pylint: disable=g-import-not-at-top
    from jaxdistill import trainer as trainer_lib  # pylint: disable=g-import-not-at-top

    import train_step_throughput as tst  # pylint: disable=g-import-not-at-top

    config = tst.load_config(args.config, args.data_dir)
    config = configuration.apply_overrides(config, overrides)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        tr = trainer_lib.Trainer(config, workdir)
        for length in args.lengths:
            batch = tst.batch_of_length(tr.task.train_batches, length)
            arrays = sharding.global_batch(batch, tr.batch_sharding)
            for _ in range(2):  # Compile, then one step to settle the allocator.
                tr.state, aux = tr.step_fn(tr.state, arrays)
                jax.block_until_ready(aux)
            before = resource.getrusage(resource.RUSAGE_SELF)
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                tr.state, aux = tr.step_fn(tr.state, arrays)
                jax.block_until_ready(aux)
                times.append(time.perf_counter() - t)
            after = resource.getrusage(resource.RUSAGE_SELF)
            n = args.repeats
            rows.append(
                {
                    'bucket_length': length,
                    'batch_rows': int(batch['inputs'].shape[0]),
                    'step_seconds_median': float(np.median(times)),
                    'step_seconds_min': float(np.min(times)),
                    'step_seconds_max': float(np.max(times)),
                    'minor_faults_per_step': (after.ru_minflt - before.ru_minflt) / n,
                    'user_seconds_per_step': (after.ru_utime - before.ru_utime) / n,
                    'system_seconds_per_step': (after.ru_stime - before.ru_stime) / n,
                }
            )
        tr.close()
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tunables = os.environ.get('GLIBC_TUNABLES', '')
    print(
        'RESULT '
        + json.dumps(
            {'rows': rows, 'peak_rss_mb': peak_rss_mb, 'glibc_tunables': tunables}
        )
    )


def run_worker(arm, argv):
    env = hostmem.with_huge_pages(os.environ, arm == 'huge_pages')
    env[hostmem.OPT_OUT] = '0'  # This script sets the tunable itself, per arm.
    cmd = [sys.executable, os.path.abspath(__file__), '--worker', arm, *argv]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f'worker {arm} failed (exit {proc.returncode})')
    return json.loads(lines[-1][len('RESULT ') :])


def main():
    argv = sys.argv[1:]
    args, overrides = parse_args(argv)
    if args.worker:
        worker(args, overrides)
        return
    config = configuration.load_config(args.config)
    if 'files_dir' in config.data and not os.path.isdir(args.data_dir):
        raise SystemExit(f'data folder {args.data_dir} not found; pass --data_dir.')
    thp = hostmem.thp_mode()
    glibc = '.'.join(map(str, hostmem.glibc_version() or ()))
    print(f'transparent huge pages: {thp}; glibc {glibc}')
    runs = {arm: [] for arm in ARMS}
    for r in range(args.rounds):
        for arm in ARMS:
            started = time.perf_counter()
            runs[arm].append(run_worker(arm, argv))
            took = time.perf_counter() - started
            print(f'round {r + 1}/{args.rounds} {arm}: {took:.0f} s')

    def across_rounds(arm, length, key):
        return float(
            np.median(
                [
                    row[key]
                    for run in runs[arm]
                    for row in run['rows']
                    if row['bucket_length'] == length
                ]
            )
        )

    keys = (
        'step_seconds_median',
        'minor_faults_per_step',
        'user_seconds_per_step',
        'system_seconds_per_step',
    )
    per_length = []
    for length in args.lengths:
        row = {'bucket_length': length}
        for arm in ARMS:
            row[arm] = {k: across_rounds(arm, length, k) for k in keys}
        row['speedup'] = (
            row['default_malloc']['step_seconds_median']
            / row['huge_pages']['step_seconds_median']
        )
        per_length.append(row)
    speedups = [r['speedup'] for r in per_length]
    tag = f'_{args.tag}' if args.tag else ''
    plot = common.RESULTS / f'host_memory{tag}.png'
    _plot(per_length, plot, args.config)
    common.write_result(
        f'host_memory{tag}',
        {
            'config': args.config,
            'overrides': overrides,
            'transparent_hugepage_mode': thp,
            'glibc': glibc,
            'rounds': args.rounds,
            'repeats': args.repeats,
            'per_length': per_length,
            'speedup_geomean': float(np.exp(np.mean(np.log(speedups)))),
            'peak_rss_mb': {
                arm: max(run['peak_rss_mb'] for run in runs[arm]) for arm in ARMS
            },
            'runs': runs,
            'plot': str(plot.relative_to(common.REPO)),
        },
    )
    for r in per_length:
        d, h = r['default_malloc'], r['huge_pages']
        print(
            f'L={r["bucket_length"]:3d}: {d["step_seconds_median"]:.3f} -> '
            f'{h["step_seconds_median"]:.3f} s/step ({r["speedup"]:.2f}x); faults/step '
            f'{d["minor_faults_per_step"]:,.0f} -> {h["minor_faults_per_step"]:,.0f}; '
            f'system s/step {d["system_seconds_per_step"]:.3f} -> '
            f'{h["system_seconds_per_step"]:.3f}'
        )


def _plot(rows, path, config):
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    x = np.arange(len(rows))
    labels = [str(r['bucket_length']) for r in rows]
    for i, (arm, color) in enumerate(zip(ARMS, ('tab:gray', 'tab:green'))):
        user = [r[arm]['user_seconds_per_step'] for r in rows]
        system = [r[arm]['system_seconds_per_step'] for r in rows]
        wall = [r[arm]['step_seconds_median'] for r in rows]
        ax1.bar(x + (i - 0.5) * 0.4, wall, 0.4, color=color, label=arm)
        ax2.bar(x + (i - 0.5) * 0.4, user, 0.4, color=color, alpha=0.5)
        ax2.bar(x + (i - 0.5) * 0.4, system, 0.4, bottom=user, color=color, hatch='//')
    for ax, title in (
        (ax1, 'wall s/step (median)'),
        (ax2, 'CPU s/step: user, system (hatched)'),
    ):
        ax.set_xticks(x, labels)
        ax.set_xlabel('bucket length')
        ax.set_title(title, fontsize=10)
    ax1.legend(fontsize=8)
    fig.suptitle(f'train step, {config}', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    main()
