"""`python -m jaxdistill.word2vec --corpus PATH --out vectors.txt`: skip-gram.

Trains word2vec's skip-gram with negative sampling (`models.skipgram`) on a
one-sentence-per-line corpus and saves the input vectors in word2vec text
format. Defaults are word2vec's and gensim's: d=100, window 5, 5 negatives,
min_count 5, sample 1e-3, learning rate 0.025 decaying linearly to 1e-4
over all epochs. `--similarity FILE` (repeatable) prints the Spearman
correlation on WordSim-353 / SimLex-999 style files after training (words
matched case-insensitively, as gensim's `evaluate_word_pairs`). `--out` ending
in `.gz` is written compressed. After each epoch the state is kept in
OUT.partial.npz: an interrupted run continues from its last finished epoch
when the same command is run again (the file is removed once OUT is saved).
"""

import dataclasses
import gzip
import hashlib
import json
import math
import os
import pathlib
import sys
import time
import zipfile

import numpy as np

from jaxdistill import cli
from jaxdistill import hostmem
from jaxdistill.errors import ConfigError, DataError, JaxdistillError
from jaxdistill.errors import NonFiniteLossError


@dataclasses.dataclass(frozen=True)
class Options:
    """Skip-gram hyper-parameters (word2vec's names and defaults)."""

    dim: int = 100
    window: int = 5
    negative: int = 5
    min_count: int = 5
    epochs: int = 10
    sample: float = 1e-3
    lr: float = 0.025
    min_lr: float = 1e-4
    seed: int = 0
    # Center tokens per SGD step (all their pairs are summed in one update).
    centers: int = 512
    # Consecutive tokens sharing one draw of negatives, and its size.
    group: int = 16
    shared_negatives: int = 16
    # Most pair updates a row takes in one step at full learning rate.
    max_row_updates: float = 64.0
    # SGD steps per jitted call (one `lax.scan`).
    steps_per_call: int = 32

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            low = 0 if field.name in ('sample', 'min_lr', 'seed') else 1
            if field.type is float:
                low = 0.0 if low == 0 else 1e-12
            # `not >=`: NaN fails it too; inf would train to inf or nothing.
            if not value >= low or (field.type is float and not math.isfinite(value)):
                raise ConfigError(
                    f'word2vec option {field.name}={value!r} must be a finite '
                    f'number >= {low}.'
                )


def _epoch_arrays(ids, sentence, vocab_arrays, options, epoch):
    """Numpy chunks of one epoch, padded to a multiple of steps_per_call."""
    from jaxdistill.data import words  # pylint: disable=g-import-not-at-top

    keep, table = vocab_arrays
    b = words.window_batches(
        ids,
        sentence,
        keep=keep,
        table=table,
        window=options.window,
        centers=options.centers,
        negatives=options.shared_negatives,
        group=options.group,
        rng=words.epoch_rng(options.seed, epoch),
    )
    arrays = {k: b[k] for k in ('tokens', 'sentence', 'window', 'negatives')}
    steps = arrays['tokens'].shape[0]
    padded = -(-steps // options.steps_per_call) * options.steps_per_call
    fill = {'tokens': words.PAD, 'sentence': -1, 'window': 1, 'negatives': 0}
    for k, v in arrays.items():
        pad = np.full((padded - steps, *v.shape[1:]), fill[k], v.dtype)
        arrays[k] = np.concatenate([v, pad])
    return arrays, steps


def _epoch_plan(ids, sentence, vocab_arrays, options, epoch, lr):
    """(numpy chunks of `epoch`, [S] learning rates by corpus position)."""
    arrays, steps = _epoch_arrays(ids, sentence, vocab_arrays, options, epoch)
    n = len(ids)
    position = epoch * n + np.arange(len(arrays['tokens'])) * (n / steps)
    # The padding steps (which train nothing) take the epoch's last rate, so
    # lrs[-1] is the rate the epoch ended at (the log line shows it).
    lrs = np.asarray(lr(np.minimum(position, (epoch + 1) * n)), np.float32)
    return arrays, lrs


def linear_lr(options: Options, words_per_epoch: int):
    """word2vec's learning rate by corpus position: lr → min_lr over all epochs.

    In numpy (not an Optax schedule): it runs on the host between device
    calls, where a jnp schedule would compile its ops at start-up.
    """
    total = options.epochs * words_per_epoch
    return lambda position: np.interp(
        position, [0, total], [options.lr, options.min_lr]
    )


def train(
    ids, sentence, vocab, options: Options, *, log=print, start=None, on_epoch=None
) -> dict:
    """Trains skip-gram on encoded tokens (`data.words.encode`).

    The next epoch's batches are built in numpy while the device runs the
    current one. Each epoch's sampling depends only on (seed, epoch) and the
    learning rate only on the corpus position, so a run continued from the
    state after an epoch (`start`) is the run that was not stopped.

    Args:
      start: (finished epochs, params as `on_epoch` got them) to continue from.
      on_epoch: called as `on_epoch(finished_epochs, params)` after every
        epoch but the last (params: numpy {'input', 'output'}).
    Returns {'vectors': [V, D] numpy input vectors, 'seconds': training time
    of this call (compilation included), 'words': in-vocabulary tokens × the
    epochs this call trained, 'pairs': pairs it trained, 'loss': mean loss per
    pair of the last epoch}.
    """
    import jax  # pylint: disable=g-import-not-at-top

    from jaxdistill.data import words  # pylint: disable=g-import-not-at-top
    from jaxdistill.models import skipgram  # pylint: disable=g-import-not-at-top

    if len(ids) == 0:
        raise DataError('The corpus has no in-vocabulary tokens.')
    if not np.any(np.diff(np.asarray(sentence)) == 0):
        # No two kept tokens share a sentence: no (centre, context) pair.
        raise DataError(
            'No sentence of the corpus has two in-vocabulary words, so there '
            'is nothing to train on: the corpus is one sentence a line, its '
            'words separated by spaces (not one word a line), and words seen '
            'fewer than --min-count times are left out.'
        )
    begin = time.perf_counter()
    vocab_arrays = (
        words.keep_probabilities(vocab.counts, options.sample),
        words.negative_table(vocab.counts),
    )
    n, s = len(ids), options.steps_per_call
    lr = linear_lr(options, n)
    params = skipgram.init_params(jax.random.key(options.seed), len(vocab), options.dim)
    first = 0
    if start is not None:
        first, saved = start
        if not 0 <= first < options.epochs:
            raise ValueError(f'start epoch {first} not in [0, {options.epochs}).')
        params = jax.tree.map(jax.numpy.asarray, dict(saved))
    step = skipgram.make_train_chunk(
        options.window, options.negative, options.max_row_updates
    )
    plan = _epoch_plan(ids, sentence, vocab_arrays, options, first, lr)
    pairs_total, last = 0, None
    for epoch in range(first, options.epochs):
        arrays, lrs = plan
        sums = []
        for i in range(0, len(lrs), s):
            chunk = {k: v[i : i + s] for k, v in arrays.items()}
            params, out = step(params, chunk, lrs[i : i + s])
            sums.append(out)
        if epoch + 1 < options.epochs:  # Overlaps with the dispatched steps.
            plan = _epoch_plan(ids, sentence, vocab_arrays, options, epoch + 1, lr)
        loss, pairs = np.sum(np.asarray(jax.device_get(sums), np.float64), axis=0)
        pairs_total, last = pairs_total + int(pairs), loss / max(pairs, 1)
        if not math.isfinite(last):
            raise NonFiniteLossError(
                f'word2vec: the loss of epoch {epoch + 1} is {last} (learning '
                f'rate {options.lr} too high?); no vectors are saved.'
            )
        done = (epoch + 1 - first) * n / (time.perf_counter() - begin)
        log(
            f'epoch {epoch + 1}/{options.epochs}: loss/pair {last:.4f}, '
            f'lr {lrs[-1]:.5f}, {done:,.0f} words/s'
        )
        if on_epoch is not None and epoch + 1 < options.epochs:
            on_epoch(epoch + 1, jax.device_get(params))
    vectors = np.asarray(jax.device_get(params['input']))
    if not np.isfinite(vectors).all():  # The last epoch's updates overflowed.
        raise NonFiniteLossError(
            f'word2vec: the vectors hold NaN or Inf after epoch {options.epochs} '
            f'(learning rate {options.lr} too high?); no vectors are saved.'
        )
    return {
        'vectors': vectors,
        'seconds': time.perf_counter() - begin,
        'words': (options.epochs - first) * n,
        'pairs': pairs_total,
        'loss': last,
    }


def save_word2vec(path, words, vectors) -> None:
    """Writes word2vec text format: 'V D' then 'word x1 ... xD' per line.

    A path ending in `.gz` is written gzip-compressed (as `load_word2vec` and
    gensim read it). Creates the file's missing parent directories.
    """
    vectors = np.asarray(vectors)
    if len(words) != len(vectors):
        raise ValueError(f'{len(words)} words but {len(vectors)} vectors.')
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    opener = gzip.open if str(path).endswith('.gz') else open
    with opener(path, 'wt', encoding='utf-8') as f:
        f.write(f'{vectors.shape[0]} {vectors.shape[1]}\n')
        for w, v in zip(words, vectors):
            f.write(w + ' ' + ' '.join(f'{x:.6g}' for x in v) + '\n')


def load_word2vec(path) -> tuple[list, np.ndarray]:
    """Reads word2vec text format -> (words, [V, D] float32 vectors)."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise DataError(f'Vectors file {path} is a directory.')
    if not path.is_file():
        raise DataError(f'Vectors file {path} does not exist.')
    opener = gzip.open if path.suffix == '.gz' else open
    try:
        with opener(path, 'rt', encoding='utf-8') as f:
            header = f.readline().split()
            if len(header) != 2 or not all(h.isdigit() for h in header):
                raise DataError(f'{path}:1: expected "VOCAB DIM", got {header!r}.')
            count, dim = map(int, header)
            words, vectors = [], np.zeros((count, dim), np.float32)
            for i, line in enumerate(f):
                # Fields are separated by ASCII spaces only (as word2vec.c and
                # gensim write them; a word may hold other whitespace, e.g.
                # U+00A0), and word2vec.c ends every line with a space.
                fields = line.rstrip('\r\n ').rsplit(' ', dim)
                if i >= count or len(fields) != dim + 1:
                    raise DataError(
                        f'{path}:{i + 2}: expected a word and {dim} numbers '
                        f'(header says {count} words).'
                    )
                words.append(fields[0])
                try:
                    vectors[i] = np.asarray(fields[1:], np.float32)
                except ValueError:
                    raise DataError(
                        f'{path}:{i + 2}: {fields[0]!r} has a value that is not '
                        'a number.'
                    ) from None
                if not np.isfinite(vectors[i]).all():
                    raise DataError(
                        f'{path}:{i + 2}: {fields[0]!r} has a NaN or infinite value.'
                    )
    except UnicodeDecodeError:
        # (The reader decodes in blocks: its position is not the file's.)
        raise DataError(
            f'{path}: not UTF-8 text; only the word2vec text format is read '
            '(not the binary one).'
        ) from None
    except (OSError, EOFError) as e:
        raise DataError(f'Cannot read vectors file {path}: {e}') from None
    if len(words) != count:
        raise DataError(f'{path}: header says {count} words, found {len(words)}.')
    return words, vectors


def check_out(path) -> pathlib.Path:
    """Checks, before any training, that the vectors can be written to `path`.

    Missing parent directories are fine: `save_word2vec` creates them, as
    `train` does for its workdir and `extract` for its --out. Raises
    JaxdistillError naming the path if it is a directory, or if its nearest
    existing ancestor is a file or not writable. Creates nothing, so a
    later error leaves no empty directories behind.
    """
    raw = str(path)
    cli.check_local(raw, '--out')
    path = pathlib.Path(raw)
    if path.is_dir() or raw.endswith(('/', os.sep)):  # Path() drops the slash.
        raise JaxdistillError(
            f'--out {raw} is a directory; name a file, e.g. {path / "vectors.txt"}.'
        )
    if path.exists():
        existing = path
    else:
        existing = path.parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise JaxdistillError(
                f'--out {path}: {existing} is a file, not a directory.'
            )
    if not os.access(existing, os.W_OK):
        raise JaxdistillError(f'--out {path}: {existing} is not writable.')
    return path


def _parse(argv):
    parser = cli.parser_for('word2vec', __doc__)
    parser.add_argument('--corpus', required=True, help='text, one sentence a line')
    parser.add_argument('--out', required=True, help='vectors, word2vec text')
    for field in dataclasses.fields(Options):
        flag = '--' + field.name.replace('_', '-')
        parser.add_argument(flag, type=type(field.default), default=field.default)
    parser.add_argument(
        '--similarity', action='append', default=[], help='TSV of scored pairs'
    )
    return cli.expand_user(parser.parse_args(argv))


def main(argv=None) -> int:
    from jaxdistill import cli  # pylint: disable=g-import-not-at-top

    args = _parse(sys.argv[1:] if argv is None else argv)

    def run():
        names = [f.name for f in dataclasses.fields(Options)]
        options = Options(**{name: getattr(args, name) for name in names})
        from jaxdistill.data import words  # pylint: disable=g-import-not-at-top
        from jaxdistill.evaluation import word_similarity  # pylint: disable=g-import-not-at-top

        # Every input and the output place are checked before training, so
        # that a mistake in them never throws the trained vectors away.
        check_out(args.out)
        similarity = [(p, word_similarity.read_pairs(p)) for p in args.similarity]
        sentences = words.read_sentences(args.corpus)
        vocab = words.build_vocab(sentences, options.min_count)
        ids, sentence = words.encode(sentences, vocab)
        print(
            f'{len(sentences):,} sentences, {len(ids):,} tokens, {len(vocab):,} words'
        )
        partial = Partial(args.out, fingerprint(options, args.corpus, ids, vocab))
        start = partial.load()
        if start is not None:
            print(
                f'continuing after epoch {start[0]}/{options.epochs} ({partial.path})'
            )
        try:
            result = train(
                ids, sentence, vocab, options, start=start, on_epoch=partial.save
            )
        except KeyboardInterrupt:
            if partial.epoch:
                print(
                    f'Epochs 1-{partial.epoch} of {options.epochs} are kept in '
                    f'{partial.path}; the same command continues from there.',
                    file=sys.stderr,
                )
            raise
        try:
            save_word2vec(args.out, vocab.words, result['vectors'])
        except OSError as e:
            raise JaxdistillError(f'Cannot write --out {args.out}: {e}') from None
        partial.remove()
        print(f'saved {args.out} ({result["seconds"]:.1f} s of training)')
        for path, pairs in similarity:
            r = word_similarity.evaluate(result['vectors'], vocab.index, pairs)
            print(
                f'{pathlib.Path(path).name}: Spearman {r["spearman"]:.4f} over '
                f'{r["pairs"]} of {len(pairs)} pairs ({r["oov_fraction"]:.1%} '
                'out of vocabulary)'
            )

    return cli.main_guard(run)


def fingerprint(options: Options, corpus, ids, vocab) -> dict:
    """What a saved epoch must match to be continued: every option, the
    corpus file, and its encoding (a digest of the token ids and words)."""
    digest = hashlib.sha256(np.ascontiguousarray(ids, np.int32).tobytes())
    digest.update('\n'.join(vocab.words).encode('utf-8'))
    return {
        'options': dataclasses.asdict(options),
        'corpus': str(pathlib.Path(corpus).resolve()),
        'tokens': int(len(ids)),
        'words': len(vocab),
        'digest': digest.hexdigest(),
    }


class Partial:
    """The CLI's state after each finished epoch, OUT.partial.npz, so that an
    interrupted run continues where it stopped (and is removed once the
    vectors are saved). Written to a temporary name and renamed, so the file
    on disk is always one whole epoch's state."""

    def __init__(self, out, key: dict):
        self.path = pathlib.Path(f'{out}.partial.npz')
        self.key = key
        self.epoch = 0

    def load(self):
        """(finished epochs, params) of a matching saved run, or None."""
        if not self.path.exists():
            return None
        try:
            with np.load(self.path) as f:
                key = json.loads(str(f['key']))
                epoch = int(f['epoch'])
                params = {'input': f['input'], 'output': f['output']}
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise JaxdistillError(
                f'{self.path}: cannot read the saved epochs of an interrupted run '
                f'({e}); delete it to start over.'
            ) from None
        if key != self.key:
            differ = sorted(
                k for k in set(key) | set(self.key) if key.get(k) != self.key.get(k)
            )
            if 'options' in differ:
                old, new = key.get('options', {}), self.key['options']
                differ.remove('options')
                differ += [
                    f'--{k.replace("_", "-")} {old.get(k)} (now {new.get(k)})'
                    for k in new
                    if old.get(k) != new.get(k)
                ]
            raise JaxdistillError(
                f'{self.path} holds {epoch} epoch(s) of a run with other settings '
                f'(differs in: {", ".join(differ)}). Run that command again to '
                'continue it, or delete the file to start over.'
            )
        self.epoch = epoch
        return epoch, params

    def save(self, epoch: int, params) -> None:
        # --out's folder may not exist yet (save_word2vec creates it too).
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + '.tmp.npz')
        np.savez(
            tmp,
            key=np.asarray(json.dumps(self.key, sort_keys=True)),
            epoch=np.asarray(epoch),
            input=np.asarray(params['input']),
            output=np.asarray(params['output']),
        )
        os.replace(tmp, self.path)
        self.epoch = epoch

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


if __name__ == '__main__':
    hostmem.reexec_with_huge_pages()
    cli.exit_process(main())
