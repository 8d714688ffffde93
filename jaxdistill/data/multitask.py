"""Batches for multi-task training: a primary stream plus auxiliary parts.

`MultiTaskBatches` joins the primary task's batches (an `ImageBatcher`-like
object with `batch_at(epoch, index)`) with auxiliary samplers, each a pure
function of the global step. A step's batch carries an auxiliary task's
arrays only while that task is active (`active(step)` -> names, the same
rule the method uses to pick its compiled step), so once a task is switched
off its data is neither made nor sent to the device.

`SkipgramPairs` samples skip-gram training pairs the way word2vec sees them:
frequent words subsampled (a fresh draw each pass over the corpus), a
dynamic window uniform in 1..window (so a context at distance d is drawn
with probability proportional to window - d + 1, as word2vec's reduced
window gives it), negatives from unigram^0.75. Centres
are drawn uniformly from the subsampled stream, so one step's pairs are
spread over the corpus instead of being one contiguous chunk.
"""

from collections.abc import Callable

import numpy as np

from jaxdistill.data import batching
from jaxdistill.data import words
from jaxdistill.errors import DataError


class SkipgramPairs:
    """Pairs for `models.multitask.skipgram_batch_loss`, a function of the step.

    Args:
      ids: [N] int token ids of the corpus (already offset into the shared
        table); sentence: [N] int sentence id of each token.
      counts: [V] counts of the ids' words, ids[i] - offset indexing them.
      offset: id of counts[0] in the shared table (rows below are PAD/UNK).
      pairs: pairs per step P; negatives: K per pair; window: max window.
      sample: word2vec's subsampling threshold (0 = keep every word).
      seed: everything drawn is a function of (seed, step).
    """

    def __init__(
        self,
        ids,
        sentence,
        counts,
        *,
        offset: int,
        pairs: int,
        negatives: int,
        window: int,
        sample: float,
        seed: int,
        table_size: int = 1_000_000,
    ):
        if pairs < 1 or negatives < 1 or window < 1:
            raise DataError(
                f'skip-gram pairs={pairs}, negatives={negatives}, window={window} '
                'must all be >= 1.'
            )
        self.ids, self.sentence = np.asarray(ids, np.int32), np.asarray(sentence)
        self.offset, self.pairs, self.negatives = offset, pairs, negatives
        self.window, self.seed = window, int(seed)
        # word2vec's reduced window b ~ U{1..window} takes every context
        # within b: distance d is seen with probability ∝ window - d + 1.
        reach = np.arange(window, 0, -1, dtype=np.float64)
        self._distance_p = reach / reach.sum()
        self.keep = words.keep_probabilities(counts, sample)
        self.table = words.negative_table(counts, table_size) + offset
        kept = float(np.sum(self.keep[self.ids - offset]))
        # Steps per pass: each kept token is a centre about once a pass.
        self.steps_per_pass = max(1, int(np.ceil(kept / pairs)))
        self._stream = (None, None, None)

    def _pass_stream(self, p: int):
        if self._stream[0] != p:
            rng = words.epoch_rng(self.seed, p)
            kept = words.subsample(self.ids - self.offset, self.keep, rng)
            self._stream = (p, self.ids[kept], self.sentence[kept])
        return self._stream[1], self._stream[2]

    def at(self, step: int) -> dict:
        """{'sg_input' [P], 'sg_target' [P], 'sg_negatives' [P, K] int32,
        'sg_where' [P] bool} of global step `step`."""
        stream, sent = self._pass_stream(step // self.steps_per_pass)
        rng = np.random.default_rng([self.seed, 1, step])
        n, p = len(stream), self.pairs
        centre = rng.integers(0, n, p)
        distance = rng.choice(self.window, p, p=self._distance_p) + 1
        offset = distance * rng.choice(np.array([-1, 1]), p)
        context = centre + offset
        inside = (context >= 0) & (context < n)
        context = np.clip(context, 0, n - 1)
        where = inside & (sent[context] == sent[centre])
        draws = rng.integers(0, len(self.table), (p, self.negatives))
        return {
            'sg_input': stream[context].astype(np.int32),
            'sg_target': stream[centre].astype(np.int32),
            'sg_negatives': self.table[draws].astype(np.int32),
            'sg_where': where,
        }


class MultiTaskBatches:
    """Primary batches, with each active auxiliary task's arrays merged in.

    Position is the global step (batches consumed), so resuming needs only
    that; the primary batch of step s is `primary.batch_at(s // E, s % E)`.

    Args:
      primary: object with `batch_at(epoch, index, part=None)` and
        `batches_per_epoch()`.
      aux: name -> sampler with `at(step) -> dict` (keys unique to it).
      active: step -> names of the auxiliary tasks that step computes.
    """

    def __init__(self, primary, aux: dict, active: Callable[[int], tuple]):
        self.primary, self.aux, self.active = primary, aux, active
        self._step, self._part = 0, None

    def set_part(self, index: int, count: int) -> None:
        """`next` gives part `index` of `count` of every array's rows (the
        primary batch's and each auxiliary task's, split separately)."""
        self._part = batching.check_part(index, count)

    def batches_per_epoch(self) -> int:
        return self.primary.batches_per_epoch()

    def batch_at(self, epoch: int, index: int, part=None) -> dict:
        """The batch of global step epoch · E + index (or its part)."""
        return self.at_step(epoch * self.batches_per_epoch() + index, part)

    def at_step(self, step: int, part=None) -> dict:
        e = self.batches_per_epoch()
        batch = dict(self.primary.batch_at(step // e, step % e, part=part))
        for name in self.active(step):
            # The samplers draw the whole step's rows (they are cheap); a
            # part keeps its share.
            for k, v in self.aux[name].at(step).items():
                batch[k] = v[batching.part_rows(len(v), part)]
        return batch

    @property
    def position(self) -> dict:
        """{'step': int}: the next batch is that of this global step."""
        return {'step': self._step}

    def set_position(self, pos: dict) -> None:
        ok = isinstance(pos, dict) and set(pos) == {'step'}
        ok = ok and isinstance(pos['step'], (int, np.integer)) and pos['step'] >= 0
        if not ok:
            raise DataError(
                f'data position {pos!r} does not fit this data: '
                "expected {'step': >= 0}."
            )
        self._step = int(pos['step'])

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        batch = self.at_step(self._step, self._part)
        self._step += 1
        return batch
