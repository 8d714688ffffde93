r"""Step time of codistillation over a plain data-parallel step, in one process.

    python benchmarks/codistill_overhead.py [--devices 8] [--batch-tokens 1024] \
        [--buckets 16,24,32,48,64] [--repeats 9] [--fused-rows 256] [--tag NAME] \
        [--config.k=v ...]

`benchmarks/codistill.py` reports the overhead as the ratio of two training
subprocesses' median logged step rates, measured at different times. Here both
steps are built in one process on the same (fake, on CPU) devices, exactly as
`jaxdistill.train` builds them, and timed alternately on the same data:
  B: one model, batch 2B, data-parallel over all devices;
  C: codistillation, 2 replicas x devices/2 (with --devices 1: both
     stacked on the one device), batch B each, after burn-in (the
     step with the stale peer's forward and the distillation term), and also
     the exchange step (every `exchange_every`-th step; it adds the refresh).
With `--fused-rows N`, also B and C with the output layer fused into the loss
(`method.output_chunk_rows=N`: no [tokens, vocabulary] logits for the model or
its peers), timed in the same rotation: `step_overhead_fused` is C over B both
fused, `fused_speedup_c` C's materialised step over its fused one.
Every bucket length is timed (medians of `--repeats`, arms alternating), and
the overhead is the ratio of the arms' mean step over the buckets.
The settings match benchmarks/codistill.py (Multi30k en->de, the same
overrides; pass the same `--config.model.*` as the run being compared).
Writes benchmarks/results/codistill_overhead[_TAG].json and .png.
"""

import argparse
import os
import pathlib
import sys

DEVICES = 8
for i, a in enumerate(sys.argv):  # Before jax is imported.
    if a.startswith('--devices'):
        DEVICES = int(a.split('=', 1)[1] if '=' in a else sys.argv[i + 1])
# Fake devices for the CPU platform (ignored by GPU/TPU platforms).
os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '')
    + f' --xla_force_host_platform_device_count={DEVICES}'
)

import tempfile  # pylint: disable=g-import-not-at-top,wrong-import-position
import time  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import codistill  # pylint: disable=g-import-not-at-top,wrong-import-position
import common  # pylint: disable=g-import-not-at-top,wrong-import-position
import train_step_throughput  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxdistill import configuration  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxdistill import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxdistill import trainer as trainer_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

PLAIN = 'configs/translate_multi30k.py'
CODISTILL = 'configs/codistill_synthetic.py'


def build(config_path, overrides, workdir):
    config = configuration.load_config(config_path)
    config = configuration.apply_overrides(config, overrides)
    return trainer_lib.Trainer(config, workdir)


def main():
    rest, extra = configuration.split_overrides(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--devices', type=int, default=DEVICES)
    parser.add_argument('--batch-tokens', type=int, default=1024, help='B, per model')
    parser.add_argument(
        '--buckets',
        default='16,24,32,48,64',
        help='sequence lengths to time (comma-separated; buckets of the config)',
    )
    parser.add_argument('--repeats', type=int, default=9)
    parser.add_argument(
        '--data_dir', '--data', dest='data', default='../shared/data/multi30k'
    )
    parser.add_argument('--tag', default='', help='write codistill_overhead_TAG')
    parser.add_argument(
        '--fused-rows',
        type=int,
        default=0,
        help='also time B and C with the output layer fused, blocks of N rows',
    )
    args = parser.parse_args(rest)
    if not os.path.isdir(args.data):
        raise SystemExit(f'Multi30k folder {args.data} not found; pass --data.')
    if (args.devices > 1 and args.devices % 2) or jax.device_count() != args.devices:
        raise SystemExit(
            f'need --devices 1 (both replicas stacked there) or an even number, '
            f'and that many devices; jax sees {jax.device_count()}.'
        )
    out_name = 'codistill_overhead' + (f'_{args.tag}' if args.tag else '')
    base = codistill.shared_overrides(1000, args.data)
    base += [f'data.batch_tokens={2 * args.batch_tokens}', *extra]
    with tempfile.TemporaryDirectory() as tmp:
        plain = build(PLAIN, base, os.path.join(tmp, 'B'))
        codist = build(
            CODISTILL,
            base + ['method.burn_in_steps=0'],
            os.path.join(tmp, 'C'),
        )
        method = codist.method
        # After burn-in, without and with the refresh of the stale copies
        # (the exchange: a program of its own, run after the step).
        arms = {
            'B': (plain, None, False),
            'C': (codist, 'distil', False),
            'C_exchange': (codist, 'distil', True),
        }
        if args.fused_rows:
            fused = [f'method.output_chunk_rows={args.fused_rows}']
            plain_fused = build(PLAIN, base + fused, os.path.join(tmp, 'Bf'))
            arms['B_fused'] = (plain_fused, None, False)
            codist_fused = build(
                CODISTILL,
                base + ['method.burn_in_steps=0'] + fused,
                os.path.join(tmp, 'Cf'),
            )
            arms['C_fused'] = (codist_fused, 'distil', False)
        lengths = [int(x) for x in args.buckets.split(',')]
        runs = {length: {name: [] for name in arms} for length in lengths}
        rows = {}
        for length in lengths:
            batches = {}
            for name, (tr, phase, refresh) in arms.items():
                batch = train_step_throughput.batch_of_length(
                    tr.task.train_batches, length
                )
                batches[name] = sharding.global_batch(batch, tr.batch_sharding)
                # Compile.
                tr.state, aux = tr.step_fn(tr.state, batches[name], phase, refresh)
                jax.block_until_ready((tr.state, aux))
            rows[length] = int(batches['B']['inputs'].shape[0])
            for _ in range(args.repeats):
                for name, (tr, phase, refresh) in arms.items():
                    t = time.perf_counter()
                    tr.state, aux = tr.step_fn(tr.state, batches[name], phase, refresh)
                    jax.block_until_ready((tr.state, aux))
                    runs[length][name].append(time.perf_counter() - t)
        for tr, _, _ in arms.values():
            tr.close()
    median = {
        length: {name: float(np.median(v)) for name, v in r.items()}
        for length, r in runs.items()
    }
    # Buckets weighted equally: the mean step of each arm over the lengths.
    mean = {name: float(np.mean([m[name] for m in median.values()])) for name in arms}
    exchange_every = method.exchange_every
    mean_c = ((exchange_every - 1) * mean['C'] + mean['C_exchange']) / exchange_every
    result = {
        'devices': args.devices,
        'batch_tokens_per_model': args.batch_tokens,
        'global_batch_rows': rows,
        'config_overrides': extra,
        'repeats': args.repeats,
        'step_seconds_runs': {str(k): v for k, v in runs.items()},
        'step_seconds_median': {str(k): v for k, v in median.items()},
        'step_overhead_per_bucket': {
            str(k): m['C'] / m['B'] for k, m in median.items()
        },
        'exchange_every': exchange_every,
        'step_overhead': mean['C'] / mean['B'],
        'step_overhead_with_exchange': mean_c / mean['B'],
        'exchange_step_overhead': mean['C_exchange'] / mean['B'],
        'replica_groups': codist.mesh.shape['replica'],
        'plot': f'benchmarks/results/{out_name}.png',
    }
    if args.fused_rows:
        result.update(
            fused_rows=args.fused_rows,
            step_overhead_fused=mean['C_fused'] / mean['B_fused'],
            fused_speedup_c=mean['C'] / mean['C_fused'],
            fused_speedup_b=mean['B'] / mean['B_fused'],
            c_fused_over_b=mean['C_fused'] / mean['B'],
        )
        print(
            f'fused ({args.fused_rows} rows): B {mean["B_fused"] * 1e3:.1f} ms, '
            f'C {mean["C_fused"] * 1e3:.1f} ms: overhead '
            f'{result["step_overhead_fused"]:.3f}x; C materialised / fused '
            f'{result["fused_speedup_c"]:.3f}x'
        )
    common.write_result(out_name, result)
    print(
        f'mean over buckets: B {mean["B"] * 1e3:.1f} ms, C {mean["C"] * 1e3:.1f} ms, '
        f'C with exchange {mean["C_exchange"] * 1e3:.1f} ms: overhead '
        f'{result["step_overhead"]:.3f}x ({result["step_overhead_with_exchange"]:.3f}x '
        f'counting one exchange per {exchange_every} steps)'
    )
    _plot(result, common.RESULTS / f'{out_name}.png')


def _plot(result, path):
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    medians = result['step_seconds_median']
    lengths = list(medians)
    x = np.arange(len(lengths))
    names = list(medians[lengths[0]])
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        ax.bar(
            x + (i - (len(names) - 1) / 2) * width,
            [medians[k][name] * 1e3 for k in lengths],
            width,
            label=name,
        )
    ax.set_xticks(x, lengths)
    ax.set_xlabel('bucket length')
    ax.set_ylabel('ms / step (median)')
    ax.set_ylim(0, 1.3 * max(m[n] for m in medians.values() for n in m) * 1e3)
    ax.legend(loc='upper center', ncols=min(len(names), 3), fontsize='small')
    ax.set_title(
        f'Codistillation step vs plain, {result["devices"]} devices '
        f'(overhead {result["step_overhead"]:.2f}x)'
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f'wrote {path}')


if __name__ == '__main__':
    from jaxdistill import hostmem  # pylint: disable=g-import-not-at-top

    hostmem.reexec_with_huge_pages()
    main()
