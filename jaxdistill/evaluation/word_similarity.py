"""Word similarity: Spearman correlation of cosine similarity with human scores.

Reads WordSim-353 / SimLex-999 style files (`word1<TAB>word2<TAB>score`,
`#` comment lines). As in gensim's `evaluate_word_pairs` (its default
`case_insensitive=True`), words are matched without regard to case: a pair's
word finds the most frequent of the vocabulary's case variants ('Israel' or
'israel'); pairs with a word still missing are left out and counted in
`oov_fraction`.
"""

import pathlib

import numpy as np

from jaxdistill.data import text as text_lib
from jaxdistill.errors import DataError


def read_pairs(path) -> list[tuple[str, str, float]]:
    """(word1, word2, score) triples, words lowercased; '#' lines skipped."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise DataError(f'Similarity file {path} is a directory.')
    if not path.is_file():
        raise DataError(f'Similarity file {path} does not exist.')
    pairs = []
    # read_lines: a file that cannot be read or is not UTF-8 (its line named)
    # is a DataError.
    for n, line in enumerate(text_lib.read_lines(path), 1):
        if not line.strip() or line.lstrip().startswith('#'):
            continue
        fields = line.split('\t') if '\t' in line else line.split()
        try:
            w1, w2, score = fields[0], fields[1], float(fields[2])
        except (IndexError, ValueError):
            raise DataError(
                f'{path}:{n}: expected word1<TAB>word2<TAB>score, got {line!r}'
            ) from None
        pairs.append((w1.lower(), w2.lower(), score))
    if not pairs:
        raise DataError(f'Similarity file {path} has no pairs.')
    return pairs


def rankdata(x) -> np.ndarray:
    """1-based ranks, ties given their average rank ([N] float64)."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind='stable')
    sorted_x = x[order]
    # Start index of each run of equal values, and each element's run.
    starts = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    run = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], len(x)] - 1
    ranks = np.empty(len(x))
    ranks[order] = (first[run] + last[run]) / 2.0 + 1.0
    return ranks


def spearman(x, y) -> float:
    """Spearman rank correlation with average ranks for ties (NaN if constant)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(
            f'spearman needs two equal 1-D arrays, got {x.shape}, {y.shape}'
        )
    rx, ry = rankdata(x) - (len(x) + 1) / 2, rankdata(y) - (len(y) + 1) / 2
    denom = np.sqrt(np.sum(rx * rx) * np.sum(ry * ry))
    return float(np.sum(rx * ry) / denom) if denom > 0 else float('nan')


def evaluate(vectors, index: dict, pairs) -> dict:
    """Spearman of cosine similarity against human scores.

    Args:
      vectors: [V, D] array of word vectors.
      index: word -> row of `vectors`, rows in order of falling frequency
        (as `data.words.build_vocab` and gensim give them): among words that
        differ only in case, the lowest row stands for all.
      pairs: (word1, word2, score) triples, e.g. from `read_pairs`.
    Returns:
      {'spearman': float, 'oov_fraction': float, 'pairs': int (scored)}.
    """
    vectors = np.asarray(vectors, np.float64)
    lower = {}
    for word, row in sorted(index.items(), key=lambda item: item[1]):
        lower.setdefault(word.lower(), row)
    known = [
        (lower[a.lower()], lower[b.lower()], s)
        for a, b, s in pairs
        if a.lower() in lower and b.lower() in lower
    ]
    oov = 1.0 - len(known) / len(pairs)
    if len(known) < 2:
        return {'spearman': float('nan'), 'oov_fraction': oov, 'pairs': len(known)}
    a, b, human = (np.array(col) for col in zip(*known))
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    cosine = np.sum(unit[a] * unit[b], axis=1)
    return {
        'spearman': spearman(cosine, human),
        'oov_fraction': oov,
        'pairs': len(known),
    }
