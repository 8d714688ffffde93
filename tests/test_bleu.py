"""Tests for corpus BLEU with golden numbers."""

import collections
import math

import pytest
import sacrebleu

from jaxdistill.evaluation import corpus_bleu


def _ngrams(words, n):
    return collections.Counter(
        tuple(words[i : i + n]) for i in range(len(words) - n + 1)
    )


def _hand_bleu(hyps, refs):
    """Corpus BLEU-4 of whitespace-split text, one reference, no smoothing."""
    matches, totals = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for hyp, ref in zip(hyps, refs):
        h, r = hyp.split(), ref.split()
        hyp_len, ref_len = hyp_len + len(h), ref_len + len(r)
        for n in range(1, 5):
            hc, rc = _ngrams(h, n), _ngrams(r, n)
            matches[n - 1] += sum(min(c, rc[g]) for g, c in hc.items())
            totals[n - 1] += max(len(h) - n + 1, 0)
    log_p = sum(math.log(m / t) for m, t in zip(matches, totals)) / 4
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return 100 * bp * math.exp(log_p)


def test_identical_corpus_is_100():
    lines = ['Ein Mann fährt Fahrrad.', 'Zwei Hunde spielen im Schnee!']
    out = corpus_bleu(lines, lines)
    assert out['sacrebleu'] == pytest.approx(100.0)
    assert out['bleu_tok_lc'] == pytest.approx(100.0)
    assert out['sacrebleu_signature'].startswith('nrefs:1|case:mixed')
    assert 'tok:13a' in out['sacrebleu_signature']


def test_hand_computed_corpus():
    hyps = ['the cat sat on the mat', 'a dog runs in the park']
    refs = ['the cat sat on a mat today', 'a dog runs in a big green park']
    # 1-grams 10/12, 2-grams 6/10, 3-grams 4/8, 4-grams 2/6; BP = e^(1-15/12).
    expected = 100 * math.exp(1 - 15 / 12) * (10 / 12 * 6 / 10 * 4 / 8 * 2 / 6) ** 0.25
    assert _hand_bleu(hyps, refs) == pytest.approx(expected)
    out = corpus_bleu(hyps, refs, target_lang='en')
    assert out['sacrebleu'] == pytest.approx(expected, abs=1e-9)
    assert out['bleu_tok_lc'] == pytest.approx(expected, abs=1e-9)
    assert out['sacrebleu'] == pytest.approx(41.8438, abs=1e-3)


def test_case_and_tokenisation_raise_tok_lc():
    hyps = ['Ein Mann fährt Fahrrad.', 'Der Hund läuft (schnell) über die Wiese.']
    refs = ['ein mann fährt fahrrad .', 'der hund läuft ( schnell ) über die wiese .']
    out = corpus_bleu(hyps, refs)
    assert out['bleu_tok_lc'] == pytest.approx(100.0)
    assert out['sacrebleu'] < 60.0


def test_tok_lc_is_unsmoothed_like_multi_bleu():
    # No 4-gram matches: multi-bleu.perl gives 0; sacreBLEU's exp smoothing > 0.
    out = corpus_bleu(['ein mann fährt rad'], ['ein mann fährt fahrrad'])
    assert out['bleu_tok_lc'] == 0.0
    assert out['sacrebleu'] > 0.0


def test_length_mismatch():
    with pytest.raises(ValueError, match='2 hypotheses but 1 references'):
        corpus_bleu(['a', 'b'], ['a'])


def test_tok_lc_logs_no_detokenize_warning(caplog):
    # The tokenised variant feeds sacreBLEU Moses-tokenised text on purpose;
    # sacreBLEU's "forgot to detokenize" warning (>100 lines ending in ' .')
    # would be printed at every evaluation.
    lines = [f'Mann {i} fährt Fahrrad.' for i in range(120)]
    with caplog.at_level('WARNING', logger='sacrebleu'):
        out = corpus_bleu(lines, lines)
    assert out['bleu_tok_lc'] == pytest.approx(100.0)
    assert not [r for r in caplog.records if 'detokenize' in r.getMessage()]


def test_tok_lc_tokenises_each_line_by_its_own_language():
    """One-to-many: French lines by French Moses rules ("d' hommes"), German
    by German; one language for all would split "d ' hommes" and change the
    n-grams."""
    hyps = ['Ein Mann fährt Fahrrad.', "Un groupe d'hommes marche dans la rue."]
    refs = ['Ein Mann fährt ein Fahrrad.', "Un groupe d'hommes marchent dans la rue."]
    tokenised = [
        ['ein mann fährt fahrrad .', "un groupe d' hommes marche dans la rue ."],
        ['ein mann fährt ein fahrrad .', "un groupe d' hommes marchent dans la rue ."],
    ]
    expected = sacrebleu.metrics.BLEU(
        tokenize='none', smooth_method='none', force=True
    ).corpus_score(tokenised[0], [tokenised[1]])
    out = corpus_bleu(hyps, refs, target_lang=['de', 'fr'])
    assert out['bleu_tok_lc'] == pytest.approx(expected.score, abs=1e-9)
    assert corpus_bleu(hyps, refs, target_lang='de')['bleu_tok_lc'] != pytest.approx(
        expected.score
    )
    with pytest.raises(ValueError, match='1 target languages for 2 hypotheses'):
        corpus_bleu(hyps, refs, target_lang=['de'])
