"""Losses: golden values from float64 numpy, masking, jit, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxdistill import losses

RNG = np.random.default_rng(0)
S = RNG.normal(size=(2, 3, 5)) * 2.0  # student logits [B, L, V]
T = RNG.normal(size=(2, 3, 5)) * 2.0  # teacher logits
LABELS = RNG.integers(0, 5, size=(2, 3))
MASK = np.array([[True, True, False], [True, False, True]])


def np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_softmax(x):
    return np.exp(np_log_softmax(x))


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=tol, atol=tol)


def test_cross_entropy_golden_by_hand():
    # log_softmax([0, ln 3]) = [-ln 4, ln 3 - ln 4]; label 1 -> ln(4/3).
    logits = np.array([[0.0, np.log(3.0)]])
    close(losses.cross_entropy(logits, np.array([1])), [np.log(4 / 3)])
    close(losses.cross_entropy(logits, np.array([0])), [np.log(4.0)])
    # ε = 0.2, V = 2: target [0.1, 0.9] -> 0.1 ln 4 + 0.9 ln(4/3).
    close(
        losses.cross_entropy(logits, np.array([1]), label_smoothing=0.2),
        [0.1 * np.log(4.0) + 0.9 * np.log(4 / 3)],
    )


def test_cross_entropy_matches_numpy_with_smoothing_and_mask():
    eps, vocab = 0.1, S.shape[-1]
    target = (1 - eps) * np.eye(vocab)[LABELS] + eps / vocab
    want = -(target * np_log_softmax(S)).sum(-1)
    close(losses.cross_entropy(S, LABELS, label_smoothing=eps), want)
    got = losses.cross_entropy(S, LABELS, label_smoothing=eps, where=MASK)
    close(got, np.where(MASK, want, 0.0))
    assert got.shape == (2, 3)


def test_cross_entropy_masked_padding_labels_are_ignored():
    labels = np.where(MASK, LABELS, -1)  # padding id outside the vocab
    got = losses.cross_entropy(S, labels, where=MASK)
    want = -np.take_along_axis(np_log_softmax(S), LABELS[..., None], -1)[..., 0]
    close(got, np.where(MASK, want, 0.0))


def test_distill_kl_and_soft_cross_entropy_golden():
    for temp in (1.0, 2.5):
        p, log_p = np_softmax(T / temp), np_log_softmax(T / temp)
        log_q = np_log_softmax(S / temp)
        kl = temp**2 * (p * (log_p - log_q)).sum(-1)
        ce = -(temp**2) * (p * log_q).sum(-1)
        close(losses.distill_kl(S, T, temperature=temp), kl)
        close(losses.soft_cross_entropy(S, T, temperature=temp), ce)
        close(
            losses.distill_kl(S, T, temperature=temp, where=MASK),
            np.where(MASK, kl, 0.0),
        )
        close(
            losses.soft_cross_entropy(S, T, temperature=temp, where=MASK),
            np.where(MASK, ce, 0.0),
        )


def test_distill_kl_is_zero_for_identical_logits():
    close(losses.distill_kl(S, S, temperature=3.0), np.zeros((2, 3)))
    assert float(losses.distill_kl(S, T).min()) > 0


def test_distill_kl_by_hand():
    # p = [0.5, 0.5], q = [0.2, 0.8]: KL = 0.5 ln(0.5/0.2) + 0.5 ln(0.5/0.8).
    s = np.log(np.array([0.2, 0.8]))
    t = np.zeros(2)
    close(losses.distill_kl(s, t), 0.5 * np.log(2.5) + 0.5 * np.log(0.625))
    close(losses.soft_cross_entropy(s, t), -0.5 * np.log(0.2) - 0.5 * np.log(0.8))


def test_hint_mse_and_accuracy_golden():
    s = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    t = np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    close(losses.hint_mse(s, t), [8.0, 3.0])
    close(losses.hint_mse(s, t, where=np.array([False, True])), [0.0, 3.0])
    acc = losses.accuracy(S, LABELS)
    close(acc, (S.argmax(-1) == LABELS).astype(np.float64))
    assert acc.dtype == jnp.float32
    close(
        losses.accuracy(np.array([[0.1, 0.9], [2.0, 1.0]]), np.array([1, 1])),
        [1.0, 0.0],
    )


def test_masked_mean_and_sum():
    v = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    close(losses.masked_sum(v, MASK), 1 + 2 + 4 + 6)
    close(losses.masked_mean(v, MASK), (1 + 2 + 4 + 6) / 4)
    close(losses.masked_mean(v), 3.5)
    close(losses.masked_mean(v, np.zeros_like(MASK)), 0.0)  # no NaN
    close(losses.masked_mean(np.array([1.0, np.nan]), np.array([True, False])), 1.0)
    close(losses.masked_mean(v, np.array([True, False, True])), (1 + 3 + 4 + 6) / 4)


def test_jit_matches_eager():
    fns = {
        'ce': lambda s, t: losses.cross_entropy(
            s, LABELS, label_smoothing=0.1, where=MASK
        ),
        'kl': lambda s, t: losses.distill_kl(s, t, temperature=2.0, where=MASK),
        'sce': lambda s, t: losses.soft_cross_entropy(s, t, temperature=2.0),
        'hint': lambda s, t: losses.hint_mse(s, t, where=MASK),
        'acc': lambda s, t: losses.accuracy(s, LABELS, where=MASK),
        'mean': lambda s, t: losses.masked_mean(losses.distill_kl(s, t), MASK),
    }
    s, t = jnp.float32(S), jnp.float32(T)
    for name, fn in fns.items():
        np.testing.assert_allclose(
            jax.jit(fn)(s, t), fn(s, t), rtol=1e-6, atol=1e-6, err_msg=name
        )


def test_check_grads_float64():
    with jax.enable_x64(True):
        s, t = jnp.asarray(S, jnp.float64), jnp.asarray(T, jnp.float64)
        assert s.dtype == jnp.float64
        fns = [
            lambda x: losses.cross_entropy(x, LABELS, label_smoothing=0.1, where=MASK),
            lambda x: losses.distill_kl(x, t, temperature=2.0, where=MASK),
            lambda x: losses.soft_cross_entropy(x, t),
            lambda x: losses.hint_mse(x, t, where=MASK),
        ]
        for fn in fns:
            check_grads(jax.jit(fn), (s,), order=1, modes=['rev'])


def test_cross_entropy_gradient_is_softmax_minus_target():
    eps, vocab = 0.1, S.shape[-1]
    g = jax.jit(
        jax.grad(
            lambda x: losses.cross_entropy(
                x, LABELS, label_smoothing=eps, where=MASK
            ).sum()
        )
    )(jnp.float32(S))
    target = (1 - eps) * np.eye(vocab)[LABELS] + eps / vocab
    close(g, (np_softmax(S) - target) * MASK[..., None])


def test_teacher_gets_zero_gradient():
    s, t = jnp.float32(S), jnp.float32(T)
    for fn in (losses.distill_kl, losses.soft_cross_entropy, losses.hint_mse):
        gs, gt = jax.jit(jax.grad(lambda a, b: fn(a, b).sum(), argnums=(0, 1)))(s, t)
        assert float(jnp.abs(gs).sum()) > 0, fn.__name__
        np.testing.assert_array_equal(gt, 0.0, err_msg=fn.__name__)


def test_stable_for_huge_logits():
    big = np.array([[1e4, -1e4, 0.0], [0.0, 1e4, 1e4]], np.float32)
    other = np.array([[-1e4, 1e4, 0.0], [1e4, 0.0, -1e4]], np.float32)
    labels = np.array([1, 1])

    @jax.jit
    def compute(big, other):
        grads = jax.grad(
            lambda x: (
                losses.distill_kl(x, other).sum()
                + losses.cross_entropy(x, labels).sum()
            )
        )(big)
        return {
            'ce': losses.cross_entropy(big, labels, label_smoothing=0.1),
            'kl_self': losses.distill_kl(big, big),
            'kl': losses.distill_kl(big, other),
            'kl_t': losses.distill_kl(big, other, temperature=0.5),
            'kl_rev': losses.distill_kl(other, big),
            'sce': losses.soft_cross_entropy(big, other),
            'grads': grads,
        }

    out = compute(big, other)
    for name, value in out.items():
        assert np.all(np.isfinite(value)), name
    # Row 1: log-probs [-1e4 - ln 2, -ln 2, -ln 2], label 1.
    close(out['ce'][1], 0.9 * np.log(2.0) + 0.1 / 3 * (1e4 + 3 * np.log(2.0)), tol=1e-3)
    close(out['kl_self'], [0.0, 0.0])
    # KL([1, 0, 0] || [~0, 1, 0]) = 2e4 (the gap in log-probabilities).
    close(out['kl_rev'][0], 2e4, tol=1e-3)


def test_minus_inf_teacher_logits_are_ignored():
    t = np.array([0.0, 0.0, -np.inf], np.float32)
    s = np.array([0.0, 0.0, 5.0], np.float32)
    kl = losses.distill_kl(s, t)
    want = 0.5 * 2 * (np.log(0.5) - np_log_softmax(s.astype(np.float64))[0])
    close(kl, want)


@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float32])
def test_low_precision_inputs_compute_in_float32(dtype):
    out = losses.cross_entropy(jnp.asarray(S, dtype), LABELS)
    assert out.dtype == jnp.float32


def test_argmax_matches_jnp_argmax_with_ties_and_axes():
    rng = np.random.default_rng(0)
    # Few distinct values: most rows hold tied maxima.
    x = rng.integers(0, 3, size=(7, 5, 6)).astype(np.float32)
    for axis in (0, 1, 2, -1):
        np.testing.assert_array_equal(
            losses.argmax(x, axis=axis), np.argmax(x, axis=axis), err_msg=str(axis)
        )
    np.testing.assert_array_equal(jax.jit(losses.argmax)(x), np.argmax(x, axis=-1))
    ints = rng.integers(-5, 5, size=(9, 4))
    np.testing.assert_array_equal(losses.argmax(ints), np.argmax(ints, axis=-1))
    # A NaN row maps to an index no label has, so it never counts as correct.
    nan_row = np.array([[0.0, np.nan, 1.0], [0.0, 2.0, 1.0]])
    np.testing.assert_array_equal(losses.argmax(nan_row), [3, 1])
    close(losses.accuracy(nan_row, np.array([1, 1])), [0.0, 1.0])


def test_accuracy_is_label_at_the_maximum():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 4, 50)).astype(np.float32)  # No ties.
    labels = rng.integers(0, 50, size=(6, 4))
    labels[:, 0] = x[:, 0].argmax(-1)  # Some hits for certain.
    want = (x.argmax(-1) == labels).astype(np.float32)
    assert want.sum() >= 6
    np.testing.assert_array_equal(losses.accuracy(x, labels), want)
    np.testing.assert_array_equal(jax.jit(losses.accuracy)(x, labels), want)
    # A tie for the maximum counts as a hit, for every tied label.
    tied = np.array([[1.0, 3.0, 3.0, 0.0]])
    close(losses.accuracy(np.repeat(tied, 4, 0), np.arange(4)), [0.0, 1.0, 1.0, 0.0])
    # Labels outside [0, V) never hit (not even when clipping would), and
    # `where` masks.
    row = np.array([[5.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    close(losses.accuracy(row, np.array([-1, 3])), [0.0, 0.0])
    close(
        losses.accuracy(row, np.array([0, 2]), where=np.array([True, False])),
        [1.0, 0.0],
    )


@pytest.mark.parametrize('smoothing', [0.0, 0.1])
def test_linear_cross_entropy_matches_the_materialised_loss(smoothing):
    rng = np.random.default_rng(2)
    n, d, v = 37, 8, 29  # 37 rows: blocks of 16 leave a padded last block.
    h = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    table = jnp.asarray(rng.normal(size=(v, d)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, v, size=n))
    where = jnp.asarray(rng.random(n) < 0.8)
    weights = where / jnp.sum(where)

    def materialised(h, table):
        logits = h @ table.T
        ce = losses.cross_entropy(
            logits, labels, label_smoothing=smoothing, where=where
        )
        return losses.masked_mean(ce, where), (
            losses.cross_entropy(logits, labels),
            losses.accuracy(logits, labels),
        )

    def fused(h, table):
        loss, nll, correct = losses.linear_cross_entropy(
            h, table, labels, weights, label_smoothing=smoothing, chunk_rows=16
        )
        return 3.0 * loss, (nll, correct)  # The cotangent scales the gradient.

    (want, (nll, acc)), want_grads = jax.value_and_grad(
        lambda *a: (lambda l, aux: (3.0 * l, aux))(*materialised(*a)),
        argnums=(0, 1),
        has_aux=True,
    )(h, table)
    (got, (got_nll, correct)), grads = jax.jit(
        jax.value_and_grad(fused, argnums=(0, 1), has_aux=True)
    )(h, table)
    close(got, want)
    close(got_nll, nll)
    np.testing.assert_array_equal(correct, acc.astype(bool))
    assert 0 < int(correct.sum()) < n  # Not a vacuous comparison.
    for g, w in zip(grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize(
    'peers, distance, smoothing, temperature',
    [(1, 'kl', 0.0, 1.0), (2, 'kl', 0.1, 2.0), (3, 'soft_ce', 0.1, 3.0)],
)
def test_linear_distill_cross_entropy_matches_the_materialised_loss(
    peers, distance, smoothing, temperature
):
    """Codistillation's fused loss: label term + λ·(T²-scaled distance to the
    mean of the peers' tempered softmaxes), values and gradients as with
    materialised logits; no gradient into the peers or λ."""
    rng = np.random.default_rng(3)
    n, d, v = 37, 8, 29  # Blocks of 16 leave a padded last block.
    normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
    h, table = normal(n, d), normal(v, d)
    peer_h, peer_tables = normal(peers, n, d), normal(peers, v, d)
    labels = jnp.asarray(rng.integers(0, v, size=n))
    where = jnp.asarray(rng.random(n) < 0.8)
    weights = where / jnp.sum(where)
    lam = 0.7

    def materialised(h, table, peer_h, peer_tables, lam):
        z = h @ table.T
        log_p = jax.nn.log_softmax(
            jnp.einsum('knd,kvd->knv', peer_h, peer_tables) / temperature, axis=-1
        )
        log_q = jax.nn.logsumexp(log_p, axis=0) - jnp.log(peers)
        fn = losses.distill_kl if distance == 'kl' else losses.soft_cross_entropy
        dist = fn(z, temperature * log_q, temperature=temperature)
        ce = losses.cross_entropy(z, labels, label_smoothing=smoothing)
        return jnp.sum(weights * (ce + jax.lax.stop_gradient(lam) * dist)), (ce, dist)

    def fused(*args):
        loss, ce, dist, nll, correct = losses.linear_distill_cross_entropy(
            *args[:2],
            labels,
            weights,
            *args[2:],
            label_smoothing=smoothing,
            temperature=temperature,
            distance=distance,
            chunk_rows=16,
        )
        return loss, (ce, dist)

    args = (h, table, peer_h, peer_tables, jnp.float32(lam))
    grad = lambda f: jax.jit(
        jax.value_and_grad(f, argnums=(0, 1, 2, 3, 4), has_aux=True)
    )
    (want, (ce, dist)), want_grads = grad(materialised)(*args)
    (got, (got_ce, got_dist)), grads = grad(fused)(*args)
    close(got, want)
    close(got_ce, ce)
    close(got_dist, dist)
    assert float(jnp.min(dist)) > 0.01  # The peers disagree with the student.
    for g, w in zip(grads[:2], want_grads[:2]):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-6)
    for g in grads[2:]:  # Peers and λ are constants of the loss.
        assert not np.any(np.asarray(g))
    with pytest.raises(ValueError, match="distance must be 'kl' or 'soft_ce'"):
        losses.linear_distill_cross_entropy(
            h, table, labels, weights, peer_h, peer_tables, lam, distance='l2'
        )


def test_masked_mean_with_integer_counts():
    # Counts weigh each value: (2·1 + 1·2 + 0·3) / (2 + 1 + 0).
    v = np.array([1.0, 2.0, 3.0])
    close(losses.masked_mean(v, np.array([2, 1, 0])), 4.0 / 3.0)
    close(losses.masked_sum(v, np.array([2, 1, 0])), 4.0)
