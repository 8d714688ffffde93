"""SST-2 (GLUE) sentiment data: `sentence<TAB>label` TSV with a header line.

Two tokenizations (`text_encoder`): word-level (lowercased, split on
whitespace; the vocabulary is the most frequent training words) or a
SentencePiece model trained on the training sentences. Ids: 0 = PAD, 1 = UNK
in both.
"""

import collections
import logging
import os
import pathlib
from collections.abc import Callable

import numpy as np

from jaxdistill.data import text as text_lib
from jaxdistill.data import tokenizer as tokenizer_lib
from jaxdistill.errors import ConfigError, DataError

PAD, UNK = tokenizer_lib.PAD_ID, tokenizer_lib.UNK_ID  # 0, 1 for both kinds.
SPLITS = {'train': 'train.tsv.gz', 'dev': 'dev.tsv', 'test': 'glue_dev.tsv'}


def read_sst2(path) -> tuple[list[str], np.ndarray]:
    """(sentences, labels int32 [N]) from a (gzipped) SST-2 TSV.

    Raises:
      DataError: missing file, a header other than `sentence<TAB>label`, or a
        line without exactly one tab and a 0/1 label, or with an empty
        sentence (named by line number; blank lines at the end of the file
        are ignored).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f'SST-2 file {path} does not exist.')
    # A truncated or corrupt gzip, or bad UTF-8 (with its line), is a
    # DataError naming the file there.
    lines = text_lib.read_lines(path) if path.stat().st_size else []
    if not lines or lines[0].strip().split('\t') != ['sentence', 'label']:
        head = lines[0][:60] if lines else '<empty file>'
        raise DataError(f"{path}:1: header must be 'sentence<TAB>label', got {head!r}.")
    while len(lines) > 1 and not lines[-1].strip():
        lines.pop()  # Blank lines at the end, as an editor may leave them.
    sentences, labels = [], []
    for number, line in enumerate(lines[1:], start=2):
        parts = line.rstrip('\n').split('\t')
        if len(parts) != 2 or parts[1].strip() not in ('0', '1'):
            raise DataError(
                f'{path}:{number}: expected sentence<TAB>0|1 (two classes), '
                f'got {line[:80]!r}.'
            )
        if not parts[0].strip():
            # An all-padding input with a label would train on nothing.
            raise DataError(f'{path}:{number}: the sentence is empty.')
        sentences.append(parts[0])
        labels.append(int(parts[1]))
    if not sentences:
        raise DataError(f'{path} holds no examples.')
    return sentences, np.asarray(labels, np.int32)


def load_split(data_dir, split: str, key: str = 'data.data_dir'):
    """(sentences, labels) of `split` in `data_dir`: the file SPLITS names,
    gzipped or not (`train.tsv.gz` or `train.tsv`; the reader tells them
    apart by their bytes). `key`: the config key that gave `data_dir`, named
    when the folder or the file is missing."""
    if split not in SPLITS:
        raise DataError(f'SST-2 split {split!r} unknown; known: {", ".join(SPLITS)}.')
    folder = pathlib.Path(data_dir)
    plain = SPLITS[split].removesuffix('.gz')
    names = (SPLITS[split], plain if plain != SPLITS[split] else plain + '.gz')
    for name in names:
        if (folder / name).is_file():
            return read_sst2(folder / name)
    where = (
        f'no {names[0]} (or {names[1]}) in {folder}'
        if folder.is_dir()
        else f'{folder} is not a folder'
    )
    raise DataError(
        f'SST-2 {split} split: {where} ({key}; files are sentence<TAB>label '
        'TSVs with a header line).'
    )


def build_vocab(sentences, size: int, min_count: int = 1) -> dict[str, int]:
    """The `size - 2` most frequent lowercased words seen at least
    `min_count` times -> ids 2.. (ties: first seen).

    With `min_count` 1 and a `size` above the training text's word types,
    UNK never occurs in training and its embedding row is never trained,
    though unseen words at test time all read it; `min_count` 2 sends the
    words seen once to UNK, so its row learns from them.
    """
    counts = collections.Counter(w for s in sentences for w in s.lower().split())
    words = [w for w, c in counts.most_common(max(size - 2, 0)) if c >= min_count]
    return {w: i + 2 for i, w in enumerate(words)}


def encode(sentences, vocab: dict[str, int], max_len: int) -> np.ndarray:
    """int32 [N, max_len]: word ids (UNK if unknown), truncated, PAD-filled."""
    return pad_ids(
        ([vocab.get(w, UNK) for w in s.lower().split()] for s in sentences),
        len(sentences),
        max_len,
    )


def cut(wide: np.ndarray) -> tuple[np.ndarray, int]:
    """(tokens [N, max_len], how many rows they cut) from the same rows
    encoded with max_len + 1: a row with a token in that last column is
    longer than max_len."""
    return wide[:, :-1], int(np.sum(wide[:, -1] != PAD))


def pad_ids(rows, n: int, max_len: int) -> np.ndarray:
    """int32 [n, max_len] from `n` id lists: truncated, PAD-filled."""
    out = np.full((n, max_len), PAD, np.int32)
    for row, ids in enumerate(rows):
        ids = ids[:max_len]
        out[row, : len(ids)] = ids
    return out


TOKENIZERS = ('words', 'sentencepiece')


VOCAB_FILE = 'vocab.txt'


def word_vocab(
    train_sentences,
    size: int,
    workdir: str | None,
    min_count: int = 1,
    *,
    remake_stale: bool = False,
) -> dict[str, int]:
    """`build_vocab`, kept as WORKDIR/vocab.txt (one word a line, in id order).

    A run's first start writes it; a resumed run, `evaluate` and a student
    loading this run as a teacher read it back, so the embedding rows keep
    their words even if the data the config points at has changed since
    (another data_dir, max_train_examples). Without a workdir, only builds.

    `remake_stale`: the run has saved no checkpoint, so no embedding row
    belongs to a word yet: a kept vocabulary that these sentences and
    settings would not build (left by an earlier start from other data, or
    with another vocab_size or min_count) is built and written again, with
    a warning.
    """
    path = os.path.join(workdir, VOCAB_FILE) if workdir else None
    if path and os.path.exists(path):
        with open(path, encoding='utf-8') as f:
            words = f.read().split('\n')[:-1]
        kept = {w: i + 2 for i, w in enumerate(words)}
        if not remake_stale or tokenizer_lib.reading_only():
            return kept
        vocab = build_vocab(train_sentences, size, min_count)
        if vocab == kept:
            return kept
        logging.getLogger(__name__).warning(
            '%s was written by an earlier start of this run that saved no '
            'checkpoint, from other data or settings (%d words; these build '
            '%d); writing it again for this config.',
            path,
            len(kept),
            len(vocab),
        )
    else:
        vocab = build_vocab(train_sentences, size, min_count)
    if path:
        import jax  # pylint: disable=g-import-not-at-top

        if jax.process_index() == 0:
            os.makedirs(workdir, exist_ok=True)
            with open(f'{path}.tmp', 'w', encoding='utf-8') as f:
                f.write(''.join(w + '\n' for w in vocab))
            os.replace(f'{path}.tmp', path)
    return vocab


def piece_encoder(tok, max_len: int) -> Callable[[list[str]], np.ndarray]:
    """sentences -> int32 [N, max_len] of SentencePiece tokenizer `tok`'s
    pieces, truncated, PAD-filled."""
    return lambda s: pad_ids((tok.encode(x) for x in s), len(s), max_len)


def text_encoder(
    kind: str,
    train_sentences,
    vocab_size: int,
    max_len: int,
    workdir: str,
    min_count: int = 1,
    *,
    remake_stale: bool = False,
) -> tuple[Callable[[list[str]], np.ndarray], int]:
    """(sentences -> int32 [N, max_len], vocabulary size incl. PAD and UNK).

    kind 'words': the `vocab_size - 2` most frequent lowercased training words
    seen at least `min_count` times, kept as `workdir/vocab.txt` (`word_vocab`).
    kind 'sentencepiece': a unigram SentencePiece model of `vocab_size` pieces
    trained on the training sentences once, kept as `workdir/spm.model` (a
    resumed run or `evaluate` reads the same one); no word is out of
    vocabulary. `remake_stale`: the run has saved no checkpoint; a kept
    vocabulary or model made from other data or settings is made again
    (`word_vocab`, `tokenizer.load_or_train_tokenizer`).

    Raises:
      ConfigError: an unknown kind.
    """
    if kind == 'words':
        vocab = word_vocab(
            train_sentences, vocab_size, workdir, min_count, remake_stale=remake_stale
        )
        return (lambda s: encode(s, vocab, max_len)), len(vocab) + 2
    if kind == 'sentencepiece':
        tok = tokenizer_lib.shared_tokenizer(
            os.path.join(workdir, 'spm.model'),
            lambda: train_sentences,
            vocab_size,
            remake_stale=remake_stale,
        )
        return piece_encoder(tok, max_len), tok.vocab_size
    raise ConfigError(
        f'data.tokenizer must be one of {", ".join(TOKENIZERS)}; got {kind!r}.'
    )
