"""The token loss without materialised log-probabilities, against the former form.

    python benchmarks/loss_head.py [--tokens 4096] [--vocab 10000] [--d-model 128]
    # also the whole train step of a translation config, both forms in one run:
    python benchmarks/loss_head.py --config configs/translate_multi30k.py:budget
    # GPU: e.g. --tokens 32768 --vocab 32000 --d-model 512

`losses.cross_entropy` computes nll = lse - shifted[label] and the smoothing
term lse - mean(shifted) from logits shifted by their maxima, and
`losses.accuracy` finds the first maximum with a max and a min
(`losses.argmax`). The form they replaced (`former_cross_entropy` and
`former_accuracy` below, kept as the reference) materialised
`log_softmax(logits)` and used `jnp.argmax`, whose variadic (value, index)
reduction XLA:CPU runs slowly.

Part 1 times value-and-gradient of the output head of a translation model,
jitted: logits = h @ E^T for h [tokens, d_model] and a shared embedding E
[vocab, d_model], then `Supervised`'s loss (label smoothing 0.1) and its
metrics (nll, accuracy); arms alternate, `--repeats` each, medians. The arm
`logits_matmul_only` is the floor: the three matmuls without any loss.

Part 2 (with --config) builds two Trainers of that config in this process,
one traced with the former functions patched into `losses`, and times their
train steps alternately on the same batch of each `--lengths` bucket.

Writes benchmarks/results/loss_head.json and .png.
"""

import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxdistill import losses  # pylint: disable=g-import-not-at-top
from jaxdistill.methods import supervised  # pylint: disable=g-import-not-at-top

SMOOTHING = 0.1


def former_cross_entropy(logits, labels, *, label_smoothing=0.0, where=None):
    """The former `losses.cross_entropy`: log_softmax materialised."""
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    vocab = logits.shape[-1]
    labels = jnp.asarray(labels)
    if where is not None:
        labels = jnp.where(where, labels, 0)
    labels = jnp.clip(labels, 0, vocab - 1)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    if label_smoothing:
        smooth = -jnp.mean(log_probs, axis=-1)
        nll = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    return nll if where is None else jnp.where(where, nll, 0.0)


def former_accuracy(logits, labels, *, where=None):
    """The former `losses.accuracy`: `jnp.argmax`."""
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return correct if where is None else jnp.where(where, correct, 0.0)


class former_losses:  # pylint: disable=invalid-name
    """Patches the former functions into `losses` while tracing."""

    def __enter__(self):
        self.saved = losses.cross_entropy, losses.accuracy
        losses.cross_entropy, losses.accuracy = former_cross_entropy, former_accuracy

    def __exit__(self, *exc):
        losses.cross_entropy, losses.accuracy = self.saved


def head_loss(h, table, labels, where):
    """`Supervised.loss` after the model: loss and its metrics."""
    logits = h @ table.T
    ce = losses.cross_entropy(logits, labels, where=where, label_smoothing=SMOOTHING)
    loss = losses.masked_mean(ce, where)
    return loss, supervised.supervised_metrics(logits, labels, where, loss)


def matmul_only(h, table, labels, where):
    del labels, where
    return jnp.mean(h @ table.T), {}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--tokens', type=int, default=4096)
    parser.add_argument('--vocab', type=int, default=10000)
    parser.add_argument('--d-model', type=int, default=128)
    parser.add_argument('--repeats', type=int, default=15)
    parser.add_argument('--config', help="also time this config's train step")
    parser.add_argument(
        '--data-dir', default=str(common.REPO.parent / 'shared' / 'data' / 'multi30k')
    )
    parser.add_argument('--lengths', default='12,16,24')
    parser.add_argument('--step-repeats', type=int, default=10)
    args = parser.parse_args()
    if min(args.tokens, args.vocab, args.d_model, args.repeats, args.step_repeats) < 1:
        parser.error('sizes and repeat counts must be >= 1.')
    try:
        args.lengths = [int(x) for x in args.lengths.split(',') if x]
    except ValueError:
        parser.error(
            f'--lengths must be comma-separated integers, got {args.lengths!r}'
        )
    return args


def time_head(args):
    keys = jax.random.split(jax.random.key(0), 3)
    h = jax.random.normal(keys[0], (args.tokens, args.d_model), jnp.float32)
    table = 0.05 * jax.random.normal(keys[1], (args.vocab, args.d_model), jnp.float32)
    labels = jax.random.randint(keys[2], (args.tokens,), 0, args.vocab)
    where = jnp.arange(args.tokens) < int(0.85 * args.tokens)  # ~15% padding.
    grad = lambda f: jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))
    steps = {'current': grad(head_loss), 'logits_matmul_only': grad(matmul_only)}
    # jit traces at the first call: each arm's first call (below) fixes its form.
    outputs = {name: step(h, table, labels, where) for name, step in steps.items()}
    steps['former'] = grad(head_loss)
    with former_losses():
        outputs['former'] = steps['former'](h, table, labels, where)
    jax.block_until_ready(outputs)
    times = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            t = time.perf_counter()
            jax.block_until_ready(step(h, table, labels, where))
            times[name].append(time.perf_counter() - t)
    (loss_c, aux_c), grads_c = outputs['current']
    (loss_f, aux_f), grads_f = outputs['former']
    agreement = {
        'loss_abs_diff': float(abs(loss_c - loss_f)),
        'nll_abs_diff': float(abs(aux_c['train/nll'] - aux_f['train/nll'])),
        'accuracy_equal': bool(aux_c['train/accuracy'] == aux_f['train/accuracy']),
        'grad_max_rel_diff': float(
            max(
                jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))
                for a, b in zip(grads_c, grads_f)
            )
        ),
    }
    if not (agreement['accuracy_equal'] and agreement['grad_max_rel_diff'] < 1e-4):
        raise SystemExit(f'the two forms disagree: {agreement}')
    median = {name: float(np.median(v)) for name, v in times.items()}
    floor = median['logits_matmul_only']
    return {
        'shape': {'tokens': args.tokens, 'vocab': args.vocab, 'd_model': args.d_model},
        'label_smoothing': SMOOTHING,
        'repeats': args.repeats,
        'value_and_grad_seconds_runs': times,
        'value_and_grad_seconds_median': median,
        'time_ratio_current_vs_former': median['current'] / median['former'],
        'loss_seconds_beyond_matmul': {
            'current': median['current'] - floor,
            'former': median['former'] - floor,
        },
        'agreement': agreement,
    }


def time_train_steps(args):
    import train_step_throughput as tst  # pylint: disable=g-import-not-at-top

    config = tst.load_config(args.config, args.data_dir)
    rows = tst.alternate_steps(
        {'current': config, 'former': config},
        args.lengths,
        args.step_repeats,
        {'former': former_losses},
    )
    for row in rows:
        median = row['step_seconds_median']
        row['time_ratio_current_vs_former'] = median['current'] / median['former']
        print(
            f'bucket {row["bucket_length"]}: step {median["former"]:.3f} s -> '
            f'{median["current"]:.3f} s '
            f'({median["former"] / median["current"]:.2f}x faster)'
        )
    return {'config': args.config, 'rows': rows}


def main():
    args = parse_args()
    result = time_head(args)
    med = result['value_and_grad_seconds_median']
    print(
        f'head [{args.tokens} x {args.d_model}] @ [{args.d_model} x {args.vocab}] '
        f'value+grad: former {med["former"] * 1e3:.1f} ms, current '
        f'{med["current"] * 1e3:.1f} ms (ratio '
        f'{result["time_ratio_current_vs_former"]:.2f}); matmuls alone '
        f'{med["logits_matmul_only"] * 1e3:.1f} ms; {result["agreement"]}'
    )
    if args.config:
        result['train_step'] = time_train_steps(args)
    common.write_result('loss_head', result)
    _plot(result, common.RESULTS / 'loss_head.png')


def _plot(result, path):
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    steps = result.get('train_step')
    fig, axes = plt.subplots(1, 2 if steps else 1, figsize=(9 if steps else 5, 3.4))
    axes = np.atleast_1d(axes)
    runs = result['value_and_grad_seconds_runs']
    names = ['former', 'current', 'logits_matmul_only']
    axes[0].boxplot([np.array(runs[n]) * 1e3 for n in names])
    axes[0].set_xticks([1, 2, 3], ['former', 'current', 'matmuls only'])
    axes[0].set_ylabel('ms, value + gradient')
    shape = result['shape']
    axes[0].set_title(
        f'Output head + loss, {shape["tokens"]} tokens, V={shape["vocab"]}',
        fontsize=9,
    )
    if steps:
        import train_step_throughput as tst  # pylint: disable=g-import-not-at-top

        tst.plot_bucket_bars(axes[1], steps['rows'], f'Train step, {steps["config"]}')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f'wrote {path}')


if __name__ == '__main__':
    from jaxdistill import hostmem  # pylint: disable=g-import-not-at-top

    hostmem.reexec_with_huge_pages()
    main()
