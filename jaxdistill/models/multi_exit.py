"""The multi-exit interface: one network, several classifiers along its depth.

A multi-exit model is a Flax module whose `__call__(x, *, train, upto=None)`
returns

    {'logits': [z_0, ..., z_deepest], 'features': [F_0, ..., F_deepest]}

with `z_i` [B, C] and `F_i` [B, D] (the same D for every exit, so feature
hints compare like with like), ordered shallow to deep. `upto=k` runs only the
part of the network the first k + 1 exits need (the prefix anytime inference
pays for) and returns k + 1 entries; `only_last=True` also skips the heads of the exits
before k (one entry: the cost of the plain network cut at exit k). Each
model also has a `num_exits`
property.

Methods meet such a model through `MultiExitFns`: a `ModelFns` whose `apply`
gives the deepest logits (so every single-output method works unchanged) and
whose `apply_exits` gives the whole dict.
"""

import dataclasses
import numbers
from typing import Any, Callable, Sequence

import jax.numpy as jnp

from jaxdistill.methods.base import ModelFns


@dataclasses.dataclass(frozen=True)
class MultiExitFns(ModelFns):
    """`ModelFns` plus the exits.

    apply_exits: (params, batch, *, train, rng=None, upto=None,
      only_last=False) ->
      {'logits': list of [B, C], 'features': list of [B, D]}.
    num_exits: how many exits the model has.
    """

    apply_exits: Callable[..., dict] = None
    num_exits: int = 1


def make_fns(model, input_key: str, label_key: str = 'label') -> MultiExitFns:
    """`MultiExitFns` for a multi-exit module fed `batch[input_key]`.

    Labels are `batch[label_key]` [B] int; rows with a negative label are
    padding (where=False).
    """

    def init(rng, batch):
        variables = model.init({'params': rng}, batch[input_key], train=False)
        return variables['params']

    def apply_exits(params, batch, *, train, rng=None, upto=None, only_last=False):
        rngs = {'dropout': rng} if train and rng is not None else None
        return model.apply(
            {'params': params},
            batch[input_key],
            train=train,
            upto=upto,
            only_last=only_last,
            rngs=rngs,
        )

    def apply(params, batch, *, train, rng=None):
        return apply_exits(params, batch, train=train, rng=rng)['logits'][-1]

    def labels(batch):
        y = jnp.asarray(batch[label_key])
        return y, y >= 0

    return MultiExitFns(
        init=init,
        apply=apply,
        labels=labels,
        apply_exits=apply_exits,
        num_exits=model.num_exits,
    )


def check_output(out: Any, num_exits: int) -> None:
    """Raises ValueError unless `out` follows the multi-exit convention."""
    if not isinstance(out, dict) or set(out) != {'logits', 'features'}:
        raise ValueError(f"multi-exit output must be {{'logits', 'features'}}: {out}")
    if not len(out['logits']) == len(out['features']) == num_exits:
        raise ValueError(
            f'expected {num_exits} exits, got {len(out["logits"])} logits and '
            f'{len(out["features"])} features'
        )
    dims = {f.shape[-1] for f in out['features']}
    if len(dims) != 1:
        raise ValueError(f'exit features differ in width: {sorted(dims)}')


def check_exit_indices(exits: Sequence[Any], what: str) -> None:
    """Refuses exit positions that are not integers (0.5, True): they pass
    a range check, then never match a stage or layer index, so the exit would
    silently not be built."""
    bad = [
        e for e in exits if isinstance(e, bool) or not isinstance(e, numbers.Integral)
    ]
    if bad:
        raise ValueError(
            f'exits {tuple(exits)} must be integer {what} indices; '
            f'{", ".join(map(repr, bad))} is not'
        )


def exit_index(upto: int | None, num_exits: int) -> int:
    """The last exit to compute: `upto` checked, or the deepest when None."""
    if upto is None:
        return num_exits - 1
    if not 0 <= upto < num_exits:
        raise ValueError(f'upto={upto} outside 0..{num_exits - 1}')
    return int(upto)
