r"""Throughput of the train step, per bucket shape, against the matmul peak.

    python benchmarks/train_step_throughput.py [--config configs/translate_synthetic.py] \
        [--config.k=v ...] [--repeats 20]

Builds the run the config describes (data, tokenizer, model, method, sharded
step) exactly as `jaxdistill.train` does, then times the compiled step on one
full batch of every bucket length (after a warm-up call, so compile time is
excluded). The machine's float32 matmul peak is measured in the same run with
a large `jnp.dot`; model FLOPs are counted analytically
(`models.transformer.flops_per_token`). Writes
benchmarks/results/train_step_throughput.json and .png. On a GPU, pass a
bigger config (e.g. `:size=base` and `--config.data.batch_tokens=16384`).
"""

import argparse
import contextlib
import pathlib
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxdistill import configuration  # pylint: disable=g-import-not-at-top
from jaxdistill import sharding  # pylint: disable=g-import-not-at-top
from jaxdistill import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
from jaxdistill.models import transformer  # pylint: disable=g-import-not-at-top


def matmul_peak(n: int | None = None, repeats: int = 10, dtype='float32') -> float:
    """FLOP/s of a large `jnp.dot` of `dtype` (the model's compute dtype, at
    the default precision, as the model's own) on the default device; n=2048
    on a CPU, 8192 on accelerators."""
    if n is None:
        n = 2048 if jax.default_backend() == 'cpu' else 8192
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.dtype(dtype))
    dot = jax.jit(jnp.dot)
    dot(a, a).block_until_ready()
    best = float('inf')
    for _ in range(repeats):
        t = time.perf_counter()
        dot(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def batch_of_length(batcher, length: int) -> dict:
    """The first batch of epoch 0 whose sequences are `length` long."""
    for i in range(batcher.batches_per_epoch()):
        batch = batcher.batch_at(0, i)
        if batch['inputs'].shape[1] == length:
            return batch
    raise SystemExit(f'no batch of length {length}; buckets: {batcher.batch_shapes()}')


def time_step(tr, batch, repeats: int) -> float:
    """Median seconds of one train step on `batch` (state is donated)."""
    arrays = sharding.global_batch(batch, tr.batch_sharding)
    tr.state, aux = tr.step_fn(tr.state, arrays)  # Compile + warm up.
    jax.block_until_ready(aux)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        tr.state, aux = tr.step_fn(tr.state, arrays)
        jax.block_until_ready(aux)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def load_config(spec: str, data_dir: str):
    """The config at `spec`, reading local files (if it does) from `data_dir`."""
    config = configuration.load_config(spec)
    if 'files_dir' in config.data:
        config.data.files_dir = data_dir
    # The Trainers live in temporary workdirs: a compilation cache there
    # ('auto') is written after the folder is gone, with warnings.
    config.compilation_cache_dir = ''
    return config


def alternate_steps(
    configs: dict, lengths, repeats: int, contexts=None, inspect=None
) -> list:
    """Times one Trainer per config, stepping alternately on the same batches.

    `configs` maps an arm's name to its config; the Trainers live in a
    temporary workdir for the call, and the batches come from the first
    one's batcher. `contexts` optionally maps a name to a
    zero-argument context-manager factory entered around that arm's steps (jit
    traces at the first call, so it fixes what that arm compiles).
    `inspect(trainer, arrays) -> dict`, if given, runs for every arm on each
    bucket's batch before the timing; its results go in the row under
    'inspected'. Two untimed rounds compile and settle the allocator.
    Returns one row per bucket length: the batch's shapes, per-arm step
    seconds and medians.
    """
    contexts = contexts or {}
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        trainers = {
            name: trainer_lib.Trainer(config, f'{workdir}/{name}')
            for name, config in configs.items()
        }
        first = next(iter(trainers.values()))
        for length in lengths:
            batch = batch_of_length(first.task.train_batches, length)
            inspected = {
                name: inspect(tr, sharding.global_batch(batch, tr.batch_sharding))
                for name, tr in trainers.items()
                if inspect
            }
            times = {name: [] for name in trainers}
            for repeat in range(repeats + 2):
                for name, tr in trainers.items():
                    arrays = sharding.global_batch(batch, tr.batch_sharding)
                    with contexts.get(name, contextlib.nullcontext)():
                        t = time.perf_counter()
                        tr.state, aux = tr.step_fn(tr.state, arrays)
                        jax.block_until_ready(aux)
                        elapsed = time.perf_counter() - t
                    if repeat >= 2:
                        times[name].append(elapsed)
            rows.append(
                {
                    'bucket_length': length,
                    'batch_rows': int(batch['inputs'].shape[0]),
                    'inputs_shape': list(batch['inputs'].shape),
                    'targets_shape': list(batch['targets'].shape),
                    'step_seconds_runs': times,
                    'step_seconds_median': {
                        n: float(np.median(v)) for n, v in times.items()
                    },
                    **({'inspected': inspected} if inspect else {}),
                }
            )
        for tr in trainers.values():
            tr.close()
    return rows


def plot_bucket_bars(ax, rows, title: str) -> None:
    """Bars of each arm's median step time per bucket (`alternate_steps` rows)."""
    arms = list(rows[0]['step_seconds_median'])
    x = np.arange(len(rows))
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        ax.bar(
            x + (i - (len(arms) - 1) / 2) * width,
            [r['step_seconds_median'][arm] for r in rows],
            width=width,
            label=arm.replace('_', ' '),
        )
    ax.set_xticks(x, [str(r['bucket_length']) for r in rows])
    ax.set_xlabel('bucket length (tokens)')
    ax.set_ylabel('s per train step (median)')
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc='lower right')


def main():
    argv = sys.argv[1:]
    rest, overrides = configuration.split_overrides(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='configs/translate_synthetic.py')
    parser.add_argument('--repeats', type=int, default=20)
    common.add_tag(parser)
    args = parser.parse_args(rest)
    config = configuration.apply_overrides(
        configuration.load_config(args.config), overrides
    )
    # The peak of the model's compute dtype (bfloat16 on a GPU runs at
    # another peak than float32).
    dtype = str(config.model.get('dtype', 'float32'))
    peak = matmul_peak(dtype=dtype)
    with tempfile.TemporaryDirectory() as workdir:
        tr = trainer_lib.Trainer(config, workdir)
        batcher = tr.task.train_batches
        model_cfg = tr.task.model.config
        rows = []
        for length, (b, l) in sorted(batcher.batch_shapes().items()):
            batch = batch_of_length(batcher, l)
            seconds = time_step(tr, batch, args.repeats)
            real = int((batch['targets'] != 0).sum())
            flops = transformer.flops_per_token(model_cfg, l, l)['total'] * b * l
            rows.append(
                {
                    'bucket_length': l,
                    'batch_rows': b,
                    'step_seconds': seconds,
                    'padded_tokens_per_s': b * l / seconds,
                    'target_tokens_per_s': real / seconds,
                    'model_flops_per_s': flops / seconds,
                    'fraction_of_peak': flops / seconds / peak,
                }
            )
        tr.close()
    # Measured again after the steps, the higher kept: a peak measured while
    # the machine was busier than during the steps gave fractions above 1.
    peak_after = matmul_peak(dtype=dtype)
    if peak_after > peak:
        for r in rows:
            r['fraction_of_peak'] *= peak / peak_after
        peak = peak_after
    _plot(rows, common.RESULTS / f'{common.stem("train_step_throughput", args)}.png')
    mean_frac = float(np.mean([r['fraction_of_peak'] for r in rows]))
    common.write_result(
        common.stem('train_step_throughput', args),
        {
            'config': args.config,
            'overrides': overrides,
            'model': config.model.to_dict(),
            'batch_tokens': config.data.batch_tokens,
            'devices': jax.device_count(),
            'matmul_peak_flops_per_s': peak,
            'matmul_peak_dtype': dtype,
            'buckets': rows,
            'mean_fraction_of_peak': mean_frac,
            'mean_padded_tokens_per_s': float(
                np.mean([r['padded_tokens_per_s'] for r in rows])
            ),
            'plot': f'benchmarks/results/{common.stem("train_step_throughput", args)}.png',
        },
    )
    for r in rows:
        print(
            f'L={r["bucket_length"]:3d} B={r["batch_rows"]:4d} '
            f'{r["step_seconds"] * 1e3:7.1f} ms/step '
            f'{r["padded_tokens_per_s"]:9,.0f} tok/s '
            f'{100 * r["fraction_of_peak"]:5.1f}% of peak'
        )
    print(f'matmul peak {peak / 1e9:.1f} GFLOP/s; mean fraction {mean_frac:.3f}')


def _plot(rows, path):
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    lengths = [r['bucket_length'] for r in rows]
    ax1.bar(
        [str(l) for l in lengths],
        [r['padded_tokens_per_s'] for r in rows],
        color='tab:blue',
    )
    ax1.set_xlabel('bucket length (tokens)')
    ax1.set_ylabel('padded tokens / s', color='tab:blue')
    ax2 = ax1.twinx()
    ax2.plot(
        [str(l) for l in lengths],
        [100 * r['fraction_of_peak'] for r in rows],
        'o-',
        color='tab:red',
    )
    ax2.set_ylabel('% of matmul peak', color='tab:red')
    ax2.set_ylim(bottom=0)
    ax1.set_title('train step throughput per bucket shape')
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    from jaxdistill import hostmem  # pylint: disable=g-import-not-at-top

    hostmem.reexec_with_huge_pages()
    main()
