"""SentencePiece tokenizer with fixed special ids, trained deterministically."""

import contextlib
import contextvars
import hashlib
import io
import json
import logging
import os
import re
import tempfile
from typing import Callable, Iterable, Sequence

import jax
from jax.experimental import multihost_utils
import numpy as np
import sentencepiece as spm

from jaxdistill.errors import ConfigError, DataError

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3

_log = logging.getLogger(__name__)
_TOO_HIGH = re.compile(
    r'Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)'
)
_TOO_LOW = re.compile(
    r'Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)'
)


def _meta_path(model_path) -> str:
    """Sidecar recording how the model was made: the vocab size asked for,
    the tag symbols, a digest of the training text and the folder it was
    made in (`load_or_train_tokenizer` reads them)."""
    return os.fspath(model_path) + '.json'


def texts_digest(texts: Iterable[str]) -> str:
    """SHA-256 of the texts in order, one a line: what a tokenizer was
    trained on, without keeping the text."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode('utf-8', 'surrogatepass'))
        h.update(b'\n')
    return h.hexdigest()


def _folder(model_path) -> str:
    return os.path.dirname(os.path.abspath(model_path))


def _read_meta(model_path) -> dict:
    """The sidecar's record; {} if there is none (a model copied in alone,
    or made before the sidecar existed)."""
    path = _meta_path(model_path)
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding='utf-8') as f:
            meta = json.load(f)
        if not isinstance(meta, dict):
            raise TypeError(f'a JSON object expected, got {type(meta).__name__}')
        int(meta['requested_vocab_size'])
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f'{path} is malformed: {e}') from None
    return meta


def _atomic_write(path, data: bytes) -> None:
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-', suffix='.model')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        # mkstemp's file is private (0600); the run's other files are not.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _train_bytes(texts: list[str], vocab_size: int, **options) -> bytes:
    """Serialized model; RuntimeError from SentencePiece passes through."""
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=writer,
        vocab_size=vocab_size,
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        num_threads=1,
        shuffle_input_sentence=False,
        character_coverage=1.0,
        minloglevel=2,
        **options,
    )
    return writer.getvalue()


class Tokenizer:
    """A `sentencepiece.SentencePieceProcessor` with PAD/UNK/BOS/EOS = 0/1/2/3."""

    def __init__(self, processor: spm.SentencePieceProcessor):
        self.sp = processor

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        model_path,
        *,
        user_defined_symbols: Sequence[str] = (),
        seed_sentencepiece_size: int = 1_000_000,
        input_sentence_size: int = 2_000_000,
        model_type: str = 'unigram',
    ) -> 'Tokenizer':
        """Trains on the non-empty texts, saves, loads.

        More than `input_sentence_size` texts: a sample of that many drawn
        across all of them (fixed seed, in their order), not the first ones,
        which for a large parallel corpus given as sources then targets would
        all be the source language.
        Deterministic: one thread, no shuffling. When `vocab_size` is more than
        the text supports, trains again with the largest size SentencePiece
        allows and logs a warning (the tokenizer's `vocab_size` tells the truth);
        one too small for the text's characters is a ConfigError naming
        `data.vocab_size`, the key every caller takes it from.
        The model is written atomically to `model_path`, with a `.json` sidecar
        recording the requested size, the symbols, a digest of `texts` and the
        folder, for `load_or_train_tokenizer`.
        """
        texts = list(texts)
        digest = texts_digest(texts)
        texts = [t for t in texts if t.strip()]
        if len(texts) > input_sentence_size:
            keep = np.random.default_rng(0).choice(
                len(texts), input_sentence_size, replace=False
            )
            texts = [texts[i] for i in np.sort(keep)]
        if not texts:
            raise DataError(f'cannot train tokenizer {model_path}: no non-empty text')
        # PAD, UNK, BOS, EOS and the user's symbols each take a piece; with
        # fewer, SentencePiece fails deep inside (a larger size that is still
        # too small for the text's characters is named below).
        specials = 4 + len(user_defined_symbols)
        if vocab_size < specials:
            raise ConfigError(
                f'data.vocab_size={vocab_size} is too small for the tokenizer '
                f'{model_path}: PAD, UNK, BOS, EOS'
                + (
                    f' and {len(user_defined_symbols)} tag symbols'
                    if user_defined_symbols
                    else ''
                )
                + f' alone take {specials} pieces; set data.vocab_size >= '
                f"{specials + 1} (and enough for the text's characters)."
            )
        options = dict(
            user_defined_symbols=list(user_defined_symbols),
            seed_sentencepiece_size=seed_sentencepiece_size,
            input_sentence_size=input_sentence_size,
            model_type=model_type,
        )
        try:
            data = _train_bytes(texts, vocab_size, **options)
        except RuntimeError as e:
            low = _TOO_LOW.search(str(e))
            if low:
                raise ConfigError(
                    f'data.vocab_size={vocab_size} is too small for the text the '
                    f'tokenizer {model_path} is trained on: its characters and '
                    f'special symbols need {low.group(2)} pieces; set '
                    f'data.vocab_size >= {low.group(2)}.'
                ) from None
            match = _TOO_HIGH.search(str(e))
            if not match:
                raise DataError(
                    f'SentencePiece training for {model_path} failed: {e}'
                ) from None
            allowed = int(match.group(2))
            _log.warning(
                'Tokenizer: vocab_size %d is too large for this text; '
                'training with the largest possible, %d.',
                vocab_size,
                allowed,
            )
            data = _train_bytes(texts, allowed, **options)
        meta = {
            'requested_vocab_size': vocab_size,
            'user_defined_symbols': list(user_defined_symbols),
            'texts_sha256': digest,
            'folder': _folder(model_path),
        }
        # The model first: stopped between the two, a new model beside the
        # old record is remade at the next start (its text differs from the
        # record's), where the other order would pass an old model for new.
        _atomic_write(model_path, data)
        _atomic_write(_meta_path(model_path), json.dumps(meta).encode())
        return cls.load(model_path)

    @classmethod
    def load(cls, model_path) -> 'Tokenizer':
        if not os.path.isfile(model_path):
            raise DataError(f'tokenizer model not found: {model_path}')
        sp = spm.SentencePieceProcessor()
        try:
            sp.Load(os.fspath(model_path))
        except (RuntimeError, OSError) as e:
            raise DataError(f'{model_path} is not a SentencePiece model: {e}') from None
        # Batching, the model and decoding all take 0/1/2/3 for PAD/UNK/BOS/
        # EOS; a model trained with SentencePiece's defaults (UNK/BOS/EOS at
        # 0/1/2, no PAD) would read its third piece as EOS.
        got = (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id())
        if got != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise DataError(
                f'{model_path} has PAD/UNK/BOS/EOS ids {got}; jaxdistill needs '
                f'{(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}. Train it with pad_id=0, '
                'unk_id=1, bos_id=2, eos_id=3, or delete it and let the run '
                'train one.'
            )
        return cls(sp)

    @property
    def vocab_size(self) -> int:
        return self.sp.GetPieceSize()

    def piece_to_id(self, piece: str) -> int:
        """Id of `piece`, UNK_ID when it is not in the vocabulary."""
        return self.sp.PieceToId(piece)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without BOS/EOS."""
        return self.sp.EncodeAsIds(text)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids` up to the first EOS; PAD and BOS are dropped."""
        kept = []
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                kept.append(i)
        return self.sp.DecodeIds(kept)


_EXISTING_ONLY = contextvars.ContextVar('existing_tokenizers_only', default=False)


@contextlib.contextmanager
def existing_only():
    """Within it, `load_or_train_tokenizer` loads and never trains: tools that
    only read a run (evaluate, translate) must not make its tokenizer anew."""
    token = _EXISTING_ONLY.set(True)
    try:
        yield
    finally:
        _EXISTING_ONLY.reset(token)


def reading_only() -> bool:
    """Whether this is inside `existing_only()`: a tool that only reads a
    run, which must write nothing into it."""
    return _EXISTING_ONLY.get()


def _check_may_train(model_path) -> None:
    """DataError if `model_path` is missing inside `existing_only()`."""
    if _EXISTING_ONLY.get() and not os.path.exists(model_path):
        raise DataError(
            f'{model_path} is missing: the tokenizer the run was trained '
            "with, which this tool only reads (it does not make the run's "
            'tokenizer again: the data may have changed since). Restore it '
            'from a copy of the run.'
        )


def load_or_train_tokenizer(
    model_path,
    texts_fn: Callable[[], Iterable[str]],
    vocab_size: int,
    user_defined_symbols: Sequence[str] = (),
    *,
    remake_stale: bool = False,
) -> Tokenizer:
    """Loads `model_path` if it exists (checking its vocab size), else trains it.

    `texts_fn` is only called when training is needed, or to check an
    existing model with `remake_stale`.

    `remake_stale`: the caller's run has saved no checkpoint, so nothing was
    trained with this tokenizer yet. One made in this folder (by an earlier
    start that stopped before its first checkpoint) from other text, another
    vocab size or other tag symbols is then trained again, with a warning,
    rather than kept: the corrected run would otherwise use the mistaken
    start's vocabulary. One copied in from another folder (a teacher's, for
    distillation), or one without the sidecar's record, is kept.
    """
    _check_may_train(model_path)
    if not os.path.exists(model_path):
        return Tokenizer.train(
            texts_fn(),
            vocab_size,
            model_path,
            user_defined_symbols=user_defined_symbols,
        )
    meta = _read_meta(model_path)
    if (
        remake_stale
        and not reading_only()
        and meta.get('folder') == _folder(model_path)
    ):
        texts = list(texts_fn())
        changed = []
        if meta.get('texts_sha256') != texts_digest(texts):
            changed.append('other training text')
        if int(meta['requested_vocab_size']) != vocab_size:
            changed.append(
                f'data.vocab_size={meta["requested_vocab_size"]} (now {vocab_size})'
            )
        if meta.get('user_defined_symbols', []) != list(user_defined_symbols):
            changed.append(
                f'tag symbols {meta.get("user_defined_symbols", [])} '
                f'(now {list(user_defined_symbols)})'
            )
        if changed:
            _log.warning(
                'Tokenizer %s was made by an earlier start of this run that '
                'saved no checkpoint, from %s; training it again for this '
                'config.',
                model_path,
                ' and '.join(changed),
            )
            return Tokenizer.train(
                texts,
                vocab_size,
                model_path,
                user_defined_symbols=user_defined_symbols,
            )
    tok = Tokenizer.load(model_path)
    requested = int(meta.get('requested_vocab_size', tok.vocab_size))
    if vocab_size not in (requested, tok.vocab_size):
        raise DataError(
            f"the workdir's tokenizer {model_path} has vocab {tok.vocab_size} but the "
            f'config asks for {vocab_size}; use a new workdir or delete the tokenizer'
        )
    missing = [s for s in user_defined_symbols if tok.piece_to_id(s) == UNK_ID]
    if missing:
        raise DataError(
            f"the workdir's tokenizer {model_path} lacks the symbols {missing} "
            'that the config needs; use a new workdir or delete the tokenizer'
        )
    return tok


def shared_tokenizer(
    model_path,
    texts_fn: Callable[[], Iterable[str]],
    vocab_size: int,
    user_defined_symbols: Sequence[str] = (),
    *,
    remake_stale: bool = False,
) -> Tokenizer:
    """`load_or_train_tokenizer` on process 0; the other processes wait for it
    and load the same model (so every process tokenizes alike)."""
    _check_may_train(model_path)  # In every process: none waits for 0 then.
    if jax.process_count() == 1:
        return load_or_train_tokenizer(
            model_path,
            texts_fn,
            vocab_size,
            user_defined_symbols,
            remake_stale=remake_stale,
        )
    # Process 0's failure (a vocab_size too small for the text, say) is sent
    # to the others, which would otherwise wait for it at the barrier until
    # the coordination service gave up on them, minutes later.
    from jaxdistill import process_check  # pylint: disable=g-import-not-at-top

    error = None
    if jax.process_index() == 0:
        try:
            tok = load_or_train_tokenizer(
                model_path,
                texts_fn,
                vocab_size,
                user_defined_symbols,
                remake_stale=remake_stale,
            )
        except Exception as e:  # pylint: disable=broad-except
            error = e
    failure = process_check.share_error(error)
    if failure:
        if error is not None:
            raise error
        kind, message = failure
        known = {'ConfigError': ConfigError, 'DataError': DataError}
        if kind in known:
            raise known[kind](message)
        raise DataError(
            f'process 0 failed to build the tokenizer {model_path} ({kind}: '
            f'{message}); see its output.'
        )
    multihost_utils.sync_global_devices('jaxdistill_tokenizer')
    return tok if jax.process_index() == 0 else Tokenizer.load(model_path)
