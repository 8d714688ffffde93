"""`train/input_fraction`: the share of the loop's time (compilation left
out) that the host spends building batches and sending them to the devices."""

import json
import time

from jaxdistill import configuration
from jaxdistill import trainer as trainer_lib
from tests import helpers


class _Slow:
    """The task's batcher, with `seconds` of extra host work per batch."""

    def __init__(self, inner, seconds):
        self._inner, self._seconds = inner, seconds

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __iter__(self):
        return self

    def __next__(self):
        time.sleep(self._seconds)
        return next(self._inner)


def _fractions(workdir) -> list[float]:
    records = [json.loads(l) for l in (workdir / 'metrics.jsonl').open()]
    # The first window holds the compilation's tracing too: left out.
    return [r['train/input_fraction'] for r in records if 'train/loss' in r][1:]


def test_slow_input_shows_in_the_input_fraction(tmp_path, capsys):
    config = configuration.load_config(helpers.CONFIG)  # 20 steps, log every 5.
    config.eval.at_end = False
    config.data.bucket_lengths = (48,)  # One compiled train step.
    trainer_lib.Trainer(config, str(tmp_path / 'plain')).run()
    plain_out = capsys.readouterr().out
    slow = trainer_lib.Trainer(config, str(tmp_path / 'slow'))
    slow.task.train_batches = _Slow(slow.task.train_batches, 0.25)
    slow.run()
    plain, slowed = _fractions(tmp_path / 'plain'), _fractions(tmp_path / 'slow')
    assert len(plain) == len(slowed) == 3
    # 0.25 s of input a step against a step of a few tens of milliseconds
    # (a hundred or so on a loaded machine, whose own input then takes a
    # share too: the plain run's fraction is compared, not fixed).
    assert min(slowed) > 0.6, slowed
    assert min(slowed) > max(plain) + 0.25, (plain, slowed)
    # The progress line shows the share from 20% on, and only then.
    assert ('| input ' in plain_out) == (max(plain) >= 0.2), plain_out[-2000:]
    out = capsys.readouterr().out
    assert 'step 10/20' in out and '| input ' in out, out[-2000:]
