"""Self-distillation loss of "Be Your Own Teacher" (Zhang et al., ICCV 2019).

Pure, per-example functions composed from `jaxdistill.losses`. With exits
z_0 .. z_D (shallow to deepest) and their features F_0 .. F_D:

    L = (1 − α) · Σ_i CE(z_i, y)
        + α · Σ_{i<D} T² · KL(softmax(z_D / T) ‖ softmax(z_i / T))
        + β · Σ_{i<D} ‖F_i − F_D‖²

The deepest exit is the teacher: its logits and features enter the KL and
hint terms under `stop_gradient` (inside `losses.distill_kl` / `hint_mse`),
so it learns from the labels only.
"""

from typing import Sequence

import jax
import jax.numpy as jnp

from jaxdistill import losses


def self_distill_terms(
    logits: Sequence[jax.Array],
    features: Sequence[jax.Array],
    labels: jax.Array,
    *,
    temperature=1.0,
    where=None,
) -> dict:
    """The unweighted per-exit terms.

    Args:
      logits: K arrays [B, C], shallow to deepest (K >= 1).
      features: K arrays [B, D].
      labels: [B] int.
      temperature: T > 0 (float or traced scalar).
      where: optional bool [B]; False rows give 0.
    Returns:
      {'ce': [K, B], 'kd': [K - 1, B], 'hint': [K - 1, B]} float32; 'kd' and
      'hint' are [0, B] when K == 1.
    """
    teacher_logits, teacher_feature = logits[-1], features[-1]
    ce = jnp.stack([losses.cross_entropy(z, labels, where=where) for z in logits])
    batch = jnp.shape(labels)
    kd = [
        losses.distill_kl(z, teacher_logits, temperature=temperature, where=where)
        for z in logits[:-1]
    ]
    hint = [losses.hint_mse(f, teacher_feature, where=where) for f in features[:-1]]
    empty = jnp.zeros((0, *batch), jnp.float32)
    return {
        'ce': ce,
        'kd': jnp.stack(kd) if kd else empty,
        'hint': jnp.stack(hint) if hint else empty,
    }


def self_distill_loss(
    logits: Sequence[jax.Array],
    features: Sequence[jax.Array],
    labels: jax.Array,
    *,
    alpha=0.1,
    temperature=3.0,
    beta=1e-6,
    where=None,
) -> tuple[jax.Array, dict]:
    """Per-example BYOT loss (see the module docstring).

    Args:
      logits: K arrays [B, C], shallow to deepest.
      features: K arrays [B, D].
      labels: [B] int.
      alpha: KD weight α in [0, 1]; the labels get 1 − α.
      temperature: T > 0.
      beta: feature-hint weight β.
      where: optional bool [B]; False rows give 0.
    Returns:
      (loss [B], terms) with terms as in `self_distill_terms`.
    """
    terms = self_distill_terms(
        logits, features, labels, temperature=temperature, where=where
    )
    loss = (
        (1.0 - alpha) * jnp.sum(terms['ce'], axis=0)
        + alpha * jnp.sum(terms['kd'], axis=0)
        + beta * jnp.sum(terms['hint'], axis=0)
    )
    return loss, terms
