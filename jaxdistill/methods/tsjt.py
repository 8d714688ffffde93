"""Two-Stage Joint-Training (TSJT) of the capacities of a composite model.

Our reading of "One-stop Training of Multiple Capacity Models" (Jiang et al.,
arXiv 2305.14066); see docs/methods/tsjt.md. Every capacity of one composite
(`models/composite.py`) is trained in the same step:

  stage 1 (step < stage2_start):  Σ_c label_weight · CE(z_c, y)
  stage 2:                        Σ_c label_weight · CE(z_c, y)
                                  + distill_weight · Σ_{c < C} T²·KL(z_C ‖ z_c)

with z_C the largest capacity's logits from the same forward pass that
gives its own label loss (dropout included), under stop-gradient, so the
teacher costs nothing extra. Stage 1 and stage 2 are separate compiled steps
(`phase`), so stage 1 holds no distillation work at all. With more than three
capacities, `sample_middle=k` trains the smallest, the largest and k of the
middle ones per step, drawn without replacement (the sandwich rule), still in
one compiled step (`lax.switch` runs only the drawn branch).
"""

import dataclasses
import functools
import jax
import jax.numpy as jnp
import optax

from jaxdistill import losses
from jaxdistill import registry
from jaxdistill import schedules
from jaxdistill.errors import ConfigError
from jaxdistill.methods.base import Method, ModelFns

STAGES = ('stage1', 'stage2')


@registry.register('method', 'tsjt')
@dataclasses.dataclass(frozen=True)
class TwoStageJoint(Method):
    """Joint label training of every capacity, then in-place distillation."""

    model: ModelFns
    # First step of stage 2 (distillation from the largest capacity).
    stage2_start: int = 0
    schedule_keys = ('label_weight', 'distill_weight')
    # Weight of every capacity's label loss (a schedule of the step).
    label_weight: optax.Schedule = schedules.constant(1.0)
    # Weight of each smaller capacity's distillation term in stage 2.
    distill_weight: optax.Schedule = schedules.constant(1.0)
    temperature: float = 1.0
    label_smoothing: float = 0.0
    # Middle capacities trained per step (0 = all of them).
    sample_middle: int = 0

    @classmethod
    def from_config(cls, model, options):
        # The options' own checks first: `check_method_config` runs them
        # without a model, up to the first look at it.
        options = dict(options)
        for key in ('label_weight', 'distill_weight'):
            if key in options:
                options[key] = schedules.from_config(
                    options[key], name=f'method.{key}', low=0.0
                )
        method = cls(model=model, **options)
        schedules.check_range(
            method.temperature, name='method.temperature', low=0.0, low_open=True
        )
        if method.stage2_start < 0:
            raise ConfigError(f'method.stage2_start={method.stage2_start} is negative.')
        if getattr(model, 'apply_capacity', None) is None:
            raise ConfigError(
                "method 'tsjt' needs a composite model: set model.composite.kind "
                "to 'width', 'depth' or 'decoder' and model.composite.fractions."
            )
        middle = len(model.names) - 2
        if not 0 <= method.sample_middle <= middle:
            raise ConfigError(
                f'method.sample_middle={method.sample_middle}: the composite has '
                f'{middle} middle capacities ({", ".join(model.names[1:-1]) or "none"}).'
            )
        return method

    def phase(self, step: int) -> str:
        return 'stage1' if step < self.stage2_start else 'stage2'

    def stage(self, step: int) -> int:
        return int(step >= self.stage2_start)

    def _capacity(self, i, params, batch, rng, labels, where, teacher):
        """(weighted loss, (nll, accuracy, kd)) of capacity i."""
        logits = self.model.apply_capacity(
            params, batch, i, train=True, rng=jax.random.fold_in(rng, i)
        )
        ce = losses.cross_entropy(
            logits, labels, where=where, label_smoothing=self.label_smoothing
        )
        nll = losses.cross_entropy(logits, labels, where=where)
        stats = [
            losses.masked_mean(ce, where),
            losses.masked_mean(nll, where),
            losses.masked_mean(losses.accuracy(logits, labels, where=where), where),
        ]
        if teacher is not None:
            kd = losses.distill_kl(
                logits, teacher, temperature=self.temperature, where=where
            )
            stats.append(losses.masked_mean(kd, where))
        else:
            stats.append(jnp.zeros((), jnp.float32))
        return logits, stats

    def loss(self, params, extra, batch, rng, step, phase='stage2'):
        del extra
        if phase not in STAGES:
            raise ValueError(f'unknown phase {phase!r}')
        names = self.model.names
        n = len(names)
        labels, where = self.model.labels(batch)
        lw, dw = self.label_weight(step), self.distill_weight(step)
        run = functools.partial(
            self._capacity, params=params, batch=batch, labels=labels, where=where
        )
        teacher_logits, top = run(n - 1, rng=rng, teacher=None)
        teacher = jax.lax.stop_gradient(teacher_logits) if phase == 'stage2' else None
        total = lw * top[0]
        aux = _stats(names[-1], top)
        fixed = list(range(n - 1)) if not self.sample_middle else [0]
        for i in fixed:
            _, s = run(i, rng=rng, teacher=teacher)
            total = total + lw * s[0] + dw * s[3]
            aux.update(_stats(names[i], s))
        if self.sample_middle:
            draws = jax.random.choice(
                jax.random.fold_in(rng, n),
                jnp.arange(1, n - 1),
                (self.sample_middle,),
                replace=False,
            )
            branches = [
                functools.partial(lambda i, r: run(i, rng=r, teacher=teacher)[1], i)
                for i in range(1, n - 1)
            ]
            for k in range(self.sample_middle):
                s = jax.lax.switch(
                    draws[k] - 1, branches, jax.random.fold_in(rng, n + 1 + k)
                )
                total = total + lw * s[0] + dw * s[3]
                aux.update(_stats(f'middle{k}', s))
        aux.update(
            {
                'train/loss': total,
                'train/nll': aux[f'train/{names[-1]}/nll'],
                'train/accuracy': aux[f'train/{names[-1]}/accuracy'],
                'train/label_weight': lw,
                'train/distill_weight': dw
                if teacher is not None
                else jnp.zeros_like(dw),
                'train/tokens': jnp.sum(where),
            }
        )
        return total, aux

    def eval_models(self, params, extra):
        """Every capacity as plain Transformer parameters, largest first (the
        trainer also reports the first one's metrics unprefixed)."""
        del extra
        return self.model.eval_models(params)

    def eval_params(self, params, extra):
        del extra
        return self.model.extract(params, len(self.model.names) - 1)


def _stats(name, s):
    """Per-capacity metrics; kd is 0 in stage 1 (and for the largest)."""
    return {
        f'train/{name}/nll': s[1],
        f'train/{name}/accuracy': s[2],
        f'train/{name}/kd': s[3],
    }
