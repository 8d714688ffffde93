"""Skip-gram: corpus processing, SGNS loss and step, vectors I/O, similarity."""

import gzip
import math
import os
import pathlib
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxdistill import errors
from jaxdistill import word2vec
from jaxdistill.data import words
from jaxdistill.errors import ConfigError, DataError, JaxdistillError
from jaxdistill.evaluation import word_similarity
from jaxdistill.models import skipgram


def test_keep_probabilities_golden():
    # T = 1110, s·T = 11.1: p = (sqrt(c / 11.1) + 1) · 11.1 / c, capped at 1.
    keep = words.keep_probabilities([1000, 100, 10], 0.01)
    expected = [
        (math.sqrt(1000 / 11.1) + 1) * 11.1 / 1000,
        (math.sqrt(100 / 11.1) + 1) * 0.111,
        1.0,
    ]
    np.testing.assert_allclose(keep, expected, rtol=1e-12)
    assert keep[0] == pytest.approx(0.116457, abs=1e-6)
    np.testing.assert_array_equal(words.keep_probabilities([5, 3], 0.0), [1.0, 1.0])


def test_negative_table_follows_unigram_power():
    # counts^0.75 = [1, 8, 27] -> shares 1/36, 8/36, 27/36.
    counts = [1, 16, 81]
    np.testing.assert_allclose(
        words.unigram_probabilities(counts), np.array([1, 8, 27]) / 36
    )
    table = words.negative_table(counts, size=36_000)
    share = np.bincount(table, minlength=3) / len(table)
    np.testing.assert_allclose(share, np.array([1, 8, 27]) / 36, atol=1e-4)


def _toy(n_sent=40, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 12, n_sent)
    ids = rng.integers(0, 30, lengths.sum()).astype(np.int32)
    sent = np.repeat(np.arange(n_sent), lengths).astype(np.int32)
    return ids, sent


def _batches(ids, sent, seed, centers=16, sample_keep=None):
    keep = np.ones(30) if sample_keep is None else sample_keep
    return words.window_batches(
        ids,
        sent,
        keep=keep,
        table=np.arange(30, dtype=np.int32),
        window=3,
        centers=centers,
        negatives=4,
        group=5,
        rng=words.epoch_rng(seed, 0),
    )


def test_window_batches_deterministic_from_seed():
    ids, sent = _toy()
    keep = np.full(30, 0.6)
    a, b, c = (_batches(ids, sent, s, sample_keep=keep) for s in (7, 7, 8))
    for key in ('tokens', 'sentence', 'window', 'negatives'):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a['tokens'], c['tokens'])
    assert a['window'].min() >= 1 and a['window'].max() <= 3
    assert a['negatives'].shape == (a['tokens'].shape[0], 5, 4)  # ceil(22 / 5) groups


def _brute_pairs(ids, sent, windows):
    out = []
    for i in range(len(ids)):
        for j in range(len(ids)):
            if i != j and abs(i - j) <= windows[i] and sent[i] == sent[j]:
                out.append((ids[i], ids[j]))
    return sorted(out)


def test_chunk_pairs_are_exactly_the_skipgram_pairs():
    ids, sent = _toy()
    b = _batches(ids, sent, 3)
    windows = b['window'].reshape(-1)[: len(ids)]
    centers, contexts = words.skipgram_pairs(ids, sent, windows)
    expected = _brute_pairs(ids, sent, windows)
    assert sorted(zip(centers, contexts)) == expected
    got = []
    for s in range(b['tokens'].shape[0]):
        chunk = {k: jnp.asarray(v[s]) for k, v in b.items() if k != 'words'}
        pairs = np.asarray(skipgram.chunk_pairs(chunk, 3))
        c, o = np.nonzero(pairs)
        off = skipgram.offsets(3)[o]
        got += list(zip(b['tokens'][s][3 + c], b['tokens'][s][3 + c + off]))
    assert sorted(got) == expected


def test_sgns_loss_golden_and_grads():
    u = jnp.array([1.0, 0.0])
    pos = jnp.array([2.0, 0.0])
    neg = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    # -log σ(2) - log σ(-1) - log σ(0).
    expected = math.log1p(math.exp(-2)) + math.log1p(math.exp(1)) + math.log(2)
    assert float(jax.jit(skipgram.sgns_loss)(u, pos, neg)) == pytest.approx(
        expected, rel=1e-6
    )
    half = skipgram.sgns_loss(u, pos, neg, negative_scale=0.5)
    assert float(half) == pytest.approx(
        math.log1p(math.exp(-2)) + 0.5 * (expected - math.log1p(math.exp(-2))), rel=1e-6
    )
    masked = skipgram.sgns_loss(u, pos, neg, negative_where=jnp.array([False, True]))
    assert float(masked) == pytest.approx(
        math.log1p(math.exp(-2)) + math.log(2), rel=1e-6
    )
    assert float(skipgram.sgns_loss(u, pos, neg, where=jnp.array(False))) == 0.0
    rng = np.random.default_rng(0)
    args = [rng.normal(size=s) for s in ((3, 4), (3, 4), (3, 2, 4))]
    check_grads(
        jax.jit(lambda a, b, c: skipgram.sgns_loss(a, b, c).sum()),
        args,
        order=1,
        modes=['rev'],
        atol=1e-2,
        rtol=1e-2,
    )


def _chunk_setup():
    ids, sent = _toy()
    b = _batches(ids, sent, 1)
    chunk = {k: jnp.asarray(v[0]) for k, v in b.items() if k != 'words'}
    params = skipgram.init_params(jax.random.key(0), 30, 8)
    params['output'] = jax.random.normal(jax.random.key(1), (30, 8)) * 0.3
    return chunk, params


def test_chunk_loss_equals_sum_of_per_pair_sgns_loss():
    chunk, params = _chunk_setup()
    pairs = skipgram.chunk_pairs(chunk, 3)
    counts = skipgram.context_counts(pairs, 3)
    tok = jnp.clip(chunk['tokens'], 0)
    rows = {
        'input': params['input'][tok],
        'output': params['output'][tok[3:-3]],
        'negative': params['output'][chunk['negatives']],
    }
    got = skipgram.chunk_loss(rows, pairs, counts, negative=5)
    c, o = np.nonzero(np.asarray(pairs))
    j = 3 + c + skipgram.offsets(3)[o]  # Context token's position in the chunk.
    per_pair = skipgram.sgns_loss(
        rows['input'][j],
        rows['output'][c],
        rows['negative'][j // 5],  # 5 = ceil(22 / 5) tokens per group.
        negative_scale=5 / 4,
    )
    assert len(c) > 20
    assert float(got) == pytest.approx(float(jnp.sum(per_pair)), rel=1e-5)


def test_window_logits_hand_written_gradient_matches_autodiff():
    # The custom VJP against autodiff of the same logits written as a gather
    # of every (center, offset) pair, and against finite differences.
    k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
    window, c = 3, 9
    u = jax.random.normal(k1, (c + 2 * window, 4))
    v = jax.random.normal(k2, (c, 4))
    w = jax.random.normal(k3, (c, 2 * window))
    j = window + np.arange(c)[:, None] + skipgram.offsets(window)[None, :]

    def by_gather(u, v):
        return jnp.sum(jnp.sin(jnp.einsum('cwd,cd->cw', u[j], v)) * w)

    def by_window(u, v):
        return jnp.sum(jnp.sin(skipgram.window_logits(u, v, window)) * w)

    assert float(by_window(u, v)) == pytest.approx(float(by_gather(u, v)), rel=1e-6)
    for got, want in zip(
        jax.grad(by_window, (0, 1))(u, v), jax.grad(by_gather, (0, 1))(u, v)
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    check_grads(by_window, (u, v), order=1, modes=('rev',))


def test_negative_table_is_the_midpoint_rule():
    # Entry i holds the word whose cdf interval contains (i + 0.5) / size.
    counts = np.random.default_rng(0).integers(0, 500, 300)
    counts[0] = 7
    table = words.negative_table(counts, size=100_003)
    cdf = np.cumsum(words.unigram_probabilities(counts))
    mid = (np.arange(100_003) + 0.5) / 100_003
    want = np.minimum(np.searchsorted(cdf, mid, side='right'), len(cdf) - 1)
    np.testing.assert_array_equal(table, want)
    assert table.dtype == np.int32
    assert not np.isin(np.flatnonzero(counts == 0), table).any()


def test_sgd_chunk_is_dense_sgd():
    chunk, params = _chunk_setup()
    pairs = skipgram.chunk_pairs(chunk, 3)
    batch = {**chunk, 'pairs': pairs, 'counts': skipgram.context_counts(pairs, 3)}

    def dense_loss(p):
        tok = jnp.clip(chunk['tokens'], 0)
        rows = {
            'input': p['input'][tok],
            'output': p['output'][tok[3:-3]],
            'negative': p['output'][chunk['negatives']],
        }
        return skipgram.chunk_loss(rows, pairs, batch['counts'], 5)

    grads = jax.grad(dense_loss)(params)
    new, loss = skipgram.sgd_chunk(params, batch, 0.1, 3, 5, cap=1e9)
    assert float(loss) == pytest.approx(float(dense_loss(params)), rel=1e-6)
    for k in params:
        np.testing.assert_allclose(new[k], params[k] - 0.1 * grads[k], atol=1e-6)
    assert float(jnp.abs(new['output'] - params['output']).max()) > 1e-3


def test_word2vec_text_round_trip(tmp_path):
    vectors = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    path = tmp_path / 'v.txt'
    word2vec.save_word2vec(path, ['a', 'bb', "c'"], vectors)
    assert path.read_text().splitlines()[0] == '3 4'
    got_words, got = word2vec.load_word2vec(path)
    assert got_words == ['a', 'bb', "c'"]
    np.testing.assert_allclose(got, vectors, rtol=1e-5)
    path.write_text('2 4\na 1 2 3 4\n')
    with pytest.raises(DataError, match='header says 2 words'):
        word2vec.load_word2vec(path)
    # word2vec.c's files end each line with a space; gzipped ones are read.
    text = '2 2\na 1 2 \nb 3 4 \n'
    gz = tmp_path / 'v.txt.gz'
    gz.write_bytes(gzip.compress(text.encode()))
    assert word2vec.load_word2vec(gz)[0] == ['a', 'b']
    for bad, message in [
        ('2 2\na 1 2\nb 3 abc\n', ":3: 'b' has a value that is not a number"),
        ('2 2\na 1 nan\nb 3 4\n', ":2: 'a' has a NaN or infinite value"),
        (b'2 2\na 1 2\n\xe9\x00\x01\n', 'v.txt: not UTF-8 text'),
    ]:
        if isinstance(bad, bytes):
            path.write_bytes(bad)
        else:
            path.write_text(bad)
        with pytest.raises(DataError, match=message):
            word2vec.load_word2vec(path)
    with pytest.raises(DataError, match='is a directory'):
        word2vec.load_word2vec(tmp_path)


def test_spearman_hand_computed_with_ties():
    # Ranks of y: [1, 2, 3.5, 5, 3.5]; ρ = Σ dx·dy / sqrt(Σ dx² Σ dy²) = 8 / sqrt(95).
    x, y = [1, 2, 3, 4, 5], [5, 6, 7, 8, 7]
    np.testing.assert_allclose(word_similarity.rankdata(y), [1, 2, 3.5, 5, 3.5])
    assert word_similarity.spearman(x, y) == pytest.approx(8 / math.sqrt(95), abs=1e-12)
    assert word_similarity.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_similarity_files_and_oov(shared_data, tmp_path):
    ws = word_similarity.read_pairs(shared_data / 'words' / 'wordsim353.tsv')
    sl = word_similarity.read_pairs(shared_data / 'words' / 'simlex999.txt')
    assert len(ws) == 353 and len(sl) == 999
    assert ws[0] == ('love', 'sex', 6.77)
    vocab = sorted({w for a, b, _ in ws for w in (a, b)})
    index = {w: i for i, w in enumerate(vocab[: len(vocab) // 2])}
    vectors = np.random.default_rng(0).normal(size=(len(vocab), 10))
    r = word_similarity.evaluate(vectors, index, ws)
    known = sum(a in index and b in index for a, b, _ in ws)
    assert r['pairs'] == known and r['oov_fraction'] == pytest.approx(1 - known / 353)
    assert abs(r['spearman']) < 0.3  # Random vectors.
    bad = tmp_path / 'bad.tsv'
    bad.write_text('# header\nalpha\tbeta\n')
    with pytest.raises(DataError, match='bad.tsv:2'):
        word_similarity.read_pairs(bad)


def test_tiny_corpus_related_words_end_up_closer(tmp_path, capsys):
    rng = np.random.default_rng(0)
    topics = [
        ['cat', 'dog', 'horse', 'cow', 'sheep'],
        ['one', 'two', 'three', 'four', 'five'],
    ]
    lines = [' '.join(rng.choice(topics[i % 2], 8)) for i in range(400)]
    corpus = tmp_path / 'corpus.txt'
    corpus.write_text('\n'.join(lines) + '\n')
    out = tmp_path / 'vectors.txt'
    argv = [
        '--corpus',
        str(corpus),
        '--out',
        str(out),
        '--dim',
        '16',
        '--epochs',
        '3',
        '--sample',
        '0',
        '--centers',
        '256',
        '--min-count',
        '1',
        '--lr',
        '0.05',
    ]
    assert word2vec.main(argv) == 0
    # Each epoch's line shows the rate it ended at: linear from 0.05 to
    # min_lr over the 3 epochs (not the rate of the padding steps past it).
    logged = [
        float(line.split('lr ')[1].split(',')[0])
        for line in capsys.readouterr().out.splitlines()
        if line.startswith('epoch ')
    ]
    low = word2vec.Options.min_lr
    expected = [0.05 - (0.05 - low) * e / 3 for e in (1, 2, 3)]
    np.testing.assert_allclose(logged, expected, rtol=0.02)
    vocab, vectors = word2vec.load_word2vec(out)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    v = {w: unit[i] for i, w in enumerate(vocab)}
    same = np.mean([v['cat'] @ v[w] for w in ('dog', 'horse', 'cow', 'sheep')])
    other = np.mean([v['cat'] @ v[w] for w in topics[1]])
    assert same > other + 0.3, (same, other)


def test_bad_input_errors(tmp_path):
    with pytest.raises(ConfigError, match='window'):
        word2vec.Options(window=0)
    with pytest.raises(DataError, match='does not exist'):
        words.read_sentences(tmp_path / 'missing.txt')
    (tmp_path / 'empty.txt').write_text('\n\n')
    with pytest.raises(DataError, match='no tokens'):
        words.read_sentences(tmp_path / 'empty.txt')
    with pytest.raises(DataError, match='min_count'):
        words.build_vocab([['a', 'b']], min_count=2)


def test_row_scale_caps_frequent_rows():
    # Row 0 takes 3 + 2 = 5 pair updates (> cap 2): its contributions get 2/5.
    ids = jnp.array([0, 0, 1, 3])  # 3 = vocab: padding.
    scale = skipgram.row_scale(ids, jnp.array([3.0, 2.0, 1.0, 5.0]), 3, 2.0)
    np.testing.assert_allclose(scale, [0.4, 0.4, 1.0, 1.0])


def test_capped_step_shrinks_each_row_update():
    chunk, params = _chunk_setup()
    pairs = skipgram.chunk_pairs(chunk, 3)
    batch = {**chunk, 'pairs': pairs, 'counts': skipgram.context_counts(pairs, 3)}
    full, _ = skipgram.sgd_chunk(params, batch, 0.1, 3, 5, cap=1e9)
    capped, _ = skipgram.sgd_chunk(params, batch, 0.1, 3, 5, cap=2.0)
    for k in params:
        d_full = np.asarray(full[k] - params[k])
        d_cap = np.asarray(capped[k] - params[k])
        moved = np.linalg.norm(d_full, axis=1) > 1e-7
        ratio = (
            np.linalg.norm(d_cap, axis=1)[moved] / np.linalg.norm(d_full, axis=1)[moved]
        )
        assert np.all(ratio <= 1 + 1e-5) and np.min(ratio) < 0.9
        cos = np.sum(d_cap * d_full, 1)[moved] / (
            np.linalg.norm(d_cap, axis=1)[moved] * np.linalg.norm(d_full, axis=1)[moved]
        )
        np.testing.assert_allclose(cos, 1.0, atol=1e-4)


def _no_training(monkeypatch):
    """Makes `word2vec.train` fail the test if the CLI ever gets that far."""

    def train(*args, **kwargs):
        raise AssertionError('training started before the input error was reported')

    monkeypatch.setattr(word2vec, 'train', train)


def test_truncated_gz_corpus_names_file_and_line(tmp_path):
    data = gzip.compress(
        ''.join(f'sentence number {i} with words\n' for i in range(5000)).encode()
    )
    cut = data[: len(data) // 2]
    path = tmp_path / 'cut.txt.gz'
    path.write_bytes(cut)
    complete = zlib.decompressobj(31).decompress(cut).count(b'\n')
    with pytest.raises(
        DataError, match=f'cut.txt.gz is truncated.*after line {complete},'
    ):
        words.read_sentences(path)
    corrupt = bytearray(data)
    corrupt[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(corrupt))
    with pytest.raises(DataError, match='cut.txt.gz: corrupt gzip data after line'):
        words.read_sentences(path)


@pytest.mark.parametrize('name', ['bad.txt', 'bad.txt.gz'])
def test_bad_utf8_corpus_names_line(tmp_path, name):
    text = b'first line\n\nthird caf\xe9 line\nfourth\n'
    path = tmp_path / name
    path.write_bytes(gzip.compress(text) if name.endswith('.gz') else text)
    with pytest.raises(DataError, match=rf'{name} line 3: invalid UTF-8 \(byte 21'):
        words.read_sentences(path)


def test_cli_reports_bad_out_and_similarity_before_training(
    tmp_path, monkeypatch, capsys
):
    _no_training(monkeypatch)
    corpus = tmp_path / 'corpus.txt'
    corpus.write_text('a b c\n' * 5)
    (tmp_path / 'afile').write_text('')
    good = tmp_path / 'good.tsv'
    good.write_text('a\tb\t5.0\n')
    latin1 = tmp_path / 'latin1.tsv'
    latin1.write_bytes(b'a\tb\t1.0\ncaf\xe9\tcoffee\t7.5\n')
    base = ['--corpus', str(corpus), '--min-count', '1']
    cases = [
        (['--out', str(tmp_path / 'afile' / 'x' / 'v.txt')], 'afile is a file'),
        (['--out', str(tmp_path)], 'is a directory'),
        (
            ['--out', str(tmp_path / 'v.txt'), '--similarity', str(good)]
            + ['--similarity', str(tmp_path / 'nosuch.tsv')],
            'nosuch.tsv does not exist',
        ),
        (
            ['--out', str(tmp_path / 'v.txt'), '--similarity', str(latin1)],
            'latin1.tsv line 2: invalid UTF-8',
        ),
    ]
    for flags, message in cases:
        assert word2vec.main(base + flags) == 2, flags
        err = capsys.readouterr().err
        assert err.startswith('error: ') and message in err, err
        assert 'Traceback' not in err
    assert not (tmp_path / 'v.txt').exists()
    monkeypatch.setattr(os, 'access', lambda *args: False)
    with pytest.raises(JaxdistillError, match='is not writable'):
        word2vec.check_out(tmp_path / 'new' / 'v.txt')


def test_cli_creates_missing_out_directories(tmp_path, monkeypatch, capsys):
    corpus = tmp_path / 'corpus.txt'
    corpus.write_text('a b c\nb c\n')
    sim = tmp_path / 'sim.tsv'
    sim.write_text('a\tb\t1.0\na\tc\t2.0\nb\tc\t3.0\n')
    calls = []

    def train(ids, sentence, vocab, options, **kwargs):
        calls.append(len(vocab))
        vectors = np.random.default_rng(0).normal(size=(len(vocab), 4))
        # The partial save after an epoch comes before the vectors' save:
        # it too must find (make) the missing folder.
        kwargs['on_epoch'](1, {'input': vectors, 'output': vectors})
        assert (out.parent / 'v.txt.partial.npz').exists()
        return {'vectors': vectors, 'seconds': 0.0}

    monkeypatch.setattr(word2vec, 'train', train)
    out = tmp_path / 'new' / 'sub' / 'v.txt'
    argv = ['--corpus', str(corpus), '--out', str(out), '--min-count', '1']
    assert word2vec.main(argv + ['--similarity', str(sim)]) == 0
    assert calls == [3]
    got_words, got = word2vec.load_word2vec(out)
    assert sorted(got_words) == ['a', 'b', 'c'] and got.shape == (3, 4)
    assert 'sim.tsv: Spearman' in capsys.readouterr().out


def test_similarity_matches_words_case_insensitively():
    """gensim's evaluate_word_pairs matches case-insensitively by default:
    'Israel' in the pair file finds 'Israel' or 'israel' in the vocabulary,
    the most frequent variant (lowest row) when there are several."""
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.9, 0.2], [-1.0, 0.0]])
    # Rows by falling frequency: 'Israel' (row 0) beats 'israel' (row 4).
    index = {'Israel': 0, 'fbi': 1, 'Jerusalem': 2, 'yale': 3, 'israel': 4}
    pairs = [
        ('jerusalem', 'israel', 9.0),
        ('FBI', 'yale', 1.0),
        ('yale', 'Israel', 5.0),
    ]
    r = word_similarity.evaluate(vectors, index, pairs)
    assert r['pairs'] == 3 and r['oov_fraction'] == 0.0
    # Cosines with row 0 for 'israel': 0.995, 0.216, 0.976 -> ranks agree.
    assert r['spearman'] == pytest.approx(1.0)
    r = word_similarity.evaluate(vectors, index, pairs + [('Harvard', 'yale', 8.0)])
    assert r['pairs'] == 3 and r['oov_fraction'] == pytest.approx(0.25)


def test_word2vec_gz_out_and_words_with_unicode_spaces(tmp_path):
    """`.gz` is written compressed (both readers decompress it), and fields
    are split on ASCII spaces only, so a word holding U+00A0 (which gensim
    writes and reads) loads."""
    vectors = np.arange(6, dtype=np.float32).reshape(3, 2)
    names = ['new\xa0york', 'a', 'b\u3000c']
    gz = tmp_path / 'v.txt.gz'
    word2vec.save_word2vec(gz, names, vectors)
    assert gzip.decompress(gz.read_bytes()).startswith(b'3 2\n')
    got_words, got = word2vec.load_word2vec(gz)
    assert got_words == names
    np.testing.assert_array_equal(got, vectors)
    plain = tmp_path / 'v.txt'
    plain.write_text('1 2\r\nx\xa0y 1 2 \r\n', encoding='utf-8')
    assert word2vec.load_word2vec(plain)[0] == ['x\xa0y']


def test_corpus_byte_order_mark_and_directory(tmp_path):
    path = tmp_path / 'bom.txt'
    path.write_bytes('\ufeffthe cat\nthe dog\n'.encode('utf-8'))
    assert words.read_sentences(path) == [['the', 'cat'], ['the', 'dog']]
    with pytest.raises(DataError, match='is a directory'):
        words.read_sentences(tmp_path)
    with pytest.raises(DataError, match='is a directory'):
        word_similarity.read_pairs(tmp_path)


def _cli_corpus(tmp_path):
    rng = np.random.default_rng(1)
    vocab = [f'w{i}' for i in range(30)]
    corpus = tmp_path / 'corpus.txt'
    corpus.write_text(
        '\n'.join(' '.join(rng.choice(vocab, 10)) for _ in range(200)) + '\n'
    )
    return [
        '--corpus', str(corpus), '--dim', '8', '--epochs', '3', '--min-count', '1',
        '--centers', '64',
    ]  # fmt: skip


def test_cli_continues_an_interrupted_run_exactly(tmp_path, monkeypatch, capsys):
    """Ctrl-C after epoch 1 of 3 keeps OUT.partial.npz; the same command then
    trains epochs 2-3 only and writes the vectors an uninterrupted run
    writes, and removes the partial file. Other settings are refused, naming
    the option that differs."""
    base = _cli_corpus(tmp_path)
    straight = tmp_path / 'straight.txt'
    assert word2vec.main(base + ['--out', str(straight)]) == 0
    assert not (tmp_path / 'straight.txt.partial.npz').exists()

    out = tmp_path / 'v.txt'
    partial = tmp_path / 'v.txt.partial.npz'
    save = word2vec.Partial.save

    def save_then_interrupt(self, epoch, params):
        save(self, epoch, params)
        raise KeyboardInterrupt

    monkeypatch.setattr(word2vec.Partial, 'save', save_then_interrupt)
    capsys.readouterr()
    assert word2vec.main(base + ['--out', str(out)]) == 130
    assert 'Epochs 1-1 of 3 are kept in' in capsys.readouterr().err
    assert partial.exists() and not out.exists()
    monkeypatch.setattr(word2vec.Partial, 'save', save)

    assert word2vec.main(base + ['--out', str(out), '--epochs', '4']) == 2
    err = capsys.readouterr().err
    assert 'holds 1 epoch(s) of a run with other settings' in err, err
    assert '--epochs 3 (now 4)' in err and partial.exists()

    assert word2vec.main(base + ['--out', str(out)]) == 0
    logged = capsys.readouterr().out
    assert 'continuing after epoch 1/3' in logged
    assert 'epoch 1/3' not in logged.replace('after epoch 1/3', '')
    assert 'epoch 3/3' in logged
    assert not partial.exists()
    want_words, want = word2vec.load_word2vec(straight)
    got_words, got = word2vec.load_word2vec(out)
    assert got_words == want_words
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_out_named_as_a_folder_or_with_a_tilde(tmp_path, monkeypatch):
    """`--out vecs/` would train every epoch, then fail to write; `~` is
    the home folder, not a folder named '~' here."""
    import argparse

    from jaxdistill import cli
    from jaxdistill import word2vec
    from jaxdistill.errors import JaxdistillError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(JaxdistillError, match=r'--out vecs/ is a directory'):
        word2vec.check_out('vecs/')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    args = cli.expand_user(
        argparse.Namespace(out='~/v.txt', workdir=['~/a', 'b'], x='~')
    )
    assert args.out == f'{tmp_path}/home/v.txt' and args.x == '~'
    assert args.workdir == [f'{tmp_path}/home/a', 'b']


def test_cli_refuses_what_would_train_nothing_or_save_nan(tmp_path, capsys):
    """Options that are not finite (NaN passed every `< low` check), a
    corpus of one word a line (no pairs: the untrained vectors were saved),
    a loss gone non-finite, an empty leftover of an interrupted run and a
    remote --out: each an error naming it, and no vectors written."""
    corpus = tmp_path / 'corpus.txt'
    corpus.write_text('a b c d\nb c d a\n' * 20)
    (tmp_path / 'vertical.txt').write_text('a\nb\nc\n' * 10)
    out = tmp_path / 'v.txt'
    base = ['--corpus', str(corpus), '--min-count', '1', '--epochs', '1']
    cases = [
        (['--lr', 'nan'], 'lr=nan must be a finite number'),
        (['--lr', 'inf'], 'lr=inf must be a finite number'),
        (['--sample', 'nan'], 'sample=nan must be a finite number'),
        (['--corpus', str(tmp_path / 'vertical.txt')], 'not one word a line'),
        (['--out', 'gs://bucket/v.txt'], 'remote paths (gs://) are not supported'),
    ]
    for flags, message in cases:
        args = base + flags + ([] if '--out' in flags else ['--out', str(out)])
        assert word2vec.main(args) == 2, flags
        err = capsys.readouterr().err
        assert message in err and 'Traceback' not in err, err
    assert not out.exists()
    # A step size that overflows: the loss is named, nothing is saved.
    with pytest.raises(errors.NonFiniteLossError, match='loss of epoch 2 is nan'):
        ids, sentence = np.array([0, 1, 2, 3] * 50), np.repeat(np.arange(50), 4)
        vocab = words.build_vocab([['a', 'b', 'c', 'd']] * 50, 1)
        word2vec.train(
            ids,
            sentence,
            vocab,
            word2vec.Options(dim=8, epochs=2, lr=1e30, min_lr=1e30),
        )
    # The leftover of an interrupted run, emptied by a crash.
    pathlib.Path(f'{out}.partial.npz').write_bytes(b'')
    assert word2vec.main(base + ['--out', str(out)]) == 2
    err = capsys.readouterr().err
    assert 'cannot read the saved epochs' in err and 'delete it' in err, err


def test_reduced_windows_are_uniform_over_one_to_window():
    # word2vec's b: every effective window 1..window, each about equally often.
    got = words.reduced_windows(np.random.default_rng(0), 30_000, 3)
    share = np.bincount(got, minlength=4)[1:] / len(got)
    assert got.min() == 1 and got.max() == 3
    np.testing.assert_allclose(share, [1 / 3] * 3, atol=0.02)
