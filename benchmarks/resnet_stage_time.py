"""Where a CIFAR ResNet's inference time goes, stage by stage, on this machine.

    python benchmarks/resnet_stage_time.py                # the CPU benchmark size
    python benchmarks/resnet_stage_time.py --size gpu     # ResNet-18 width 64
    python benchmarks/resnet_stage_time.py --quick        # smoke run (writes *_quick.json, ignored by git)

The early-exit target of the self-distillation benchmark asks for an exit that
costs at most half of the plain network's measured time. An exit after stage s
costs at least the backbone up to stage s. This measures that floor: the
backbone truncated after each stage (stem, stages 0..s, pooling, a classifier;
no exit heads), timed round-robin with the whole plain network over the same
batches, best of --repeats; beside it XLA's FLOP count of each (compiled for
the CPU backend) and the measured time and FLOPs of each multi-exit prefix
(stages and BYOT heads up to exit k, as the self-distillation benchmark times
them), for each exit head (`model.exit_head`: 'blocks', 'branch', 'pool').
Parameters are a fresh init and the images random: neither changes the work.
Writes benchmarks/results/resnet_stage_time_SIZE.json and .png.
"""

import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position
import self_distill_cifar10  # pylint: disable=g-import-not-at-top,wrong-import-position

BASE = {'model.stage_sizes': (2, 2, 2, 2), 'model.width': 16}  # The config's.
HEADS = ('blocks', 'branch', 'pool')  # `model.exit_head` values, all timed.


def _prefix_key(kind: str, head: str) -> str:
    """Result key of a head's prefix fractions; 'blocks' (the default head)
    keeps the unsuffixed names of earlier results."""
    return f'exit_prefix_{kind}_fraction' + ('' if head == 'blocks' else f'_{head}')


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', choices=sorted(self_distill_cifar10.SIZES), default='cpu')
    p.add_argument('--quick', action='store_true', help='tiny network and batch')
    p.add_argument(
        '--batch', type=int, default=500, help='images per call (eval batch)'
    )
    p.add_argument('--batches', type=int, default=4, help='calls per timing')
    p.add_argument('--repeats', type=int, default=5, help='timings; the best is kept')
    args = p.parse_args()
    for key in ('batch', 'batches', 'repeats'):
        if getattr(args, key) < 1:
            p.error(f'--{key} must be >= 1, got {getattr(args, key)}.')
    return args


def main():
    import jax  # pylint: disable=g-import-not-at-top

    from jaxdistill.evaluation import early_exit  # pylint: disable=g-import-not-at-top
    from jaxdistill.models import resnet  # pylint: disable=g-import-not-at-top

    args = _parse()
    if args.quick:
        size = {'model.stage_sizes': (1, 1, 1), 'model.width': 8}
        args.size, args.batch, args.batches, args.repeats = 'quick', 8, 1, 1
    else:
        size = {**BASE, **self_distill_cifar10.SIZES[args.size]}
    stages = tuple(size['model.stage_sizes'])
    width = size['model.width']
    exits = tuple(range(len(stages) - 1))
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (args.batch, 32, 32, 3), dtype=np.uint8)
        for _ in range(args.batches)
    ]
    cpu = jax.devices('cpu')[0]

    def model(n, exit_head=None):
        return resnet.ResNet(
            num_classes=10,
            stage_sizes=stages[:n],
            width=width,
            exits=exits if exit_head else (),
            exit_head=exit_head or 'blocks',
        )

    def compiled_flops(fn, *args):
        return common.xla_flops(fn.lower(*jax.device_put(args, cpu)).compile())

    backbones, params, flops = [], [], []
    for n in range(1, len(stages) + 1):
        m = model(n)
        p = m.init(jax.random.key(0), images[0][:2], train=False)
        fn = jax.jit(lambda p, x, m=m: m.apply(p, x, train=False)['logits'][-1])
        backbones.append(fn)
        params.append(p)
        flops.append(compiled_flops(fn, p, images[0]))
    # One round-robin over every function: the backbones take their own
    # parameters, the prefixes their multi-exit model's (`interleaved_seconds`
    # passes one parameter tree, so each function closes over its own).
    fns = [lambda _, x, f=f, p=p: f(p, x) for f, p in zip(backbones, params)]
    prefix_flops = {}
    for head in HEADS:
        multi = model(len(stages), head)
        multi_params = multi.init(jax.random.key(0), images[0][:2], train=False)
        prefixes = [
            # Every head up to k is an output (unused heads would be compiled away).
            jax.jit(
                lambda p, x, k=k, m=multi: m.apply(p, x, train=False, upto=k)['logits']
            )
            for k in range(len(stages))
        ]
        fns += [lambda _, x, f=f, p=multi_params: f(p, x) for f in prefixes]
        prefix_flops[head] = [
            compiled_flops(f, multi_params, images[0]) / flops[-1] for f in prefixes
        ]
    batches = [jax.device_put(x) for x in images]
    seconds = early_exit.interleaved_seconds(fns, None, batches, args.repeats)
    n = len(stages)
    plain = seconds[n - 1]
    prefix_time = {
        head: [s / plain for s in seconds[n * (1 + i) : n * (2 + i)]]
        for i, head in enumerate(HEADS)
    }
    result = {
        'size': args.size,
        'stage_sizes': list(stages),
        'width': width,
        'batch': args.batch,
        'batches': args.batches,
        'repeats': args.repeats,
        'seconds_plain': plain,
        'backbone_time_fraction': [s / plain for s in seconds[: len(stages)]],
        'backbone_flops_fraction': [f / flops[-1] for f in flops],
        **{
            _prefix_key(kind, head): values[head]
            for head in HEADS
            for kind, values in (('time', prefix_time), ('flops', prefix_flops))
        },
        'images_per_s_plain': args.batch * args.batches / plain,
    }
    name = f'resnet_stage_time_{args.size}'
    common.write_result(name, result)
    _plot(result, name)
    for key in ('backbone_time_fraction', 'backbone_flops_fraction'):
        print(f'{key}: {[round(x, 3) for x in result[key]]}')
    for head in HEADS:
        for kind in ('time', 'flops'):
            values = [round(x, 3) for x in result[_prefix_key(kind, head)]]
            print(f'exit prefix {kind}, {head} heads: {values}')


def _plot(result, name):
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    n = len(result['stage_sizes'])
    x = np.arange(n)
    fig, ax = plt.subplots(figsize=(8, 4))
    bars = [
        ('backbone_flops_fraction', 'backbone, FLOPs'),
        ('backbone_time_fraction', 'backbone, measured time'),
    ] + [
        (_prefix_key('time', head), f"multi-exit prefix, '{head}' heads, time")
        for head in HEADS
    ]
    bars = [b for b in bars if b[0] in result]  # Older results have fewer.
    for i, (key, label) in enumerate(bars):
        width = 0.8 / len(bars)
        ax.bar(x + width * (i - (len(bars) - 1) / 2), result[key], width, label=label)
    ax.axhline(0.5, color='k', ls='--', lw=0.8, label='half the plain network')
    ax.set_xticks(x, [f'up to stage {s}' for s in range(n)])
    ax.set_ylabel('fraction of the plain network')
    ax.set_title(
        f'ResNet {result["stage_sizes"]} width {result["width"]}, batch '
        f'{result["batch"]}, {common.machine()["backend"]}'
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = common.RESULTS / f'{name}.png'
    fig.savefig(path, dpi=120)
    print(f'wrote {path}')


if __name__ == '__main__':
    from jaxdistill import hostmem  # pylint: disable=g-import-not-at-top

    hostmem.reexec_with_huge_pages()
    main()
