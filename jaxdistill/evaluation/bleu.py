"""Corpus BLEU: standard sacreBLEU and the tokenised, lowercased Multi30k variant."""

import functools

import sacrebleu
import sacremoses


@functools.lru_cache(maxsize=8)
def _moses(lang: str) -> sacremoses.MosesTokenizer:
    return sacremoses.MosesTokenizer(lang=lang)


def _tok_lc(lines: list[str], lang: str) -> list[str]:
    """Moses-tokenised (no escaping), lowercased lines."""
    tok = _moses(lang)
    return [tok.tokenize(line, escape=False, return_str=True).lower() for line in lines]


def corpus_bleu(
    hypotheses: list[str], references: list[str], *, target_lang: str = 'de'
) -> dict:
    """BLEU of detokenised hypotheses against one reference each.

    Returns:
      {'sacrebleu': cased, detokenised sacreBLEU (13a, default smoothing),
       'sacrebleu_signature': its signature string,
       'bleu_tok_lc': BLEU on Moses-tokenised, lowercased text split on
           whitespace, unsmoothed (0 when any n-gram order has no match) —
           what multi-bleu.perl gives and what Multi30k papers report}.
      Scores are on the 0–100 scale.
    """
    if len(hypotheses) != len(references):
        raise ValueError(
            f'{len(hypotheses)} hypotheses but {len(references)} '
            'references; they must pair up one to one.'
        )
    hypotheses, references = list(hypotheses), list(references)
    standard = sacrebleu.metrics.BLEU()
    score = standard.corpus_score(hypotheses, [references])
    # force: the input is tokenised on purpose; without it sacreBLEU logs a
    # warning ("forgot to detokenize") on every evaluation.
    tokenised = sacrebleu.metrics.BLEU(
        tokenize='none', lowercase=False, smooth_method='none', force=True
    )
    tok_lc = tokenised.corpus_score(
        _tok_lc(hypotheses, target_lang), [_tok_lc(references, target_lang)]
    )
    return {
        'sacrebleu': float(score.score),
        'sacrebleu_signature': str(standard.get_signature()),
        'bleu_tok_lc': float(tok_lc.score),
    }
