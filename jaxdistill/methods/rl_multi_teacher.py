"""Reinforced multi-teacher distillation: a policy weights each teacher per instance.

Yuan et al., "Reinforced Multi-Teacher Selection for Knowledge Distillation"
(AAAI 2021, arXiv 2012.06048); see docs/methods/rl_multi_teacher.md.

Student loss per instance x:  (1−α)·CE + α·Σ_k w_k(x)·T²·KL(teacher k ‖ student),
with frozen teachers' logits carried in the batch ('teacher_logits' [B, K, C],
see `jaxdistill.teacher_cache`). A per-teacher logistic policy reads, for each
instance and teacher, the student's pooled feature, the teacher's
probabilities, the teacher's CE on the gold label and the teacher–student KL,
and selects teachers by Bernoulli sampling; the selected teachers share the
weight (uniformly, or in proportion to the policy's probabilities: 'soft').
The policy, its Adam state and the reward baseline live in `extra` and are
updated by REINFORCE in `update_extra`, inside the jitted step.

Phases (one compiled step each): 'equal' (warm-up: equal weights, no policy
work), 'learn' (the policy acts and is updated), 'act' (the policy acts only).
After warm-up come `pretrain_steps` of 'learn', then 'learn' every
`policy_every` steps and 'act' in between.
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxdistill import configuration
from jaxdistill import losses
from jaxdistill import registry
from jaxdistill import schedules
from jaxdistill.errors import ConfigError
from jaxdistill.methods.base import Method, ModelFns

WEIGHTINGS = ('equal', 'select', 'soft')
REWARDS = ('neg_ce', 'neg_ce_kd', 'dev_acc')
FALLBACKS = ('all', 'argmax', 'none')
# Key of the per-instance data `loss` hands to `update_extra` through aux;
# `update_extra` pops it, so it never reaches the metrics.
_PRIVATE = '_rl'


@registry.register('method', 'rl_multi_teacher')
@dataclasses.dataclass(frozen=True)
class RLMultiTeacher(Method):
    """(1−α)·CE + α·Σ_k w_k·T²·KL(t_k ‖ s), w from a REINFORCE-trained policy."""

    model: ModelFns
    # Teachers K (the batch's teacher_logits must have K columns).
    num_teachers: int = 3
    num_classes: int = 2
    # Width D of the student's pooled feature (its deepest exit's feature).
    feature_dim: int = 64
    schedule_keys = ('alpha',)
    # The policy's REINFORCE update (update_extra) replays the student's
    # forward on the step's whole batch with the step's dropout key.
    supports_microbatches = False
    alpha: Any = schedules.constant(0.5)
    temperature: float = 2.0
    weighting: str = 'select'
    fallback: str = 'all'
    reward: str = 'neg_ce'
    warmup_steps: int = 0
    pretrain_steps: int = 0
    policy_every: int = 1
    policy_learning_rate: float = 1e-2
    baseline_decay: float = 0.9
    # Initial selection probability of every teacher.
    init_select_prob: float = 0.5

    @classmethod
    def from_config(cls, model, options):
        options = dict(options)
        if 'alpha' in options:  # Labels get 1 − alpha.
            options['alpha'] = schedules.from_config(
                options['alpha'], name='method.alpha', low=0.0, high=1.0
            )
        method = cls(model=model, **options)
        schedules.check_range(
            method.temperature, name='method.temperature', low=0.0, low_open=True
        )
        method._check()
        return method

    def _check(self):
        for key, valid in (
            ('weighting', WEIGHTINGS),
            ('reward', REWARDS),
            ('fallback', FALLBACKS),
        ):
            if getattr(self, key) not in valid:
                raise ConfigError(
                    f'method.{key}={getattr(self, key)!r}; valid: {", ".join(valid)}.'
                )
        configuration.check_counts(
            ('method.num_teachers', self.num_teachers, 1),
            ('method.policy_every', self.policy_every, 1),
        )
        if not 0.0 < self.init_select_prob < 1.0:
            raise ConfigError(
                f'method.init_select_prob={self.init_select_prob!r} must be in (0, 1).'
            )
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ConfigError(
                f'method.baseline_decay={self.baseline_decay} must be in [0, 1).'
            )
        if not 0.0 <= self.policy_learning_rate < math.inf:
            raise ConfigError(
                f'method.policy_learning_rate={self.policy_learning_rate} must be '
                'a finite number >= 0.'
            )
        for key in ('warmup_steps', 'pretrain_steps'):
            if getattr(self, key) < 0:
                raise ConfigError(f'method.{key}={getattr(self, key)} must be >= 0.')
        if getattr(self.model, 'apply_exits', None) is None:
            raise ConfigError(
                "method 'rl_multi_teacher' needs the student's pooled feature: "
                'use a text_classification task (its ModelFns has apply_exits).'
            )

    @property
    def state_dim(self) -> int:
        """Policy input per (instance, teacher): feature, probs, CE, KL."""
        return self.feature_dim + self.num_classes + 2

    def _policy_tx(self):
        return optax.adam(self.policy_learning_rate)

    def init_extra(self, rng, params):
        del rng, params
        p = self.init_select_prob
        policy = {
            'w': jnp.zeros((self.num_teachers, self.state_dim), jnp.float32),
            'b': jnp.full((self.num_teachers,), jnp.log(p / (1 - p)), jnp.float32),
        }
        return {
            'policy': policy,
            'policy_opt': self._policy_tx().init(policy),
            'baseline': jnp.zeros((), jnp.float32),
        }

    def phase(self, step: int) -> str:
        if self.weighting == 'equal' or step < self.warmup_steps:
            return 'equal'
        since = step - self.warmup_steps
        if since < self.pretrain_steps:
            return 'learn'
        return (
            'learn' if (since - self.pretrain_steps) % self.policy_every == 0 else 'act'
        )

    def stage(self, step: int) -> int:
        """0 warm-up (equal weights), 1 policy pre-training, 2 the cycle."""
        if self.weighting == 'equal' or step < self.warmup_steps:
            return 0
        return 1 if step < self.warmup_steps + self.pretrain_steps else 2

    # --- pure pieces -------------------------------------------------------

    def teacher_kl(self, logits, teacher_logits):
        """[B, C], [B, K, C] -> [B, K] T²·KL(teacher k ‖ student)."""
        student = jnp.broadcast_to(logits[:, None, :], teacher_logits.shape)
        return losses.distill_kl(student, teacher_logits, temperature=self.temperature)

    def policy_states(self, feature, teacher_logits, labels, kl):
        """[B, K, S] policy inputs; no gradient reaches the student.

        Args:
          feature: [B, D] the student's pooled feature.
          teacher_logits: [B, K, C].
          labels: [B] int (padding rows may hold any value).
          kl: [B, K] T²·KL(teacher ‖ student).
        """
        b, k, _ = teacher_logits.shape
        probs = jax.nn.softmax(teacher_logits.astype(jnp.float32), axis=-1)
        gold = jnp.broadcast_to(jnp.maximum(labels, 0)[:, None], (b, k))
        ce = losses.cross_entropy(teacher_logits, gold)
        t2 = self.temperature**2
        state = jnp.concatenate(
            [
                jnp.broadcast_to(feature[:, None, :], (b, k, feature.shape[-1])),
                probs,
                jnp.minimum(ce, 10.0)[..., None],
                jnp.minimum(kl / t2, 10.0)[..., None],
            ],
            axis=-1,
        )
        return jax.lax.stop_gradient(state.astype(jnp.float32))

    def select_probs(self, policy, states):
        """[B, K, S] -> [B, K] probability of selecting each teacher."""
        logits = jnp.einsum('bks,ks->bk', states, policy['w']) + policy['b']
        return jax.nn.sigmoid(logits)

    def weights(self, probs, actions):
        """Teacher weights [B, K] (rows sum to 1, or 0 for fallback 'none').

        Args:
          probs: [B, K] selection probabilities.
          actions: [B, K] 0/1 selections.
        """
        raw = actions * probs if self.weighting == 'soft' else actions
        total = jnp.sum(raw, axis=-1, keepdims=True)
        k = probs.shape[-1]
        if self.fallback == 'all':
            fallback = jnp.full_like(probs, 1.0 / k)
        elif self.fallback == 'argmax':
            fallback = jax.nn.one_hot(jnp.argmax(probs, axis=-1), k)
        else:
            fallback = jnp.zeros_like(probs)
        return jnp.where(total > 0, raw / jnp.maximum(total, 1e-12), fallback)

    def act(self, policy, states, rng):
        """(probs [B, K], actions [B, K], weights [B, K]) for the states."""
        probs = self.select_probs(policy, states)
        actions = jax.random.bernoulli(rng, probs).astype(jnp.float32)
        return probs, actions, jax.lax.stop_gradient(self.weights(probs, actions))

    # --- the method face ---------------------------------------------------

    def loss(self, params, extra, batch, rng, step, phase='learn'):
        if 'teacher_logits' not in batch:
            raise ConfigError(
                "method 'rl_multi_teacher' needs teachers: set data.teachers to "
                'the workdirs of trained teacher runs.'
            )
        teacher = batch['teacher_logits']
        if teacher.shape[1] != self.num_teachers:
            raise ConfigError(
                f'method.num_teachers={self.num_teachers} but data.teachers '
                f'gives {teacher.shape[1]} teachers.'
            )
        if teacher.shape[-1] != self.num_classes:
            raise ConfigError(
                f'method.num_classes={self.num_classes} but the teachers '
                f'predict {teacher.shape[-1]} classes.'
            )
        drop_rng, policy_rng = jax.random.split(rng)
        out = self.model.apply_exits(params, batch, train=True, rng=drop_rng)
        logits, feature = out['logits'][-1], out['features'][-1]
        if feature.shape[-1] != self.feature_dim:
            raise ConfigError(
                f'method.feature_dim={self.feature_dim} but the student model '
                f'gives features of width {feature.shape[-1]}.'
            )
        labels, where = self.model.labels(batch)
        ce = losses.cross_entropy(logits, labels, where=where)
        kl = self.teacher_kl(logits, teacher)
        if phase == 'equal':
            w = jnp.full(kl.shape, 1.0 / self.num_teachers)
            states = actions = None
        else:
            states = self.policy_states(feature, teacher, labels, kl)
            _, actions, w = self.act(extra['policy'], states, policy_rng)
        kd = jnp.sum(w * kl, axis=-1)
        alpha = self.alpha(step)
        loss = losses.masked_mean((1 - alpha) * ce + alpha * kd, where)
        aux = _metrics(logits, labels, where, loss, ce, kd, w, teacher)
        # Overwritten with the updated value on 'learn' steps.
        aux['train/baseline'] = extra['baseline']
        if phase == 'learn':
            aux[_PRIVATE] = {
                'batch': batch,
                'rng': jax.random.key_data(drop_rng),
                'states': states,
                'actions': actions,
                'weights': w,
                'ce': jax.lax.stop_gradient(ce),
                'kd': jax.lax.stop_gradient(kd),
                'correct': losses.accuracy(logits, labels, where=where),
            }
        return loss, aux

    def rewards(self, params, private):
        """[B] reward of each instance: the change the step made.

        The updated student is run on the same batch with the same dropout
        mask; 'neg_ce' is CE before − CE after, 'neg_ce_kd' the same for
        CE + Σ_k w_k·KD_k, 'dev_acc' the change in batch accuracy (the batch
        stands in for a dev set; one value shared by the batch).
        """
        batch = private['batch']
        rng = jax.random.wrap_key_data(private['rng'])
        logits = self.model.apply(params, batch, train=True, rng=rng)
        labels, where = self.model.labels(batch)
        ce = losses.cross_entropy(logits, labels, where=where)
        if self.reward == 'neg_ce':
            return private['ce'] - ce
        if self.reward == 'neg_ce_kd':
            kd = jnp.sum(
                private['weights'] * self.teacher_kl(logits, batch['teacher_logits']),
                -1,
            )
            return private['ce'] + private['kd'] - ce - kd
        after = losses.masked_mean(losses.accuracy(logits, labels, where=where), where)
        before = losses.masked_mean(private['correct'], where)
        return jnp.full(ce.shape, after - before)

    def update_extra(self, extra, params, aux, step, phase='learn'):
        """REINFORCE on the 'learn' steps: ∇ −mean((r − b)·log π(a|s))."""
        del step
        private = aux.pop(_PRIVATE, None)
        if phase != 'learn':
            return extra
        _, where = self.model.labels(private['batch'])
        reward = jax.lax.stop_gradient(self.rewards(params, private))
        advantage = reward - extra['baseline']
        actions, states = private['actions'], private['states']

        def surrogate(policy):
            p = jnp.clip(self.select_probs(policy, states), 1e-6, 1 - 1e-6)
            logp = jnp.sum(actions * jnp.log(p) + (1 - actions) * jnp.log1p(-p), -1)
            # A global mean over the sharded batch: the same on every device.
            return -losses.masked_mean(advantage * logp, where)

        grads = jax.grad(surrogate)(extra['policy'])
        updates, opt = self._policy_tx().update(
            grads, extra['policy_opt'], extra['policy']
        )
        d = self.baseline_decay
        baseline = d * extra['baseline'] + (1 - d) * losses.masked_mean(reward, where)
        aux['train/baseline'] = baseline
        return {
            'policy': optax.apply_updates(extra['policy'], updates),
            'policy_opt': opt,
            'baseline': baseline,
        }


def _corr(x, y, where):
    """Pearson correlation over the (global) batch; 0 when either is constant."""
    m = where.astype(jnp.float32)
    mx, my = losses.masked_mean(x, m), losses.masked_mean(y, m)
    cov = losses.masked_mean((x - mx) * (y - my), m)
    vx = losses.masked_mean((x - mx) ** 2, m)
    vy = losses.masked_mean((y - my) ** 2, m)
    return cov / jnp.sqrt(vx * vy + 1e-12)


def _metrics(logits, labels, where, loss, ce, kd, w, teacher):
    """Scalar metrics, with per-teacher weight and its relation to confidence.

    train/weight_tK: mean weight of teacher K; train/confidence_tK: its mean
    probability of the gold label; train/weight_conf_corr_tK: correlation of
    the two over the batch. Every phase reports the same keys.
    """
    mean = lambda v: losses.masked_mean(v, where)
    aux = {
        'train/loss': loss,
        'train/nll': mean(ce),
        'train/kd': mean(kd),
        'train/accuracy': mean(losses.accuracy(logits, labels, where=where)),
        'train/tokens': jnp.sum(where),
    }
    tprobs = jax.nn.softmax(teacher.astype(jnp.float32), axis=-1)
    gold = jnp.take_along_axis(tprobs, jnp.maximum(labels, 0)[:, None, None], axis=-1)[
        ..., 0
    ]
    for k in range(w.shape[-1]):
        aux[f'train/weight_t{k}'] = mean(w[:, k])
        aux[f'train/confidence_t{k}'] = mean(gold[:, k])
        aux[f'train/weight_conf_corr_t{k}'] = _corr(w[:, k], gold[:, k], where)
    return aux
