"""Plain supervised training on the labels: the baseline every method beats."""

import dataclasses

import jax.numpy as jnp

from jaxdistill import losses
from jaxdistill import registry
from jaxdistill.errors import ConfigError
from jaxdistill.methods.base import Method, ModelFns


@registry.register('method', 'supervised')
@dataclasses.dataclass(frozen=True)
class Supervised(Method):
    """Cross entropy (optionally label-smoothed), mean over labelled tokens.

    `output_chunk_rows` > 0 fuses the output layer with the loss
    (`losses.linear_cross_entropy`, blocks of that many rows) for models
    whose `ModelFns.features` is set: the same loss and gradients without
    materialising all logits, which is faster on a CPU where passes over a
    [tokens, vocabulary] array are memory-bound. 0 (the default): logits
    from `apply`, then `losses.cross_entropy`.
    """

    model: ModelFns
    label_smoothing: float = 0.0
    output_chunk_rows: int = 0

    @classmethod
    def from_config(cls, model, options):
        method = cls(model=model, **options)
        check_output_chunk_rows(method.output_chunk_rows, model)
        return method

    def loss(self, params, extra, batch, rng, step):
        del extra, step
        labels, where = self.model.labels(batch)
        if self.output_chunk_rows:
            return self._fused_loss(params, batch, rng, labels, where)
        logits = self.model.apply(params, batch, train=True, rng=rng)
        ce = losses.cross_entropy(
            logits, labels, where=where, label_smoothing=self.label_smoothing
        )
        loss = losses.masked_mean(ce, where)
        return loss, supervised_metrics(logits, labels, where, loss)

    def _fused_loss(self, params, batch, rng, labels, where):
        h, table = self.model.features(params, batch, train=True, rng=rng)
        where = jnp.broadcast_to(where, labels.shape)
        count = jnp.maximum(jnp.sum(where), 1)
        flat = lambda x: x.reshape(-1)
        loss, nll, correct = losses.linear_cross_entropy(
            h.reshape(-1, h.shape[-1]),
            table,
            flat(labels),
            flat(where) / count,
            label_smoothing=self.label_smoothing,
            chunk_rows=self.output_chunk_rows,
        )
        return loss, _metrics(loss, nll, correct.astype(jnp.float32), flat(where))


def check_output_chunk_rows(rows, model: ModelFns) -> None:
    """ConfigError unless `method.output_chunk_rows` is an int >= 0 that
    `model` can use (> 0 needs `ModelFns.features`)."""
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
        raise ConfigError(
            f'method.output_chunk_rows={rows!r} must be an int >= 0 '
            '(0: no fused output layer).'
        )
    if rows and model.features is None:
        raise ConfigError(
            f'method.output_chunk_rows={rows} fuses the output layer, but '
            "this task's model offers no features/output table; set it to 0."
        )


def supervised_metrics(logits, labels, where, loss):
    """Scalar metrics every label-trained method reports."""
    nll = losses.cross_entropy(logits, labels, where=where)
    return _metrics(loss, nll, losses.accuracy(logits, labels, where=where), where)


def _metrics(loss, nll, correct, where):
    return {
        'train/loss': loss,
        'train/nll': losses.masked_mean(nll, where),
        'train/accuracy': losses.masked_mean(correct, where),
        'train/tokens': jnp.sum(where),
    }
