"""Anytime inference: per-example early exit on softmax confidence.

An example stops at the first exit whose top softmax probability reaches the
threshold (the deepest exit always answers). Its cost is the measured time of
the network prefix that ends at that exit, shallower heads included (they had
to run to be checked). Costs are wall-clock seconds of jitted prefixes over
the eval set (`measure_prefix_seconds`), divided by the measured time of the
plain network (all stages, deepest head only), so `time_fraction` < 1 is
the share of the plain network's time saved and > 1 is the price of the extra
heads. It is a projection from those measured prefixes: no cascade that stops
each example at its exit runs here, so the gathering and re-batching such a
cascade needs between stages is not counted
(docs/methods/self_distillation.md, "Deviations").
"""

import functools
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


def exit_assignment(confidence: np.ndarray, threshold: float) -> np.ndarray:
    """Index of the exit each example leaves at.

    Args:
      confidence: [K, N] top softmax probability per exit (shallow to deep).
      threshold: leave at the first exit with confidence >= threshold. A
        threshold of 1.0 or more sends every example to the deepest exit: a
        float32 softmax rounds a confident enough prediction (top logit ~17
        above the next) to exactly 1.0, which must not count as "certain".
    Returns:
      int [N] in 0..K-1 (K-1 when no exit is confident enough).
    """
    confident = np.asarray(confidence) >= threshold
    if threshold >= 1.0:
        confident[:] = False
    confident[-1] = True
    return np.argmax(confident, axis=0)


def early_exit_curve(
    confidence: np.ndarray,
    correct: np.ndarray,
    thresholds: Sequence[float],
    exit_cost: Sequence[float] | None = None,
) -> list[dict]:
    """Accuracy and cost of early exit at each threshold.

    Args:
      confidence: [K, N] top softmax probability per exit.
      correct: [K, N] bool, exit k's prediction is right.
      thresholds: confidence thresholds to evaluate.
      exit_cost: [K] cost of stopping at exit k relative to the plain full
        network (e.g. measured time fractions); None leaves time_fraction out.
    Returns:
      [{'threshold', 'accuracy' (fraction), 'mean_exit', 'exit_fractions' [K],
        'time_fraction' (if exit_cost)}] in threshold order.
    """
    confidence, correct = np.asarray(confidence), np.asarray(correct, bool)
    k, n = confidence.shape
    curve = []
    for t in thresholds:
        exits = exit_assignment(confidence, t)
        point = {
            'threshold': float(t),
            'accuracy': float(np.mean(correct[exits, np.arange(n)])),
            'mean_exit': float(np.mean(exits)),
            'exit_fractions': [float(np.mean(exits == i)) for i in range(k)],
        }
        if exit_cost is not None:
            point['time_fraction'] = float(np.mean(np.asarray(exit_cost)[exits]))
        curve.append(point)
    return curve


def _run_once(fn: Callable, params, batches: Sequence) -> float:
    """Wall seconds of `fn(params, b)` over all `batches`, outputs ready."""
    start = time.perf_counter()
    for batch in batches:
        jax.block_until_ready(fn(params, batch))
    return time.perf_counter() - start


def time_batches(fn: Callable, params, batches: Sequence, repeats: int) -> float:
    """Best-of-`repeats` wall seconds of `fn(params, b)` over all `batches`.

    `fn` should be jitted; it is called once on the first batch beforehand so
    that compilation is not timed; every output is `block_until_ready`.
    """
    return interleaved_seconds([fn], params, batches, repeats)[0]


def interleaved_seconds(
    fns: Sequence[Callable], params, batches: Sequence, repeats: int
) -> list[float]:
    """Best-of-`repeats` seconds of each of `fns` over `batches`, round-robin.

    Every function is warmed up (compiled) first; then each repeat times every
    function once, in turn, so a machine whose speed drifts during the
    measurement (other jobs, frequency scaling) slows all of them alike and
    their ratios stay meaningful. The minimum over repeats is kept.
    """
    for fn in fns:
        jax.block_until_ready(fn(params, batches[0]))
    best = [float('inf')] * len(fns)
    for _ in range(max(repeats, 1)):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], _run_once(fn, params, batches))
    return best


@functools.lru_cache(maxsize=64)
def _prefix(apply_exits: Callable, k: int, only_last: bool):
    """The jitted prefix up to exit k, made once per (apply_exits, k,
    only_last): a new jit each evaluation would compile every prefix again."""
    return jax.jit(
        lambda p, b: apply_exits(p, b, train=False, upto=k, only_last=only_last)[
            'logits'
        ]
    )


def measure_prefix_seconds(
    apply_exits: Callable, params, batches: Sequence, num_exits: int, repeats: int = 3
) -> tuple[list[float], float]:
    """Measured inference time of each exit prefix and of the plain network.

    The prefixes and the plain network are timed round-robin
    (`interleaved_seconds`), best of `repeats` each.

    Args:
      apply_exits: `MultiExitFns.apply_exits`.
      params: the model parameters.
      batches: eval batches already placed on devices.
      num_exits: K.
      repeats: timing repeats; the best is kept.
    Returns:
      ([K] seconds to run prefix k with heads 0..k over `batches`, seconds of
      the whole network with the deepest head only).
    """

    fns = [_prefix(apply_exits, k, False) for k in range(num_exits)]
    fns.append(_prefix(apply_exits, num_exits - 1, True))
    seconds = interleaved_seconds(fns, params, batches, repeats)
    return seconds[:-1], seconds[-1]


# Below this, the plain network's measured time over the eval set is too
# short for its ratios to mean much (timer and dispatch noise of a few ms).
MIN_TIMED_SECONDS = 0.05


def timing_note(seconds_plain: float | None) -> str:
    """A warning line where the time fractions are mostly noise, else ''."""
    if seconds_plain is None or seconds_plain >= MIN_TIMED_SECONDS:
        return ''
    return (
        f'Note: the plain network took {1000 * seconds_plain:.1f} ms over the '
        'evaluation set, too short to time reliably: the time fractions are '
        'mostly noise (evaluate more examples, eval.max_examples).'
    )


def format_curve(curve: Sequence[dict]) -> str:
    """A text table of an early-exit curve, one threshold a line."""
    lines = ['threshold  accuracy  time_fraction  mean_exit  exit_fractions']
    for p in curve:
        fractions = ' '.join(f'{f:.2f}' for f in p['exit_fractions'])
        time_fraction = p.get('time_fraction', float('nan'))
        lines.append(
            f'{p["threshold"]:>9.3f}  {p["accuracy"]:>8.4f}  {time_fraction:>13.3f}  '
            f'{p["mean_exit"]:>9.2f}  {fractions}'
        )
    return '\n'.join(lines)
