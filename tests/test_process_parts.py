"""Each process builds only its rows of a batch: a batcher's part i of n is
rows part_rows(B, (i, n)) of the whole batch, exactly, for every batcher the
tasks use (the two-process training tests check the rest end to end)."""

import numpy as np
import pytest

from jaxdistill import data
from jaxdistill import teacher_cache
from jaxdistill.data import batching
from jaxdistill.data import images
from jaxdistill.data import multitask as multitask_data
from jaxdistill.errors import DataError


def _assert_parts_make_the_whole(make, steps: int, n: int):
    """`next` on n batchers set to parts 0..n-1, joined row-wise, equals
    `next` on one unsplit batcher, for `steps` steps (so across epochs)."""
    whole = make()
    parts = [make() for _ in range(n)]
    for i, b in enumerate(parts):
        b.set_part(i, n)
    for _ in range(steps):
        want = next(whole)
        got = [next(b) for b in parts]
        assert all(g.keys() == want.keys() for g in got)
        for k, v in want.items():
            assert all(len(g[k]) == len(v) // n for g in got), k
            np.testing.assert_array_equal(np.concatenate([g[k] for g in got]), v, k)
    assert all(b.position == whole.position for b in parts)


def test_part_rows_and_bad_parts():
    assert batching.part_rows(12, None) == slice(None)
    assert batching.part_rows(12, (2, 3)) == slice(8, 12)
    with pytest.raises(DataError, match='10 rows does not split into 4'):
        batching.part_rows(10, (1, 4))
    with pytest.raises(DataError, match='part 2 of 2 does not exist'):
        images.ImageBatcher(
            np.zeros((8, 2, 2, 1)), np.zeros(8), batch_size=4, seed=0
        ).set_part(2, 2)


@pytest.mark.parametrize('augment', ['crop_flip', 'none'])
def test_image_batcher_parts(augment):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (60, 6, 6, 3)).astype(np.uint8)
    y = np.arange(60, dtype=np.int32)
    make = lambda: images.ImageBatcher(x, y, batch_size=16, seed=4, augment=augment)
    _assert_parts_make_the_whole(make, steps=5, n=4)  # 3 batches an epoch.


def test_bucketed_batcher_parts():
    rng = np.random.default_rng(1)
    src = [rng.integers(3, 50, rng.integers(1, 20)) for _ in range(200)]
    tgt = [rng.integers(3, 50, rng.integers(1, 20)) for _ in range(200)]
    make = lambda: data.BucketedBatcher(
        src, tgt, batch_tokens=128, bucket_lengths=(8, 16, 24), seed=2, batch_multiple=2
    )
    n = make().batches_per_epoch()
    _assert_parts_make_the_whole(make, steps=n + 3, n=2)


def test_gather_and_multitask_batches_parts():
    rng = np.random.default_rng(2)
    tokens, labels = rng.integers(0, 9, (40, 5)), rng.integers(0, 2, 40)
    logits = rng.normal(size=(40, 2, 2)).astype(np.float32)

    def gathered():
        ids = images.ImageBatcher(
            np.arange(40), labels, batch_size=8, seed=1, key='index'
        )
        return teacher_cache.GatherBatcher(ids, {'tokens': tokens, 'logits': logits})

    _assert_parts_make_the_whole(gathered, steps=7, n=2)

    corpus = np.arange(2, 202)
    pairs = multitask_data.SkipgramPairs(
        corpus,
        corpus // 10,
        np.ones(200, np.int64),
        offset=2,
        pairs=32,
        negatives=3,
        window=2,
        sample=0.0,
        seed=5,
        table_size=500,
    )

    def multitask():
        primary = images.ImageBatcher(
            tokens, labels, batch_size=8, seed=1, key='tokens'
        )
        # The auxiliary task is active on even steps only.
        return multitask_data.MultiTaskBatches(
            primary, {'skipgram': pairs}, lambda s: ('skipgram',) * (s % 2 == 0)
        )

    _assert_parts_make_the_whole(multitask, steps=7, n=4)
