"""Self-distillation with multi-exit networks ("Be Your Own Teacher").

The deepest exit of one network teaches its shallower exits; no separate
teacher is trained or stored. See docs/methods/self_distillation.md.
"""

import dataclasses

import jax.numpy as jnp
import optax

from jaxdistill import losses
from jaxdistill import losses_self_distill
from jaxdistill import registry
from jaxdistill import schedules
from jaxdistill.errors import ConfigError, PluginError
from jaxdistill.methods.base import Method, ModelFns


@registry.register('method', 'self_distill')
@dataclasses.dataclass(frozen=True)
class SelfDistill(Method):
    """(1−α)·Σ CE + α·Σ T²·KL(deepest ‖ exit) + β·Σ ‖F_exit − F_deepest‖².

    alpha, temperature and beta are schedules (`step -> value`); configs
    give numbers or schedule dicts (see `schedules.from_config`).
    """

    schedule_keys = ('alpha', 'temperature', 'beta')
    model: ModelFns
    alpha: optax.Schedule = schedules.constant(0.1)
    temperature: optax.Schedule = schedules.constant(3.0)
    beta: optax.Schedule = schedules.constant(1e-6)

    @classmethod
    def from_config(cls, model, options):
        # α weighs the labels by 1 − α; T divides logits; β weighs a distance.
        bounds = {
            'alpha': {'low': 0.0, 'high': 1.0},
            'temperature': {'low': 0.0, 'low_open': True},
            'beta': {'low': 0.0},
        }
        built = {
            key: schedules.from_config(options[key], name=f'method.{key}', **kw)
            for key, kw in bounds.items()
            if key in options
        }
        if getattr(model, 'apply_exits', None) is None:
            raise ConfigError(
                "method 'self_distill' needs a multi-exit model (its ModelFns "
                'has no apply_exits): an image_classification or '
                'text_classification task, translation with model.composite.'
                "kind = 'decoder' (exits inside the decoder), or a task of your "
                'own whose model_fns is a jaxdistill.models.multi_exit.'
                'MultiExitFns (docs/extending.md).'
            )
        exits = getattr(model, 'num_exits', None)
        if exits is not None and exits < 2:
            # Its loss would be (1 - alpha) * CE: the baseline with a scaled
            # learning signal, not what anyone asking for this method wants.
            raise ConfigError(
                f"method 'self_distill' needs a model with shallow exits to "
                f'teach; this one has {exits} exit (e.g. model.exits=()). '
                'Name the exits to train (e.g. model.exits=(0, 1)), or train '
                "the single-exit baseline with method.name='supervised'."
            )
        return cls(model=model, **built)

    def loss(self, params, extra, batch, rng, step):
        del extra
        out = self.model.apply_exits(params, batch, train=True, rng=rng)
        labels, where = self.model.labels(batch)
        # Sequence models' exits give [B, L, ...]: every token is an example.
        labels, where = jnp.reshape(labels, -1), jnp.reshape(where, -1)
        logits = [jnp.reshape(z, (labels.shape[0], -1)) for z in out['logits']]
        features = [jnp.reshape(f, (labels.shape[0], -1)) for f in out['features']]
        widths = sorted({f.shape[-1] for f in features})
        if len(widths) != 1:  # The hint would broadcast a width-1 feature.
            raise PluginError(
                f"self_distill: the model's exit features differ in width "
                f'({widths}); the feature hint compares every exit with the '
                'deepest, so all must have the same width (models/multi_exit.py).'
            )
        alpha = self.alpha(step)
        per_example, terms = losses_self_distill.self_distill_loss(
            logits,
            features,
            labels,
            alpha=alpha,
            temperature=self.temperature(step),
            beta=self.beta(step),
            where=where,
        )
        loss = losses.masked_mean(per_example, where)
        return loss, _metrics(logits, labels, where, loss, terms, alpha)

    def eval_models(self, params, extra):
        """A composite's exits as plain models, deepest first; else the model."""
        if hasattr(self.model, 'eval_models'):
            return self.model.eval_models(params)
        return super().eval_models(params, extra)

    def eval_params(self, params, extra):
        del extra
        if hasattr(self.model, 'extract'):
            return self.model.extract(params, self.model.num_exits - 1)
        return params


def _metrics(logits, labels, where, loss, terms, alpha):
    """Scalar metrics: totals and per exit (exit K-1 is the deepest)."""
    mean = lambda v: losses.masked_mean(v, where)
    aux = {
        'train/loss': loss,
        'train/nll': mean(terms['ce'][-1]),
        'train/accuracy': mean(losses.accuracy(logits[-1], labels, where=where)),
        'train/kd': mean(jnp.sum(terms['kd'], axis=0)),
        'train/hint': mean(jnp.sum(terms['hint'], axis=0)),
        'train/alpha': alpha,
        'train/tokens': jnp.sum(where),
    }
    for i, z in enumerate(logits[:-1]):
        aux[f'train/nll_exit{i}'] = mean(terms['ce'][i])
        aux[f'train/accuracy_exit{i}'] = mean(losses.accuracy(z, labels, where=where))
    return aux
