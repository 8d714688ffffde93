"""Corpus BLEU: standard sacreBLEU and the tokenised, lowercased Multi30k variant."""

from collections.abc import Sequence
import functools

import sacrebleu
import sacremoses


@functools.lru_cache(maxsize=8)
def _moses(lang: str) -> sacremoses.MosesTokenizer:
    return sacremoses.MosesTokenizer(lang=lang)


def _tok_lc(lines: list[str], langs: list[str]) -> list[str]:
    """Moses-tokenised (no escaping), lowercased lines, each by the rules of
    its language."""
    return [
        _moses(lang).tokenize(line, escape=False, return_str=True).lower()
        for line, lang in zip(lines, langs)
    ]


def corpus_bleu(
    hypotheses: list[str],
    references: list[str],
    *,
    target_lang: str | Sequence[str] = 'de',
) -> dict:
    """BLEU of detokenised hypotheses against one reference each.

    `target_lang`: the language whose Moses rules tokenise the lines for
    'bleu_tok_lc' ("d'hommes" splits one way in French, another in German);
    a sequence gives each line its own (one-to-many translation).

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
    if isinstance(target_lang, str):
        langs = [target_lang] * len(hypotheses)
    else:
        langs = list(target_lang)
        if len(langs) != len(hypotheses):
            raise ValueError(
                f'{len(langs)} target languages for {len(hypotheses)} '
                'hypotheses; give one language, or one per line.'
            )
    standard = sacrebleu.metrics.BLEU()
    score = standard.corpus_score(hypotheses, [references])
    # force: the input is tokenised on purpose; without it sacreBLEU logs a
    # warning ("forgot to detokenize") on every evaluation.
    tokenised = sacrebleu.metrics.BLEU(
        tokenize='none', lowercase=False, smooth_method='none', force=True
    )
    tok_lc = tokenised.corpus_score(
        _tok_lc(hypotheses, langs), [_tok_lc(references, langs)]
    )
    return {
        'sacrebleu': float(score.score),
        'sacrebleu_signature': str(standard.get_signature()),
        'bleu_tok_lc': float(tok_lc.score),
    }
