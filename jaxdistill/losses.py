"""Pure loss math: per-example values, no batch reduction.

Every loss takes logits/features with a trailing class/feature axis and returns
one value per leading position (`[...]`); the caller reduces, usually with
`masked_mean`. `where` (a bool array broadcastable to `[...]`) zeroes the
values at masked positions; masked positions also get zero gradient as long
as their inputs are finite. (A NaN or inf there still reaches the gradient,
as 0 · NaN, JAX's usual `where` semantics: a model must keep padded
positions finite, e.g. mask attention with a large negative number, not
-inf, as this library's models do. Cleaning every input first would cost a
pass over [tokens, vocabulary] on every step.)
Teacher inputs are wrapped in `jax.lax.stop_gradient`. Computation happens in
at least float32 (bfloat16 inputs are upcast), using `log_softmax` so that
logits as large as 1e4 stay finite.
"""

import functools

import jax
import jax.numpy as jnp


def _upcast(x):
    """Promotes a float array to at least float32 (keeps float64)."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _apply_where(values, where):
    if where is None:
        return values
    return jnp.where(where, values, jnp.zeros_like(values))


def _shifted(student_logits, teacher_logits, temperature):
    """Tempered logits shifted by their maxima, and their log-sum-exps.

    Returns t, lse_t, s, lse_s with t = teacher / T - max (no gradient) and
    s = student / T - max, so log softmax = t - lse_t (and s - lse_s) without
    materialising the log-probabilities: the distillation losses below are
    then one elementwise pass and one reduction over V, forward and backward,
    instead of two log_softmax and two sums (benchmarks/distill_loss.py times
    both). The student's max is a constant shift
    whose gradient cancels (sum p = 1), so it is under stop_gradient.
    """
    t = jax.lax.stop_gradient(_upcast(teacher_logits)) / temperature
    s = _upcast(student_logits) / temperature
    t = t - jnp.max(t, axis=-1, keepdims=True)
    s = s - jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
    lse_t = jnp.log(jnp.sum(jnp.exp(t), axis=-1))
    lse_s = jnp.log(jnp.sum(jnp.exp(s), axis=-1))
    return t, lse_t, s, lse_s


def cross_entropy(logits, labels, *, label_smoothing=0.0, where=None):
    """Cross entropy against integer labels, optionally label-smoothed.

    The target distribution is (1 - ε)·onehot(label) + ε/V (Szegedy et al.
    2016, as `optax.smooth_labels`; fairseq's current loss puts ε/(V - 1) on
    each wrong class and 1 - ε on the label, which differs by ε/V per class:
    nothing for a vocabulary, 0.95/0.05 against 0.9/0.1 for two classes at
    ε = 0.1);
    the constant entropy of that target is *not* subtracted, so the minimum
    is positive when ε > 0.

    Args:
      logits: [..., V] float array.
      labels: [...] int array in [0, V). Positions masked out by `where` may
        hold any value (e.g. -1 padding).
      label_smoothing: ε in [0, 1).
      where: optional bool array broadcastable to [...]; False → 0.
    Returns:
      [...] float array.
    """
    logits = _upcast(logits)
    vocab = logits.shape[-1]
    labels = jnp.asarray(labels)
    if labels.shape != logits.shape[:-1]:
        # (A gather over mismatched axes fails deep inside JAX.)
        raise ValueError(
            f'cross_entropy: labels of shape {labels.shape} for logits of shape '
            f"{logits.shape}; labels must have the logits' shape without its "
            'last (class) axis. A model of your own: its apply must return '
            'logits [..., classes] for labels [...] (docs/extending.md).'
        )
    if where is not None:
        labels = jnp.where(where, labels, 0)
    labels = jnp.clip(labels, 0, vocab - 1)
    # log p = shifted - lse, but the [..., V] log-probabilities are never
    # materialised: nll and the smoothing term are lse minus one gathered
    # value and minus one mean. With `argmax` below, this cut the loss's cost
    # beside the logits matmuls from 110 to 50 ms on a [4096, 10000] block
    # (benchmarks/loss_head.py). The max is a constant shift whose gradient
    # cancels, as in `_shifted`.
    shifted = logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    lse = jnp.log(jnp.sum(jnp.exp(shifted), axis=-1))
    nll = lse - jnp.take_along_axis(shifted, labels[..., None], axis=-1)[..., 0]
    if label_smoothing:
        smooth = lse - jnp.mean(shifted, axis=-1)
        nll = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    return _apply_where(nll, where)


def linear_cross_entropy(
    h, table, labels, weights, *, label_smoothing=0.0, chunk_rows=256
):
    """Σ weights · cross_entropy(h @ tableᵀ, labels), a block of rows at a time.

    The output layer and its loss, fused: the [N, V] logits are never all in
    memory. Each block of `chunk_rows` rows computes its logits, their
    log-sum-exp, the loss, and at once the gradient with respect to the block
    of `h` and its share of the gradient of `table`, while the block's
    logits are still in cache. On a CPU the passes over materialised
    [N, V] logits are memory-bound: with the tiny Transformer (N=4,080,
    V=10,000, D=128) the train step ran 1.02-1.10x faster than with the
    materialised loss (benchmarks/results/loss_head.json).

    Because the gradient is computed in the forward pass, use this only where
    the gradient is wanted (a training loss); the result's cotangent only
    scales it. `weights` are constants (no gradient), e.g. `where / count`
    for a masked mean.

    Args:
      h: [N, D] float array (e.g. the decoder's final states, flattened).
      table: [V, D] float array: logits = h @ table.T (a shared embedding).
      labels: [N] int array in [0, V) where weights are non-zero.
      weights: [N] float array: each row's weight in the sum.
      label_smoothing: ε in [0, 1), as in `cross_entropy`.
      chunk_rows: rows per block (N is padded up to a multiple).
    Returns:
      (loss: scalar, the weighted sum; nll: [N] float32 unsmoothed negative
      log-likelihood; correct: [N] bool, as `accuracy`), the last two without
      gradient.
    """
    return _linear_ce(h, table, labels, weights, label_smoothing, chunk_rows)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _linear_ce(h, table, labels, weights, label_smoothing, chunk_rows):
    return _linear_ce_fwd(h, table, labels, weights, label_smoothing, chunk_rows)[0]


def _blocks(n, chunk_rows):
    """(rows a block, blocks, padding rows) for n rows in blocks of chunk_rows."""
    rows = max(1, min(int(chunk_rows), n))
    blocks = -(-n // rows)
    return rows, blocks, blocks * rows - n


def _split(x, rows, blocks, pad, axis=0):
    """x zero-padded to blocks·rows along `axis`, then [blocks, ..., rows, ...]."""
    if pad:
        x = jnp.pad(x, [(0, pad if a == axis else 0) for a in range(x.ndim)])
    x = x.reshape(x.shape[:axis] + (blocks, rows) + x.shape[axis + 1 :])
    return jnp.moveaxis(x, axis, 0)


def _unsplit(x, n):
    """[blocks, rows, ...] -> the first n rows, [n, ...] (undoes `_split`)."""
    return x.reshape((-1,) + x.shape[2:])[:n]


def _label_block(z, yb, wb, eps):
    """A block's label-smoothed cross entropy and its gradient w.r.t. z.

    z [R, V] logits, yb [R] labels, wb [R] weights -> (ce, nll, correct,
    d(Σ wb·ce)/dz = wb·(softmax(z) - (1-ε)·onehot - ε/V)).
    """
    rows, vocab = z.shape
    top = jnp.max(z, axis=-1, keepdims=True)
    e = jnp.exp(z - top)
    total = jnp.sum(e, axis=-1, keepdims=True)
    lse = jnp.log(total[:, 0]) + top[:, 0]
    at_label = jnp.take_along_axis(z, yb[:, None], axis=-1)[:, 0]
    nll = lse - at_label
    ce = nll
    if eps:
        ce = (1.0 - eps) * nll + eps * (lse - jnp.mean(z, axis=-1))
    g = e * (wb / total[:, 0])[:, None] - (wb * (eps / vocab))[:, None]
    g = g.at[jnp.arange(rows), yb].add(-(1.0 - eps) * wb)
    return ce, nll, at_label >= top[:, 0], g


def _linear_ce_fwd(h, table, labels, weights, label_smoothing, chunk_rows):
    n = h.shape[0]
    eps = float(label_smoothing)
    rows, blocks, pad = _blocks(n, chunk_rows)
    hf, tf, wf = _upcast(h), _upcast(table), _upcast(weights)
    y = jnp.clip(jnp.asarray(labels), 0, table.shape[0] - 1)

    def block(d_table, xs):
        hb, yb, wb = xs
        ce, nll, correct, g = _label_block(hb @ tf.T, yb, wb, eps)
        return d_table + g.T @ hb, (ce, nll, correct, g @ tf)

    split = lambda x: _split(x, rows, blocks, pad)
    d_table, (ce, nll, correct, d_h) = jax.lax.scan(
        block, jnp.zeros_like(tf), (split(hf), split(y), split(wf))
    )
    ce, nll, correct, d_h = (_unsplit(x, n) for x in (ce, nll, correct, d_h))
    loss = jnp.sum(ce * wf)
    # The forward of a custom_vjp is not differentiated: no stop_gradient.
    return (loss, nll, correct), (d_h.astype(h.dtype), d_table.astype(table.dtype))


def _linear_ce_bwd(label_smoothing, chunk_rows, residuals, cotangents):
    del label_smoothing, chunk_rows
    d_h, d_table = residuals
    g = cotangents[0]
    return (g * d_h).astype(d_h.dtype), (g * d_table).astype(d_table.dtype), None, None


_linear_ce.defvjp(_linear_ce_fwd, _linear_ce_bwd)


def linear_distill_cross_entropy(
    h,
    table,
    labels,
    weights,
    peer_h,
    peer_tables,
    distill_weight,
    *,
    label_smoothing=0.0,
    temperature=1.0,
    distance='kl',
    chunk_rows=256,
):
    """Σ weights · (cross_entropy + λ · distance to peers), a block at a time.

    `linear_cross_entropy` with a distillation term: the student's logits are
    h @ tableᵀ; each of K peers' are peer_h[k] @ peer_tables[k]ᵀ; the target
    is the mean of the peers' softmax(· / T). Per row, as
    `cross_entropy(z, y, label_smoothing) + λ · fn(z, log q)` with fn
    `distill_kl` or `soft_cross_entropy` (T² scaled), without the [N, V]
    logits of the student or of any peer ever all in memory: each block of
    `chunk_rows` rows computes its student and peer logits, both terms, and
    at once the gradients with respect to its rows of `h` and its share of
    that of `table`. Codistillation's loss with a shared-embedding output
    layer (methods/codistill.py, `output_chunk_rows`).

    As in `linear_cross_entropy` the gradient is computed in the forward pass
    (use it for a training loss), `weights` are constants, and the peers
    (`peer_h`, `peer_tables`) and λ get no gradient.

    Args:
      h: [N, D] student states; table: [V, D] its output table.
      labels: [N] int in [0, V) where weights are non-zero.
      weights: [N] float: each row's weight in the sum.
      peer_h: [K, N, D] the peers' states on the same rows, K >= 1.
      peer_tables: [K, V, D] the peers' output tables.
      distill_weight: λ, a scalar (may be traced: a schedule's value).
      label_smoothing: ε in [0, 1).
      temperature: T > 0 of the distillation term.
      distance: 'kl' or 'soft_ce' (equal gradients; soft_ce adds the
        target's entropy to the value).
      chunk_rows: rows per block (N is padded up to a multiple).
    Returns:
      (loss: scalar, the weighted sum; ce: [N] the label term; dist: [N] the
      distillation term (before λ); nll: [N] unsmoothed; correct: [N] bool),
      all but `loss` without gradient.
    """
    if distance not in ('kl', 'soft_ce'):
        raise ValueError(f"distance must be 'kl' or 'soft_ce', got {distance!r}")
    return _linear_distill(
        h,
        table,
        labels,
        weights,
        peer_h,
        peer_tables,
        distill_weight,
        (float(label_smoothing), float(temperature), distance, int(chunk_rows)),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def _linear_distill(h, table, labels, weights, peer_h, peer_tables, lam, static):
    return _linear_distill_fwd(
        h, table, labels, weights, peer_h, peer_tables, lam, static
    )[0]


def _linear_distill_fwd(h, table, labels, weights, peer_h, peer_tables, lam, static):
    eps, temp, distance, chunk_rows = static
    n = h.shape[0]
    k = peer_h.shape[0]
    rows, blocks, pad = _blocks(n, chunk_rows)
    hf, tf, wf = _upcast(h), _upcast(table), _upcast(weights)
    phf = _upcast(jax.lax.stop_gradient(peer_h))
    ptf = _upcast(jax.lax.stop_gradient(peer_tables))
    lamf = _upcast(jax.lax.stop_gradient(lam))
    y = jnp.clip(jnp.asarray(labels), 0, table.shape[0] - 1)

    def block(d_table, xs):
        hb, phb, yb, wb = xs
        z = hb @ tf.T
        ce, nll, correct, g = _label_block(z, yb, wb, eps)
        # The target: log of the peers' mean tempered probabilities.
        log_peers = jax.nn.log_softmax(_peer_logits(phb, ptf) / temp, axis=-1)
        log_q = log_peers[0] if k == 1 else jax.nn.logsumexp(log_peers, 0) - jnp.log(k)
        q = jnp.exp(log_q)
        log_s = jax.nn.log_softmax(z / temp, axis=-1)
        cross = -jnp.sum(jnp.where(q > 0, q * log_s, 0.0), axis=-1)
        if distance == 'kl':
            cross = cross + jnp.sum(jnp.where(q > 0, q * log_q, 0.0), axis=-1)
        # d(T²·H(q, softmax(z/T)))/dz = T·(softmax(z/T) - q), weighted by w·λ.
        g = g + (wb * lamf * temp)[:, None] * (jnp.exp(log_s) - q)
        return d_table + g.T @ hb, (ce, temp**2 * cross, nll, correct, g @ tf)

    split = lambda x, axis=0: _split(x, rows, blocks, pad, axis)
    d_table, (ce, dist, nll, correct, d_h) = jax.lax.scan(
        block, jnp.zeros_like(tf), (split(hf), split(phf, 1), split(y), split(wf))
    )
    ce, dist, nll, correct, d_h = (
        _unsplit(x, n) for x in (ce, dist, nll, correct, d_h)
    )
    loss = jnp.sum(wf * (ce + lamf * dist))
    # The forward of a custom_vjp is not differentiated: no stop_gradient.
    return (loss, ce, dist, nll, correct), (
        d_h.astype(h.dtype),
        d_table.astype(table.dtype),
    )


def _peer_logits(peer_h_block, peer_tables):
    """[K, R, D], [K, V, D] -> [K, R, V]."""
    return jnp.einsum('krd,kvd->krv', peer_h_block, peer_tables)


def _linear_distill_bwd(static, residuals, cotangents):
    del static
    d_h, d_table = residuals
    g = cotangents[0]
    # Labels, weights, peers and λ: constants of the loss (no gradient).
    return (
        (g * d_h).astype(d_h.dtype),
        (g * d_table).astype(d_table.dtype),
        *([None] * 5),
    )


_linear_distill.defvjp(_linear_distill_fwd, _linear_distill_bwd)


def distill_kl(student_logits, teacher_logits, *, temperature=1.0, where=None):
    """T² · KL(softmax(t/T) ‖ softmax(s/T)) per example.

    Args:
      student_logits: [..., V] float array.
      teacher_logits: [..., V] float array; no gradient flows into it.
      temperature: T > 0; the T² factor keeps gradient scale independent of T.
      where: optional bool array broadcastable to [...]; False → 0.
    Returns:
      [...] float array, ≥ 0 up to rounding.
    """
    t, lse_t, s, lse_s = _shifted(student_logits, teacher_logits, temperature)
    p = jnp.exp(t - lse_t[..., None])
    # KL = sum p (log p - log q) = sum p (t - s) - lse_t + lse_s, as one
    # reduction over V (sum p = 1); 0 * log 0 taken as 0 where p underflows.
    kl = jnp.sum(jnp.where(p > 0, p * (t - s), 0.0), axis=-1) - lse_t + lse_s
    return _apply_where(temperature**2 * kl, where)


def soft_cross_entropy(student_logits, teacher_logits, *, temperature=1.0, where=None):
    """T² · H(softmax(t/T), softmax(s/T)) per example.

    Equals `distill_kl` plus T² times the teacher entropy, so the gradient with
    respect to the student is the same.

    Args:
      student_logits: [..., V] float array.
      teacher_logits: [..., V] float array; no gradient flows into it.
      temperature: T > 0.
      where: optional bool array broadcastable to [...]; False → 0.
    Returns:
      [...] float array.
    """
    t, lse_t, s, lse_s = _shifted(student_logits, teacher_logits, temperature)
    p = jnp.exp(t - lse_t[..., None])
    # H = -sum p log q = lse_s - sum p s (sum p = 1).
    h = lse_s - jnp.sum(jnp.where(p > 0, p * s, 0.0), axis=-1)
    return _apply_where(temperature**2 * h, where)


def hint_mse(student_features, teacher_features, *, where=None):
    """Squared L2 distance ‖s - t‖² summed over the feature axis (FitNets hint).

    Args:
      student_features: [..., D] float array.
      teacher_features: [..., D] float array; no gradient flows into it.
      where: optional bool array broadcastable to [...]; False → 0.
    Returns:
      [...] float array.
    """
    teacher = jax.lax.stop_gradient(_upcast(teacher_features))
    diff = _upcast(student_features) - teacher
    return _apply_where(jnp.sum(diff * diff, axis=-1), where)


def argmax(x, axis=-1):
    """`jnp.argmax` for float arrays, as two plain reductions.

    The index of the first maximum along `axis` (ties: lowest index, like
    `jnp.argmax`). XLA:CPU lowers `jnp.argmax` to a variadic (value, index)
    reduction, slower than this max followed by a min over the indices where
    the maximum is reached (benchmarks/loss_head.py times the loss and its
    metrics both ways); the max is shared with a log-sum-exp over the same
    logits. Rows holding NaN return x.shape[axis] (an index no label has),
    where `jnp.argmax` returns the NaN's position.
    """
    x = jnp.asarray(x)
    axis = axis % x.ndim
    top = jnp.max(x, axis=axis, keepdims=True)
    index = jax.lax.broadcasted_iota(jnp.int32, x.shape, axis)
    return jnp.min(jnp.where(x == top, index, x.shape[axis]), axis=axis)


def accuracy(logits, labels, *, where=None):
    """1.0 where the label's logit is the row's maximum, else 0.0.

    One maximum and one gathered value per row, no index search: on the
    [4080, 10000] output of a translation step this costs about one pass over
    the logits less than comparing against `argmax` (133 -> 108 ms for the
    output head's value and gradient on this project's CPU;
    benchmarks/results/loss_head.json), and the maximum is shared with
    `cross_entropy`'s. It differs from
    `argmax(logits) == labels` only where the label ties with another logit
    for the maximum, which counts as correct here; a row whose logits are all
    equal (a collapsed model) is therefore all correct, so read accuracy
    beside the loss. Rows holding NaN count as wrong.

    Args:
      logits: [..., V] array.
      labels: [...] int array; a label outside [0, V) is never correct.
      where: optional bool array broadcastable to [...]; False → 0.
    Returns:
      [...] float32 array of 0/1.
    """
    logits = jnp.asarray(logits)
    vocab = logits.shape[-1]
    labels = jnp.asarray(labels)
    valid = (labels >= 0) & (labels < vocab)
    index = jnp.clip(labels, 0, vocab - 1)[..., None]
    at_label = jnp.take_along_axis(logits, index, axis=-1)[..., 0]
    # NaN compares false: a row holding one has a NaN maximum.
    correct = valid & (at_label >= jnp.max(logits, axis=-1))
    return _apply_where(correct.astype(jnp.float32), where)


def masked_sum(values, where=None):
    """sum(values · w); positions with w == 0 contribute 0 even if NaN.

    Args:
      values: [...] array.
      where: optional bool or float array broadcastable to `values`.
    Returns:
      scalar.
    """
    values = jnp.asarray(values)
    if where is None:
        return jnp.sum(values)
    w = jnp.broadcast_to(jnp.asarray(where), values.shape).astype(values.dtype)
    return jnp.sum(jnp.where(w != 0, values * w, 0.0))


def masked_mean(values, where=None):
    """sum(values · w) / max(sum(w), 1); the plain mean when `where` is None.

    Meant for 0/1 masks (or integer counts): an all-False mask gives 0, not
    NaN. Fractional weights summing to less than 1 are divided by 1.

    Args:
      values: [...] array.
      where: optional bool or float array broadcastable to `values`.
    Returns:
      scalar.
    """
    values = jnp.asarray(values)
    if where is None:
        return jnp.mean(values)
    w = jnp.broadcast_to(jnp.asarray(where), values.shape).astype(values.dtype)
    return masked_sum(values, w) / jnp.maximum(jnp.sum(w), 1.0)
