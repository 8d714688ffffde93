"""Length-bucketed, deterministic, resumable batching of token-id examples."""

from typing import Optional, Sequence

import numpy as np

from jaxdistill.data.tokenizer import PAD_ID
from jaxdistill.errors import DataError


def subset_rows(total: int, n: int) -> Optional[np.ndarray]:
    """Rows of a fixed random subset of n of `total` examples, in file order,
    or None for all (n = 0 or n >= total).

    Files may be sorted by class (the CIFAR-10 tar is), so a prefix would
    hold few classes; the subset depends on nothing but `total` and n.
    """
    if n < 0:
        raise ValueError(f'subset_rows: n={n} must be >= 0 (0: all rows).')
    if not n or n >= total:
        return None
    return np.sort(np.random.default_rng(0).permutation(total)[:n])


def _bucket_lengths(bucket_lengths: Sequence[int]) -> np.ndarray:
    lengths = np.asarray(sorted(set(int(l) for l in bucket_lengths)), np.int64)
    if not lengths.size or lengths[0] < 1:
        raise DataError(
            f'bucket lengths must be positive integers, got {list(bucket_lengths)}'
        )
    return lengths


def _assign_buckets(src, tgt, buckets: np.ndarray) -> np.ndarray:
    """Index of the smallest bucket that holds each example: [num_examples]."""
    if tgt is not None and len(src) != len(tgt):
        raise DataError(f'{len(src)} sources but {len(tgt)} targets')
    lengths = np.asarray([len(s) for s in src], np.int64)
    if tgt is not None:
        lengths = np.maximum(lengths, [len(t) for t in tgt])
    bucket = np.searchsorted(buckets, lengths, side='left')
    if lengths.size and bucket.max() >= len(buckets):
        i = int(np.argmax(lengths))
        raise DataError(
            f'example {i} has {lengths[i]} tokens, more than the largest bucket '
            f'length {buckets[-1]}; raise the bucket lengths or lower max_len'
        )
    return bucket


def _fill(rows: np.ndarray, seqs, length: int) -> np.ndarray:
    """[len(rows), length] int32, PAD where rows == -1 or past the sequence."""
    out = np.full((len(rows), length), PAD_ID, np.int32)
    for r, i in enumerate(rows):
        if i >= 0:
            out[r, : len(seqs[i])] = seqs[i]
    return out


def _chunk(members: np.ndarray, rows: int) -> list[np.ndarray]:
    """`members` cut into [rows] arrays, the last padded with -1."""
    n = -(-len(members) // rows) * rows
    padded = np.full(n, -1, np.int64)
    padded[: len(members)] = members
    return list(padded.reshape(-1, rows))


def part_rows(rows: int, part: Optional[tuple[int, int]]) -> slice:
    """The rows of a `rows`-row batch that part (i, n) holds: the i-th of n
    equal, consecutive blocks (None: all of them).

    A process of n feeds block i of every global batch (its devices hold
    those rows), so a batcher told its part builds only those rows.
    """
    if part is None:
        return slice(None)
    i, n = part
    if rows % n:
        raise DataError(
            f'a batch of {rows} rows does not split into {n} equal parts '
            '(one per process); its rows must be a multiple of the process count.'
        )
    per = rows // n
    return slice(i * per, (i + 1) * per)


class EpochCursor:
    """Where a batcher of whole epochs stands, for `next` and for resuming.

    A subclass sets `_num_batches` (batches per epoch) and defines
    `batch_at(epoch, index, part=None)`; this keeps the position (epoch,
    index), steps it, and checks a position restored from a checkpoint.
    `set_part(i, n)` makes `next` build only part i of n of each batch (the
    rows `part_rows` names): a process's share of the global batch.
    """

    _epoch, _index = 0, 0
    _part: Optional[tuple[int, int]] = None

    def set_part(self, index: int, count: int) -> None:
        """`next` gives rows part_rows(B, (index, count)) of each batch."""
        self._part = check_part(index, count)

    @property
    def position(self) -> dict:
        """Where `next` continues: {'epoch': int, 'index': int} (JSON-able)."""
        return {'epoch': self._epoch, 'index': self._index}

    def set_position(self, pos: dict) -> None:
        """Continues from a `position` saved earlier (e.g. in a checkpoint)."""
        ok = (
            isinstance(pos, dict)
            and set(pos) == {'epoch', 'index'}
            and all(
                isinstance(pos[k], (int, np.integer)) and not isinstance(pos[k], bool)
                for k in pos
            )
        )
        if not ok or pos['epoch'] < 0 or not 0 <= pos['index'] < self._num_batches:
            raise DataError(
                f'data position {pos!r} does not fit this data: expected '
                f"{{'epoch': >= 0, 'index': 0..{self._num_batches - 1}}}"
            )
        self._epoch, self._index = int(pos['epoch']), int(pos['index'])

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        batch = self.batch_at(self._epoch, self._index, part=self._part)
        self._index += 1
        if self._index == self._num_batches:
            self._epoch, self._index = self._epoch + 1, 0
        return batch


def check_part(index: int, count: int) -> Optional[tuple[int, int]]:
    """(index, count) checked; None for the whole batch (count 1)."""
    if not (isinstance(count, (int, np.integer)) and count >= 1 and 0 <= index < count):
        raise DataError(f'part {index} of {count} does not exist.')
    return None if count == 1 else (int(index), int(count))


class BucketedBatcher(EpochCursor):
    """Whole epochs of fixed-shape batches, planned from (seed, epoch) alone.

    Each example goes to the smallest bucket length L >= max(len(src), len(tgt)).
    Batches of bucket L are {'inputs', 'targets'}: int32 [B_L, L], PAD-padded,
    with B_L = max(batch_multiple, batch_tokens // L rounded down to a multiple
    of batch_multiple). The last batch of a bucket is filled with all-PAD rows.
    """

    def __init__(
        self,
        src: Sequence[np.ndarray],
        tgt: Sequence[np.ndarray],
        *,
        batch_tokens: int,
        bucket_lengths: Sequence[int],
        seed: int,
        batch_multiple: int = 1,
    ):
        if batch_multiple < 1 or batch_tokens < 1:
            raise DataError(
                f'batch_tokens ({batch_tokens}) and batch_multiple '
                f'({batch_multiple}) must be positive'
            )
        if not len(src):
            raise DataError(
                'no examples to batch (all were filtered or the data is empty)'
            )
        self._src, self._tgt, self._seed = src, tgt, int(seed)
        self._batch_tokens = int(batch_tokens)
        self._lengths = _bucket_lengths(bucket_lengths)
        bucket = _assign_buckets(src, tgt, self._lengths)
        self._members = [np.flatnonzero(bucket == b) for b in range(len(self._lengths))]
        self._rows = [
            max(
                batch_multiple,
                (batch_tokens // int(l)) // batch_multiple * batch_multiple,
            )
            for l in self._lengths
        ]
        self._num_batches = sum(
            -(-len(m) // r) for m, r in zip(self._members, self._rows)
        )
        self._cache = (None, None)

    def _plan(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """[(bucket, example indices [B] with -1 for padding rows)] of `epoch`."""
        if self._cache[0] != epoch:
            rng = np.random.default_rng([self._seed, epoch])
            plan = []
            for b, members in enumerate(self._members):
                plan += [
                    (b, rows)
                    for rows in _chunk(rng.permutation(members), self._rows[b])
                ]
            order = rng.permutation(len(plan))
            self._cache = (epoch, [plan[i] for i in order])
        return self._cache[1]

    def batches_per_epoch(self) -> int:
        return self._num_batches

    def batch_at(self, epoch: int, index: int, part=None) -> dict:
        """Batch `index` of `epoch`: {'inputs', 'targets'} int32 [B, L], or
        only the rows `part_rows(B, part)` of it."""
        if not 0 <= index < self._num_batches or epoch < 0:
            raise DataError(
                f'batch ({epoch}, {index}) does not exist: epochs have '
                f'{self._num_batches} batches'
            )
        bucket, rows = self._plan(epoch)[index]
        rows = rows[part_rows(len(rows), part)]
        length = int(self._lengths[bucket])
        return {
            'inputs': _fill(rows, self._src, length),
            'targets': _fill(rows, self._tgt, length),
        }

    def batch_shapes(self) -> dict[int, tuple[int, int]]:
        """{bucket length L: (B_L, L)} for buckets that hold examples."""
        return {
            int(l): (r, int(l))
            for l, r, m in zip(self._lengths, self._rows, self._members)
            if len(m)
        }

    def raised_buckets(self) -> dict[int, int]:
        """{bucket length L: B_L} for the buckets (holding examples) whose
        batches exceed batch_tokens: batch_tokens // L was below
        batch_multiple, so they hold batch_multiple rows."""
        return {
            l: rows
            for l, (rows, _) in self.batch_shapes().items()
            if rows * l > self._batch_tokens
        }

    def padding_fraction(self, epoch: int = 0) -> float:
        """PAD tokens / all tokens over an epoch's batches (inputs and targets).

        The same for every epoch (batch counts and shapes per bucket are fixed);
        `epoch` is accepted for clarity at call sites.
        """
        del epoch
        total = sum(
            2 * r * -(-len(m) // r) * int(l)
            for l, r, m in zip(self._lengths, self._rows, self._members)
        )
        real = sum(len(s) for s in self._src) + sum(len(t) for t in self._tgt)
        return 1.0 - real / total

    def stats(self) -> dict:
        return {
            'num_examples': len(self._src),
            'batches_per_epoch': self._num_batches,
            'batch_shapes': {str(l): list(s) for l, s in self.batch_shapes().items()},
            'examples_per_bucket': {
                str(int(l)): len(m)
                for l, m in zip(self._lengths, self._members)
                if len(m)
            },
            'padding_fraction': self.padding_fraction(),
        }


def eval_batches(
    src: Sequence[np.ndarray],
    tgt: Optional[Sequence[np.ndarray]],
    *,
    batch_size: int,
    bucket_lengths: Sequence[int],
    batch_multiple: int = 1,
) -> list[tuple[dict, np.ndarray]]:
    """Fixed-order batches for evaluation, with each row's example index.

    Examples are sorted by length into buckets and cut into batches of
    batch_size rows (rounded up to a multiple of batch_multiple); the last batch
    of a bucket gets all-PAD rows. `tgt` may be None (no 'targets' key).

    Returns:
      [(batch, indices)]: batch {'inputs', 'targets'} int32 [B, L]; indices
      int64 [B], the original example index of each row, -1 for padding rows.
    """
    if batch_size < 1 or batch_multiple < 1:
        raise DataError(
            f'batch_size ({batch_size}) and batch_multiple ({batch_multiple}) '
            'must be positive'
        )
    rows = -(-batch_size // batch_multiple) * batch_multiple
    lengths = _bucket_lengths(bucket_lengths)
    bucket = _assign_buckets(src, tgt, lengths)
    own = np.asarray([len(s) for s in src], np.int64)
    result = []
    for b, length in enumerate(lengths):
        members = np.flatnonzero(bucket == b)
        members = members[np.argsort(own[members], kind='stable')]
        for idx in _chunk(members, rows) if len(members) else []:
            batch = {'inputs': _fill(idx, src, int(length))}
            if tgt is not None:
                batch['targets'] = _fill(idx, tgt, int(length))
            result.append((batch, idx))
    return result
