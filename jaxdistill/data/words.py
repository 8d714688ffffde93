"""Word-embedding data: corpus, vocabulary, subsampling, negatives, windows.

Everything word2vec does to its corpus before the SGD, in numpy and
deterministic from a seed:

* `read_sentences`: one sentence a line (plain or `.gz`), split on whitespace.
* `build_vocab`: words seen at least `min_count` times, most frequent first.
* `keep_probabilities`: word2vec's frequent-word subsampling,
  p_keep(w) = (sqrt(c_w / (s·T)) + 1) · s·T / c_w, capped at 1
  (c_w: count of w, T: total in-vocabulary tokens, s: `sample`).
* `unigram_probabilities` / `negative_table`: the unigram^0.75 distribution
  negatives are drawn from, as a lookup table like word2vec's.
* `reduced_windows`: the dynamic window, uniform in 1..window per center.
* `skipgram_pairs`: every (center, context) pair, for tests and task heads.
* `window_batches`: the fast path the skip-gram trainer consumes: the
  subsampled token stream cut into overlapping chunks of `centers + 2·window`
  tokens, so that a step gathers each input row once instead of once per pair.
"""

import dataclasses
import gzip
import pathlib
import zlib
from collections import Counter

import numpy as np

from jaxdistill.errors import DataError

PAD = -1  # Token id of padding in `window_batches`.


def read_sentences(path) -> list[list[str]]:
    """Whitespace-tokenized lines of a text file (`.gz` is decompressed).

    Empty lines are skipped. Raises DataError if the file is missing, cannot
    be read, is a truncated or corrupt `.gz`, is not UTF-8 (the message names
    the line), or has no tokens.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        raise DataError(f'Corpus file {path} is a directory.')
    if not path.is_file():
        raise DataError(f'Corpus file {path} does not exist.')
    opener = gzip.open if path.suffix == '.gz' else open
    try:
        # utf-8-sig: a byte-order mark is not part of the first word.
        with opener(path, 'rt', encoding='utf-8-sig') as f:
            sentences = [line.split() for line in f]
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise _read_error(path, opener, e) from None
    sentences = [s for s in sentences if s]
    if not sentences:
        raise DataError(f'Corpus {path} has no tokens.')
    return sentences


def _read_error(path, opener, error) -> DataError:
    """The DataError for a corpus that failed to read, naming the line.

    The text reader decodes in blocks, so its error knows neither the line
    nor the offset in the file. Counting lines in the loop above would slow
    every read; instead, on failure only, the file is read again as bytes
    line by line (b'\\n' never occurs inside a UTF-8 character, so each line
    decodes on its own) until the bad line or the end of the gzip data.
    """
    line, offset = 0, 0
    where = ' of the gunzipped data' if opener is gzip.open else ''
    try:
        with opener(path, 'rb') as f:
            for raw in f:
                line += 1
                raw.decode('utf-8')
                offset += len(raw)
    except UnicodeDecodeError as e:
        return DataError(
            f'Corpus {path} line {line}: invalid UTF-8 (byte {offset + e.start}'
            f'{where}); save the file as UTF-8.'
        )
    except EOFError:
        return DataError(
            f'Corpus {path} is truncated: the gzip data ends after line {line}, '
            'before its end-of-stream marker; copy or download it again.'
        )
    except (gzip.BadGzipFile, zlib.error) as e:
        return DataError(f'Corpus {path}: corrupt gzip data after line {line} ({e}).')
    except OSError:
        pass
    return DataError(f'Cannot read corpus {path}: {error}')


@dataclasses.dataclass(frozen=True)
class Vocab:
    """Words with their corpus counts, most frequent first (ties by word).

    words: list of V strings; counts: [V] int64; index: word -> id.
    """

    words: list
    counts: np.ndarray
    index: dict

    def __len__(self):
        return len(self.words)


def build_vocab(sentences, min_count: int = 5) -> Vocab:
    """Vocabulary of the words occurring at least `min_count` times."""
    if min_count < 1:
        raise DataError(f'min_count must be >= 1, got {min_count}.')
    counter = Counter(w for s in sentences for w in s)
    kept = sorted(
        ((w, c) for w, c in counter.items() if c >= min_count),
        key=lambda wc: (-wc[1], wc[0]),
    )
    if not kept:
        raise DataError(f'No word occurs {min_count} times or more; lower min_count.')
    words = [w for w, _ in kept]
    counts = np.array([c for _, c in kept], np.int64)
    return Vocab(words, counts, {w: i for i, w in enumerate(words)})


def encode(sentences, vocab: Vocab) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and sentence ids, out-of-vocabulary words dropped.

    Returns:
      (ids [N] int32, sentence [N] int32): the in-vocabulary tokens in corpus
      order and the index of the line each came from.
    """
    index = vocab.index
    ids, sent = [], []
    for i, s in enumerate(sentences):
        row = [index[w] for w in s if w in index]
        ids.extend(row)
        sent.extend([i] * len(row))
    return np.array(ids, np.int32), np.array(sent, np.int32)


def keep_probabilities(counts, sample: float) -> np.ndarray:
    """word2vec's subsampling: probability of keeping each word, [V] float64.

    `sample` <= 0 keeps every word.
    """
    counts = np.asarray(counts, np.float64)
    if sample <= 0:
        return np.ones_like(counts)
    threshold = sample * counts.sum()
    keep = (np.sqrt(counts / threshold) + 1.0) * threshold / counts
    return np.minimum(keep, 1.0)


def unigram_probabilities(counts, power: float = 0.75) -> np.ndarray:
    """count^power, normalized: the negative-sampling distribution, [V]."""
    weights = np.asarray(counts, np.float64) ** power
    return weights / weights.sum()


def negative_table(counts, size: int = 10_000_000, power: float = 0.75):
    """[size] int32 table in which word w fills a share p_w of the entries.

    Drawing a uniform index into it samples from `unigram_probabilities`
    (word2vec's `InitUnigramTable`, with rounding at the midpoints).
    """
    cdf = np.cumsum(unigram_probabilities(counts, power))
    # Entry i holds the word w with cdf[w-1] <= (i + 0.5) / size < cdf[w]:
    # word w ends before the first i with i + 0.5 >= cdf[w]·size. Repeating
    # each word that many times is the same table, much faster than a
    # searchsorted per entry (`benchmarks/skipgram_step.py` times both).
    ends = np.clip(np.ceil(cdf * size - 0.5), 0, size).astype(np.int64)
    ends[-1] = size
    return np.repeat(np.arange(len(cdf), dtype=np.int32), np.diff(ends, prepend=0))


def reduced_windows(rng: np.random.Generator, n: int, window: int) -> np.ndarray:
    """[n] int32 effective windows, uniform in 1..window (word2vec's `b`)."""
    return rng.integers(1, window + 1, size=n, dtype=np.int32)


def skipgram_pairs(ids, sentence, windows) -> tuple[np.ndarray, np.ndarray]:
    """All (center, context) pairs within each center's window and sentence.

    Args:
      ids: [N] token ids; sentence: [N] sentence ids; windows: [N] effective
        window of each center.
    Returns:
      (centers [P], contexts [P]) int32, ordered by offset then position.
    """
    ids, sentence, windows = map(np.asarray, (ids, sentence, windows))
    n, max_window = len(ids), int(windows.max(initial=0))
    centers, contexts = [], []
    for offset in [o for d in range(1, max_window + 1) for o in (-d, d)]:
        lo, hi = max(0, -offset), min(n, n - offset)
        pos = np.arange(lo, hi)
        ok = (windows[pos] >= abs(offset)) & (sentence[pos] == sentence[pos + offset])
        centers.append(ids[pos[ok]])
        contexts.append(ids[pos[ok] + offset])
    return np.concatenate(centers), np.concatenate(contexts)


def subsample(ids, keep, rng: np.random.Generator) -> np.ndarray:
    """[N] bool: which tokens survive subsampling (keep: [V] probabilities)."""
    return rng.random(len(ids)) < keep[ids]


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator for one epoch: a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch])


def window_batches(
    ids, sentence, *, keep, table, window, centers, negatives, group, rng
) -> dict:
    """One epoch of skip-gram chunks for `models.skipgram`.

    Subsamples the stream, then cuts it into S chunks of `centers` center
    tokens each with `window` tokens of context on either side (chunks
    overlap by 2·window). Pads the last chunk with PAD tokens. The chunk's
    tokens are cut into G = ceil((centers + 2·window) / group) runs of
    consecutive tokens (`models.skipgram` splits them evenly, at most
    `group` each); each run gets `negatives` negatives, shared by every
    pair whose context token is in it.

    Returns a dict of numpy arrays:
      tokens [S, centers + 2·window] int32 (PAD where empty),
      sentence [S, centers + 2·window] int32 (-1 where empty),
      window [S, centers] int32 effective window of each center,
      negatives [S, G, negatives] int32 drawn from `table`,
      words: int, the number of tokens of the epoch before subsampling.
    """
    ids, sentence = np.asarray(ids), np.asarray(sentence)
    kept = subsample(ids, keep, rng)
    stream, stream_sent = ids[kept], sentence[kept]
    steps = max(1, -(-len(stream) // centers))
    width = centers + 2 * window
    padded = np.full(steps * centers + 2 * window, PAD, np.int32)
    padded_sent = np.full_like(padded, -1)
    padded[window : window + len(stream)] = stream
    padded_sent[window : window + len(stream)] = stream_sent
    starts = np.arange(steps)[:, None] * centers + np.arange(width)[None, :]
    groups = -(-width // group)
    draws = rng.integers(0, len(table), size=(steps, groups, negatives))
    return {
        'tokens': padded[starts],
        'sentence': padded_sent[starts],
        'window': reduced_windows(rng, steps * centers, window).reshape(steps, centers),
        'negatives': table[draws],
        'words': len(ids),
    }
