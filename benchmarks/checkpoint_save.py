r"""Seconds to save a training checkpoint: whole arrays, or Orbax's
replica-parallel slices.

    python benchmarks/checkpoint_save.py [--devices 8] [--rounds 3] [--saves 6] \
        [--config configs/translate_synthetic.py:size=tiny] [--tag T] \
        [--config.KEY=VALUE ...]

Orbax's default off GPUs is replica-parallel saving: every device holding a
copy of an array writes a slice of it, each slice a small jitted program,
compiled once per shape and run for every leaf of every save. On the CPU
the library turns it off (`checkpoint._save_whole_arrays_on_cpu`). This
measures both ways on the state of a real run (the config's parameters and
AdamW moments, replicated over `--devices` devices: fake CPU devices unless
the machine has accelerators), each way in a fresh process (the first save
pays the compilations): the first save, and the median of the next
`--saves` (each waited for, so the background write counts). `--rounds`
rounds alternate the two ways; the figures are medians over rounds. On a
GPU both ways are forced as named, so the script tells whether the CPU's
choice would suit it too. Writes benchmarks/results/checkpoint_save.json
and .png (`--tag T`: checkpoint_save_T.*).
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

WAYS = ('whole arrays', 'replica-parallel')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='configs/translate_synthetic.py:size=tiny')
    parser.add_argument('--devices', type=int, default=8)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--saves', type=int, default=6)
    parser.add_argument('--tag', default='')
    parser.add_argument('--child', choices=WAYS, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    bad = [a for a in rest if not a.startswith('--config.')]
    if bad:
        parser.error(f'unrecognized arguments: {" ".join(bad)}')
    args.overrides = rest  # --config.KEY=VALUE, for the config.
    return args


def child(args):
    """One way, in this process: prints {'first': s, 'later': [s, ...]}."""
    import jax  # pylint: disable=g-import-not-at-top
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

    from jaxdistill import checkpoint  # pylint: disable=g-import-not-at-top
    from jaxdistill import configuration  # pylint: disable=g-import-not-at-top
    from jaxdistill import trainer  # pylint: disable=g-import-not-at-top

    handler = ocp.type_handlers.get_type_handler(jax.Array)
    handler._use_replica_parallel = args.child == 'replica-parallel'  # pylint: disable=protected-access
    checkpoint._save_whole_arrays_on_cpu = lambda: None  # Keep the way chosen.
    config = configuration.apply_overrides(
        configuration.load_config(args.config),
        [o[len('--config.') :] for o in args.overrides]
        + ['compilation_cache_dir=', 'eval.at_end=False'],
    )
    work = tempfile.mkdtemp(prefix='checkpoint_save_')
    state = trainer.Trainer(config, work).state
    jax.block_until_ready(state)
    ckpt = checkpoint.Checkpointer(os.path.join(work, 'c'), every=1, keep=2)
    times = []
    for step in range(1, args.saves + 2):
        start = time.perf_counter()
        ckpt.save(step, state, {'step': step})
        ckpt.wait()
        times.append(time.perf_counter() - start)
    ckpt.close()
    leaves = jax.tree.leaves(state)
    print(
        json.dumps(
            {
                'first': times[0],
                'later': times[1:],
                'leaves': len(leaves),
                'mbytes': sum(x.nbytes for x in leaves) / 2**20,
                'devices': jax.device_count(),
            }
        )
    )


def run_child(args, way: str) -> dict:
    env = dict(os.environ)
    if args.devices:
        env['XLA_FLAGS'] = (
            env.get('XLA_FLAGS', '')
            + f' --xla_force_host_platform_device_count={args.devices}'
        )
    cmd = [sys.executable, __file__, '--child', way, '--config', args.config]
    cmd += ['--saves', str(args.saves), *args.overrides]
    out = subprocess.run(
        cmd, env=env, cwd=common.REPO, capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise SystemExit(f'{way} failed:\n{out.stderr[-3000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def plot(result, path):
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(2)
    for i, way in enumerate(WAYS):
        s = result['seconds'][way]
        ax.bar(x + 0.38 * i, [s['first'], s['later']], 0.38, label=way)
    ax.set_xticks(x + 0.19, ['first save', 'later saves (median)'])
    ax.set_ylabel('seconds')
    ax.set_title(
        f'{result["leaves"]} arrays, {result["mbytes"]:.0f} MiB, '
        f'{result["devices"]} devices',
        fontsize=9,
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    args = parse_args()
    if args.child:
        child(args)
        return
    rounds = {way: [] for way in WAYS}
    for r in range(args.rounds):
        for way in WAYS if r % 2 == 0 else WAYS[::-1]:
            got = run_child(args, way)
            rounds[way].append(got)
            print(
                f'round {r}: {way}: first {got["first"]:.2f} s, later '
                f'{np.median(got["later"]):.3f} s',
                flush=True,
            )
    seconds = {
        way: {
            'first': float(np.median([g['first'] for g in runs])),
            'later': float(np.median([np.median(g['later']) for g in runs])),
        }
        for way, runs in rounds.items()
    }
    whole, sliced = seconds[WAYS[0]], seconds[WAYS[1]]
    stem = 'checkpoint_save' + (f'_{args.tag}' if args.tag else '')
    any_run = rounds[WAYS[0]][0]
    result = {
        'config': args.config,
        'overrides': args.overrides,
        'rounds': args.rounds,
        'saves': args.saves,
        'leaves': any_run['leaves'],
        'mbytes': any_run['mbytes'],
        'devices': any_run['devices'],
        'seconds': seconds,
        'first_whole_over_sliced': whole['first'] / sliced['first'],
        'later_whole_over_sliced': whole['later'] / sliced['later'],
        'per_round': rounds,
        'plot': f'benchmarks/results/{stem}.png',
    }
    common.write_result(stem, result)
    plot(result, common.RESULTS / f'{stem}.png')


if __name__ == '__main__':
    main()
