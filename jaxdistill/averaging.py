"""Averaging the parameters of a run's last N checkpoints.

The published Multi30k reference averages its last 10 checkpoints before
decoding (fairseq's `average_checkpoints.py`); this is the same arithmetic
mean, element by element, over the checkpoints `checkpoint.read_state` reads
onto one device, whatever topology wrote them.
"""

import os
from typing import Any, Callable

import jax
import numpy as np

from jaxdistill import checkpoint as checkpoint_lib
from jaxdistill import optim
from jaxdistill.errors import CheckpointMismatchError

State = dict[str, Any]


def checkpoint_steps(directory: str) -> list[int]:
    """Steps of the finished checkpoints in `directory`, oldest first."""
    if not os.path.isdir(directory):
        raise CheckpointMismatchError(f'No checkpoint folder {directory}.')
    return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def select_steps(
    directory: str, last: int, *, upto: int | None = None, keep: int = 0
) -> list[int]:
    """The `last` newest checkpoint steps <= `upto` (default: the newest).

    `keep`: the run's `checkpoint.keep` (0: it kept every checkpoint). A run
    keeps its last `keep` checkpoints in a row; an older one is there only
    as the best by `checkpoint.best_metric` (or ranked by an earlier one),
    far older than the others, so averaging it in is refused rather than
    done silently (taken alone, `last=1`, it is fine).

    Raises:
      CheckpointMismatchError: no such step, fewer than `last` checkpoints,
        or a step among them from outside the run's last `keep`.
    """
    if last < 1:
        raise ValueError(f'last must be >= 1, got {last}.')
    steps = checkpoint_steps(directory)
    in_a_row = set(steps[-keep:]) if keep and keep > 0 else set(steps)
    if upto is not None:
        if upto not in steps:
            raise CheckpointMismatchError(
                f'No checkpoint for step {upto} in {directory}; available: {steps}.'
            )
        steps = [s for s in steps if s <= upto]
    if len(steps) < last:
        raise CheckpointMismatchError(
            f'Asked to average the last {last} checkpoints but {directory} '
            f'holds {len(steps)} (steps {steps}) up to that point; average fewer, '
            'or train with a larger checkpoint.keep.'
        )
    chosen = steps[-last:]
    apart = [s for s in chosen if s not in in_a_row] if last > 1 else []
    if apart:
        usable = len(chosen) - len(apart)
        raise CheckpointMismatchError(
            f'Asked to average the last {last} checkpoints up to step '
            f'{chosen[-1]}, but step(s) {apart} in {directory} are not among '
            f"the run's last checkpoint.keep={keep} ({sorted(in_a_row)}): they "
            'were kept as the best by checkpoint.best_metric, far older than '
            f'the rest. Average at most {usable}'
            + (f' (--average {usable})' if usable else '')
            + ', or train with a larger checkpoint.keep.'
        )
    return chosen


def average_params(
    step_dirs: list[str],
    select: Callable[[State], Any] = optim.model_params,
) -> Any:
    """Element-wise mean of `select(state)` over checkpoints.

    Args:
      step_dirs: checkpoint step folders (e.g. 'workdir/checkpoints/8000').
      select: picks the parameter tree from a restored train state (a dict
        with 'params', 'extra', ...); e.g. a method's `eval_params`.
    Returns:
      The averaged tree on one device, each leaf in its original dtype; the
      sum is kept in float64 so the order of checkpoints does not matter.
    """
    if not step_dirs:
        raise ValueError('average_params needs at least one checkpoint.')
    total, first = None, None
    for path in step_dirs:
        tree = jax.device_get(select(checkpoint_lib.read_state(path)))
        if first is None:
            first = tree
            total = jax.tree.map(lambda x: np.asarray(x, np.float64), tree)
            continue
        same = jax.tree.structure(tree) == jax.tree.structure(first) and all(
            np.shape(a) == np.shape(b)
            for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(first))
        )
        if not same:
            raise CheckpointMismatchError(
                f'{path} holds parameters of another structure or shape than '
                f'{step_dirs[0]}; they cannot be averaged.'
            )
        total = jax.tree.map(lambda t, x: t + np.asarray(x, np.float64), total, tree)
    n = len(step_dirs)
    return jax.tree.map(
        lambda t, x: jax.numpy.asarray((t / n).astype(np.asarray(x).dtype)),
        total,
        first,
    )


def average_checkpoints(
    directory: str,
    last: int,
    *,
    upto: int | None = None,
    select: Callable[[State], Any] = optim.model_params,
    keep: int = 0,
) -> tuple[Any, list[int]]:
    """(mean parameters, steps used) of the `last` checkpoints up to `upto`.

    Args:
      directory: the run's checkpoint folder, 'WORKDIR/checkpoints'.
      last: how many of the newest checkpoints to average (1 = just one).
      upto: newest step to include (default: the newest checkpoint).
      select: see `average_params`.
      keep: the run's `checkpoint.keep`; see `select_steps`.
    """
    steps = select_steps(directory, last, upto=upto, keep=keep)
    dirs = [os.path.join(directory, str(s)) for s in steps]
    return average_params(dirs, select), steps
