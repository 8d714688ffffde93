"""Tests for jaxdistill.data: text files, synthetic task, tokenizer, encoding, batching."""

import collections
import gzip
import json

import ml_collections
import numpy as np
import pytest

from jaxdistill import data
from jaxdistill.data import synthetic
from jaxdistill.errors import ConfigError, DataError


# ---------------------------------------------------------------- text files


def test_read_lines_plain_and_gzip(tmp_path):
    lines = ['ein Hund', 'zwei Katzen\u2028bleiben', '', 'Grüße']
    plain = tmp_path / 'a.txt'
    plain.write_bytes(('\r\n'.join(lines) + '\n').encode())
    packed = tmp_path / 'a.gz.weird'  # Detected by magic bytes, not the name.
    packed.write_bytes(gzip.compress(('\n'.join(lines)).encode()))
    assert data.read_lines(plain) == lines
    assert data.read_lines(packed) == lines


def test_read_lines_errors(tmp_path):
    with pytest.raises(DataError, match='data file not found: .*nope.txt'):
        data.read_lines(tmp_path / 'nope.txt')
    (tmp_path / 'empty.txt').write_bytes(b'')
    with pytest.raises(DataError, match='empty.txt is empty'):
        data.read_lines(tmp_path / 'empty.txt')
    (tmp_path / 'empty.gz').write_bytes(gzip.compress(b''))
    with pytest.raises(DataError, match='is empty'):
        data.read_lines(tmp_path / 'empty.gz')
    bad = b'line one\nline two\nok \xc3\xa4 then \xff bad\n'
    (tmp_path / 'bad.txt').write_bytes(bad)
    with pytest.raises(
        DataError, match=r'bad.txt line 3: invalid UTF-8 \(byte offset 29\)'
    ):
        data.read_lines(tmp_path / 'bad.txt')
    (tmp_path / 'bad.gz').write_bytes(gzip.compress(bad))
    with pytest.raises(DataError, match='bad.gz line 3: invalid UTF-8'):
        data.read_lines(tmp_path / 'bad.gz')


def test_read_parallel(tmp_path):
    (tmp_path / 'x.en').write_text('a\nb\nc\n')
    (tmp_path / 'x.de').write_text('A\nB\nC\n')
    (tmp_path / 'y.de').write_text('A\nB\n')
    assert data.read_parallel([tmp_path / 'x.en', tmp_path / 'x.de']) == [
        ('a', 'A'),
        ('b', 'B'),
        ('c', 'C'),
    ]
    with pytest.raises(DataError, match=r'x.en has 3 lines.*y.de has 2 lines'):
        data.read_parallel([tmp_path / 'x.en', tmp_path / 'y.de'])


# ---------------------------------------------------------------- synthetic


def test_synthetic_deterministic_and_lengths():
    a = data.generate_pairs(300, seed=5)
    assert a == data.generate_pairs(300, seed=5)
    assert a != data.generate_pairs(300, seed=6)
    assert data.generate_pairs(50, seed=5) == a[:50]
    for src, tgt in a:
        assert 4 <= len(src.split()) <= 20 and 4 <= len(tgt.split()) <= 20
    # Lexicon depends on the target language only, never on the seed.
    b = data.generate_pairs(300, seed=5, target_lang='xx')
    assert [s for s, _ in a] == [s for s, _ in b]
    assert [t for _, t in a] != [t for _, t in b]
    vocab = {w for s, _ in data.generate_pairs(3000, seed=0) for w in s.split()}
    assert 200 <= len(vocab) <= 600


def _singular_noun_phrases(pairs):
    """(source noun, target words) for sentences 'the ADJ NOUN VERB-s ...'."""
    lex = synthetic.lexicon('tgt')
    for src, tgt in pairs:
        s, t = src.split(), tgt.split()
        if (
            s[0] == 'the'
            and len(s) > 3
            and s[1] in lex.adjectives
            and s[2] in lex.nouns
        ):
            yield s, t


def test_synthetic_lexicon_order_and_agreement():
    lex = synthetic.lexicon('tgt')
    assert lex == synthetic.lexicon('tgt')
    pairs = data.generate_pairs(2000, seed=0)
    checked = 0
    for s, t in _singular_noun_phrases(pairs):
        adj, noun = s[1], s[2]
        stem, gender = lex.nouns[noun]
        # Same source noun -> same target stem; adjective after the noun.
        assert t[1] == stem, (s, t)
        assert t[0] == {'m': 'lo', 'f': 'ka', 'n': 'te'}[gender]
        assert t[2] == lex.adjectives[adj] + synthetic.ADJECTIVE_SUFFIX[(gender, 'sg')]
        checked += 1
    assert checked > 30
    # Verbs agree with the subject's number in every tense, even where English
    # does not show it ('saw', 'will see'), and come last (SOV).
    forms = {}
    for v in lex.verbs:
        forms[synthetic.third_person(v)] = (v, 'present', 'sg')
        forms[v] = (v, 'present', 'pl')
        forms[synthetic.past_tense(v)] = (v, 'past', None)
    plurals = {synthetic.plural(n) for n in lex.nouns}
    checked = collections.Counter()
    for src, tgt in pairs:
        s, t = src.split(), tgt.split()
        if s[0] != 'the' or 'and' in s or 'but' in s or 'read' in s:
            continue
        noun_at = next(i for i, w in enumerate(s) if w in lex.nouns or w in plurals)
        number = 'sg' if s[noun_at] in lex.nouns else 'pl'
        verb, tense, shown = forms.get(s[noun_at + 1], (None, None, None))
        if s[noun_at + 1] == 'will':
            verb, tense = s[noun_at + 2], 'future'
        assert shown in (None, number), src
        assert t[-1] == lex.verbs[verb] + synthetic.VERB_SUFFIX[(tense, number)], (
            src,
            tgt,
        )
        checked[tense, number] += 1
    assert len(checked) == 6 and min(checked.values()) > 5, checked


def test_synthetic_word_order_differs():
    pairs = data.generate_pairs(200, seed=3)
    lex = synthetic.lexicon('tgt')
    verb_stems = set(lex.verbs.values())
    last_is_verb = sum(
        any(tgt.split()[-1].startswith(v) for v in verb_stems) for _, tgt in pairs
    )
    assert last_is_verb > 0.7 * len(pairs)  # Clause-final verbs (SOV).


# ---------------------------------------------------------------- tokenizer


@pytest.fixture(scope='module')
def tokenizer(tmp_path_factory):
    pairs = data.generate_pairs(1500, seed=0)
    path = tmp_path_factory.mktemp('tok') / 'spm.model'
    texts = [s for s, _ in pairs] + [t for _, t in pairs]
    return data.Tokenizer.train(
        texts, 400, path, user_defined_symbols=['<2de>', '<2fr>']
    )


def test_tokenizer_round_trip_and_ids(tokenizer, tmp_path):
    assert tokenizer.vocab_size == 400
    assert tokenizer.piece_to_id('<pad>') == data.PAD_ID == 0
    assert tokenizer.piece_to_id('<unk>') == data.UNK_ID == 1
    assert tokenizer.piece_to_id('<s>') == data.BOS_ID == 2
    assert tokenizer.piece_to_id('</s>') == data.EOS_ID == 3
    assert tokenizer.piece_to_id('<2de>') != data.UNK_ID
    text = 'the big dog sees some cats'
    ids = tokenizer.encode(text)
    assert data.EOS_ID not in ids and data.BOS_ID not in ids
    assert tokenizer.decode(ids) == text
    padded = [data.BOS_ID] + ids + [data.EOS_ID] + ids + [data.PAD_ID] * 3
    assert tokenizer.decode(np.asarray(padded, np.int32)) == text


def test_tokenizer_deterministic_load_and_mismatch(tmp_path):
    texts = [s for p in data.generate_pairs(400, seed=1) for s in p]
    calls = []

    def texts_fn():
        calls.append(1)
        return texts

    a = data.load_or_train_tokenizer(tmp_path / 'a.model', texts_fn, 300)
    b = data.Tokenizer.train(texts, 300, tmp_path / 'b.model')
    assert (tmp_path / 'a.model').read_bytes() == (tmp_path / 'b.model').read_bytes()
    again = data.load_or_train_tokenizer(tmp_path / 'a.model', texts_fn, 300)
    assert len(calls) == 1 and again.encode(texts[0]) == a.encode(texts[0]) == b.encode(
        texts[0]
    )
    with pytest.raises(DataError, match='has vocab 300 but the config asks for 500'):
        data.load_or_train_tokenizer(tmp_path / 'a.model', texts_fn, 500)
    with pytest.raises(DataError, match='lacks the symbols'):
        data.load_or_train_tokenizer(tmp_path / 'a.model', texts_fn, 300, ['<2de>'])


def test_a_tokenizer_left_by_a_start_without_checkpoint_is_made_again(tmp_path, caplog):
    """`remake_stale` (the run has no checkpoint): a tokenizer this folder
    made from other text, vocab size or symbols is trained again; a copied
    one (a teacher's), a checkpointed run's (`remake_stale` False) and a
    reading tool's are kept."""
    first = [s for p in data.generate_pairs(300, seed=1) for s in p]
    second = [s for p in data.generate_pairs(300, seed=2) for s in p]
    path = tmp_path / 'run' / 'spm.model'
    data.load_or_train_tokenizer(path, lambda: first, 200)
    made_from_first = path.read_bytes()
    data.Tokenizer.train(second, 200, tmp_path / 'fresh' / 'spm.model')
    made_from_second = (tmp_path / 'fresh' / 'spm.model').read_bytes()
    assert made_from_first != made_from_second

    # A checkpointed run keeps its tokenizer whatever the data now.
    data.load_or_train_tokenizer(path, lambda: second, 200)
    assert path.read_bytes() == made_from_first
    # So does a tool that only reads the run.
    with data.tokenizer.existing_only():
        data.load_or_train_tokenizer(path, lambda: second, 200, remake_stale=True)
    assert path.read_bytes() == made_from_first and not caplog.text
    # The same text: kept.
    data.load_or_train_tokenizer(path, lambda: first, 200, remake_stale=True)
    assert path.read_bytes() == made_from_first and not caplog.text

    # Other text: made again, as a new workdir would make it.
    tok = data.load_or_train_tokenizer(path, lambda: second, 200, remake_stale=True)
    assert path.read_bytes() == made_from_second
    assert tok.encode(second[0]) == data.Tokenizer.load(
        tmp_path / 'fresh' / 'spm.model'
    ).encode(second[0])
    assert f'Tokenizer {path} was made by an earlier start' in caplog.text
    assert 'from other training text' in caplog.text
    # Another vocab size or tag symbols: made again, not refused.
    caplog.clear()
    tok = data.load_or_train_tokenizer(path, lambda: second, 150, remake_stale=True)
    assert tok.vocab_size == 150 and 'data.vocab_size=200 (now 150)' in caplog.text
    tok = data.load_or_train_tokenizer(
        path, lambda: second, 150, ['<2de>'], remake_stale=True
    )
    assert tok.piece_to_id('<2de>') != data.UNK_ID

    # Copied into a student's folder with its record: the teacher's is kept.
    student = tmp_path / 'student' / 'spm.model'
    student.parent.mkdir()
    for suffix in ('', '.json'):
        student.with_name('spm.model' + suffix).write_bytes(
            path.with_name('spm.model' + suffix).read_bytes()
        )
    caplog.clear()
    data.load_or_train_tokenizer(
        student, lambda: first, 150, ['<2de>'], remake_stale=True
    )
    assert student.read_bytes() == path.read_bytes() and not caplog.text


def test_a_word_vocabulary_left_by_a_start_without_checkpoint_is_made_again(
    tmp_path, caplog
):
    from jaxdistill.data import sst2  # pylint: disable=g-import-not-at-top

    first = ['a good film', 'a bad film', 'good']
    second = ['the dull plot', 'the fine cast', 'dull']
    kept = sst2.word_vocab(first, 10, str(tmp_path))
    vocab_file = tmp_path / sst2.VOCAB_FILE
    assert sst2.word_vocab(second, 10, str(tmp_path)) == kept  # Checkpointed.
    assert sst2.word_vocab(first, 10, str(tmp_path), remake_stale=True) == kept
    assert not caplog.text
    with data.tokenizer.existing_only():
        assert sst2.word_vocab(second, 10, str(tmp_path), remake_stale=True) == kept
    remade = sst2.word_vocab(second, 10, str(tmp_path), remake_stale=True)
    assert remade == sst2.build_vocab(second, 10) != kept
    assert vocab_file.read_text().split() == list(remade)
    assert 'was written by an earlier start of this run' in caplog.text
    # Another size: made again with it.
    assert len(sst2.word_vocab(second, 4, str(tmp_path), remake_stale=True)) == 2


def test_tokenizer_vocab_too_large_shrinks(tmp_path, caplog):
    tok = data.load_or_train_tokenizer(
        tmp_path / 't.model', lambda: ['ab ba', 'abc'] * 5, 5000
    )
    assert 4 < tok.vocab_size < 5000
    assert 'too large' in caplog.text
    # Reloading with the same config works: the requested size was recorded.
    assert (
        json.loads((tmp_path / 't.model.json').read_text())['requested_vocab_size']
        == 5000
    )
    assert (
        data.load_or_train_tokenizer(tmp_path / 't.model', list, 5000).vocab_size
        == tok.vocab_size
    )


def test_tokenizer_samples_across_a_corpus_larger_than_its_input(tmp_path):
    # Sources first, then targets, as a translation task passes them: the
    # first `input_sentence_size` lines would be English only.
    english = [f'the cat sat on mat number {i}' for i in range(300)]
    german = [f'über größe schön müde {i}' for i in range(300)]
    tok = data.Tokenizer.train(
        english + german, 60, tmp_path / 's.model', input_sentence_size=200
    )
    pieces = tok.sp.EncodeAsPieces('über größe')
    assert '<unk>' not in pieces and tok.sp.PieceToId('ü') != tok.sp.unk_id()


# ---------------------------------------------------------------- sources and encoding


def _cfg(**kw):
    base = dict(
        source='synthetic',
        pairs=('en-de',),
        files_dir='',
        tfds_name='',
        tfds_data_dir=None,
        synthetic_train_size=100,
        synthetic_eval_size=30,
        synthetic_seed=0,
        max_examples=0,
    )
    base.update(kw)
    return ml_collections.ConfigDict(base)


def test_load_translation_synthetic_and_tags():
    train = data.load_translation(_cfg(), 'train')
    val = data.load_translation(_cfg(), 'val')
    assert len(train.source) == 100 and len(val.source) == 30
    assert not set(train.source[:30]) & set(val.source[:5])
    assert train == data.load_translation(_cfg(), 'train')
    assert data.tag_symbols(_cfg()) == []
    multi = _cfg(pairs=('en-de', 'en-fr', 'en-de'), max_examples=10)
    assert data.tag_symbols(multi) == ['<2de>', '<2fr>']
    both = data.load_translation(multi, 'train')
    assert both.target_lang == ['de'] * 10 + ['fr'] * 10 + ['de'] * 10
    with pytest.raises(ConfigError, match=r'data.source.*synthetic, files, tfds'):
        data.load_translation(_cfg(source='csv'), 'train')
    with pytest.raises(ConfigError, match='data.pairs'):
        data.load_translation(_cfg(pairs=('ende',)), 'train')


def test_load_translation_files(tmp_path):
    (tmp_path / 'train.en').write_text('a\nb\n')
    (tmp_path / 'train.de.gz').write_bytes(gzip.compress(b'A\nB\n'))
    got = data.load_translation(_cfg(source='files', files_dir=str(tmp_path)), 'train')
    assert got == data.TranslationData(['a', 'b'], ['A', 'B'], ['de', 'de'])
    with pytest.raises(DataError, match=r'neither .*val.en nor .*val.en.gz'):
        data.load_translation(_cfg(source='files', files_dir=str(tmp_path)), 'val')
    with pytest.raises(DataError, match='an empty split name'):
        data.load_translation(_cfg(source='files', files_dir=str(tmp_path)), '')
    # Both forms of one file: either could be meant, so neither is taken.
    (tmp_path / 'train.de').write_text('A\nC\n')
    with pytest.raises(DataError, match=r'both .*train.de and .*train.de.gz exist'):
        data.load_translation(_cfg(source='files', files_dir=str(tmp_path)), 'train')


def test_multi30k_val(shared_data):
    cfg = _cfg(
        source='files', files_dir=str(shared_data / 'multi30k'), pairs=('en-de',)
    )
    val = data.load_translation(cfg, 'val')
    assert len(val.source) == len(val.target) == 1014
    assert val.source[0].strip() and val.target[0].strip()


def test_encode_filter_truncate_and_empty(tokenizer):
    d = data.TranslationData(
        source=['the dog sleeps', '', 'the big old dog sees ' * 4, 'a cat'],
        target=['lo dog', 'x', 'kurz', ''],
        target_lang=['de'] * 4,
    )
    src, tgt, stats = data.encode(
        d, tokenizer, max_len=12, too_long='filter', tagged=False
    )
    assert stats == {
        'examples': 1,
        'filtered_too_long': 1,
        'truncated': 0,
        'skipped_empty': 2,
    }
    assert (
        src[0].dtype == np.int32
        and src[0][-1] == data.EOS_ID
        and tgt[0][-1] == data.EOS_ID
    )
    assert tokenizer.decode(src[0]) == 'the dog sleeps'
    src, tgt, stats = data.encode(
        d, tokenizer, max_len=12, too_long='truncate', tagged=True
    )
    assert stats == {
        'examples': 2,
        'filtered_too_long': 0,
        'truncated': 1,
        'skipped_empty': 2,
    }
    assert len(src[1]) == 12 and src[1][-1] == data.EOS_ID
    assert src[0][0] == tokenizer.piece_to_id('<2de>')
    with pytest.raises(ConfigError, match='data.too_long'):
        data.encode(d, tokenizer, max_len=12, too_long='drop', tagged=False)
    with pytest.raises(DataError, match="'<2cs>'"):
        data.encode(
            data.TranslationData(['a'], ['b'], ['cs']),
            tokenizer,
            max_len=12,
            too_long='filter',
            tagged=True,
        )


# ---------------------------------------------------------------- batching


def _random_examples(n, seed=0, max_len=30):
    rng = np.random.default_rng(seed)
    src = [
        rng.integers(4, 100, rng.integers(1, max_len + 1)).astype(np.int32)
        for _ in range(n)
    ]
    tgt = [
        rng.integers(4, 100, rng.integers(1, max_len + 1)).astype(np.int32)
        for _ in range(n)
    ]
    return src, tgt


BUCKETS = (8, 16, 24, 32)


def test_batcher_shapes_and_coverage():
    src, tgt = _random_examples(500)
    b = data.BucketedBatcher(
        src, tgt, batch_tokens=256, bucket_lengths=BUCKETS, seed=0, batch_multiple=4
    )
    shapes = b.batch_shapes()
    assert shapes == {8: (32, 8), 16: (16, 16), 24: (8, 24), 32: (8, 32)}
    seen = collections.Counter()
    lookup = {(s.tobytes(), t.tobytes()): i for i, (s, t) in enumerate(zip(src, tgt))}
    for i in range(b.batches_per_epoch()):
        batch = b.batch_at(0, i)
        length = batch['inputs'].shape[1]
        assert batch['inputs'].shape == batch['targets'].shape == shapes[length]
        assert batch['inputs'].dtype == np.int32
        for s_row, t_row in zip(batch['inputs'], batch['targets']):
            if not s_row.any():
                assert not t_row.any()
                continue
            s, t = s_row[s_row != 0], t_row[t_row != 0]
            seen[lookup[(s.tobytes(), t.tobytes())]] += 1
            assert max(len(s), len(t)) <= length and (
                length == 8 or max(len(s), len(t)) > length - 8
            )
    assert sorted(seen) == list(range(500)) and set(seen.values()) == {1}
    # The epoch's batches are shuffled across buckets, not bucket by bucket.
    lengths = [
        b.batch_at(0, i)['inputs'].shape[1] for i in range(b.batches_per_epoch())
    ]
    changes = sum(x != y for x, y in zip(lengths, lengths[1:]))
    assert changes > 2 * len(BUCKETS), lengths
    # B_L = batch_tokens // L rounded down: 256 // 24 = 10 rows, not 11.
    one = data.BucketedBatcher(
        src, tgt, batch_tokens=256, bucket_lengths=BUCKETS, seed=0
    )
    assert one.batch_shapes()[24] == (10, 24)


def test_batcher_determinism_epochs_and_padding():
    src, tgt = _random_examples(300, seed=1)
    make = lambda seed: data.BucketedBatcher(
        src, tgt, batch_tokens=200, bucket_lengths=BUCKETS, seed=seed
    )
    a, b, c = make(3), make(3), make(4)
    n = a.batches_per_epoch()
    assert n == b.batches_per_epoch() == c.batches_per_epoch()
    epoch0 = [a.batch_at(0, i) for i in range(n)]
    assert all(
        np.array_equal(x['inputs'], b.batch_at(0, i)['inputs'])
        for i, x in enumerate(epoch0)
    )
    differs = lambda other, e: any(
        not np.array_equal(x['inputs'], other.batch_at(e, i)['inputs'])
        for i, x in enumerate(epoch0)
    )
    assert differs(a, 1) and differs(c, 0)
    pad = sum(int((x['inputs'] == 0).sum() + (x['targets'] == 0).sum()) for x in epoch0)
    total = sum(x['inputs'].size + x['targets'].size for x in epoch0)
    assert a.padding_fraction(0) == pytest.approx(pad / total)
    assert a.padding_fraction(1) == pytest.approx(a.padding_fraction(0))
    stats = a.stats()
    assert stats['num_examples'] == 300 and stats['batches_per_epoch'] == n
    json.dumps(stats)


def test_batcher_resume():
    src, tgt = _random_examples(120, seed=2)
    make = lambda: data.BucketedBatcher(
        src, tgt, batch_tokens=128, bucket_lengths=BUCKETS, seed=7
    )
    straight = make()
    n = straight.batches_per_epoch()
    steps = [next(straight) for _ in range(n + 5)]
    assert straight.position == {'epoch': 1, 'index': 5}
    first = make()
    for _ in range(n - 3):
        next(first)
    saved = json.loads(json.dumps(first.position))
    resumed = make()
    resumed.set_position(saved)
    for expected, got in zip(steps[n - 3 :], resumed):
        assert np.array_equal(expected['inputs'], got['inputs'])
        assert np.array_equal(expected['targets'], got['targets'])
        if resumed.position == {'epoch': 1, 'index': 5}:
            break
    else:
        pytest.fail('resumed iterator did not reach the end position')
    for bad in (
        {'epoch': 0, 'index': n},
        {'epoch': -1, 'index': 0},
        {'epoch': 0},
        {'epoch': 0.5, 'index': 0},
        [0, 0],
    ):
        with pytest.raises(DataError, match='does not fit this data'):
            resumed.set_position(bad)


def test_batcher_errors():
    src, tgt = _random_examples(10, max_len=40)
    with pytest.raises(DataError, match='raise the bucket lengths or lower max_len'):
        data.BucketedBatcher(src, tgt, batch_tokens=64, bucket_lengths=(8, 16), seed=0)
    with pytest.raises(DataError, match='no examples'):
        data.BucketedBatcher([], [], batch_tokens=64, bucket_lengths=(8, 16), seed=0)


def test_padding_low_on_synthetic(tokenizer):
    pairs = data.generate_pairs(1500, seed=9)
    d = data.TranslationData(
        [s for s, _ in pairs], [t for _, t in pairs], ['de'] * 1500
    )
    src, tgt, _ = data.encode(d, tokenizer, max_len=48, too_long='filter', tagged=False)
    # A small corpus needs small batches, or each bucket's last, partly empty
    # batch dominates the count.
    b = data.BucketedBatcher(
        src, tgt, batch_tokens=256, bucket_lengths=range(8, 49, 4), seed=0
    )
    assert b.padding_fraction() < 0.25


def test_eval_batches_cover_each_example_once():
    src, tgt = _random_examples(77, seed=3)
    batches = data.eval_batches(
        src, tgt, batch_size=10, bucket_lengths=BUCKETS, batch_multiple=4
    )
    rows = [idx for _, idx in batches]
    assert all(len(r) == 12 for r in rows)
    flat = np.concatenate(rows)
    assert sorted(flat[flat >= 0].tolist()) == list(range(77))
    for batch, idx in batches:
        for row, i in enumerate(idx):
            if i < 0:
                assert (
                    not batch['inputs'][row].any() and not batch['targets'][row].any()
                )
            else:
                assert np.array_equal(batch['inputs'][row, : len(src[i])], src[i])
                assert np.array_equal(batch['targets'][row, : len(tgt[i])], tgt[i])
    again = data.eval_batches(
        src, tgt, batch_size=10, bucket_lengths=BUCKETS, batch_multiple=4
    )
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(batches, again))


def test_subset_rows_is_fixed_sorted_and_all_when_asked():
    from jaxdistill.data import batching  # pylint: disable=g-import-not-at-top

    assert batching.subset_rows(10, 0) is None
    assert batching.subset_rows(10, 10) is None and batching.subset_rows(10, 12) is None
    rows = batching.subset_rows(1000, 50)
    assert len(rows) == len(set(rows.tolist())) == 50
    assert (np.diff(rows) > 0).all() and rows.max() < 1000
    np.testing.assert_array_equal(rows, batching.subset_rows(1000, 50))
    assert not np.array_equal(rows, np.arange(50))  # Not a prefix.
