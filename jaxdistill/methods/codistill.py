"""Codistillation: replicas on disjoint data distil from stale copies of peers.

Anil et al., "Large scale distributed neural network training through online
distillation" (ICLR 2018, arXiv 1804.03235); see docs/methods/codistillation.md.

The N replicas are one parameter pytree with a leading replica axis, split
over the mesh's `replica` axis, so each device group trains its own model on
its own rows of every global batch. With fewer groups than replicas (one GPU,
say) each group holds N / groups of them, vmapped, with the same result
(`_group_loss`). Stale copies of all replicas live in
`extra['stale']`, replicated on every group; they are refreshed by one
all-gather over `replica` every `exchange_every` steps (`refresh_extra`, a
program of its own between two steps), and weights cross between groups at no
other time. Replica r's distillation target is the mean
prediction of the stale copies of its peers q != r on r's own batch.

Two options beyond the paper's setting:
* `exchange='predictions'` (the variant of PFN's public code): no stale
  copies; every step each replica also predicts on a shared batch (the first
  `shared_fraction` of every replica's rows, gathered over `replica`), the
  predictions are all-gathered, and each replica distils towards its peers'
  current predictions there. Predictions, not weights, cross every step.
* `replica_capacities`: with a composite model (`model.composite`, see
  models/composite.py), replica r is capacity `replica_capacities[r]` of its
  own copy of the composite, so the replicas differ in architecture (e.g. a
  half-width and a full-width Transformer). Each replica's forward runs only
  its own capacity's sub-network (a `lax.switch` on the replica index).
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
from jaxdistill.methods import supervised
from jaxdistill.methods.base import Method, ModelFns

DISTANCES = ('kl', 'soft_ce')


def _whole_over_model(tree):
    """`tree` (a group's parameters) gathered whole over the `model` axis:
    with `mesh.shard_params` they rest split over it, and the step computes
    with them gathered (as XLA's own gathers would). Left to XLA inside the
    shard_map over `replica`, jaxlib 0.11's partitioner aborts the process
    on the first sharded parameter, and jax 0.10's on logits split over the
    vocabulary (a failed CHECK in spmd_partitioner_util.cc,
    `tests/test_codistill.py`). Without a `model` axis: unchanged."""
    mesh = jax.sharding.get_abstract_mesh()
    if tree is None or mesh.empty or dict(mesh.shape).get('model', 1) == 1:
        return tree
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, jax.P()), tree)


EXCHANGES = ('params', 'predictions')


@registry.register('method', 'codistill')
@dataclasses.dataclass(frozen=True)
class Codistill(Method):
    """N replicas, label loss + weight(step) * distance(stale peers, replica)."""

    model: ModelFns
    num_replicas: int = 2
    # Distillation weight after burn-in (an Optax schedule of the step).
    schedule_keys = ('weight',)
    weight: Any = 1.0
    # Steps of plain training before distillation starts (no peer forwards).
    burn_in_steps: int = 0
    # Stale copies are refreshed after every `exchange_every` optimizer steps.
    exchange_every: int = 50
    temperature: float = 1.0
    distance: str = 'kl'
    label_smoothing: float = 0.0
    # 'params': stale peer copies refreshed every `exchange_every` steps (the
    # paper); 'predictions': peers' current predictions on a shared batch,
    # every step (PFN's variant).
    exchange: str = 'params'
    # 'predictions' only: the share of each replica's rows (at least one row)
    # that all replicas predict on; the distillation term is on these rows.
    shared_fraction: float = 0.25
    # Composite models only: the capacity of each replica, by name ('x0.5')
    # or index; empty: every replica is the largest capacity.
    replica_capacities: tuple = ()
    # > 0: fuse the output layer with the loss, blocks of this many rows
    # (`losses.linear_distill_cross_entropy`): neither the replica's nor its
    # peers' [tokens, vocabulary] logits are ever all in memory. Models with
    # `ModelFns.features` (translation), exchange 'params'. 0: logits.
    output_chunk_rows: int = 0

    stacked_params = True

    @classmethod
    def from_config(cls, model, options):
        options = dict(options)
        if 'weight' in options:
            options['weight'] = schedules.from_config(
                options['weight'], name='method.weight', low=0.0
            )
        method = cls(model=model, **options)
        if method.distance not in DISTANCES:
            raise ConfigError(
                f'method.distance={method.distance!r}; valid: {", ".join(DISTANCES)}.'
            )
        if method.burn_in_steps < 0:
            raise ConfigError(
                f'method.burn_in_steps={method.burn_in_steps} must be >= 0.'
            )
        if method.num_replicas < 2 or method.exchange_every < 1:
            raise ConfigError(
                'codistillation needs method.num_replicas >= 2 and '
                'method.exchange_every >= 1; got method.num_replicas='
                f'{method.num_replicas}, method.exchange_every={method.exchange_every}.'
            )
        schedules.check_range(
            method.temperature, name='method.temperature', low=0.0, low_open=True
        )
        if method.exchange not in EXCHANGES:
            raise ConfigError(
                f'method.exchange={method.exchange!r}; valid: {", ".join(EXCHANGES)}.'
            )
        if not 0.0 < method.shared_fraction <= 1.0:
            raise ConfigError(
                f'method.shared_fraction={method.shared_fraction} must be in (0, 1].'
            )
        if method.replica_capacities:
            method = dataclasses.replace(
                method, replica_capacities=method._capacity_indices()
            )
        method._check_output_chunk_rows()
        return method

    def _check_output_chunk_rows(self):
        rows = self.output_chunk_rows
        supervised.check_output_chunk_rows(rows, self.model)
        if rows and (self.exchange != 'params' or self.replica_capacities):
            raise ConfigError(
                f'method.output_chunk_rows={rows} (a fused output layer) works '
                "with method.exchange='params' and replicas of one capacity; "
                f'this config has exchange={self.exchange!r}'
                + (
                    f', replica_capacities={self.replica_capacities}'
                    if self.replica_capacities
                    else ''
                )
                + '. Set method.output_chunk_rows=0.'
            )

    def _capacity_indices(self) -> tuple[int, ...]:
        names = getattr(self.model, 'names', None)
        if names is None:
            raise ConfigError(
                'method.replica_capacities needs a composite model '
                "(model.composite.kind 'width', 'depth' or 'decoder')."
            )
        caps = tuple(self.replica_capacities)
        if len(caps) != self.num_replicas:
            raise ConfigError(
                f'method.replica_capacities={caps} names {len(caps)} capacities '
                f'for method.num_replicas={self.num_replicas}.'
            )
        out = []
        for c in caps:
            if isinstance(c, str) and c in names:
                out.append(names.index(c))
            elif isinstance(c, int) and 0 <= c < len(names):
                out.append(c)
            else:
                raise ConfigError(
                    f'method.replica_capacities: unknown capacity {c!r}; the '
                    f'composite has {", ".join(names)} (or indices 0..{len(names) - 1}).'
                )
        return tuple(out)

    def _apply(self, params, batch, index, *, train, rng=None):
        """Logits of replica `index` (traced) with its own parameters."""
        if not self.replica_capacities:
            return self.model.apply(params, batch, train=train, rng=rng)
        branches = [
            functools.partial(
                lambda p, b, c: self.model.apply_capacity(
                    p, b, c, train=train, rng=rng
                ),
                c=c,
            )
            for c in self.replica_capacities
        ]
        return jax.lax.switch(index, branches, params, batch)

    def _weight(self, step):
        w = self.weight(step) if callable(self.weight) else self.weight
        return jnp.where(step >= self.burn_in_steps, w, 0.0)

    def init_params(self, rng, batch):
        """Stacked [N, ...] parameters; each replica has its own init seed."""
        rngs = jax.random.split(rng, self.num_replicas)
        return jax.vmap(lambda r: self.model.init(r, batch))(rngs)

    def init_extra(self, rng, params):
        del rng
        return {'stale': params} if self.exchange == 'params' else {}

    def phase(self, step: int) -> str:
        """'burn_in' (no peers) or 'distil': each compiles once per shape."""
        return 'distil' if step >= self.burn_in_steps else 'burn_in'

    def stage(self, step: int) -> int:
        return int(step >= self.burn_in_steps)

    def refresh_due(self, step: int) -> bool:
        """Exchange weights after this step? Every `exchange_every` steps once
        distillation has started, and right before it starts (burn-in steps
        would never read the copies)."""
        if self.exchange != 'params':
            return False
        done = step + 1
        return done == self.burn_in_steps or (
            done > self.burn_in_steps and done % self.exchange_every == 0
        )

    def refresh_extra(self, extra, params):
        """The exchange: every replica's weights, all-gathered over `replica`
        into the replicated stale copies (the only time weights cross groups).
        With `exchange='predictions'` there are no copies: `extra` as it is
        (the trainer's refresh at a burn-in boundary that a resume moved
        past would otherwise give the state a key it was not built with)."""
        if self.exchange != 'params':
            return extra
        return {'stale': params}

    def batch_weight(self, batch):
        """[N]: each replica's labelled positions in its block of `batch`
        (replica r's loss is a mean over its own rows; `microbatches`)."""
        _, where = self.model.labels(batch)
        return jnp.sum(where.reshape(self.num_replicas, -1), axis=1)

    def loss(self, params, extra, batch, rng, step, phase='distil'):
        """Sum over replicas of each one's loss; each computed in its group.

        `jax.shard_map` over `replica` (the `data` and `model` axes stay
        automatic) pins each group's replicas' forward and backward passes to
        its own devices, so only metric scalars cross between groups. A group
        holds N / (size of `replica`) replicas: one when every replica has
        devices of its own, several stacked (vmapped) when the mesh has fewer
        groups than replicas (e.g. one device).
        """
        distil = phase == 'distil'
        spec = jax.P('replica')
        per_group = jax.shard_map(
            functools.partial(self._group_loss, distil=distil),
            in_specs=(spec, spec, jax.P(), jax.P(), jax.P()),
            out_specs=spec,
            axis_names={'replica'},
        )
        stale = extra['stale'] if distil and self.exchange == 'params' else None
        loss, aux = per_group(params, batch, stale, jax.random.key_data(rng), step)
        return jnp.sum(loss), aux

    def _local(self, fn, n: int, *, unroll: bool = False):
        """`fn` mapped over a group's n replicas (leading axis of every arg).

        One replica: called directly. Several: `jax.vmap`, or a Python loop
        with `unroll` (replicas of different capacities: a vmapped
        `lax.switch` would run every capacity's network for every replica).
        """

        def one(i, args):
            return fn(*jax.tree.map(lambda x: x[i], args))

        def mapped(*args):
            if n > 1 and not unroll:
                return jax.vmap(fn)(*args)
            outs = [one(i, args) for i in range(n)]
            return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)

        return mapped

    def _group_loss(self, params, batch, stale, rng, step, *, distil):
        """The losses and metrics of one group's replicas, all shaped [n].

        The group's rows are its replicas' blocks in order: replica
        g * n + j (group g, local j) reads the j-th block, as it would from
        a group of its own.
        """
        params, stale = _whole_over_model(params), _whole_over_model(stale)
        n = jax.tree.leaves(params)[0].shape[0]
        index = jax.lax.axis_index('replica') * n + jnp.arange(n)
        blocks = jax.tree.map(lambda x: x.reshape(n, -1, *x.shape[1:]), batch)
        key = jax.random.wrap_key_data(rng)
        keys = jax.vmap(lambda r: jax.random.fold_in(key, r))(index)
        local = functools.partial(
            self._local, n=n, unroll=bool(self.replica_capacities)
        )
        if self.output_chunk_rows:
            return self._fused_group_loss(
                params, blocks, stale, index, keys, step, local, distil=distil
            )

        def own_loss(p, b, r, k):
            logits = self._apply(p, b, r, train=True, rng=k)
            labels, where = self.model.labels(b)
            ce = losses.cross_entropy(
                logits, labels, where=where, label_smoothing=self.label_smoothing
            )
            return logits, where, losses.masked_mean(ce, where)

        logits, where, ce = local(own_loss)(params, blocks, index, keys)
        loss = ce
        aux = {
            'train/ce': ce,
            'train/tokens': jnp.sum(where, axis=tuple(range(1, where.ndim))),
        }
        if distil and self.exchange == 'predictions':
            shared = self.shared_batch(blocks)
            own = local(
                lambda p, r, k: self._apply(
                    p, shared, r, train=True, rng=jax.random.fold_in(k, 1)
                )
            )(params, index, keys)
            peers = self.peer_predictions(own, index)
            shared_where = self.model.labels(shared)[1]
            d = self.distillation(
                own, peers, jnp.broadcast_to(shared_where, own.shape[:-1])
            )
            loss = ce + self._weight(step) * d
            aux['train/distill'] = d
        elif distil:
            peers = local(lambda b, r: self.peer_logits(stale, b, r))(blocks, index)
            d = self.distillation(logits, jnp.swapaxes(peers, 0, 1), where)
            loss = ce + self._weight(step) * d
            aux['train/distill'] = d
        aux['train/loss'] = loss
        return loss, aux

    def _fused_group_loss(
        self, params, blocks, stale, index, keys, step, local, *, distil
    ):
        """`_group_loss` with the output layer fused into the loss.

        The same losses and gradients (tests/test_codistill.py checks them),
        computed a block of `output_chunk_rows` rows at a time from the final
        states and output tables of the replica and its stale peers.
        """
        eps, rows = self.label_smoothing, self.output_chunk_rows

        def flat(b):
            labels, where = self.model.labels(b)
            where = jnp.broadcast_to(where, labels.shape).reshape(-1)
            return labels.reshape(-1), where, where / jnp.maximum(jnp.sum(where), 1)

        def burn_in(p, b, k):
            h, table = self.model.features(p, b, train=True, rng=k)
            labels, where, w = flat(b)
            loss, _, _ = losses.linear_cross_entropy(
                h.reshape(-1, h.shape[-1]),
                table,
                labels,
                w,
                label_smoothing=eps,
                chunk_rows=rows,
            )
            return loss, loss, jnp.sum(where)

        def distilling(p, b, k, peer_h, peer_tables):
            h, table = self.model.features(p, b, train=True, rng=k)
            labels, where, w = flat(b)
            loss, ce, dist, _, _ = losses.linear_distill_cross_entropy(
                h.reshape(-1, h.shape[-1]),
                table,
                labels,
                w,
                peer_h.reshape(peer_h.shape[0], -1, peer_h.shape[-1]),
                peer_tables,
                self._weight(step),
                label_smoothing=eps,
                temperature=self.temperature,
                distance=self.distance,
                chunk_rows=rows,
            )
            return loss, jnp.sum(w * ce), jnp.sum(where), jnp.sum(w * dist)

        if distil:
            peers = local(lambda b, r: self.peer_features(stale, b, r))(blocks, index)
            loss, ce, tokens, d = local(distilling)(params, blocks, keys, *peers)
        else:
            loss, ce, tokens = local(burn_in)(params, blocks, keys)
        aux = {'train/ce': ce, 'train/tokens': tokens, 'train/loss': loss}
        if distil:
            aux['train/distill'] = d
        return loss, aux

    def _stale_peers(self, stale, r):
        """(q, stale parameters of q) for r's peers q = (r+k) % N, k=1..N-1."""
        for k in range(1, self.num_replicas):
            q = (r + k) % self.num_replicas
            yield q, jax.tree.map(lambda p, q=q: p[q], stale)

    def peer_features(self, stale, batch, r):
        """([N-1, B, ..., D], [N-1, V, D]): stale peers' final states on r's
        batch and their output tables (`ModelFns.features`), as `peer_logits`."""
        out = [
            self.model.features(peer, batch, train=False)
            for _, peer in self._stale_peers(stale, r)
        ]
        return jax.lax.stop_gradient(jax.tree.map(lambda *xs: jnp.stack(xs), *out))

    def peer_logits(self, stale, batch, r):
        """[N-1, B, ..., V]: stale peers (r+k) % N, k=1..N-1, on r's batch."""
        out = [
            self._apply(peer, batch, q, train=False)
            for q, peer in self._stale_peers(stale, r)
        ]
        return jax.lax.stop_gradient(jnp.stack(out))

    def shared_batch(self, blocks):
        """The first `shared_fraction` of every replica's rows, all replicas'
        together, in replica order (an all-gather over `replica` of token
        ids): [N * k, ...]. `blocks`: this group's replicas' rows, [n, B, ...]."""
        rows = jax.tree.leaves(blocks)[0].shape[1]
        k = max(1, round(rows * self.shared_fraction))
        return jax.tree.map(
            lambda x: jax.lax.all_gather(
                x[:, :k].reshape(-1, *x.shape[2:]), 'replica', tiled=True
            ),
            blocks,
        )

    def peer_predictions(self, own, index):
        """[N-1, n, S, ..., V]: for each of this group's replicas r (`index`,
        [n]), its peers' (r+k) % N current logits on the shared batch
        (all-gathered over `replica`, under stop-gradient)."""
        every = jax.lax.all_gather(jax.lax.stop_gradient(own), 'replica', tiled=True)
        return jnp.stack(
            [
                every[(index + k) % self.num_replicas]
                for k in range(1, self.num_replicas)
            ]
        )

    def distillation(self, logits, peers, where):
        """[N] mean distance from each replica to its peers' mean prediction."""
        t = self.temperature
        # Mean of the peers' tempered probabilities, as logits at temperature
        # T: log mean_k p_k = logsumexp_k log p_k - log K, in log space (no
        # underflow to log 0); one peer is its own log-softmax.
        log_probs = jax.nn.log_softmax(peers / t, axis=-1)
        if peers.shape[0] == 1:
            target = t * log_probs[0]
        else:
            mean = jax.nn.logsumexp(log_probs, axis=0) - jnp.log(peers.shape[0])
            target = t * mean
        fn = losses.distill_kl if self.distance == 'kl' else losses.soft_cross_entropy
        per_token = fn(logits, target, temperature=t, where=where)
        return jax.vmap(losses.masked_mean)(per_token, where)

    def replica_params(self, params, i: int):
        """Replica i as a standalone model (a composite's capacity extracted)."""
        p = jax.tree.map(lambda x: x[i], params)
        if hasattr(self.model, 'extract'):  # A composite.
            largest = len(self.model.names) - 1
            p = self.model.extract(
                p, self.replica_capacities[i] if self.replica_capacities else largest
            )
        return p

    def eval_params(self, params, extra):
        """Replica 0 (every replica is a full model)."""
        del extra
        return self.replica_params(params, 0)

    def eval_models(self, params, extra):
        """Each replica as a standalone model: {'r0': params_0, ...}."""
        del extra
        return {
            f'r{i}': self.replica_params(params, i) for i in range(self.num_replicas)
        }
