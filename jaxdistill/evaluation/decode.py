"""Greedy decoding with the Transformer's explicit KV cache.

Neither decoder ever emits PAD or BOS (`never_generated`): fairseq's
generator masks PAD the same way, and BOS only starts a target.
"""

import functools

import jax
import jax.numpy as jnp

from jaxdistill.models.transformer import Transformer


def never_generated(scores: jax.Array, config) -> jax.Array:
    """`scores` [..., V] with PAD's and BOS's set to -inf: ids that are never
    a generated token. An untrained or weak model may rank them first."""
    neg = jnp.asarray(-jnp.inf, scores.dtype)
    return scores.at[..., config.pad_id].set(neg).at[..., config.bos_id].set(neg)


def greedy_decode(
    model: Transformer, params, inputs: jax.Array, *, max_len: int
) -> jax.Array:
    """Greedy (argmax) translation of a batch.

    Args:
      model: a `Transformer` (hashable; used as a jit static argument).
      params: its variables, e.g. {'params': ...}.
      inputs: int32 [B, Ls] source ids, PAD-padded.
      max_len: number of target positions to generate (<= model.config.max_len).
    Returns:
      int32 [B, max_len]: generated ids, EOS included, PAD (0) after EOS. Rows
      that never emit EOS are cut at max_len. A row whose source is all PAD
      (the rows that fill a batch) is all PAD, and does not keep the loop
      going.
    """
    if max_len > model.config.max_len:
        raise ValueError(
            f'max_len={max_len} exceeds the model max_len={model.config.max_len}.'
        )
    return _greedy_decode_jit(model, params, jnp.asarray(inputs, jnp.int32), max_len)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _greedy_decode_jit(model, params, inputs, max_len):
    """Jitted body of `greedy_decode`: a while_loop that ends once all rows end."""
    c = model.config
    batch = inputs.shape[0]
    encoded = model.apply(params, inputs, method=Transformer.encode)
    cache = model.apply(params, batch, max_len, method=Transformer.init_cache)
    cache['cross'] = model.apply(params, encoded, method=Transformer.precompute_cross)

    def cond(state):
        index, _, done, _, _ = state
        return (index < max_len) & ~jnp.all(done)

    def body(state):
        index, token, done, out, cache = state
        logits, cache = model.apply(
            params, encoded, inputs, token, index, cache, method=Transformer.decode_step
        )
        nxt = jnp.argmax(never_generated(logits, c), axis=-1).astype(jnp.int32)
        nxt = jnp.where(done, c.pad_id, nxt)
        out = jax.lax.dynamic_update_slice_in_dim(out, nxt[:, None], index, axis=1)
        return index + 1, nxt, done | (nxt == c.eos_id), out, cache

    state = (
        jnp.int32(0),
        jnp.full((batch,), c.bos_id, jnp.int32),
        jnp.all(inputs == c.pad_id, axis=1),  # Filler rows: done already.
        jnp.full((batch, max_len), c.pad_id, jnp.int32),
        cache,
    )
    return jax.lax.while_loop(cond, body, state)[3]
