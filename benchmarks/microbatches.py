r"""Gradient accumulation: the train step's memory and time with k micro-batches.

    python benchmarks/microbatches.py [--config configs/translate_multi30k.py:budget] \
        [--microbatches 1,2,4,8] [--lengths 16,24] [--repeats 8] [--config.k=v ...]
    # GPU: a bigger model and batch, e.g.
    python benchmarks/microbatches.py --config configs/translate_multi30k.py:size=base \
        --config.data.batch_tokens=32768 --lengths 24,32

For each k of `--microbatches`, builds the run as `python -m jaxdistill.train`
does with `--config.microbatches=k` (data, model, method, sharded step), and
on the same batch of each bucket length (taken from the largest k's batcher,
so that every k can split it):
- compiles the step and reads XLA's memory analysis of it: the temporary
  bytes the step allocates besides its arguments and outputs (activations,
  their gradients, the logits), which accumulation is meant to cut;
- times the steps, the arms alternating on the same batch, `--repeats`
  rounds after two untimed ones: medians, and the median over rounds of each
  arm's time over the one-pass step's in the same round (the ratio quoted).

The arms' updates are the same (up to float rounding, and the dropout masks,
which are drawn per micro-batch): `tests/test_train_step.py` checks that
without dropout. Writes benchmarks/results/microbatches.json and .png
(`--tag T`: microbatches_T.*).
"""

import argparse
import pathlib
import sys

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position
import train_step_throughput as tst  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxdistill import configuration  # pylint: disable=g-import-not-at-top


def parse_args():
    rest, overrides = configuration.split_overrides(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='configs/translate_multi30k.py:budget')
    parser.add_argument(
        '--data_dir', default=str(common.REPO.parent / 'shared' / 'data' / 'multi30k')
    )
    parser.add_argument('--microbatches', default='1,2,4,8')
    parser.add_argument('--lengths', default='16,24', help='bucket lengths')
    parser.add_argument('--repeats', type=int, default=8)
    parser.add_argument('--tag', default='')
    args = parser.parse_args(rest)
    try:
        args.microbatches = sorted({int(x) for x in args.microbatches.split(',')})
        args.lengths = [int(x) for x in args.lengths.split(',') if x]
    except ValueError:
        parser.error('--microbatches and --lengths take comma-separated integers.')
    if args.microbatches[0] != 1 or args.repeats < 1:
        parser.error('--microbatches must include 1 (the baseline); --repeats >= 1.')
    args.overrides = overrides
    return args


def compiled_memory(tr, arrays) -> dict:
    """XLA's memory analysis of `tr`'s compiled step on `arrays` (bytes)."""
    with jax.set_mesh(tr.mesh):
        compiled = tr.step_fn.build(None).lower(tr.state, arrays).compile()
    stats = compiled.memory_analysis()
    return {
        key: int(getattr(stats, f'{key}_size_in_bytes'))
        for key in ('temp', 'argument', 'output', 'alias')
    }


def measure(args) -> list[dict]:
    configs = {}
    for k in reversed(args.microbatches):  # Largest first: its batches split.
        config = configuration.apply_overrides(
            tst.load_config(args.config, args.data_dir), args.overrides
        )
        config.microbatches = k
        configs[str(k)] = config
    rows = tst.alternate_steps(
        configs, args.lengths, args.repeats, inspect=compiled_memory
    )
    for row in rows:
        memory, times = row.pop('inspected'), row['step_seconds_runs']
        ks = [str(k) for k in args.microbatches]
        row['memory_bytes'] = {k: memory[k] for k in ks}
        row['temp_ratio_vs_1'] = {
            k: memory[k]['temp'] / memory['1']['temp'] for k in ks
        }
        # Per round (the arms ran back to back), then the median: the host's
        # drift between rounds cancels.
        row['time_ratio_vs_1'] = {
            k: float(np.median(np.array(times[k]) / times['1'])) for k in ks
        }
        print(
            f'bucket {row["bucket_length"]} ({row["batch_rows"]} rows): '
            + ', '.join(
                f'k={k} temp {memory[k]["temp"] / 2**20:,.0f} MiB '
                f'{row["step_seconds_median"][k] * 1e3:,.0f} ms'
                for k in ks
            )
        )
    return rows


def plot(rows, microbatches, path):
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for r in rows:
        label = f'bucket {r["bucket_length"]} ({r["batch_rows"]} rows)'
        mib = [r['memory_bytes'][str(k)]['temp'] / 2**20 for k in microbatches]
        ax1.plot(microbatches, mib, 'o-', label=label)
        ratio = [r['time_ratio_vs_1'][str(k)] for k in microbatches]
        ax2.plot(microbatches, ratio, 'o-', label=label)
    for ax in (ax1, ax2):
        ax.set_xscale('log', base=2)
        ax.set_xticks(microbatches, [str(k) for k in microbatches])
        ax.set_xlabel('micro-batches per step')
        ax.legend(fontsize=8)
    ax1.set_ylabel("step's temporary memory (MiB, XLA)")
    ax1.set_ylim(bottom=0)
    ax2.set_ylabel('step time / one pass')
    ax2.axhline(1.0, color='grey', lw=0.8)
    fig.suptitle('gradient accumulation: memory and time of one update')
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    args = parse_args()
    rows = measure(args)
    name = 'microbatches' + (f'_{args.tag}' if args.tag else '')
    plot(rows, args.microbatches, common.RESULTS / f'{name}.png')
    k_max = str(max(args.microbatches))
    common.write_result(
        name,
        {
            'config': args.config,
            'overrides': args.overrides,
            'devices': jax.device_count(),
            'microbatches': args.microbatches,
            'repeats': args.repeats,
            'rows': rows,
            f'mean_temp_ratio_{k_max}_vs_1': float(
                np.mean([r['temp_ratio_vs_1'][k_max] for r in rows])
            ),
            f'mean_time_ratio_{k_max}_vs_1': float(
                np.mean([r['time_ratio_vs_1'][k_max] for r in rows])
            ),
            'plot': f'benchmarks/results/{name}.png',
        },
    )


if __name__ == '__main__':
    from jaxdistill import hostmem  # pylint: disable=g-import-not-at-top

    hostmem.reexec_with_huge_pages()
    main()
