"""Multi-task learning with scheduled auxiliary weights; MT2ST.

Liu et al., "MT2ST: Adaptive Multi-Task to Single-Task Learning" (arXiv
2406.18038); see docs/methods/mt2st.md.

The loss is w_0(step) · primary + Σ_a w_a(step) · aux_a, every weight an
Optax schedule (`schedules.from_config`): a constant is plain multi-task
learning (MTL), a 0 is single-task learning (STL), 'diminish' is MT2ST's
Diminish (w = w0^(2^epoch)), 'switch' its Switch. Once an auxiliary weight
is provably at most `threshold` for good (`schedules.is_zero_after`), the
method moves to a phase without that task: the compiled step has neither
its forward nor its backward pass, and the task's batches stop carrying its
data (`active_aux` tells the data pipeline which steps need it).
"""

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxdistill import losses
from jaxdistill import registry
from jaxdistill import schedules
from jaxdistill.errors import ConfigError
from jaxdistill.methods.base import Method, ModelFns
from jaxdistill.methods.supervised import supervised_metrics


def plain_spec(spec):
    """ConfigDicts -> dicts, so specs compare and print plainly."""
    if hasattr(spec, 'to_dict'):
        return spec.to_dict()
    return dict(spec) if isinstance(spec, Mapping) else spec


def aux_off_steps(aux_weights, threshold: float = 0.0) -> dict:
    """name -> first step from which its weight stays <= threshold, or None.

    Args:
      aux_weights: name -> schedule spec (`config.method.aux_weights`).
      threshold: weights with |w| <= threshold count as zero.
    """
    return {
        name: schedules.is_zero_after(
            plain_spec(spec), threshold=threshold, name=f'method.aux_weights.{name}'
        )
        for name, spec in sorted(plain_spec(aux_weights or {}).items())
    }


def active_aux(off_steps: Mapping[str, Any], step: int) -> tuple:
    """Sorted names of the auxiliary tasks still computed at `step`."""
    return tuple(
        name for name, off in sorted(off_steps.items()) if off is None or step < off
    )


def check_options(options, aux_names) -> None:
    """ConfigError for `config.method` options a run refuses: a negative
    threshold, a weight spec that is no schedule, or a weight for an
    auxiliary task not among `aux_names` (the task's) that is ever non-zero.
    `from_config` and the task's static check both run it."""
    threshold = options.get('threshold', 0.0)
    if not isinstance(threshold, (int, float)) or threshold < 0:
        raise ConfigError(f'method.threshold must be a number >= 0, got {threshold!r}.')
    schedules.from_config(
        plain_spec(options.get('primary_weight', 1.0)),
        name='method.primary_weight',
        low=0.0,
    )
    aux_weights = plain_spec(options.get('aux_weights', {}))
    for name, spec in aux_weights.items():
        schedules.from_config(spec, name=f'method.aux_weights.{name}', low=0.0)
    for name, off in aux_off_steps(aux_weights, threshold).items():
        if name not in aux_names and off != 0:
            raise ConfigError(
                f'method.aux_weights.{name}: the task has no auxiliary loss '
                f'{name!r}; it has: {", ".join(sorted(aux_names)) or "none"}.'
            )


@registry.register('method', 'multitask')
@dataclasses.dataclass(frozen=True)
class MultiTask(Method):
    """Primary cross entropy plus weighted auxiliary losses, phase-pruned."""

    model: ModelFns
    # Schedule spec of the primary task's weight.
    schedule_keys = ('primary_weight',)
    primary_weight: Any = 1.0
    # Auxiliary task name -> schedule spec of its weight.
    aux_weights: Any = dataclasses.field(default_factory=dict)
    # Weights at most this (in absolute value) count as zero: their task is
    # dropped from the compiled step from the first step it stays below.
    threshold: float = 0.0
    label_smoothing: float = 0.0

    @classmethod
    def from_config(cls, model, options):
        options = dict(options)
        options['aux_weights'] = plain_spec(options.get('aux_weights', {}))
        options['primary_weight'] = plain_spec(options.get('primary_weight', 1.0))
        check_options(options, getattr(model, 'aux_losses', {}))
        return cls(model=model, **options)

    @functools.cached_property
    def weights(self) -> dict:
        """'primary' and every auxiliary name -> optax schedule."""
        out = {
            'primary': schedules.from_config(
                self.primary_weight, name='method.primary_weight', low=0.0
            )
        }
        for name, spec in self.aux_weights.items():
            out[name] = schedules.from_config(
                spec, name=f'method.aux_weights.{name}', low=0.0
            )
        return out

    def frozen(self, params, phase):
        """Freezes the parameters only a switched-off auxiliary task uses
        (`model.aux_params`: name -> top-level parameter keys)."""
        owned = getattr(self.model, 'aux_params', {}) or {}
        active = self.phase(0) if phase is None else phase
        off = {k for name, keys in owned.items() if name not in active for k in keys}
        if not off:
            return None
        return {
            key: jax.tree.map(lambda _, f=key in off: f, value)
            for key, value in params.items()
        }

    @functools.cached_property
    def off_steps(self) -> dict:
        return aux_off_steps(self.aux_weights, self.threshold)

    def phase(self, step: int):
        """The tuple of auxiliary tasks the step at `step` computes."""
        return active_aux(self.off_steps, step)

    def stage(self, step: int) -> int:
        """How many auxiliary tasks are switched off at `step`."""
        return len(self.off_steps) - len(active_aux(self.off_steps, step))

    def loss(self, params, extra, batch, rng, step, phase=None):
        del extra
        active = self.phase(0) if phase is None else phase
        logits = self.model.apply(params, batch, train=True, rng=rng)
        labels, where = self.model.labels(batch)
        ce = losses.cross_entropy(
            logits, labels, where=where, label_smoothing=self.label_smoothing
        )
        ce = losses.masked_mean(ce, where)
        w0 = self.weights['primary'](step)
        total = w0 * ce
        aux = supervised_metrics(logits, labels, where, ce)
        aux['train/primary_weight'] = w0
        # Every phase reports the same keys (a log window may span a switch);
        # a task that is not computed reports loss 0 and weight 0.
        for name in sorted(self.aux_weights):
            a_loss = w = jnp.zeros((), jnp.float32)
            if name in active:
                a_loss = self.model.aux_losses[name](params, batch, rng=rng)
                w = self.weights[name](step)
                total = total + w * a_loss
            aux[f'train/{name}_loss'] = a_loss
            aux[f'train/{name}_weight'] = w
        aux['train/aux_tasks'] = jnp.asarray(len(active), jnp.float32)
        aux['train/loss'] = total
        return total, aux
