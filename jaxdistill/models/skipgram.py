"""Skip-gram with negative sampling (word2vec SGNS) in JAX.

Parameters are two [V, D] tables: `input` (the word vectors one keeps,
word2vec's syn0, uniform in ±0.5/D) and `output` (syn1neg, zeros).

`sgns_loss` is the per-example loss, usable as one head of a multi-task
model over a shared embedding table. `make_train_chunk` is the fast trainer
step: plain SGD with a learning rate given per step (word2vec's linear
decay), sparse row updates with `.at[].add`, and many steps per call with
`lax.scan`.

Batched versus word2vec's Hogwild SGD. word2vec updates the rows after every
(context, center) pair, drawing K fresh negatives for each. Here one step
takes a contiguous chunk of the subsampled corpus
(`data.words.window_batches`, 512 centers by default), computes every
pair's gradient from the same parameters and adds them up (the sum, so the
learning rate means what it means in word2vec). Four things make it fast on a CPU:

* Input rows are gathered once per chunk token; each center's context
  window is a static shifted slice of them, so a step gathers and scatters
  about 2 rows per center for the positives, not 2 per pair.
* Negatives are shared, as in Ji et al. 2016 ("Parallelizing Word2Vec in
  Shared and Distributed Memory", who share them among the contexts of a
  center): a run of `group` consecutive tokens shares N negatives, scored
  with one small matmul, each weighted by K / N times the number of pairs
  the token is context in. The expected loss and gradient equal word2vec's,
  but for one thing: word2vec skips a negative that is the pair's own centre
  word, and here a shared negative that equals a centre is scored (about
  0.2% of the draws on the Brown corpus with the default subsampling; a
  per-pair mask would undo the sharing). The MT2ST skip-gram loss, per
  pair, does skip it (`skipgram_batch_loss`).
* Many steps run in one jitted `lax.scan`, with in-place `.at[].add`.
* `window_logits` has a hand-written gradient: sums of slices of arrays
  padded once, where autodiff's transpose of each slice is a pad
  (`benchmarks/skipgram_step.py` times both).

Summing stale updates is word2vec's sequential SGD to first order, but a
frequent word (or any word of a tiny vocabulary) can take hundreds of
updates in one step, and their sum overshoots where sequential updates
would correct each other. `apply_updates` therefore caps each row at
`cap` pair updates' worth per step (the mean of its updates times `cap`).
On the Brown corpus with 1,024 centers a step and cap 64 it scales about
5 input rows and 50-60 output rows a step (the most frequent words, and
topical words repeated within a chunk): ~5% and ~25% of the update
weight; fewer at the default 512 centers.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np


def init_params(rng: jax.Array, vocab_size: int, dim: int) -> dict:
    """{'input': [V, D] uniform(±0.5/D), 'output': [V, D] zeros} (word2vec's)."""
    bound = 0.5 / dim
    return {
        'input': jax.random.uniform(rng, (vocab_size, dim), jnp.float32, -bound, bound),
        'output': jnp.zeros((vocab_size, dim), jnp.float32),
    }


def sgns_loss(
    inputs, positives, negatives, *, where=None, negative_where=None, negative_scale=1.0
):
    """-log σ(u·v⁺) - Σ_k log σ(-u·v⁻_k) per (input, positive) example.

    Args:
      inputs: [..., D] input vectors u (context words).
      positives: [..., D] output vectors v⁺ of the true words; broadcastable
        against `inputs`.
      negatives: [..., K, D] output vectors of the K negatives; the leading
        axes broadcast against `inputs`.
      where: optional bool [...]: False → 0 (and zero gradient).
      negative_where: optional bool [..., K]: False drops that negative (e.g.
        a negative equal to the true word, which word2vec skips).
      negative_scale: multiplies the negative terms (K / N when N shared
        negatives stand in for K).
    Returns:
      [...] float32 array.
    """
    pos_logit = jnp.sum(inputs * positives, axis=-1)
    neg_logit = jnp.sum(inputs[..., None, :] * negatives, axis=-1)
    neg_terms = -jax.nn.log_sigmoid(-neg_logit)
    if negative_where is not None:
        neg_terms = jnp.where(negative_where, neg_terms, 0.0)
    loss = -jax.nn.log_sigmoid(pos_logit) + negative_scale * jnp.sum(neg_terms, axis=-1)
    if where is not None:
        loss = jnp.where(where, loss, 0.0)
    return loss


def offsets(window: int) -> np.ndarray:
    """[2·window] context offsets -window..-1, 1..window."""
    return np.array([o for o in range(-window, window + 1) if o != 0])


def chunk_pairs(batch: dict, window: int) -> jax.Array:
    """[C, 2W] bool: which (center, offset) pairs of one chunk count.

    A pair counts if both tokens are real, in the same sentence, and the
    offset is within the center's effective window.

    Args:
      batch: one chunk of `data.words.window_batches` (no leading S axis).
    """
    tokens, sent, win = batch['tokens'], batch['sentence'], batch['window']
    c = win.shape[0]
    center_tok, center_sent = tokens[window : window + c], sent[window : window + c]
    cols = []
    for o in offsets(window):
        ok = (sent[window + o : window + o + c] == center_sent) & (abs(o) <= win)
        cols.append(ok & (tokens[window + o : window + o + c] >= 0))
    return jnp.stack(cols, axis=1) & (center_tok >= 0)[:, None]


def context_counts(pairs: jax.Array, window: int) -> jax.Array:
    """[C + 2W] float32: in how many counted pairs each chunk token is context."""
    c = pairs.shape[0]
    counts = jnp.zeros(c + 2 * window, jnp.float32)
    for i, o in enumerate(offsets(window)):
        counts = counts.at[window + o : window + o + c].add(pairs[:, i])
    return counts


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def window_logits(u: jax.Array, v: jax.Array, window: int) -> jax.Array:
    """[C, 2W] logits u[W + o + c] · v[c] of every (center c, offset o) pair.

    Args:
      u: [C + 2W, D] input rows of the chunk tokens.
      v: [C, D] output rows of the centers.
      window: W.

    Every term is a multiply-sum over a shifted slice. The gradient is
    written by hand: autodiff's transpose of a slice is a pad, and its sum of
    2W pads of [C, D] products was the costliest kernel of the step in a
    profile on XLA's CPU backend; here both gradients are sums of slices of
    arrays padded once. `benchmarks/skipgram_step.py` times an epoch with
    each. Same values as autodiff (tested).
    """
    c = v.shape[0]
    return jnp.stack(
        [jnp.sum(u[window + o : window + o + c] * v, -1) for o in offsets(window)], 1
    )


def _window_logits_fwd(u, v, window):
    return window_logits(u, v, window), (u, v)


def _window_logits_bwd(window, residuals, g):
    u, v = residuals
    c, n = v.shape[0], u.shape[0]
    offs = offsets(window)
    grad_v = sum(
        g[:, i : i + 1] * u[window + o : window + o + c] for i, o in enumerate(offs)
    )
    # u[j] meets v[j - W - o] with coefficient g[j - W - o, o]: pad g and v by
    # 2W on each side, and every offset's term is a slice starting at W - o.
    pad = ((2 * window, 2 * window), (0, 0))
    gp, vp = jnp.pad(g, pad), jnp.pad(v, pad)
    grad_u = sum(
        gp[window - o : window - o + n, i : i + 1] * vp[window - o : window - o + n]
        for i, o in enumerate(offs)
    )
    return grad_u, grad_v


window_logits.defvjp(_window_logits_fwd, _window_logits_bwd)


def _grouped(x: jax.Array, groups: int) -> jax.Array:
    """[T, ...] -> [G, ceil(T / G), ...], zero-padded at the end."""
    rows = -(-x.shape[0] // groups)
    pad = [(0, rows * groups - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
    return jnp.pad(x, pad).reshape(groups, rows, *x.shape[1:])


def chunk_loss(rows: dict, pairs, counts, negative: int) -> jax.Array:
    """SGNS loss summed over every pair of one chunk, negatives shared.

    Equals the sum over counted pairs (center c, context j) of
    `sgns_loss(u_j, v_c, negatives of j's group, negative_scale=K / N)`:
    the N negatives of a group of consecutive tokens serve every pair whose
    context is in the group, so the expected loss and gradient are
    word2vec's (which draws K per pair).

    Args:
      rows: {'input': [C + 2W, D] input rows of the chunk tokens, 'output':
        [C, D] output rows of the centers, 'negative': [G, N, D] output
        rows of each group's negatives}.
      pairs: [C, 2W] bool, `chunk_pairs` of the chunk.
      counts: [C + 2W] float32, `context_counts` of `pairs`.
      negative: K, the negatives each pair stands for.
    Returns:
      scalar.
    """
    u, v = rows['input'], rows['output']
    window = pairs.shape[1] // 2
    pos_logit = window_logits(u, v, window)
    pos = jnp.sum(jnp.where(pairs, -jax.nn.log_sigmoid(pos_logit), 0.0))
    groups, shared = rows['negative'].shape[:2]
    weight = _grouped(counts, groups) * (negative / shared)
    neg_logit = jnp.einsum('grd,gnd->grn', _grouped(u, groups), rows['negative'])
    neg = jnp.sum(weight * jnp.sum(-jax.nn.log_sigmoid(-neg_logit), axis=-1))
    return pos + neg


def row_scale(ids, weights, vocab: int, cap: float) -> jax.Array:
    """min(1, cap / total weight of the row) for each contribution.

    Args:
      ids: [R] row of each contribution (vocab for padding).
      weights: [R] how many pair updates each contribution sums.
    Returns:
      [R] float32 factors, 1 for rows with at most `cap` pair updates.
    """
    totals = jnp.zeros(vocab, jnp.float32).at[ids].add(weights, mode='drop')
    per_row = totals.at[ids].get(mode='fill', fill_value=1.0)
    return jnp.minimum(1.0, cap / jnp.maximum(per_row, 1e-6))


def chunk_updates(params: dict, batch: dict, window: int, negative: int):
    """Loss and sparse gradients of one chunk.

    Args:
      batch: one chunk of `data.words.window_batches` plus its 'pairs' and
        'counts' (`chunk_pairs`, `context_counts`).
    Returns:
      (loss sum, updates): updates maps 'input' and 'output' to (ids [R]
      (vocab for padding), gradient rows [R, D], weights [R]: how many pair
      updates each row sums).
    """
    vocab, dim = params['input'].shape
    tokens, neg_ids = batch['tokens'], batch['negatives']
    centers = tokens[window : window + batch['window'].shape[0]]
    rows = {
        'input': params['input'].at[tokens].get(mode='clip'),
        'output': params['output'].at[centers].get(mode='clip'),
        'negative': params['output'].at[neg_ids].get(mode='clip'),
    }
    pairs, counts = batch['pairs'], batch['counts']
    loss, grads = jax.value_and_grad(chunk_loss)(rows, pairs, counts, negative)
    groups, shared = neg_ids.shape
    draw_weight = _grouped(counts, groups).sum(1) * (negative / shared)
    out_ids = jnp.concatenate(
        [jnp.where(centers < 0, vocab, centers), neg_ids.reshape(-1)]
    )
    out_grad = jnp.concatenate([grads['output'], grads['negative'].reshape(-1, dim)])
    out_weight = jnp.concatenate(
        [pairs.sum(1).astype(jnp.float32), jnp.repeat(draw_weight, shared)]
    )
    in_ids = jnp.where(tokens < 0, vocab, tokens)
    return loss, {
        'input': (in_ids, grads['input'], counts),
        'output': (out_ids, out_grad, out_weight),
    }


def apply_updates(params: dict, updates: dict, lr, cap: float) -> dict:
    """Plain SGD on the rows `chunk_updates` names.

    Each row moves by -lr times the sum of its pairs' gradients, as word2vec
    would to first order, except that a row touched by more than `cap` pair
    updates in the step moves by `cap` updates' worth (their mean times
    `cap`): summed stale updates of a frequent word would otherwise
    overshoot where word2vec's sequential ones correct each other.
    """
    new = {}
    for name, (ids, grad, weight) in updates.items():
        step = lr * row_scale(ids, weight, params[name].shape[0], cap)[:, None]
        new[name] = params[name].at[ids].add(-step * grad, mode='drop')
    return new


def sgd_chunk(params: dict, batch: dict, lr, window: int, negative: int, cap: float):
    """One SGD step on one chunk (see `apply_updates`); -> (params, loss sum)."""
    loss, updates = chunk_updates(params, batch, window, negative)
    return apply_updates(params, updates, lr, cap), loss


def _with_pairs(batches: dict, window: int) -> dict:
    pairs = jax.vmap(chunk_pairs, in_axes=(0, None))(batches, window)
    counts = jax.vmap(context_counts, in_axes=(0, None))(pairs, window)
    return {**batches, 'pairs': pairs, 'counts': counts}


def _scan_chunks(params, batches, lrs, window, negative, cap):
    """S SGD steps in a `lax.scan` -> (params, (loss sum, pair count))."""
    batches = _with_pairs(batches, window)

    def body(p, xs):
        return sgd_chunk(p, xs[0], xs[1], window, negative, cap)

    params, losses = jax.lax.scan(body, params, (batches, lrs))
    return params, (jnp.sum(losses), jnp.sum(batches['pairs']))


def make_train_chunk(window: int, negative: int, cap: float = 64.0):
    """Jitted `(params, batches, lrs) -> (params, (loss sum, pair count))`.

    `batches` holds S chunks (the arrays of `data.words.window_batches` with
    their leading S axis, without 'words'); `lrs` is [S] float32, one
    learning rate per chunk; `cap` as in `apply_updates`. The S steps run in
    one `lax.scan`; `params` is donated.
    """
    run = functools.partial(_scan_chunks, window=window, negative=negative, cap=cap)
    return jax.jit(run, donate_argnums=0)
