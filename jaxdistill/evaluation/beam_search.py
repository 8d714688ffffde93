"""Batched beam search with the Transformer's explicit KV cache.

The search follows fairseq's `SequenceGenerator`, the decoder of the published
Multi30k reference:

* Each step ranks the K·V one-token extensions of the K live beams of a
  sentence by their summed log-probability and keeps the best 2·K.
* Extensions ending in EOS are finished only when they rank among the first K
  (so beam size 1 is exactly greedy decoding); the best K extensions that do
  not end in EOS become the next live beams.
* A finished hypothesis scores `sum log p / length ** alpha` (fairseq's
  `--lenpen`; `length` counts EOS), and each sentence keeps its best K.
* A sentence stops once K hypotheses have finished (fairseq's stopping rule).
* PAD and BOS are never extensions (their log-probability is set to -inf
  after the softmax, as fairseq does for PAD).
  At the last position (`max_len`) every surviving extension is finished, cut
  like greedy decoding cuts: such a hypothesis has no EOS and length max_len.

With a beam wide enough to hold every prefix the search is exhaustive, which
the tests check against enumerating all sequences of a tiny model.
"""

import functools

import jax
import jax.numpy as jnp

from jaxdistill.evaluation.decode import greedy_decode
from jaxdistill.evaluation.decode import never_generated
from jaxdistill.models.transformer import Transformer

NEG_INF = -jnp.inf


def beam_search(
    model: Transformer,
    params,
    inputs: jax.Array,
    *,
    beam_size: int,
    max_len: int,
    length_penalty: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """Best hypothesis per sentence.

    Args:
      model: a `Transformer` (hashable; a jit static argument).
      params: its variables, e.g. {'params': ...}.
      inputs: int32 [B, Ls] source ids, PAD-padded.
      beam_size: K >= 1 live hypotheses per sentence.
      max_len: most target positions (<= model.config.max_len).
      length_penalty: alpha of `score = log p / length ** alpha`; 0 ranks by
        log-probability alone, 1 by log-probability per token.
    Returns:
      (tokens int32 [B, max_len] with EOS included and PAD after it,
       scores float32 [B], the length-normalised log-probability). A row
      whose source is all PAD (the rows that fill a batch) counts as
      finished from the start, so it does not keep the loop going: its
      tokens are all PAD and its score -inf.
    One compilation per (input shape, beam_size, max_len).
    """
    if beam_size < 1:
        raise ValueError(f'beam_size must be >= 1, got {beam_size}.')
    if not 1 <= max_len <= model.config.max_len:
        raise ValueError(
            f'max_len={max_len} must be in 1..model max_len={model.config.max_len}.'
        )
    return _beam_search_jit(
        model,
        params,
        jnp.asarray(inputs, jnp.int32),
        int(beam_size),
        int(max_len),
        jnp.float32(length_penalty),
    )


def generate(
    model: Transformer,
    params,
    inputs: jax.Array,
    *,
    beam_size: int,
    max_len: int,
    length_penalty: float = 1.0,
) -> jax.Array:
    """Translations int32 [B, max_len] (EOS, then PAD) of inputs int32 [B, Ls].

    Greedy decoding when beam_size <= 1 (the same result as a beam of one,
    without the beam's bookkeeping), else `beam_search`.
    """
    if beam_size <= 1:
        return greedy_decode(model, params, inputs, max_len=max_len)
    return beam_search(
        model,
        params,
        inputs,
        beam_size=beam_size,
        max_len=max_len,
        length_penalty=length_penalty,
    )[0]


def _gather_beams(tree, parents: jax.Array, batch: int, beam: int):
    """Rows [B·K, ...] of every leaf reordered by parents int [B, K]."""

    def gather(x):
        x = x.reshape((batch, beam) + x.shape[1:])
        idx = parents.reshape(parents.shape + (1,) * (x.ndim - 2))
        x = jnp.take_along_axis(x, idx, axis=1)
        return x.reshape((batch * beam,) + x.shape[2:])

    return jax.tree.map(gather, tree)


def _merge_finished(fin, cand_tokens, cand_scores, beam: int):
    """Best `beam` of finished (tokens [B,K,T], scores [B,K]) and candidates."""
    tokens = jnp.concatenate([fin[0], cand_tokens], axis=1)
    scores = jnp.concatenate([fin[1], cand_scores], axis=1)
    top, idx = jax.lax.top_k(scores, beam)
    return jnp.take_along_axis(tokens, idx[:, :, None], axis=1), top


def _select(logp, t, alive, alive_lp, fin, n_fin, *, max_len, alpha, eos_id):
    """One step of hypothesis bookkeeping, for every sentence of the batch.

    Args:
      logp: [B, K, V] next-token log-probabilities of the live beams.
      t: the position being generated (0-based).
      alive: int [B, K, 1 + max_len] BOS and tokens of the live beams.
      alive_lp: [B, K] their summed log-probabilities (-inf: no beam).
      fin: (tokens int [B, K, max_len], normalised scores [B, K]) finished.
      n_fin: int [B] hypotheses finished so far.
    Returns:
      (alive, alive_lp, fin, n_fin, parents int [B, K]: the live beam each
      new live beam extends).
    """
    batch, beam, vocab = logp.shape
    cand = (alive_lp[:, :, None] + logp).reshape(batch, beam * vocab)
    top_lp, top_idx = jax.lax.top_k(cand, 2 * beam)
    parent, tok = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)
    seqs = jnp.take_along_axis(alive, parent[:, :, None], axis=1)
    seqs = jax.lax.dynamic_update_slice_in_dim(seqs, tok[:, :, None], t + 1, axis=2)
    is_eos = tok == eos_id
    # Only the first K candidates may finish (so K = 1 is greedy); at the
    # last position all of them do, cut like greedy decoding cuts.
    rank_ok = jnp.arange(2 * beam)[None] < beam
    finish = (is_eos | (t == max_len - 1)) & rank_ok & jnp.isfinite(top_lp)
    finish &= (n_fin < beam)[:, None]
    norm = (t + 1).astype(jnp.float32) ** alpha
    fin = _merge_finished(
        fin, seqs[:, :, 1:], jnp.where(finish, top_lp / norm, NEG_INF), beam
    )
    n_fin = n_fin + jnp.sum(finish, axis=1)
    # The best K extensions that do not end in EOS live on.
    keep_lp, keep = jax.lax.top_k(jnp.where(is_eos, NEG_INF, top_lp), beam)
    alive = jnp.take_along_axis(seqs, keep[:, :, None], axis=1)
    parents = jnp.take_along_axis(parent, keep, axis=1)
    return alive, keep_lp, fin, n_fin, parents


def _initial_state(c, batch: int, beam: int, max_len: int, cache):
    """(t, cache, alive, alive_lp, finished, n_finished) before position 0.

    Only beam 0 is live at the start, so the first step does not repeat one
    hypothesis K times.
    """
    alive = jnp.full((batch, beam, max_len + 1), c.pad_id, jnp.int32)
    alive = alive.at[:, :, 0].set(c.bos_id)
    alive_lp = jnp.where(jnp.arange(beam) == 0, 0.0, NEG_INF).astype(jnp.float32)
    fin = (
        jnp.full((batch, beam, max_len), c.pad_id, jnp.int32),
        jnp.full((batch, beam), NEG_INF, jnp.float32),
    )
    alive_lp = jnp.broadcast_to(alive_lp, (batch, beam))
    return jnp.int32(0), cache, alive, alive_lp, fin, jnp.zeros((batch,), jnp.int32)


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _beam_search_jit(model, params, inputs, beam, max_len, alpha):
    """Jitted body of `beam_search`; a while_loop over target positions."""
    c = model.config
    batch = inputs.shape[0]
    rows = batch * beam
    encoded = model.apply(params, inputs, method=Transformer.encode)
    cross = model.apply(params, encoded, method=Transformer.precompute_cross)
    expand = lambda x: jnp.repeat(x, beam, axis=0)
    encoded, inputs_k = expand(encoded), expand(inputs)
    cache = model.apply(params, rows, max_len, method=Transformer.init_cache)
    cache['cross'] = jax.tree.map(expand, cross)

    def body(state):
        t, cache, alive, alive_lp, fin, n_fin = state
        token = jax.lax.dynamic_index_in_dim(alive, t, axis=2, keepdims=False)
        logits, cache = model.apply(
            params,
            encoded,
            inputs_k,
            token.reshape(rows),
            t,
            cache,
            method=Transformer.decode_step,
        )
        # Normalised over every id, then PAD and BOS ruled out (fairseq).
        logp = never_generated(jax.nn.log_softmax(logits), c).reshape(batch, beam, -1)
        alive, alive_lp, fin, n_fin, parents = _select(
            logp, t, alive, alive_lp, fin, n_fin,
            max_len=max_len, alpha=alpha, eos_id=c.eos_id,
        )  # fmt: skip
        cache = {**cache, 'self': _gather_beams(cache['self'], parents, batch, beam)}
        return t + 1, cache, alive, alive_lp, fin, n_fin

    def cond(state):
        t, n_fin = state[0], state[5]
        return (t < max_len) & jnp.any(n_fin < beam)

    state = _initial_state(c, batch, beam, max_len, cache)
    filler = jnp.all(inputs == c.pad_id, axis=1)  # Rows that fill the batch.
    state = (*state[:5], jnp.where(filler, beam, state[5]).astype(jnp.int32))
    _, _, _, _, (tokens, scores), _ = jax.lax.while_loop(cond, body, state)
    return tokens[:, 0], scores[:, 0]
