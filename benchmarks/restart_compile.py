r"""What a resumed run spends compiling, with and without the compilation cache.

    python benchmarks/restart_compile.py [--config configs/translate_multi30k.py:budget] \
        [--first 150] [--more 60] [--rounds 2] [--config.k=v ...]
    # GPU: e.g. --config configs/translate_multi30k.py:size=base --config.data.batch_tokens=16384

Runs `python -m jaxdistill.train` as real subprocesses, as a user resuming a
preempted run does:
 1. one run of `--first` + `--more` steps in a fresh workdir, with the cache
    on (`compilation_cache_dir='auto'`: WORKDIR/compilation_cache), stopped by
    SIGINT once it logs step `--first` (it saves that step and exits), having
    compiled (and stored) a step for every bucket shape it met;
 2. `--rounds` times, two resumes of that run to its end, one with the cache
    off (`--config.compilation_cache_dir=`) and one with it on, alternating
    which goes first. Each starts from a fresh copy of the stopped run, made
    at the same path (XLA's compile options name the cache's directory, so
    they are part of every entry's key: a workdir moved elsewhere compiles
    again).
Each resumed process reports its wall time (start to exit: imports, data,
tokenizer, compilation, steps, the final checkpoint and evaluation) and the
compilation the trainer measured (`train/compile_seconds`, summed over its
log windows; the evaluation's decoding compiles are in `eval/seconds`). The
figures are medians over rounds. Logs every 10 steps (`--first` must be a
multiple of 10). Writes benchmarks/results/restart_compile.json
and .png (`--tag T`: restart_compile_T.*).
"""

import argparse
import json
import os
import pathlib
import shutil
import signal
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxdistill import configuration  # pylint: disable=g-import-not-at-top


def parse_args():
    rest, overrides = configuration.split_overrides(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='configs/translate_multi30k.py:budget')
    parser.add_argument(
        '--data_dir', default=str(common.REPO.parent / 'shared' / 'data' / 'multi30k')
    )
    parser.add_argument('--first', type=int, default=150)
    parser.add_argument('--more', type=int, default=60)
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--workdir', default='')
    parser.add_argument('--tag', default='')
    args = parser.parse_args(rest)
    if min(args.first, args.more, args.rounds) < 1 or args.first % 10:
        parser.error('--first (a multiple of 10), --more and --rounds must be >= 1.')
    args.overrides = overrides
    return args


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    # The run's own setting decides; a cache the caller's shell names would
    # be 'auto''s choice.
    env.pop('JAX_COMPILATION_CACHE_DIR', None)
    return env


def _cmd(args, workdir: pathlib.Path, *extra) -> list[str]:
    cmd = common.train_cmd(
        args.config,
        workdir,
        f'--config.num_train_steps={args.first + args.more}',
        '--config.log_every_steps=10',
        # split_overrides took the prefix off; the CLI wants it back.
        *(f'--config.{o}' for o in args.overrides),
        *extra,
    )
    if 'multi30k' in args.config:
        cmd.append(f'--config.data.files_dir={args.data_dir}')
    return cmd


def first_run(args, workdir: pathlib.Path) -> float:
    """Trains until step `--first` is logged, then SIGINT; -> wall seconds."""
    start = time.perf_counter()
    code, out = common.run_until_logged(
        _cmd(args, workdir), args.first, signal.SIGINT, env=_env()
    )
    if code != 130:
        raise SystemExit(f'the first run ended with {code}:\n{out[-3000:]}')
    return time.perf_counter() - start


def resume(args, workdir: pathlib.Path, *extra) -> dict:
    """Runs the CLI to the end; -> wall seconds and the trainer's measures."""
    cmd = _cmd(args, workdir, *extra)
    start = time.perf_counter()
    code, out = common.run_until_logged(cmd, None, None, env=_env())
    wall = time.perf_counter() - start
    if code:
        raise SystemExit(f'{" ".join(cmd)} failed:\n{out[-3000:]}')
    records = [json.loads(l) for l in (workdir / 'metrics.jsonl').open()]
    mine = [x for x in records if x.get('step', 0) > args.first]
    resumed = [l for l in out.splitlines() if l.startswith('Resumed from')]
    return {
        'wall_seconds': wall,
        'compile_seconds': float(
            sum(x.get('train/compile_seconds', 0.0) for x in mine)
        ),
        'eval_seconds': float(sum(x.get('eval/seconds', 0.0) for x in mine)),
        'resumed_from': resumed[0].split()[-1].rstrip('.') if resumed else None,
    }


def plot(result: dict, path: pathlib.Path) -> None:
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    arms = ['no_cache', 'cache']
    keys = [
        ('wall_seconds', 'whole resumed process'),
        ('compile_seconds', 'train-step compilation'),
        ('eval_seconds', 'final evaluation'),
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.38
    x = np.arange(len(keys))
    for i, arm in enumerate(arms):
        values = [result['median'][arm][k] for k, _ in keys]
        bars = ax.bar(x + (i - 0.5) * width, values, width, label=arm.replace('_', ' '))
        ax.bar_label(bars, fmt='%.1f', fontsize=8)
    ax.set_xticks(x, [label for _, label in keys])
    ax.set_ylabel('seconds (median over rounds)')
    ax.set_title(f'Resuming {result["config"]} for {result["more"]} steps', fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f'wrote {path}')


def main():
    args = parse_args()
    root = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix='restart_compile_'))
    stopped, run_dir = root / 'stopped', root / 'run'
    for d in (stopped, run_dir):
        shutil.rmtree(d, ignore_errors=True)
    first_seconds = first_run(args, run_dir)  # At the path the resumes use.
    run_dir.rename(stopped)
    print(f'first run: stopped at step {args.first}, kept in {stopped}', flush=True)
    cache_files = sorted(p.name for p in (stopped / 'compilation_cache').iterdir())
    runs = {'no_cache': [], 'cache': []}
    for r in range(args.rounds):
        order = ['no_cache', 'cache'] if r % 2 == 0 else ['cache', 'no_cache']
        for arm in order:
            shutil.rmtree(run_dir, ignore_errors=True)
            shutil.copytree(stopped, run_dir)
            extra = ['--config.compilation_cache_dir='] if arm == 'no_cache' else []
            run = resume(args, run_dir, *extra)
            if run['resumed_from'] is None:
                raise SystemExit(f'{arm} did not resume from {stopped}')
            print(f'  round {r} {arm}: {run}', flush=True)
            runs[arm].append(run)
    median = {
        arm: {
            k: float(np.median([x[k] for x in v]))
            for k in ('wall_seconds', 'compile_seconds', 'eval_seconds')
        }
        for arm, v in runs.items()
    }
    result = {
        'config': args.config,
        'overrides': args.overrides,
        'first': args.first,
        'more': args.more,
        'rounds': args.rounds,
        'first_run_seconds': first_seconds,
        'cache_entries_after_first_run': len(cache_files),
        'runs': runs,
        'median': median,
        'cache_over_no_cache': {
            k: median['cache'][k] / median['no_cache'][k]
            for k in median['cache']
            if median['no_cache'][k]
        },
    }
    stem = 'restart_compile' + (f'_{args.tag}' if args.tag else '')
    result['plot'] = f'benchmarks/results/{stem}.png'
    common.write_result(stem, result)
    plot(result, common.RESULTS / f'{stem}.png')
    print(
        json.dumps(result['median'], indent=1),
        json.dumps(result['cache_over_no_cache'], indent=1),
    )


if __name__ == '__main__':
    main()
