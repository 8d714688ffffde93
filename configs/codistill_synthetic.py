"""Codistillation of two Transformers on the built-in translation task.

Two replicas, each on half the devices and its own half of every global batch,
distil from each other's stale copies after a burn-in.
  python -m jaxdistill.train --config configs/codistill_synthetic.py --workdir /tmp/codistill
"""

import ml_collections
import translation_base


def get_config(arg=None):
    config = translation_base.get_config(arg)
    config.method = ml_collections.ConfigDict()
    # Registered method name.
    config.method.name = 'codistill'
    # Models trained together; the devices split into this many groups.
    config.method.num_replicas = 2
    # Distillation weight after burn-in: a number or a schedule spec
    # ({'kind': 'linear', ...}); see jaxdistill/schedules.py.
    config.method.weight = 1.0
    # Plain training before distillation starts (Anil et al. burn in first).
    config.method.burn_in_steps = 400
    # Steps between refreshes of the stale peer copies (PFN's code: 50).
    config.method.exchange_every = 50
    # Softmax temperature of the distillation term.
    config.method.temperature = 1.0
    # 'kl' (KL(peers || replica)) or 'soft_ce' (cross entropy to the peers).
    config.method.distance = 'kl'
    # Label smoothing of each replica's own cross entropy.
    config.method.label_smoothing = 0.1
    # 'params': distil from stale peer copies refreshed every exchange_every
    # steps (the paper); 'predictions': from the peers' current predictions
    # on a shared batch, exchanged every step (PFN's variant; no stale copies).
    config.method.exchange = 'params'
    # exchange='predictions': the share of each replica's rows all replicas
    # predict on (the distillation term is computed there).
    config.method.shared_fraction = 0.25
    # With a composite model (model.composite.kind, .fractions): the capacity
    # of each replica, e.g. ('x0.5', 'x1') for a half-width and a full-width
    # replica; () = every replica the full model.
    config.method.replica_capacities = ()
    # > 0: the output layer fused with the loss, blocks of this many rows
    # (losses.linear_distill_cross_entropy): neither a replica's nor its peers'
    # [tokens, vocabulary] logits are ever all in memory. exchange='params' only.
    config.method.output_chunk_rows = 0
    # Each replica gets batch_tokens // num_replicas of every global batch.
    config.data.batch_tokens = 4096
    config.num_train_steps = 1200
    if translation_base.parse_arg(arg).get('runlocal'):
        config.num_train_steps = 20
        config.method.burn_in_steps = 6
        config.method.exchange_every = 4
        config.data.batch_tokens = 1024
    return config
