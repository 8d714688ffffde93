"""Codistillation: replicas on disjoint data distil from stale copies of peers.

Anil et al., "Large scale distributed neural network training through online
distillation" (ICLR 2018, arXiv 1804.03235); see docs/methods/codistillation.md.

The N replicas are one parameter pytree with a leading replica axis, split
over the mesh's `replica` axis, so each device group trains its own model on
its own rows of every global batch. Stale copies of all replicas live in
`extra['stale']`, replicated on every group; they are refreshed by one
all-gather over `replica` every `exchange_every` steps, and weights cross
between groups at no other time. Replica r's distillation target is the mean
prediction of the stale copies of its peers q != r on r's own batch.
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from jaxdistill import losses
from jaxdistill import registry
from jaxdistill import schedules
from jaxdistill.errors import ConfigError
from jaxdistill.methods.base import Method, ModelFns

DISTANCES = ('kl', 'soft_ce')


@registry.register('method', 'codistill')
@dataclasses.dataclass(frozen=True)
class Codistill(Method):
    """N replicas, label loss + weight(step) * distance(stale peers, replica)."""

    model: ModelFns
    num_replicas: int = 2
    # Distillation weight after burn-in (an Optax schedule of the step).
    weight: Any = 1.0
    # Steps of plain training before distillation starts (no peer forwards).
    burn_in_steps: int = 0
    # Stale copies are refreshed after every `exchange_every` optimizer steps.
    exchange_every: int = 50
    temperature: float = 1.0
    distance: str = 'kl'
    label_smoothing: float = 0.0

    stacked_params = True

    @classmethod
    def from_config(cls, model, options):
        options = dict(options)
        if 'weight' in options:
            options['weight'] = schedules.from_config(
                options['weight'], name='method.weight'
            )
        method = cls(model=model, **options)
        if method.distance not in DISTANCES:
            raise ConfigError(
                f'method.distance={method.distance!r}; valid: {", ".join(DISTANCES)}.'
            )
        if method.num_replicas < 2 or method.exchange_every < 1:
            raise ConfigError(
                'codistillation needs method.num_replicas >= 2 and '
                'method.exchange_every >= 1.'
            )
        return method

    def _weight(self, step):
        w = self.weight(step) if callable(self.weight) else self.weight
        return jnp.where(step >= self.burn_in_steps, w, 0.0)

    def init_params(self, rng, batch):
        """Stacked [N, ...] parameters; each replica has its own init seed."""
        rngs = jax.random.split(rng, self.num_replicas)
        return jax.vmap(lambda r: self.model.init(r, batch))(rngs)

    def init_extra(self, rng, params):
        del rng
        return {'stale': params}

    def phase(self, step: int):
        """(distil?, exchange after this step?): each pair compiles once."""
        distil = step >= self.burn_in_steps
        exchange = (
            step + 1
        ) % self.exchange_every == 0 or step + 1 == self.burn_in_steps
        return (bool(distil), bool(exchange))

    def loss(self, params, extra, batch, rng, step, phase=(True, False)):
        """Sum over replicas of each one's loss; each computed in its group.

        `jax.shard_map` over `replica` (the `data` and `model` axes stay
        automatic) pins replica r's forward and backward passes to its own
        devices, so only metric scalars cross between groups.
        """
        distil, _ = phase
        spec = jax.P('replica')
        per_replica = jax.shard_map(
            functools.partial(self._replica_loss, distil=distil),
            in_specs=(spec, spec, jax.P(), jax.P(), jax.P()),
            out_specs=spec,
            axis_names={'replica'},
        )
        stale = extra['stale'] if distil else None
        loss, aux = per_replica(params, batch, stale, jax.random.key_data(rng), step)
        return jnp.sum(loss), aux

    def _replica_loss(self, params, batch, stale, rng, step, *, distil):
        """One replica's loss and metrics, all shaped [1] (its block)."""
        r = jax.lax.axis_index('replica')
        params = jax.tree.map(lambda p: p[0], params)
        rng = jax.random.fold_in(jax.random.wrap_key_data(rng), r)
        logits = self.model.apply(params, batch, train=True, rng=rng)
        labels, where = self.model.labels(batch)
        ce = losses.cross_entropy(
            logits, labels, where=where, label_smoothing=self.label_smoothing
        )
        ce = losses.masked_mean(ce, where)
        loss, aux = ce, {'train/ce': ce, 'train/tokens': jnp.sum(where)}
        if distil:
            peers = self.peer_logits(stale, batch, r)
            d = self.distillation(logits[None], peers[:, None], where[None])[0]
            loss = ce + self._weight(step) * d
            aux['train/distill'] = d
        aux['train/loss'] = loss
        return loss[None], jax.tree.map(lambda x: x[None], aux)

    def peer_logits(self, stale, batch, r):
        """[N-1, B, ..., V]: stale peers (r+k) % N, k=1..N-1, on r's batch."""
        out = []
        for k in range(1, self.num_replicas):
            peer = jax.tree.map(lambda p: p[(r + k) % self.num_replicas], stale)
            out.append(self.model.apply(peer, batch, train=False))
        return jax.lax.stop_gradient(jnp.stack(out))

    def distillation(self, logits, peers, where):
        """[N] mean distance from each replica to its peers' mean prediction."""
        t = self.temperature
        # Mean of the peers' tempered probabilities, as logits at temperature T.
        probs = jnp.mean(jax.nn.softmax(peers / t, axis=-1), axis=0)
        target = t * jnp.log(jnp.maximum(probs, 1e-30))
        fn = losses.distill_kl if self.distance == 'kl' else losses.soft_cross_entropy
        per_token = fn(logits, target, temperature=t, where=where)
        return jax.vmap(losses.masked_mean)(per_token, where)

    def update_extra(self, extra, params, aux, step, phase=(True, False)):
        del aux, step
        _, exchange = phase
        if exchange:  # One all-gather over `replica`; no traffic otherwise.
            return {'stale': params}
        return extra

    def eval_params(self, params, extra):
        """Replica 0 (every replica is a full model)."""
        del extra
        return jax.tree.map(lambda p: p[0], params)

    def eval_models(self, params, extra):
        """Each replica as a standalone model: {'r0': params_0, ...}."""
        del extra
        return {
            f'r{i}': jax.tree.map(lambda p, i=i: p[i], params)
            for i in range(self.num_replicas)
        }
