"""The host's share of the step time spent on input (`train/input_fraction`).

    python benchmarks/input_fraction.py [--runs mt2st_stl,mt2st_mtl] [--steps 600] [--rounds 2]

Trains each named run with `python -m jaxdistill.train` (a subprocess, no
evaluation, a log line every 100 steps) `--rounds` times, alternating, and
reads its metrics: per log window after the first (which holds the
compilation), the milliseconds a step and `train/input_fraction`, the share
of the loop's stepping time the host spent building batches and sending them
to the devices. Reports the median and range over windows and rounds.
Runs (`RUNS`): MT2ST's single-task arm (SST-2 alone) and its multi-task arm
(SST-2 plus skip-gram pairs sampled on the host every step), on
`../shared/data`. Writes benchmarks/results/input_fraction.json and .png
(`--tag T`: input_fraction_T.*).
"""

import argparse
import json
import pathlib
import sys
import tempfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

RUNS = {
    'mt2st_stl': 'configs/mt2st_sst2.py:arm=stl',
    'mt2st_mtl': 'configs/mt2st_sst2.py:arm=mtl',
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', default=','.join(RUNS))
    parser.add_argument('--steps', type=int, default=600)
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--tag', default='')
    parser.add_argument(
        '--data_dir',
        default=str(common.REPO.parent / 'shared/data'),
        help='the folder holding sst2/ and words/',
    )
    args = parser.parse_args()
    args.runs = [r for r in args.runs.split(',') if r]
    unknown = set(args.runs) - set(RUNS)
    if unknown or args.steps < 200 or args.rounds < 1:
        parser.error(
            f'--runs from {", ".join(RUNS)} (unknown: {sorted(unknown)}); '
            '--steps >= 200; --rounds >= 1.'
        )
    return args


def one_run(
    config: str, steps: int, workdir: pathlib.Path, data_dir: str
) -> list[dict]:
    """-> [{'ms_per_step', 'input_fraction'}] per log window after the first."""
    cmd = common.train_cmd(
        config,
        workdir,
        *(f'--config.{o}' for o in common.mt2st_data_overrides(data_dir)),
        f'--config.num_train_steps={steps}',
        '--config.log_every_steps=100',
        '--config.eval.every_steps=0',
        '--config.eval.at_end=False',
    )
    code, out = common.run_until_logged(cmd, None, None)
    if code:
        raise SystemExit(f'{" ".join(cmd)} failed:\n{out[-3000:]}')
    records = [json.loads(l) for l in (workdir / 'metrics.jsonl').open()]
    windows = [r for r in records if 'train/input_fraction' in r][1:]
    return [
        {
            'ms_per_step': 1e3 / r['train/steps_per_s'],
            'input_fraction': r['train/input_fraction'],
        }
        for r in windows
    ]


def plot(result: dict, path: pathlib.Path) -> None:
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, windows in result['windows'].items():
        ax.scatter(
            [w['ms_per_step'] for w in windows],
            [w['input_fraction'] for w in windows],
            label=name,
        )
    ax.set_xlabel('ms per step (one log window)')
    ax.set_ylabel('train/input_fraction')
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title('Host input share of the step time', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f'wrote {path}')


def main():
    args = parse_args()
    root = pathlib.Path(tempfile.mkdtemp(prefix='input_fraction_'))
    windows = {name: [] for name in args.runs}
    for r in range(args.rounds):
        for name in args.runs if r % 2 == 0 else args.runs[::-1]:
            got = one_run(RUNS[name], args.steps, root / f'{name}_{r}', args.data_dir)
            print(f'  round {r} {name}: {got}', flush=True)
            windows[name] += got
    summary = {}
    for name, w in windows.items():
        ms = [x['ms_per_step'] for x in w]
        fr = [x['input_fraction'] for x in w]
        summary[name] = {
            'ms_per_step_median': float(np.median(ms)),
            'ms_per_step_range': [float(min(ms)), float(max(ms))],
            'input_fraction_median': float(np.median(fr)),
            'input_fraction_range': [float(min(fr)), float(max(fr))],
        }
    stem = 'input_fraction' + (f'_{args.tag}' if args.tag else '')
    result = {
        'runs': {name: RUNS[name] for name in args.runs},
        'steps': args.steps,
        'rounds': args.rounds,
        'summary': summary,
        'windows': windows,
        'plot': f'benchmarks/results/{stem}.png',
    }
    common.write_result(stem, result)
    plot(result, common.RESULTS / f'{stem}.png')
    print(json.dumps(summary, indent=1))


if __name__ == '__main__':
    main()
