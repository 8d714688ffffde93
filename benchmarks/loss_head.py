"""The output layer and token loss: four forms of one loss, and the train step.

    python benchmarks/loss_head.py [--tokens 4080] [--vocab 10000] [--d-model 128]
    # also the whole train step of a translation config, in one run:
    python benchmarks/loss_head.py --config configs/translate_multi30k.py:budget
    # GPU: e.g. --tokens 32768 --vocab 32000 --d-model 512 --chunk-rows 4096

The forms (all give the same loss, metrics and gradients; checked here):
- `former`: `log_softmax(logits)` materialised, accuracy by `jnp.argmax`,
  whose variadic (value, index) reduction XLA:CPU runs slowly (this
  project's form until 2026-12-05).
- `argmax_accuracy`: `losses.cross_entropy` (lse minus one gathered value
  and one mean, no log-probabilities), accuracy by `losses.argmax` (a max,
  then a min over the indices reaching it): an extra pass over the logits.
- `current`: the same loss; `losses.accuracy` compares the label's logit
  with the row's maximum, which `cross_entropy` computes anyway.
- `fused`: `losses.linear_cross_entropy`, `--chunk-rows` rows at a time:
  logits, loss and the gradients of each block while the block is in cache,
  never the whole [tokens, vocab] logits (`method.output_chunk_rows`).

Part 1 times value-and-gradient of the output head of a translation model,
jitted: logits = h @ E^T for h [tokens, d_model] and a shared embedding E
[vocab, d_model], then `Supervised`'s loss (label smoothing 0.1) and its
metrics (nll, accuracy); arms alternate, `--repeats` each, medians. The arm
`logits_matmul_only` is the floor: the three matmuls without any loss.

Part 2 (with --config) builds a Trainer of that config per form in this
process (the first three patched into `losses` while tracing, with
`output_chunk_rows=0`; `fused` with `--chunk-rows`), and times their train
steps alternately on the same batch of each `--lengths` bucket.

Writes benchmarks/results/loss_head.json and .png.
"""

import argparse
import contextlib
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


def argmax_accuracy(logits, labels, *, where=None):
    """`losses.accuracy` before 2026-12-05: `losses.argmax` == label."""
    correct = (losses.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return correct if where is None else jnp.where(where, correct, 0.0)


# Functions patched into `losses` while each form traces (`fused` is a method
# option, not a patch).
PATCHES = {
    'former': {'cross_entropy': former_cross_entropy, 'accuracy': former_accuracy},
    'argmax_accuracy': {'accuracy': argmax_accuracy},
    'current': {},
    'fused': {},
}


@contextlib.contextmanager
def patched(form):
    saved = {name: getattr(losses, name) for name in PATCHES[form]}
    for name, fn in PATCHES[form].items():
        setattr(losses, name, fn)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(losses, name, fn)


def head_loss(h, table, labels, where):
    """`Supervised.loss` after the model: loss and its metrics."""
    logits = h @ table.T
    ce = losses.cross_entropy(logits, labels, where=where, label_smoothing=SMOOTHING)
    loss = losses.masked_mean(ce, where)
    return loss, supervised.supervised_metrics(logits, labels, where, loss)


def fused_loss(chunk_rows):
    """`Supervised(output_chunk_rows=chunk_rows)`'s loss and metrics."""

    def loss_fn(h, table, labels, where):
        loss, nll, correct = losses.linear_cross_entropy(
            h,
            table,
            labels,
            where / jnp.maximum(jnp.sum(where), 1),
            label_smoothing=SMOOTHING,
            chunk_rows=chunk_rows,
        )
        return loss, {
            'train/loss': loss,
            'train/nll': losses.masked_mean(nll, where),
            'train/accuracy': losses.masked_mean(correct.astype(jnp.float32), where),
        }

    return loss_fn


def matmul_only(h, table, labels, where):
    del labels, where
    return jnp.mean(h @ table.T), {}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--tokens', type=int, default=4080)
    parser.add_argument('--vocab', type=int, default=10000)
    parser.add_argument('--d-model', type=int, default=128)
    parser.add_argument('--repeats', type=int, default=15)
    parser.add_argument('--chunk-rows', type=int, default=256, help='fused form')
    parser.add_argument('--config', help="also time this config's train step")
    parser.add_argument(
        '--data_dir',
        '--data-dir',
        default=str(common.REPO.parent / 'shared' / 'data' / 'multi30k'),
    )
    parser.add_argument('--lengths', default='12,16,24')
    parser.add_argument('--step-repeats', type=int, default=10)
    common.add_tag(parser)
    args = parser.parse_args()
    sizes = (args.tokens, args.vocab, args.d_model, args.repeats, args.step_repeats)
    if min(*sizes, args.chunk_rows) < 1:
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
    loss_fns = {form: head_loss for form in PATCHES}
    loss_fns['fused'] = fused_loss(args.chunk_rows)
    loss_fns['logits_matmul_only'] = matmul_only
    steps, outputs = {}, {}
    for name, fn in loss_fns.items():
        steps[name] = grad(fn)
        # jit traces at the first call: it fixes the form under its patches.
        with patched(name) if name in PATCHES else contextlib.nullcontext():
            outputs[name] = steps[name](h, table, labels, where)
    jax.block_until_ready(outputs)
    times = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            t = time.perf_counter()
            jax.block_until_ready(step(h, table, labels, where))
            times[name].append(time.perf_counter() - t)
    (loss_c, aux_c), grads_c = outputs['current']
    agreement = {}
    for form in PATCHES:
        (loss_f, aux_f), grads_f = outputs[form]
        agreement[form] = {
            'loss_abs_diff': float(abs(loss_c - loss_f)),
            'nll_abs_diff': float(abs(aux_c['train/nll'] - aux_f['train/nll'])),
            'accuracy_equal': bool(aux_c['train/accuracy'] == aux_f['train/accuracy']),
            'grad_max_rel_diff': float(
                max(
                    jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))
                    for a, b in zip(grads_f, grads_c)
                )
            ),
        }
        a = agreement[form]
        if not (a['accuracy_equal'] and a['grad_max_rel_diff'] < 1e-4):
            raise SystemExit(f'{form} and current disagree: {a}')
    median = {name: float(np.median(v)) for name, v in times.items()}
    floor = median['logits_matmul_only']
    return {
        'shape': {'tokens': args.tokens, 'vocab': args.vocab, 'd_model': args.d_model},
        'label_smoothing': SMOOTHING,
        'chunk_rows': args.chunk_rows,
        'repeats': args.repeats,
        'value_and_grad_seconds_runs': times,
        'value_and_grad_seconds_median': median,
        'time_ratio_current_vs_former': median['current'] / median['former'],
        'time_ratio_fused_vs_former': median['fused'] / median['former'],
        'time_ratio_fused_vs_current': median['fused'] / median['current'],
        'time_ratio_current_vs_argmax_accuracy': (
            median['current'] / median['argmax_accuracy']
        ),
        'loss_seconds_beyond_matmul': {form: median[form] - floor for form in PATCHES},
        'agreement_with_current': agreement,
    }


def time_train_steps(args):
    import train_step_throughput as tst  # pylint: disable=g-import-not-at-top

    configs = {}
    for form in PATCHES:
        config = tst.load_config(args.config, args.data_dir)
        if config.method.name != 'supervised':
            raise SystemExit(f'--config {args.config}: method.name must be supervised.')
        config.method.output_chunk_rows = args.chunk_rows if form == 'fused' else 0
        configs[form] = config
    rows = tst.alternate_steps(
        configs,
        args.lengths,
        args.step_repeats,
        {f: lambda f=f: patched(f) for f in PATCHES},
    )
    for row in rows:
        median = row['step_seconds_median']
        for form in ('former', 'argmax_accuracy', 'current'):
            row[f'time_ratio_fused_vs_{form}'] = median['fused'] / median[form]
        print(
            f'bucket {row["bucket_length"]}: step '
            + ', '.join(f'{f} {median[f]:.3f} s' for f in PATCHES)
        )
    return {'config': args.config, 'chunk_rows': args.chunk_rows, 'rows': rows}


def main():
    args = parse_args()
    result = time_head(args)
    med = result['value_and_grad_seconds_median']
    print(
        f'head [{args.tokens} x {args.d_model}] @ [{args.d_model} x {args.vocab}] '
        'value+grad: '
        + ', '.join(f'{f} {med[f] * 1e3:.1f} ms' for f in PATCHES)
        + f'; matmuls alone {med["logits_matmul_only"] * 1e3:.1f} ms'
    )
    if args.config:
        result['train_step'] = time_train_steps(args)
    common.write_result(common.stem('loss_head', args), result)
    _plot(result, common.RESULTS / f'{common.stem("loss_head", args)}.png')


def _plot(result, path):
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    steps = result.get('train_step')
    fig, axes = plt.subplots(1, 2 if steps else 1, figsize=(9 if steps else 5, 3.4))
    axes = np.atleast_1d(axes)
    runs = result['value_and_grad_seconds_runs']
    names = [*PATCHES, 'logits_matmul_only']
    axes[0].boxplot([np.array(runs[n]) * 1e3 for n in names])
    labels = ['former', 'argmax\naccuracy', 'current', 'fused', 'matmuls\nonly']
    axes[0].set_xticks(range(1, len(names) + 1), labels, fontsize=7)
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
