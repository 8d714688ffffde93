"""A sentence classifier and skip-gram over one shared word-embedding table.

Parameters (a plain dict, so a method can see which head owns what):

    {'embed': [V, D]        shared input embeddings (word2vec's syn0),
     'classifier': {...}    the sentence head (`PooledClassifier`),
     'skipgram_output': [V, D]  skip-gram's output vectors (syn1neg); only
                            when the skip-gram head exists}

The primary head embeds `batch['tokens']` [B, L] (0 = PAD), pools and
classifies. The auxiliary skip-gram head scores `batch['sg_input']` [P]
(context words, through `embed`) against `batch['sg_target']` [P] (centre
words) and `batch['sg_negatives']` [P, K] (through `skipgram_output`), with
`models.skipgram.sgns_loss`. Both heads differentiate into `embed`.
"""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdistill import losses
from jaxdistill.errors import ConfigError
from jaxdistill.methods.base import ModelFns
from jaxdistill.models import skipgram

POOLINGS = ('mean', 'cnn')


class PooledClassifier(nn.Module):
    """Embedded tokens -> class logits: masked mean (a deep averaging network)
    or Kim's CNN (max over time of convolutions of several widths).

    Attributes:
      num_classes: outputs.
      pooling: 'mean' | 'cnn'.
      hidden: widths of the ReLU layers after pooling.
      filter_widths / num_filters: the CNN's convolutions (pooling='cnn').
      dropout_rate: on the embedded tokens and before the output layer.
    """

    num_classes: int = 2
    pooling: str = 'mean'
    hidden: tuple = (128,)
    filter_widths: tuple = (3, 4, 5)
    num_filters: int = 100
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, embedded, mask, *, train: bool):
        """embedded: [B, L, D] float; mask: [B, L] bool -> logits [B, C]."""
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(embedded)
        m = mask[..., None].astype(x.dtype)
        if self.pooling == 'mean':
            h = jnp.sum(x * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
        else:
            x = x * m  # PAD positions as zeros, like the convolutions' edges.
            pooled = []
            for w in self.filter_widths:
                c = nn.relu(nn.Conv(self.num_filters, (w,), padding='SAME')(x))
                pooled.append(jnp.max(jnp.where(m > 0, c, 0.0), axis=1))
            h = jnp.concatenate(pooled, axis=-1)
        for width in self.hidden:
            h = nn.relu(nn.Dense(width)(h))
        h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        return nn.Dense(self.num_classes)(h)


@dataclasses.dataclass(frozen=True)
class MultiTaskFns(ModelFns):
    """`ModelFns` of the primary task plus auxiliary losses by name.

    aux_losses: name -> (params, batch, *, rng) -> scalar loss; each reads
      only its own keys of the batch.
    """

    aux_losses: Mapping[str, Callable[..., Any]] = dataclasses.field(
        default_factory=dict
    )
    # name -> top-level parameter keys only that auxiliary task uses (frozen,
    # update and all, once the task is switched off).
    aux_params: Mapping[str, tuple] = dataclasses.field(default_factory=dict)


def skipgram_batch_loss(params, batch):
    """Mean SGNS loss over the valid pairs of `batch` -> scalar.

    batch: 'sg_input' [P] int (context words), 'sg_target' [P] int (centre
    words), 'sg_negatives' [P, K] int, 'sg_where' [P] bool (pairs to count).
    A negative equal to its pair's centre word is skipped, as in word2vec.
    """
    u = params['embed'].at[batch['sg_input']].get(mode='clip')
    out = params['skipgram_output']
    v = out.at[batch['sg_target']].get(mode='clip')
    neg = out.at[batch['sg_negatives']].get(mode='clip')
    where = batch['sg_where']
    per_pair = skipgram.sgns_loss(
        u,
        v,
        neg,
        where=where,
        negative_where=batch['sg_negatives'] != batch['sg_target'][:, None],
    )
    return losses.masked_mean(per_pair, where)


def check_fields(head: PooledClassifier, dim) -> None:
    """ConfigError naming the first of the head's or the table's fields that
    cannot build a model (pooling, sizes, dropout); `make_fns` and the
    task's static check both run it."""
    if head.pooling not in POOLINGS:
        raise ConfigError(
            f'model.pooling={head.pooling!r}; valid: {", ".join(POOLINGS)}.'
        )
    sizes = {
        'model.dim': dim,
        'model.hidden': head.hidden,
        'model.filter_widths': head.filter_widths,
        'model.num_filters': head.num_filters,
    }
    for key, value in sizes.items():
        values = value if isinstance(value, (tuple, list)) else (value,)
        if any(not isinstance(v, int) or v < 1 for v in values):
            raise ConfigError(f'{key}={value!r}: sizes must be integers >= 1.')
    if not 0.0 <= head.dropout_rate < 1.0:
        raise ConfigError(
            f'model.dropout_rate={head.dropout_rate} must be in [0, 1) '
            '(the fraction of units dropped).'
        )


def make_fns(
    head: PooledClassifier,
    *,
    vocab_size: int,
    dim: int,
    embed_init_scale: float,
    with_skipgram: bool,
    pretrained: tuple | None = None,
) -> MultiTaskFns:
    """`MultiTaskFns` for `head` over a [vocab_size, dim] shared table.

    The classification head reads `batch['tokens']` [B, L] and
    `batch['label']` [B] (negative = padding row). With `with_skipgram`
    the parameters also hold the skip-gram output table (zeros, as in
    word2vec) and `aux_losses` has 'skipgram'. `pretrained`, (ids, [n, dim]
    vectors), sets those rows of the initial table (e.g. word2vec vectors);
    the other rows keep the random init.
    """
    check_fields(head, dim)

    def init(rng, batch):
        e_rng, c_rng = jax.random.split(rng)
        embed = embed_init_scale * jax.random.normal(e_rng, (vocab_size, dim))
        if pretrained is not None:
            ids, vectors = pretrained
            embed = embed.at[jnp.asarray(ids)].set(jnp.asarray(vectors))
        tokens = batch['tokens']
        mask = tokens > 0
        dummy = jnp.zeros((*tokens.shape, dim), jnp.float32)
        params = {
            'embed': embed.astype(jnp.float32),
            'classifier': head.init(c_rng, dummy, mask, train=False)['params'],
        }
        if with_skipgram:
            params['skipgram_output'] = jnp.zeros((vocab_size, dim), jnp.float32)
        return params

    def apply(params, batch, *, train, rng=None):
        tokens = batch['tokens']
        embedded = params['embed'].at[tokens].get(mode='clip')
        rngs = {'dropout': rng} if train and rng is not None else None
        return head.apply(
            {'params': params['classifier']},
            embedded,
            tokens > 0,
            train=train,
            rngs=rngs,
        )

    def labels(batch):
        label = batch['label']
        return jnp.maximum(label, 0), label >= 0

    aux = {}
    if with_skipgram:
        aux['skipgram'] = lambda params, batch, *, rng=None: skipgram_batch_loss(
            params, batch
        )
    return MultiTaskFns(
        init=init,
        apply=apply,
        labels=labels,
        aux_losses=aux,
        aux_params={'skipgram': ('skipgram_output',)} if aux else {},
    )
