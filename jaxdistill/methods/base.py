"""The face every training method shares, and how a method meets a model.

A method never calls a Flax module directly: the task hands it `ModelFns`
(init, apply, labels), so one method serves translation, classification or
images alike, and parameters stay plain pytrees the method may stack, slice
or copy.
"""

import abc
import dataclasses
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp

from jaxdistill import configuration
from jaxdistill import registry
from jaxdistill import schedules
from jaxdistill.errors import ConfigError

Params = Any
Batch = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ModelFns:
    """How to run one model on a batch.

    init: (rng, batch) -> params.
    apply: (params, batch, *, train, rng) -> logits [..., V].
    labels: batch -> (labels [...] int, where [...] bool).
    load_teacher: optional, workdir -> (ModelFns, params): a frozen teacher
      trained by the library in `workdir`, checked to fit this model's data
      (same vocabulary); set by tasks that support distillation ('distill').
    features: optional, (params, batch, *, train, rng) -> (h [..., D],
      table [V, D]) with logits = h @ table.T, the same as `apply` (same
      dropout for the same rng): lets a loss fuse the output layer
      (`losses.linear_cross_entropy`).
    """

    init: Callable[..., Params]
    apply: Callable[..., jax.Array]
    labels: Callable[[Batch], tuple[jax.Array, jax.Array]]
    load_teacher: Callable[[str], tuple['ModelFns', Params]] | None = None
    features: Callable[..., tuple[jax.Array, jax.Array]] | None = None


class Method(abc.ABC):
    """Base class: the same small face for every method.

    Subclasses are frozen dataclasses registered with
    `@registry.register('method', name)` and built by `make_method`.
    """

    model: ModelFns
    # Options that take a schedule spec ({'kind': 'linear', ...}) as well as a
    # number (`schedules.from_config`); any other option refuses a schedule.
    schedule_keys: ClassVar[tuple[str, ...]] = ()
    # False for a method whose step needs the whole batch in one pass;
    # `microbatches` > 1 (gradient accumulation) then refuses it.
    supports_microbatches: ClassVar[bool] = True

    @classmethod
    def from_config(cls, model: ModelFns, options: dict) -> 'Method':
        """The method from `config.method`'s other keys (`make_method` has
        refused unknown ones). By default each of `schedule_keys` becomes a
        schedule (`schedules.from_config`); override to check options, with a
        `ConfigError` naming the key."""
        options = dict(options)
        for key in cls.schedule_keys:
            if key in options:
                options[key] = schedules.from_config(options[key], name=f'method.{key}')
        return cls(model=model, **options)

    def init_params(self, rng: jax.Array, batch: Batch) -> Params:
        return self.model.init(rng, batch)

    def init_extra(self, rng: jax.Array, params: Params) -> Any:
        """State besides the trained parameters (stale peers, policies...)."""
        del rng, params
        return {}

    @abc.abstractmethod
    def loss(self, params, extra, batch, rng, step) -> tuple[jax.Array, dict]:
        """-> (scalar loss to differentiate, aux dict of scalar metrics)."""

    def batch_weight(self, batch: Batch) -> jax.Array:
        """A micro-batch's weight in its batch's loss (`microbatches` > 1).

        The losses are means over labelled positions, so a micro-batch counts
        by its number of them: the weighted mean of micro-batch losses is then
        the whole batch's loss.
        """
        _, where = self.model.labels(batch)
        return jnp.sum(where)

    def update_extra(self, extra, params, aux, step, **kwargs):
        """Non-gradient update of `extra` after each optimizer step."""
        del params, aux, step, kwargs
        return extra

    def phase(self, step: int):
        """Host-side name of the compiled step to run at `step` (see
        `train_step.make_train_step`); `loss` and `update_extra` then receive
        it as `phase=`. None (the default) means one phase throughout."""
        del step
        return None

    def stage(self, step: int) -> int:
        """Host-side: how far training has come at `step` through the
        method's stages, which run in order (0, 1, ...): TSJT's two stages,
        codistillation's burn-in, MT2ST's switched-off tasks. A resumed run
        refuses a config that would take it back to an earlier stage (e.g. a
        boundary tied to num_train_steps that moved past the restored step).
        0 throughout by default."""
        del step
        return 0

    def refresh_due(self, step: int) -> bool:
        """Host-side: whether `refresh_extra` runs after step `step`.

        For rare updates of `extra` (codistillation's weight exchange): they
        run as a separate small program between steps instead of as a phase of
        the step, so the step is not compiled twice for every input shape.
        """
        del step
        return False

    def refresh_extra(self, extra, params) -> Any:
        """`extra` after a refresh (see `refresh_due`), from the new params."""
        del params
        return extra

    def frozen(self, params, phase) -> Any:
        """Which parameters the step of `phase` leaves untouched, or None.

        A pytree of Python bools with the structure of `params` (True =
        frozen). The step then keeps those parameters and their optimizer
        state as they are, so XLA drops their update entirely (no Adam
        moments, no weight decay for a head whose loss is switched off).
        """
        del params, phase
        return None

    def eval_models(self, params, extra) -> dict[str, Params]:
        """Every model the method trains, by name, for evaluation."""
        return {'': self.eval_params(params, extra)}

    def eval_params(self, params, extra) -> Params:
        """The parameters of the model to evaluate and export."""
        del extra
        return params


def make_method(cfg, model: ModelFns) -> Method:
    """Builds the method `cfg.name` with the other fields of `cfg` as options.

    Args:
      cfg: the `config.method` ConfigDict; `name` picks the registered class.
      model: how to run the model.
    """
    cls = registry.get('method', cfg.name)
    options = {k: v for k, v in cfg.items() if k != 'name'}
    fields = {f.name for f in dataclasses.fields(cls)} - {'model'}
    configuration.check_known_keys(
        'method', options, fields, owner=f'method {cfg.name!r}'
    )
    smoothing = options.get('label_smoothing', 0.0)
    if not isinstance(smoothing, (int, float)) or not 0 <= smoothing < 1:
        raise ConfigError(
            f'method.label_smoothing={smoothing!r} must be in [0, 1) (the '
            'share of the target spread over all classes).'
        )
    for key, value in options.items():
        if key not in cls.schedule_keys and configuration.is_schedule_spec(value):
            raise ConfigError(
                f'method.{key} of method {cfg.name!r} takes a plain value, not '
                f'a schedule ({dict(value)}); its options that take schedules: '
                f'{", ".join(cls.schedule_keys) or "none"}.'
            )
    return cls.from_config(model, options)


class _NeedsModel(Exception):
    """Raised by `_ModelUnknown`: the rest of a method's checks need the model."""


class _ModelUnknown:
    """Stands in for the model where a config is checked without data: a
    method's `from_config` checks its options up to its first look at the
    model, and that look ends the check (the run's start checks the rest).
    Not an AttributeError, so `getattr(model, name, default)` ends it too
    instead of reading a default the real model would not give."""

    def __getattr__(self, name):
        raise _NeedsModel(name)

    # Special methods bypass __getattr__: any other use of the model ends
    # the check as well.
    def _needs_model(self, *args, **kwargs):
        raise _NeedsModel('the model')

    __call__ = __getitem__ = __iter__ = __len__ = __bool__ = _needs_model


def check_method_config(cfg) -> None:
    """ConfigError for what `make_method(cfg, model)` would refuse whatever
    the model: unknown keys, values out of range, a schedule where a plain
    value belongs, ... up to the method's first check that needs the model
    (a TSJT composite's capacities, the teachers' folders). Reads no data;
    `trainer.check_config` runs it (so `--print_config` and sweeps do)."""
    try:
        make_method(cfg, _ModelUnknown())
    except _NeedsModel:
        pass
