"""Plain supervised training on the labels: the baseline every method beats."""

import dataclasses

import jax.numpy as jnp

from jaxdistill import losses
from jaxdistill import registry
from jaxdistill.methods.base import Method, ModelFns


@registry.register('method', 'supervised')
@dataclasses.dataclass(frozen=True)
class Supervised(Method):
    """Cross entropy (optionally label-smoothed), mean over labelled tokens."""

    model: ModelFns
    label_smoothing: float = 0.0

    @classmethod
    def from_config(cls, model, options):
        return cls(model=model, **options)

    def loss(self, params, extra, batch, rng, step):
        del extra, step
        logits = self.model.apply(params, batch, train=True, rng=rng)
        labels, where = self.model.labels(batch)
        ce = losses.cross_entropy(
            logits, labels, where=where, label_smoothing=self.label_smoothing
        )
        loss = losses.masked_mean(ce, where)
        return loss, supervised_metrics(logits, labels, where, loss)


def supervised_metrics(logits, labels, where, loss):
    """Scalar metrics every label-trained method reports."""
    nll = losses.cross_entropy(logits, labels, where=where)
    return {
        'train/loss': loss,
        'train/nll': losses.masked_mean(nll, where),
        'train/accuracy': losses.masked_mean(
            losses.accuracy(logits, labels, where=where), where
        ),
        'train/tokens': jnp.sum(where),
    }
