"""The distillation losses' one-pass form against two log_softmax, in one run.

    python benchmarks/distill_loss.py [--tokens 4096] [--vocab 10000] [--repeats 9]
    # GPU: the same script, e.g. --tokens 32768 --vocab 32000

`losses.distill_kl` and `losses.soft_cross_entropy` compute
KL = sum p (t - s) - lse_t + lse_s (t, s: tempered logits shifted by their
maxima) as one elementwise pass and one reduction over the vocabulary. The
form they replaced (`two_log_softmax_kl` below, kept here as the reference)
materialised log p and log q and summed p log p and p log q separately.
Times value-and-gradient with respect to the student, jitted, at
[tokens, vocab] (both forms alternately, `--repeats` times each, medians),
and checks both against a float64 numpy reference on logits near 1e4, where
a careless form loses precision. Writes benchmarks/results/distill_loss.json
and .png.
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

TEMPERATURE = 2.0


def two_log_softmax_kl(student, teacher, temperature):
    """The former `distill_kl`: two log_softmax, two sums of p·log."""
    t = jax.lax.stop_gradient(teacher) / temperature
    log_p = jax.nn.log_softmax(t, axis=-1)
    log_q = jax.nn.log_softmax(student / temperature, axis=-1)
    p = jnp.exp(log_p)
    plogq = lambda lq: jnp.sum(jnp.where(p > 0, p * lq, 0.0), axis=-1)
    return temperature**2 * (plogq(log_p) - plogq(log_q))


def numpy_kl(student, teacher, temperature):
    """float64 reference."""

    def log_softmax(x):
        x = x / temperature
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    log_p, log_q = log_softmax(teacher), log_softmax(student)
    return temperature**2 * (np.exp(log_p) * (log_p - log_q)).sum(-1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--tokens', type=int, default=4096)
    parser.add_argument('--vocab', type=int, default=10000)
    parser.add_argument('--repeats', type=int, default=9)
    common.add_tag(parser)
    args = parser.parse_args()
    if min(args.tokens, args.vocab, args.repeats) < 1:
        parser.error('--tokens, --vocab and --repeats must be >= 1.')
    forms = {
        'one_pass_kl': lambda s, t: losses.distill_kl(s, t, temperature=TEMPERATURE),
        'two_log_softmax_kl': lambda s, t: two_log_softmax_kl(s, t, TEMPERATURE),
        'one_pass_soft_ce': lambda s, t: losses.soft_cross_entropy(
            s, t, temperature=TEMPERATURE
        ),
    }
    key_s, key_t = jax.random.split(jax.random.key(0))
    shape = (args.tokens, args.vocab)
    student = 3 * jax.random.normal(key_s, shape, jnp.float32)
    teacher = 3 * jax.random.normal(key_t, shape, jnp.float32)
    steps = {
        name: jax.jit(jax.value_and_grad(lambda s, t, f=f: jnp.mean(f(s, t))))
        for name, f in forms.items()
    }
    for step in steps.values():  # Compile (not timed).
        jax.block_until_ready(step(student, teacher))
    times = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            t = time.perf_counter()
            jax.block_until_ready(step(student, teacher))
            times[name].append(time.perf_counter() - t)
    median = {name: float(np.median(v)) for name, v in times.items()}

    rng = np.random.default_rng(0)
    s64 = 1e4 + 3 * rng.standard_normal((256, 1000))
    t64 = s64 + rng.standard_normal((256, 1000))
    reference = numpy_kl(s64, t64, TEMPERATURE)
    s32, t32 = jnp.float32(s64), jnp.float32(t64)
    error = {
        name: float(np.max(np.abs(np.asarray(f(s32, t32)) - reference)))
        for name, f in forms.items()
        if name.endswith('_kl')
    }
    result = {
        'shape': list(shape),
        'temperature': TEMPERATURE,
        'repeats': args.repeats,
        'value_and_grad_seconds_runs': times,
        'value_and_grad_seconds_median': median,
        'kl_time_ratio_one_pass_vs_two_log_softmax': median['one_pass_kl']
        / median['two_log_softmax_kl'],
        'max_abs_error_vs_float64_at_logits_1e4': error,
        'mean_kl_at_logits_1e4': float(reference.mean()),
    }
    common.write_result(common.stem('distill_loss', args), result)
    print(
        f'[{args.tokens}, {args.vocab}] value+grad: one-pass KL '
        f'{median["one_pass_kl"] * 1e3:.1f} ms, two log_softmax '
        f'{median["two_log_softmax_kl"] * 1e3:.1f} ms (ratio '
        f'{result["kl_time_ratio_one_pass_vs_two_log_softmax"]:.2f}); soft CE '
        f'{median["one_pass_soft_ce"] * 1e3:.1f} ms; max |error| at logits 1e4 '
        f'(mean KL {reference.mean():.3f}): {error}'
    )
    _plot(result, common.RESULTS / f'{common.stem("distill_loss", args)}.png')


def _plot(result, path):
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    fig, ax = plt.subplots(figsize=(5, 3.2))
    runs = result['value_and_grad_seconds_runs']
    names = list(runs)
    ax.boxplot([np.array(runs[n]) * 1e3 for n in names])
    ax.set_xticks(range(1, len(names) + 1), [n.replace('_', ' ') for n in names])
    ax.set_ylabel('ms, value + gradient')
    tokens, vocab = result['shape']
    ax.set_title(f'Distillation loss at [{tokens}, {vocab}], T={result["temperature"]}')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f'wrote {path}')


if __name__ == '__main__':
    from jaxdistill import hostmem  # pylint: disable=g-import-not-at-top

    hostmem.reexec_with_huge_pages()
    main()
