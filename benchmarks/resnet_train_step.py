"""Where a self-distillation train step's time goes: exits, loss and precision.

    python benchmarks/resnet_train_step.py                # the CPU benchmark size
    python benchmarks/resnet_train_step.py --size gpu     # ResNet-18 width 64
    python benchmarks/resnet_train_step.py --quick        # smoke run (writes *_quick.json, ignored by git)

On an H200 the self-distillation step of benchmarks/self_distill_cifar10.py ran
at a third of the plain network's rate (53 against 177 steps/s), though its
four exits add only about a third to the inference time; on an H100 the same
runs gave 1.54x, and this script 1.52x (docs/methods/self_distillation.md),
so that was the machine. This times one full
train step (forward, backward, SGD with momentum; jitted, parameters donated)
on one batch of random images for:

- `plain`: the baseline's network (no shallow exits), cross-entropy;
- `exits=...`: the multi-exit network with shallow exits after those stages
  and the self-distillation loss (the benchmark's is exits 0, 1, 2);
- `...+ce`: the same network with plain cross-entropy on every exit (alpha =
  beta = 0 in the loss's terms: no KL, no feature distance);
- `...+branch`, `...+pool`: every exit with another exit head
  (`model.exit_head`: a public BYOT implementation's three-convolution branch,
  or an average pool to the deepest resolution before it) instead of a
  bottleneck block per skipped stage, and the self-distillation loss;
- `plain` and the full self-distillation step again in each further compute
  dtype that --dtypes names (`model.dtype`, e.g. bfloat16): one compilation per
  variant is most of this script's time on a GPU.

All variants are timed round-robin (`early_exit.interleaved_seconds`), best of
--repeats, each timing --steps steps. Writes
benchmarks/results/resnet_train_step_SIZE[_TAG].json and .png: milliseconds a
step and each variant's time over the float32 plain step.
"""

import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position
import resnet_stage_time  # pylint: disable=g-import-not-at-top,wrong-import-position
import self_distill_cifar10  # pylint: disable=g-import-not-at-top,wrong-import-position


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', choices=sorted(self_distill_cifar10.SIZES), default='cpu')
    p.add_argument(
        '--quick',
        action='store_true',
        help='tiny network, few steps, plain and the full self-distillation step',
    )
    p.add_argument('--batch', type=int, default=128, help='the benchmark batch')
    p.add_argument('--steps', type=int, default=20, help='steps per timing')
    p.add_argument('--repeats', type=int, default=3, help='timings; the best is kept')
    p.add_argument(
        '--dtypes', default='float32,bfloat16', help='compute dtypes, comma-separated'
    )
    p.add_argument('--tag', default='')
    args = p.parse_args()
    for key in ('batch', 'steps', 'repeats'):
        if getattr(args, key) < 1:
            p.error(f'--{key} must be >= 1, got {getattr(args, key)}.')
    args.dtypes = [d.strip() for d in args.dtypes.split(',') if d.strip()]
    return args


def _variants(num_stages, every_variant=True):
    """(label, shallow exits, self-distillation loss?, exit head) per variant.

    With every_variant=False, the ends only: plain, and every exit with
    self-distillation (each head), as timed in the further dtypes.
    """
    all_exits = tuple(range(num_stages - 1))
    name = lambda exits: f'exits={",".join(map(str, exits))}'
    out = [('plain', (), False, 'blocks')]
    for k in range(num_stages - 2, -1, -1):  # Exits added from the deep end.
        exits = all_exits[k:]
        if every_variant or not k:
            out.append((name(exits), exits, True, 'blocks'))
    if every_variant:
        out.append((f'{name(all_exits)}+ce', all_exits, False, 'blocks'))
    for head in ('branch', 'pool'):
        out.append((f'{name(all_exits)}+{head}', all_exits, True, head))
    return out


def _step_fn(model, sd_loss):
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    import optax  # pylint: disable=g-import-not-at-top

    from jaxdistill import losses_self_distill  # pylint: disable=g-import-not-at-top

    tx = optax.sgd(0.1, momentum=0.9)

    def loss_fn(params, images, labels):
        out = model.apply(params, images, train=True)
        if sd_loss:
            per_example, _ = losses_self_distill.self_distill_loss(
                out['logits'], out['features'], labels
            )
        else:
            per_example = sum(
                optax.softmax_cross_entropy_with_integer_labels(z, labels)
                for z in out['logits']
            )
        return jnp.mean(per_example)

    def step(state, batch):
        params, opt_state = state
        grads = jax.grad(loss_fn)(params, *batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return jax.jit(step, donate_argnums=0), tx


def main():
    import jax  # pylint: disable=g-import-not-at-top

    from jaxdistill.evaluation import early_exit  # pylint: disable=g-import-not-at-top
    from jaxdistill.models import resnet  # pylint: disable=g-import-not-at-top

    args = _parse()
    if args.quick:
        size = {'model.stage_sizes': (1, 1, 1), 'model.width': 8}
        args.batch, args.steps, args.repeats = min(args.batch, 16), 2, 1
    else:
        size = {**resnet_stage_time.BASE, **self_distill_cifar10.SIZES[args.size]}
    stages = tuple(size['model.stage_sizes'])
    rng = np.random.default_rng(0)
    batch = (
        jax.device_put(rng.integers(0, 256, (args.batch, 32, 32, 3), dtype=np.uint8)),
        jax.device_put(rng.integers(0, 10, (args.batch,), dtype=np.int32)),
    )
    labels, fns, states = [], [], []
    for d, dtype in enumerate(args.dtypes):
        # After the first dtype, the ends only; in a --quick smoke run, plain
        # and the full self-distillation step (each variant is a compilation).
        variants = _variants(len(stages), every_variant=not d and not args.quick)
        if args.quick:
            variants = variants[:2]
        for label, exits, sd_loss, exit_head in variants:
            model = resnet.ResNet(
                num_classes=10,
                stage_sizes=stages,
                width=size['model.width'],
                exits=exits,
                exit_head=exit_head,
                dtype=dtype,
            )
            params = model.init(jax.random.key(0), batch[0][:2], train=False)
            step, tx = _step_fn(model, sd_loss)
            state = (params, tx.init(params))
            state = step(state, batch)  # Compiles.
            jax.block_until_ready(state)
            labels.append(f'{label} {dtype}')
            fns.append(step)
            states.append(state)

    # interleaved_seconds calls fn(params, batch): each variant's state lives in
    # a cell, replaced by every (donating) step, and one step is one "batch".
    cells = [[s] for s in states]

    def runner(i):
        def run(_, b):
            for _ in range(args.steps):
                cells[i][0] = fns[i](cells[i][0], b)
            return cells[i][0]

        return run

    seconds = early_exit.interleaved_seconds(
        [runner(i) for i in range(len(fns))], None, [batch], args.repeats
    )
    ms = [1000 * s / args.steps for s in seconds]
    plain = ms[0]
    result = {
        'size': 'quick' if args.quick else args.size,
        'stage_sizes': list(stages),
        'width': size['model.width'],
        'batch': args.batch,
        'steps': args.steps,
        'repeats': args.repeats,
        'ms_per_step': dict(zip(labels, ms)),
        'time_over_plain_float32': dict(zip(labels, [m / plain for m in ms])),
    }
    # '_quick' last: git-ignored and marked a smoke run (common.write_result).
    name = '_'.join(
        filter(
            None,
            ['resnet_train_step', None if args.quick else args.size, args.tag]
            + (['quick'] if args.quick else []),
        )
    )
    common.write_result(name, result)
    _plot(result, name)
    for label, m in zip(labels, ms):
        print(f'{label:>24}: {m:8.2f} ms/step  {m / plain:5.2f}x plain float32')


def _plot(result, name):
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    labels = list(result['ms_per_step'])
    ratios = [result['time_over_plain_float32'][k] for k in labels]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.5))
    ax.barh(range(len(labels)), ratios, color='tab:blue')
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.axvline(1.0, color='k', lw=0.8)
    ax.set_xlabel('train-step time / plain float32 step')
    ax.set_title(
        f'ResNet {result["stage_sizes"]} width {result["width"]}, '
        f'batch {result["batch"]}: self-distillation step cost'
    )
    fig.tight_layout()
    path = common.RESULTS / f'{name}.png'
    fig.savefig(path, dpi=120)
    print(f'wrote {path}')


if __name__ == '__main__':
    main()
