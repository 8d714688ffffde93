"""Every dot of a compiled train step, timed alone: what the dots allow.

    python benchmarks/step_dots.py [--config configs/translate_multi30k.py:budget]
        [--length 20] [--repeats 15]

Compiles the train step of `--config` on the first batch of bucket
`--length` (as `benchmarks/nmt_multi30k.py`'s probe does), reads every
float32 `dot` out of the optimized HLO (operand shapes, contracting and batch
dimensions; dots inside a `while` body, the fused output layer's blocks,
count once per trip), times each distinct dot alone on row-major operands
(best of `--repeats`), and sums them. Against the whole step's time (median of
`--repeats`, same process) this splits the step into its dots at standalone
speed and everything else, and gives the fraction of the float32 matmul peak
that the dots alone would reach.

Writes benchmarks/results/step_dots.json and .png.
"""

import argparse
import collections
import pathlib
import re
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402
import train_step_throughput as tst  # noqa: E402

from jaxdistill import hostmem  # noqa: E402


def parse_dots(hlo: str) -> collections.Counter:
    """(lhs shape, rhs shape, lhs/rhs contracting, lhs/rhs batch) -> count."""
    shapes = {
        m.group(1): tuple(int(x) for x in m.group(2).split(',') if x)
        for m in re.finditer(r'%([\w.\-]+) = \w+\[([\d,]*)\]', hlo)
    }
    trips = {
        m.group(1): int(m.group(2))
        for m in re.finditer(
            r'body=%([\w.\-]+).*?"known_trip_count":\{"n":"(\d+)"', hlo
        )
    }
    dots = collections.Counter()
    pattern = (
        r'%[\w.\-]+ = f32\[[\d,]*\]\S* dot\(%([\w.\-]+), %([\w.\-]+)\), (.*?)'
        r'metadata=\{op_name="([^"]*)"'
    )

    def dims(attrs, key):
        m = re.search(key + r'=\{([\d,]*)\}', attrs)
        return tuple(int(x) for x in m.group(1).split(',') if x) if m else ()

    for m in re.finditer(pattern, hlo):
        lhs, rhs, attrs, op_name = m.groups()
        key = (
            shapes[lhs],
            shapes[rhs],
            dims(attrs, 'lhs_contracting_dims'),
            dims(attrs, 'rhs_contracting_dims'),
            dims(attrs, 'lhs_batch_dims'),
            dims(attrs, 'rhs_batch_dims'),
        )
        # The fused output layer's scan is the only f32 while loop with dots.
        count = max(trips.values(), default=1) if '/while/body/' in op_name else 1
        dots[key] += count
    return dots


def time_dot(key, repeats: int) -> tuple[float, float]:
    """(best seconds, FLOPs) of one dot alone."""
    import jax  # pylint: disable=g-import-not-at-top

    lhs, rhs, lc, rc, lb, rb = key
    a = jax.random.normal(jax.random.key(0), lhs)
    b = jax.random.normal(jax.random.key(1), rhs)
    f = jax.jit(lambda a, b: jax.lax.dot_general(a, b, ((lc, rc), (lb, rb))))
    out = f(a, b)
    out.block_until_ready()
    flops = 2.0 * out.size
    for i in lc:
        flops *= lhs[i]
    best = float('inf')
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return best, flops


def main():
    hostmem.reexec_with_huge_pages()
    import jax  # pylint: disable=g-import-not-at-top

    from jaxdistill import sharding  # pylint: disable=g-import-not-at-top
    from jaxdistill import trainer as trainer_lib  # pylint: disable=g-import-not-at-top

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='configs/translate_multi30k.py:budget')
    parser.add_argument(
        '--data_dir', default=str(common.REPO.parent / 'shared/data/multi30k')
    )
    parser.add_argument('--length', type=int, default=20, help='bucket length')
    parser.add_argument('--repeats', type=int, default=15)
    common.add_tag(parser)
    args = parser.parse_args()
    if not pathlib.Path(args.data_dir).is_dir():
        raise SystemExit(f'Multi30k folder {args.data_dir} not found; pass --data_dir.')

    config = tst.load_config(args.config, args.data_dir)
    peak = tst.matmul_peak()
    with tempfile.TemporaryDirectory() as workdir:
        tr = trainer_lib.Trainer(config, workdir)
        batch = tst.batch_of_length(tr.task.train_batches, args.length)
        step_s = tst.time_step(tr, batch, args.repeats)
        arrays = sharding.global_batch(batch, tr.batch_sharding)
        with jax.set_mesh(tr.step_fn.mesh):
            hlo = tr.step_fn.build(None).lower(tr.state, arrays).compile().as_text()
        tr.close()
    rows = []
    for key, count in parse_dots(hlo).items():
        seconds, flops = time_dot(key, args.repeats)
        rows.append(
            {
                'lhs': list(key[0]),
                'rhs': list(key[1]),
                'contracting': [list(key[2]), list(key[3])],
                'batch': [list(key[4]), list(key[5])],
                'count': count,
                'seconds_each': seconds,
                'gflop_per_s': flops / seconds / 1e9,
                'seconds_total': seconds * count,
                'gflop_total': flops * count / 1e9,
            }
        )
    rows.sort(key=lambda r: -r['seconds_total'])
    dots_s = sum(r['seconds_total'] for r in rows)
    gflop = sum(r['gflop_total'] for r in rows)
    peak = max(peak, tst.matmul_peak())
    plot = common.RESULTS / f'{common.stem("step_dots", args)}.png'
    _plot(rows, step_s, dots_s, plot)
    common.write_result(
        common.stem('step_dots', args),
        {
            'config': args.config,
            'bucket_length': args.length,
            'batch_shape': list(batch['inputs'].shape),
            'matmul_peak_flops_per_s': peak,
            'step_seconds': step_s,
            'dots_alone_seconds': dots_s,
            'other_seconds': step_s - dots_s,
            'dot_gflop': gflop,
            'dots_alone_fraction_of_peak': gflop * 1e9 / dots_s / peak,
            'step_fraction_of_peak': gflop * 1e9 / step_s / peak,
            'dots': rows,
            'plot': str(plot.relative_to(common.REPO)),
        },
    )
    print(
        f'step {step_s * 1e3:.0f} ms; its {sum(r["count"] for r in rows)} dots alone '
        f'{dots_s * 1e3:.0f} ms for {gflop:.1f} GFLOP '
        f'({gflop * 1e9 / dots_s / peak:.2f} of the {peak / 1e9:.0f} GFLOP/s peak; '
        f'the step: {gflop * 1e9 / step_s / peak:.2f})'
    )


def _plot(rows, step_s, dots_s, path):
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    top = rows[:10]
    labels = [f'{r["lhs"]}·{r["rhs"]} ×{r["count"]}' for r in top]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), width_ratios=[1, 3])
    ax1.bar(['step', 'dots alone'], [step_s * 1e3, dots_s * 1e3], color=['C0', 'C1'])
    ax1.set_ylabel('ms')
    ax1.set_title('one train step')
    ax2.barh(range(len(top))[::-1], [r['seconds_total'] * 1e3 for r in top])
    ax2.set_yticks(range(len(top))[::-1], labels, fontsize=7)
    for i, r in enumerate(top):
        ax2.text(
            r['seconds_total'] * 1e3,
            len(top) - 1 - i,
            f' {r["gflop_per_s"]:.0f} GFLOP/s',
            va='center',
            fontsize=7,
        )
    ax2.set_xlabel('ms in the step (timed alone)')
    ax2.set_title('the costliest dots')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == '__main__':
    main()
