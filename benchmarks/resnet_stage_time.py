"""Where a CIFAR ResNet's inference time goes, stage by stage, on this machine.

    python benchmarks/resnet_stage_time.py                # the CPU benchmark size
    python benchmarks/resnet_stage_time.py --size gpu     # ResNet-18 width 64

The early-exit target of the self-distillation benchmark asks for an exit that
costs at most half of the plain network's measured time. An exit after stage s
costs at least the backbone up to stage s. This measures that floor: the
backbone truncated after each stage (stem, stages 0..s, pooling, a classifier;
no exit heads), timed round-robin with the whole plain network over the same
batches, best of --repeats; beside it XLA's FLOP count of each (compiled for
the CPU backend) and the measured time of each multi-exit prefix (stages and
BYOT heads up to exit k, as the self-distillation benchmark times them).
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


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', choices=sorted(self_distill_cifar10.SIZES), default='cpu')
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

    def model(n, with_exits=False):
        return resnet.ResNet(
            num_classes=10,
            stage_sizes=stages[:n],
            width=width,
            exits=exits if with_exits else (),
        )

    backbones, params, flops = [], [], []
    for n in range(1, len(stages) + 1):
        m = model(n)
        p = m.init(jax.random.key(0), images[0][:2], train=False)
        fn = jax.jit(lambda p, x, m=m: m.apply(p, x, train=False)['logits'][-1])
        backbones.append(fn)
        params.append(p)
        cpu_args = (jax.device_put(p, cpu), jax.device_put(images[0], cpu))
        flops.append(common.xla_flops(fn.lower(*cpu_args).compile()))
    multi = model(len(stages), with_exits=True)
    multi_params = multi.init(jax.random.key(0), images[0][:2], train=False)
    prefixes = [
        # Every head up to k is an output (unused heads would be compiled away).
        jax.jit(lambda p, x, k=k: multi.apply(p, x, train=False, upto=k)['logits'])
        for k in range(len(stages))
    ]
    # One round-robin over every function: the backbones take their own
    # parameters, the prefixes the multi-exit model's (`interleaved_seconds`
    # passes one parameter tree, so each function closes over its own).
    fns = [lambda _, x, f=f, p=p: f(p, x) for f, p in zip(backbones, params)]
    fns += [lambda _, x, f=f: f(multi_params, x) for f in prefixes]
    batches = [jax.device_put(x) for x in images]
    seconds = early_exit.interleaved_seconds(fns, None, batches, args.repeats)
    plain = seconds[len(stages) - 1]
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
        'exit_prefix_time_fraction': [s / plain for s in seconds[len(stages) :]],
        'images_per_s_plain': args.batch * args.batches / plain,
    }
    name = f'resnet_stage_time_{args.size}'
    common.write_result(name, result)
    _plot(result, name)
    for key in ('backbone_time_fraction', 'backbone_flops_fraction'):
        print(f'{key}: {[round(x, 3) for x in result[key]]}')
    print(
        'exit_prefix_time_fraction: '
        f'{[round(x, 3) for x in result["exit_prefix_time_fraction"]]}'
    )


def _plot(result, name):
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    n = len(result['stage_sizes'])
    x = np.arange(n)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(x - 0.27, result['backbone_flops_fraction'], 0.27, label='backbone, FLOPs')
    ax.bar(x, result['backbone_time_fraction'], 0.27, label='backbone, measured time')
    ax.bar(
        x + 0.27,
        result['exit_prefix_time_fraction'],
        0.27,
        label='multi-exit prefix (BYOT heads), time',
    )
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
