r"""Host time per step to build one process's batch: the whole global batch
(then sliced), or only the process's own rows (`set_part`).

    python benchmarks/process_batches.py [--processes 1,2,4,8] [--steps 40] \
        [--rounds 5] [--image_batch 128] [--batch_tokens 4096]

With n processes, each feeding a per-process batch of the same size (the
usual way to scale out: global batch = n × per-process batch), a process
that builds the whole global batch does n times the host work of one that
builds its own rows. This measures both, on the real data when
`../shared/data` is there:
- CIFAR-10 training images (`ImageBatcher`, random crop and flip), the
  self-distillation configs' per-process batch of 128 images;
- Multi30k en→de (`BucketedBatcher`, the `:budget` config's 13 bucket
  lengths), 4,096 padded target tokens per process. The token ids are the
  sentences' whitespace words (a batcher's cost depends on the sequences'
  lengths only, so no tokenizer is trained here; subwords would make the
  sequences ~1.3x longer).

For each n, `--rounds` rounds alternate the two arms over the same
`--steps` consecutive batches; the figures are the medians over rounds of
milliseconds per batch, and of each arm's time over the one-process build
of the same round. Writes benchmarks/results/process_batches.json and .png
(`--tag T`: process_batches_T.*).
"""

import argparse
import gzip
import pathlib
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxdistill.data import batching  # pylint: disable=g-import-not-at-top
from jaxdistill.data import images  # pylint: disable=g-import-not-at-top

BUDGET_BUCKETS = (10, 12, 14, 16, 18, 20, 22, 24, 28, 32, 40, 48, 64)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--data_dir', default=str(common.REPO.parent / 'shared' / 'data')
    )
    parser.add_argument(
        '--cache_dir',
        default=str(pathlib.Path(tempfile.gettempdir()) / 'jaxdistill_bench_cache'),
    )
    parser.add_argument('--processes', default='1,2,4,8')
    parser.add_argument('--steps', type=int, default=40)
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--image_batch', type=int, default=128)
    parser.add_argument('--batch_tokens', type=int, default=4096)
    parser.add_argument('--tag', default='')
    args = parser.parse_args()
    try:
        args.processes = sorted({int(x) for x in args.processes.split(',')})
    except ValueError:
        parser.error('--processes takes comma-separated integers.')
    if args.processes[0] != 1 or args.steps < 1 or args.rounds < 1:
        parser.error('--processes must include 1; --steps and --rounds >= 1.')
    return args


def cifar_batcher(args):
    """-> make(global_batch) of an ImageBatcher over CIFAR-10 train."""
    x, y = images.load_images(
        'cifar10', pathlib.Path(args.data_dir) / 'cifar10', 'train', args.cache_dir
    )
    return lambda batch: images.ImageBatcher(
        x, y, batch_size=batch, seed=0, augment='crop_flip'
    )


def multi30k_batcher(args):
    """-> make(global_tokens) of a BucketedBatcher over Multi30k en→de train."""
    folder = pathlib.Path(args.data_dir) / 'multi30k'
    sides = []
    for lang in ('en', 'de'):
        with gzip.open(folder / f'train.{lang}.gz', 'rt', encoding='utf-8') as f:
            sides.append([line.split() for line in f])
    vocab = {}
    src, tgt = (
        [
            np.asarray([vocab.setdefault(w, len(vocab) + 3) for w in s] + [2], np.int32)
            for s in side
        ]
        for side in sides
    )
    src, tgt = list(src), list(tgt)
    keep = [
        i
        for i in range(len(src))
        if max(len(src[i]), len(tgt[i])) <= BUDGET_BUCKETS[-1]
    ]
    src, tgt = [src[i] for i in keep], [tgt[i] for i in keep]
    return lambda tokens: batching.BucketedBatcher(
        src,
        tgt,
        batch_tokens=tokens,
        bucket_lengths=BUDGET_BUCKETS,
        seed=0,
        batch_multiple=8,
    )


def time_batches(batcher, steps: int) -> float:
    """Milliseconds per batch for `steps` batches from the start of epoch 0."""
    batcher.set_position({'epoch': 0, 'index': 0})
    start = time.perf_counter()
    for _ in range(steps):
        next(batcher)
    return (time.perf_counter() - start) / steps * 1e3


def measure(make, per_process: int, args) -> list[dict]:
    """For each n: ms per batch building the whole n × per_process batch,
    and building part 0 of n of it; ratios to the one-process build."""
    rows = []
    for n in args.processes:
        whole, own = make(per_process * n), make(per_process * n)
        own.set_part(0, n)
        rounds = {'whole': [], 'own_rows': []}
        base = make(per_process)
        ratios = {'whole': [], 'own_rows': []}
        for _ in range(args.rounds + 1):  # The first round warms up.
            t1 = time_batches(base, args.steps)
            times = {
                'whole': time_batches(whole, args.steps),
                'own_rows': time_batches(own, args.steps),
            }
            for k, t in times.items():
                rounds[k].append(t)
                ratios[k].append(t / t1)
        row = {'processes': n}
        for k in rounds:
            row[f'{k}_ms'] = float(np.median(rounds[k][1:]))
            row[f'{k}_vs_one_process'] = float(np.median(ratios[k][1:]))
        print(
            f'  {n} processes: whole {row["whole_ms"]:.2f} ms ({row["whole_vs_one_process"]:.2f}x), '
            f'own rows {row["own_rows_ms"]:.2f} ms ({row["own_rows_vs_one_process"]:.2f}x)',
            flush=True,
        )
        rows.append(row)
    return rows


def plot(result: dict, path: pathlib.Path) -> None:
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    fig, axes = plt.subplots(
        1, len(result['data']), figsize=(5.5 * len(result['data']), 4)
    )
    for ax, (name, rows) in zip(np.atleast_1d(axes), result['data'].items()):
        n = [r['processes'] for r in rows]
        for k, label in (
            ('whole', 'builds the whole global batch'),
            ('own_rows', 'builds its own rows'),
        ):
            ax.plot(n, [r[f'{k}_vs_one_process'] for r in rows], 'o-', label=label)
        ax.set_xscale('log', base=2)
        ax.set_xticks(n, [str(x) for x in n])
        ax.set_xlabel('processes (same per-process batch)')
        ax.set_ylabel('host time per step / one process')
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle('Host time to build one process’s batch', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f'wrote {path}')


def main():
    args = parse_args()
    data = {}
    if not pathlib.Path(args.data_dir).is_dir():
        raise SystemExit(
            f'{args.data_dir} is absent: this benchmark reads CIFAR-10 and Multi30k.'
        )
    name = f'CIFAR-10, {args.image_batch} images a process, crop and flip'
    print(name, flush=True)
    data[name] = measure(cifar_batcher(args), args.image_batch, args)
    name = f'Multi30k en-de, {args.batch_tokens} tokens a process, 13 buckets'
    print(name, flush=True)
    data[name] = measure(multi30k_batcher(args), args.batch_tokens, args)
    result = {
        'steps': args.steps,
        'rounds': args.rounds,
        'data': data,
        'plot': f'benchmarks/results/process_batches{"_" + args.tag if args.tag else ""}.png',
    }
    stem = 'process_batches' + (f'_{args.tag}' if args.tag else '')
    common.write_result(stem, result)
    plot(result, common.RESULTS / f'{stem}.png')


if __name__ == '__main__':
    main()
