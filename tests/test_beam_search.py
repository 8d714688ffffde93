"""Beam search against exhaustive search and greedy decoding on tiny models."""

import functools
import importlib
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill.evaluation import beam_search
from jaxdistill.evaluation import greedy_decode
from jaxdistill.models import make_transformer_config
from jaxdistill.models import Transformer

PAD, BOS, EOS = 0, 2, 3


def _model(vocab, seed=0, src_len=5):
    config = make_transformer_config(
        'tiny',
        vocab_size=vocab,
        d_model=16,
        d_ff=32,
        num_heads=2,
        num_encoder_layers=1,
        num_decoder_layers=2,
        max_len=16,
        # Untied, so the untrained model does not just copy its input token.
        share_embeddings=False,
    )
    model = Transformer(config)
    x = jnp.ones((1, src_len), jnp.int32)
    params = jax.jit(functools.partial(model.init, train=False))(
        jax.random.key(seed), x, x
    )
    return model, params


def _sources(vocab, batch, src_len, seed=0):
    """Random ids in [4, vocab) ending in EOS; the last row is padded."""
    rng = np.random.default_rng(seed)
    x = rng.integers(4, vocab, (batch, src_len)).astype(np.int32)
    x[:, -1] = EOS
    x[-1, 2:], x[-1, 1] = 0, EOS
    return jnp.asarray(x)


def _all_hypotheses(vocab, max_len):
    """Every sequence the search may return: [N, max_len], and lengths [N].

    Words of tokens other than EOS, PAD and BOS (never generated) of length
    0..max_len-1 followed by EOS, and words of length max_len without EOS
    (cut at the limit, as greedy decoding cuts).
    """
    words = [t for t in range(vocab) if t not in (EOS, PAD, BOS)]
    seqs, lengths = [], []
    for n in range(max_len + 1):
        for w in itertools.product(words, repeat=n):
            row = list(w) + ([EOS] if n < max_len else [])
            seqs.append(row + [0] * (max_len - len(row)))
            lengths.append(len(row))
    return np.array(seqs, np.int32), np.array(lengths)


@functools.lru_cache(maxsize=None)
def _forward(model):
    return jax.jit(functools.partial(model.apply, train=False))


def _teacher_forced_scores(model, params, source, seqs, lengths, alpha):
    """sum log p(seq | source) / length**alpha for every row of seqs."""
    inputs = jnp.repeat(source[None], len(seqs), axis=0)
    logits = _forward(model)(params, inputs, jnp.asarray(seqs))
    logp = jax.nn.log_softmax(logits)
    per_token = jnp.take_along_axis(logp, jnp.asarray(seqs)[..., None], -1)[..., 0]
    mask = np.arange(seqs.shape[1])[None] < lengths[:, None]
    return np.asarray(jnp.sum(jnp.where(mask, per_token, 0.0), -1)) / lengths**alpha


@pytest.fixture(scope='module')
def tiny():
    """A random model with 6 ids (PAD, UNK, BOS, EOS and two words)."""
    return _model(6) + (_sources(6, batch=3, src_len=5),)


@pytest.mark.parametrize('alpha', [0.0, 1.0])
def test_wide_beam_finds_the_exhaustive_best(tiny, alpha):
    vocab, max_len = 6, 4
    model, params, sources = tiny
    seqs, lengths = _all_hypotheses(vocab, max_len)
    assert len(seqs) == 1 + 3 + 9 + 27 + 81  # Words of UNK and the two words.
    # 121 beams hold every prefix of every length, so nothing is pruned.
    tokens, scores = beam_search(
        model,
        params,
        sources,
        beam_size=121,
        max_len=max_len,
        length_penalty=alpha,
    )
    for b in range(len(sources)):
        exhaustive = _teacher_forced_scores(
            model, params, sources[b], seqs, lengths, alpha
        )
        best = int(np.argmax(exhaustive))
        runner_up = np.sort(exhaustive)[-2]
        assert exhaustive[best] - runner_up > 1e-4, 'tie: pick another seed'
        np.testing.assert_array_equal(np.asarray(tokens[b]), seqs[best])
        np.testing.assert_allclose(float(scores[b]), exhaustive[best], atol=1e-4)


def test_narrow_beam_score_is_the_teacher_forced_score(tiny):
    model, params, sources = tiny
    max_len = 4
    tokens, scores = beam_search(
        model, params, sources, beam_size=3, max_len=max_len, length_penalty=0.6
    )
    tokens = np.asarray(tokens)
    for b in range(len(sources)):
        row = tokens[b]
        length = int(np.argmax(row == EOS)) + 1 if EOS in row else max_len
        assert (row[length:] == 0).all()
        expected = _teacher_forced_scores(
            model, params, sources[b], row[None], np.array([length]), 0.6
        )
        np.testing.assert_allclose(float(scores[b]), expected[0], atol=1e-4)


def test_beam_size_one_is_greedy():
    vocab, max_len = 24, 10
    model, params = _model(vocab, seed=0, src_len=7)
    sources = _sources(vocab, batch=16, src_len=7, seed=0)
    greedy = np.asarray(greedy_decode(model, params, sources, max_len=max_len))
    beam, _ = beam_search(model, params, sources, beam_size=1, max_len=max_len)
    np.testing.assert_array_equal(np.asarray(beam), greedy)
    # A beam of 3 over 10 positions: its beams are reordered between steps,
    # so each score (teacher-forced, by hand) needs the cache reordered too.
    tokens, scores = beam_search(model, params, sources, beam_size=3, max_len=max_len)
    tokens = np.asarray(tokens)
    lengths = np.array(
        [int(np.argmax(r == EOS)) + 1 if EOS in r else max_len for r in tokens]
    )
    assert lengths.max() > 3  # Long enough for a reordering to matter.
    for b in range(len(sources)):
        expected = _teacher_forced_scores(
            model, params, sources[b], tokens[b : b + 1], lengths[b : b + 1], 1.0
        )
        np.testing.assert_allclose(float(scores[b]), expected[0], atol=1e-4)
    assert beam.shape == (16, max_len) and beam.dtype == jnp.int32
    # Both kinds of row occur: stopped at EOS, and cut at max_len.
    assert (greedy == EOS).any(axis=1).any() and not (greedy == EOS).any(axis=1).all()
    # Rows of PAD alone (what fills an evaluation batch) are finished from
    # the start: all PAD out, and the other rows' results unchanged.
    filled = jnp.concatenate([sources, jnp.zeros((2, 7), jnp.int32)])
    for decode in (
        lambda x: greedy_decode(model, params, x, max_len=max_len),
        lambda x: beam_search(model, params, x, beam_size=3, max_len=max_len)[0],
    ):
        out = np.asarray(decode(filled))
        np.testing.assert_array_equal(out[:16], np.asarray(decode(sources)))
        assert (out[16:] == PAD).all()


def test_one_compilation_per_shape_and_bad_arguments(tiny):
    # The package re-exports the function under the module's name.
    lib = importlib.import_module('jaxdistill.evaluation.beam_search')
    model, params, sources = tiny
    run = lambda x, a: beam_search(
        model, params, x, beam_size=2, max_len=4, length_penalty=a
    )
    run(sources, 1.0)
    before = lib._beam_search_jit._cache_size()
    run(sources[::-1], 0.5)
    assert lib._beam_search_jit._cache_size() == before
    with pytest.raises(ValueError, match='beam_size'):
        beam_search(model, params, sources, beam_size=0, max_len=6)
    with pytest.raises(ValueError, match='max_len'):
        beam_search(model, params, sources, beam_size=2, max_len=17)
    with pytest.raises(ValueError, match='max_len'):
        beam_search(model, params, sources, beam_size=2, max_len=0)


def test_pad_and_bos_are_never_generated():
    """A model that ranks PAD and BOS first at every position still yields
    words, then EOS or the length limit: never PAD or BOS inside a
    hypothesis (fairseq masks PAD alike)."""
    vocab, max_len = 8, 6
    model, params = _model(vocab, seed=1, src_len=5)
    sources = _sources(vocab, batch=4, src_len=5, seed=1)
    # The decoder's last LayerNorm gives the constant e (scale 0, bias e),
    # and the output layer maps e to PAD 20, BOS 19 and 0 for the rest.
    p = params['params']
    e = jnp.ones(16) / 4.0  # |e|² = 1.
    kernel = p['output_proj']['kernel'].at[:, PAD].set(20.0 * e)
    kernel = kernel.at[:, BOS].set(19.0 * e)
    others = jnp.array([t for t in range(vocab) if t not in (PAD, BOS)])
    kernel = kernel.at[:, others].add(-jnp.outer(e, e @ kernel[:, others]))
    norm = {'scale': jnp.zeros(16), 'bias': e}
    rigged = {
        'params': {
            **p,
            'decoder': {**p['decoder'], 'norm': norm},
            'output_proj': {'kernel': kernel},
        }
    }
    logits = _forward(model)(rigged, sources, jnp.full((4, 3), 5, jnp.int32))
    assert (np.asarray(jnp.argmax(logits, -1)) == PAD).all()  # Rigged.
    for beam in (1, 3):
        tokens, _ = beam_search(model, rigged, sources, beam_size=beam, max_len=max_len)
        for row in np.asarray(tokens):
            length = int(np.argmax(row == EOS)) + 1 if EOS in row else max_len
            assert length >= 1 and not np.isin(row[:length], [PAD, BOS]).any(), row
            assert (row[length:] == PAD).all()
