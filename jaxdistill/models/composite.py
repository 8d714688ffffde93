"""Composite Transformers: several capacities in one parameter tree (TSJT).

Two ways one tree holds models of several sizes (see docs/methods/tsjt.md):

* 'width' (composite A, nested width): capacity f keeps the leading f-fraction
  of every layer's attention heads and FFN units. The head width and d_model
  are the full model's, so each smaller model is literally a sub-network of
  the larger: its parameters are leading slices of the same arrays.
* 'depth' (composite B, stacked depth): capacity f is the shared embeddings
  plus the bottom f-fraction of the encoder and of the decoder layers, with
  its own final encoder and decoder LayerNorms; larger capacities add layers
  on top.
* 'decoder' (decoder exits): capacity f is the whole encoder and the bottom
  f-fraction of the decoder layers with its own final decoder LayerNorm: an
  exit inside the decoder, as self-distillation uses it
  (docs/methods/self_distillation.md). Its `apply_exits` runs the encoder and
  the decoder once and reads every exit off the way up.

The composite tree is

    {'model': params of the full Transformer (the largest capacity),
     'exit_norms': {NAME: {'encoder': LayerNorm params,   # 'depth' only
                           'decoder': LayerNorm params}}}  # not 'width'

and `Composite.extract(params, i)` returns plain `Transformer` parameters of
capacity i (for `capacity_config(i)`): what evaluation decodes with, and what
`python -m jaxdistill.extract` writes out as a standalone checkpoint.
"""

import dataclasses
from typing import Callable

import flax
import jax
import numpy as np

from jaxdistill.errors import ConfigError
from jaxdistill.methods.base import ModelFns
from jaxdistill.models import multi_exit
from jaxdistill.models import transformer as transformer_lib

KINDS = ('width', 'depth', 'decoder')


def capacity_name(fraction: float) -> str:
    """0.25 -> 'x0.25', 1.0 -> 'x1': the key of a capacity in metrics and CLIs."""
    return f'x{fraction:g}'


def _whole(value: float, what: str) -> int:
    n = int(round(value))
    if abs(value - n) > 1e-6 or n < 1:
        raise ConfigError(
            f'model.composite.fractions: {what} = {value:g} is not a positive '
            "whole number; choose fractions that divide the model's heads and "
            'FFN units (width) or layers (depth).'
        )
    return n


@dataclasses.dataclass(frozen=True)
class Composite:
    """Capacities `fractions` (increasing, the last 1.0) of `config`.

    Attributes:
      config: the full (largest) Transformer.
      kind: 'width', 'depth' or 'decoder'.
      fractions: capacity of each model as a fraction of the full model's
        heads and FFN units ('width'), layers ('depth') or decoder layers
        ('decoder').
    """

    config: transformer_lib.TransformerConfig
    kind: str
    fractions: tuple[float, ...]

    def __post_init__(self):
        where = 'model.composite'
        if self.kind not in KINDS:
            raise ConfigError(
                f'{where}.kind is {self.kind!r}; valid: {", ".join(KINDS)} '
                "(or '' for a plain Transformer)."
            )
        f = tuple(float(x) for x in self.fractions)
        if (
            len(f) < 2
            or any(b <= a for a, b in zip(f, f[1:]))
            or f[0] <= 0
            or f[-1] != 1.0
        ):
            raise ConfigError(
                f'{where}.fractions must increase from above 0 to 1.0 with at '
                f'least two entries, e.g. (0.25, 0.5, 1.0); got {self.fractions!r}.'
            )
        for i in range(len(f)):
            self.capacity_config(i)  # Raises if a slice is not whole.

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(capacity_name(f) for f in self.fractions)

    def index(self, name: str) -> int:
        """The capacity called `name` ('x0.5'); ConfigError naming the choices."""
        if name not in self.names:
            raise ConfigError(
                f'No capacity {name!r}; this composite has {", ".join(self.names)}.'
            )
        return self.names.index(name)

    def capacity_config(self, i: int) -> transformer_lib.TransformerConfig:
        """The plain `TransformerConfig` of capacity i."""
        c, f = self.config, self.fractions[i]
        if self.kind == 'width':
            heads = _whole(c.num_heads * f, f'num_heads x {f:g}')
            return dataclasses.replace(
                c,
                num_heads=heads,
                d_ff=_whole(c.d_ff * f, f'd_ff x {f:g}'),
                # Heads keep the full model's width (0 = d_model // heads).
                head_size=0 if heads * c.head_dim == c.d_model else c.head_dim,
            )
        decoder = _whole(c.num_decoder_layers * f, f'num_decoder_layers x {f:g}')
        if self.kind == 'decoder':
            return dataclasses.replace(c, num_decoder_layers=decoder)
        return dataclasses.replace(
            c,
            num_encoder_layers=_whole(
                c.num_encoder_layers * f, f'num_encoder_layers x {f:g}'
            ),
            num_decoder_layers=decoder,
        )

    def init(self, rng, inputs, targets) -> dict:
        """Composite parameters; each exit norm starts as the full model's."""
        model = transformer_lib.Transformer(self.config)
        full = model.init({'params': rng}, inputs, targets, train=False)['params']
        norms = {}
        stacks = {'depth': ('encoder', 'decoder'), 'decoder': ('decoder',)}
        for name in self.names[:-1]:
            if self.kind in stacks:
                norms[name] = {s: full[s]['norm'] for s in stacks[self.kind]}
        return {'model': full, 'exit_norms': norms}

    def extract(self, params: dict, i: int) -> dict:
        """Plain Transformer parameters of capacity i (slices of `params`)."""
        full = params['model']
        if i == len(self.fractions) - 1:
            return full
        cfg = self.capacity_config(i)
        flat = flax.traverse_util.flatten_dict(full)
        out = {}
        if self.kind == 'width':
            for path, x in flat.items():
                out[path] = _slice_width(path, x, cfg.num_heads, cfg.d_ff)
        else:
            norms = params['exit_norms'][self.names[i]]
            keep = {
                'encoder': cfg.num_encoder_layers,
                'decoder': cfg.num_decoder_layers,
            }
            keep = {stack: n for stack, n in keep.items() if stack in norms}
            for path, x in flat.items():
                stack = path[0]
                if stack in keep and path[1].startswith('layers_'):
                    if int(path[1].split('_')[1]) >= keep[stack]:
                        continue
                if stack in keep and path[1] == 'norm':
                    x = norms[stack][path[2]]
                out[path] = x
        return flax.traverse_util.unflatten_dict(out)

    def num_params(self, params: dict, i: int) -> int:
        return int(sum(np.size(x) for x in jax.tree.leaves(self.extract(params, i))))


def _slice_width(path: tuple, x, heads: int, d_ff: int):
    """The leading `heads` heads / `d_ff` units of one parameter, by its name."""
    if len(path) >= 3 and path[-3] in ('self_attn', 'cross_attn'):
        proj, leaf = path[-2], path[-1]
        if proj in ('query', 'key', 'value'):  # kernel [D, H, Dh], bias [H, Dh]
            return x[:, :heads] if leaf == 'kernel' else x[:heads]
        if proj == 'out' and leaf == 'kernel':  # [H, Dh, D]
            return x[:heads]
    if len(path) >= 3 and path[-3] == 'ffn':
        proj, leaf = path[-2], path[-1]
        if proj == 'wi':  # kernel [D, F], bias [F]
            return x[:, :d_ff] if leaf == 'kernel' else x[:d_ff]
        if proj == 'wo' and leaf == 'kernel':  # [F, D]
            return x[:d_ff]
    return x


@dataclasses.dataclass(frozen=True)
class CompositeFns(ModelFns):
    """`ModelFns` (apply = the largest capacity) plus every capacity.

    apply_capacity: (params, batch, i, *, train, rng=None) -> logits [B, L, V]
      of capacity i, computed on `composite.extract(params, i)`.
    apply_exits: 'decoder' composites only (else None): the multi-exit face
      (`models/multi_exit.py`) over every capacity, smallest first, in one
      pass: (params, batch, *, train, rng=None, upto=None, only_last=False)
      -> {'logits': list of [B, L, V], 'features': list of [B, L, D]}, the
      features being each exit's normalised decoder states.
    num_exits: the number of capacities.
    """

    composite: Composite = None
    apply_capacity: Callable = None
    apply_exits: Callable = None
    num_exits: int = 1

    @property
    def names(self) -> tuple[str, ...]:
        return self.composite.names

    def extract(self, params, i: int):
        return self.composite.extract(params, i)

    def eval_models(self, params) -> dict:
        """Every capacity as plain Transformer parameters, largest first."""
        names = self.names
        return {names[i]: self.extract(params, i) for i in reversed(range(len(names)))}


def make_fns(composite: Composite, labels) -> CompositeFns:
    """`CompositeFns` for `{'inputs', 'targets'}` translation batches."""
    models = [
        transformer_lib.Transformer(composite.capacity_config(i))
        for i in range(len(composite.fractions))
    ]

    def init(rng, batch):
        return composite.init(rng, batch['inputs'], batch['targets'])

    def apply_capacity(params, batch, i, *, train, rng=None):
        rngs = {'dropout': rng} if train and rng is not None else None
        return models[i].apply(
            {'params': composite.extract(params, i)},
            batch['inputs'],
            batch['targets'],
            train=train,
            rngs=rngs,
        )

    def apply(params, batch, *, train, rng=None):
        return apply_capacity(params, batch, len(models) - 1, train=train, rng=rng)

    full = models[-1]
    depths = [m.config.num_decoder_layers for m in models]
    norm = flax.linen.LayerNorm(dtype=full.config.dtype)

    def apply_exits(params, batch, *, train, rng=None, upto=None, only_last=False):
        last = multi_exit.exit_index(upto, len(models))
        rngs = {'dropout': rng} if train and rng is not None else None
        variables = {'params': params['model']}
        states = full.apply(
            variables,
            batch['inputs'],
            batch['targets'],
            train=train,
            upto=depths[last],
            rngs=rngs,
            method=transformer_lib.Transformer.decoder_states,
        )
        out = {'logits': [], 'features': []}
        for i in range(last if only_last else 0, last + 1):
            if i == len(models) - 1:
                scale = params['model']['decoder']['norm']
            else:
                scale = params['exit_norms'][composite.names[i]]['decoder']
            h = norm.apply({'params': scale}, states[depths[i] - 1])
            out['features'].append(h)
            out['logits'].append(
                full.apply(variables, h, method=transformer_lib.Transformer.logits)
            )
        return out

    return CompositeFns(
        init=init,
        apply=apply,
        labels=labels,
        composite=composite,
        apply_capacity=apply_capacity,
        apply_exits=apply_exits if composite.kind == 'decoder' else None,
        num_exits=len(models),
    )
