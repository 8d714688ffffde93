"""Classic knowledge distillation from a frozen teacher trained beforehand.

Hinton et al. 2015: (1 − α)·CE(student, labels) + α·T²·KL(teacher ‖ student).
The teacher is another run of the library (`teacher_workdir`), loaded once by
the task (`ModelFns.load_teacher`, which checks it shares the student's
vocabulary) and kept frozen in the method's extra state. It is the baseline
that joint training (TSJT) is measured against: train the large model, then
distil the small one from it.
"""

import dataclasses
from typing import Any

import jax
import optax

from jaxdistill import losses
from jaxdistill import registry
from jaxdistill import schedules
from jaxdistill.errors import ConfigError
from jaxdistill.methods.base import Method, ModelFns
from jaxdistill.methods.supervised import supervised_metrics


@registry.register('method', 'distill')
@dataclasses.dataclass(frozen=True)
class Distill(Method):
    """(1 − alpha)·CE + alpha·T²·KL(teacher ‖ student), teacher frozen."""

    model: ModelFns
    # A finished run of the library whose latest checkpoint is the teacher.
    teacher_workdir: str = ''
    # Weight of the distillation term (a schedule of the step).
    schedule_keys = ('alpha',)
    alpha: optax.Schedule = schedules.constant(0.5)
    temperature: float = 1.0
    label_smoothing: float = 0.0
    # Filled by from_config: the teacher's ModelFns and parameters (numpy).
    teacher: Any = None
    teacher_params: Any = dataclasses.field(default=None, repr=False, compare=False)

    @classmethod
    def from_config(cls, model, options):
        options = dict(options)
        if not options.get('teacher_workdir'):
            raise ConfigError(
                "method 'distill' needs method.teacher_workdir: the workdir of a "
                'finished training run whose latest checkpoint is the teacher.'
            )
        if 'alpha' in options:  # Labels get 1 − alpha.
            options['alpha'] = schedules.from_config(
                options['alpha'], name='method.alpha', low=0.0, high=1.0
            )
        schedules.check_range(
            options.get('temperature', cls.temperature),
            name='method.temperature',
            low=0.0,
            low_open=True,
        )
        if model.load_teacher is None:
            # Read for its model alone (translate, extract, a run used as
            # a teacher itself): eval_params needs no teacher.
            return cls(model=model, **options)
        teacher, params = model.load_teacher(options['teacher_workdir'])
        return cls(model=model, teacher=teacher, teacher_params=params, **options)

    def init_extra(self, rng, params):
        """The teacher's parameters, frozen (no optimizer state)."""
        del rng, params
        if self.teacher is None:
            raise ConfigError(
                "method 'distill': this task cannot load teachers (its "
                'ModelFns has no load_teacher); distillation from a finished '
                'run is built for translation.'
            )
        return {'teacher': self.teacher_params}

    def loss(self, params, extra, batch, rng, step):
        logits = self.model.apply(params, batch, train=True, rng=rng)
        teacher = jax.lax.stop_gradient(
            self.teacher.apply(extra['teacher'], batch, train=False)
        )
        labels, where = self.model.labels(batch)
        alpha = self.alpha(step)
        ce = losses.cross_entropy(
            logits, labels, where=where, label_smoothing=self.label_smoothing
        )
        kd = losses.distill_kl(
            logits, teacher, temperature=self.temperature, where=where
        )
        loss = losses.masked_mean((1.0 - alpha) * ce + alpha * kd, where)
        aux = supervised_metrics(logits, labels, where, loss)
        aux['train/kd'] = losses.masked_mean(kd, where)
        aux['train/alpha'] = alpha
        return loss, aux
