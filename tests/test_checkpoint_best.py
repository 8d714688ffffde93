"""checkpoint.best_metric: the best evaluated checkpoint outlives the rotation."""

import json
import types

import pytest

from jaxdistill import checkpoint
from jaxdistill import train
from jaxdistill import trainer
from jaxdistill.errors import ConfigError
from tests import helpers

# 'max' of the evaluation loss, which falls at every evaluation of these short
# runs: the best checkpoint is the first evaluated one, and stays the oldest.
OVERRIDES = [
    '--config',
    helpers.CONFIG,
    '--config.checkpoint.best_metric=eval/loss',
    '--config.checkpoint.best_mode=max',
    '--config.checkpoint.keep=1',
    '--config.checkpoint.every_steps=10',
    '--config.eval.every_steps=5',
    '--config.eval.bleu=False',  # The loss ranks; no decoding needed.
]


def _steps(work):
    return sorted(int(p.name) for p in (work / 'checkpoints').iterdir())


def test_best_checkpoint_is_kept_through_rotation_and_resume(tmp_path):
    work = tmp_path / 'run'
    args = [*OVERRIDES, '--workdir', str(work)]
    assert train.main([*args, '--config.num_train_steps=20']) == 0
    records = [json.loads(l) for l in (work / 'metrics.jsonl').open()]
    losses = {r['step']: r['eval/loss'] for r in records if 'eval/loss' in r}
    assert sorted(losses) == [5, 10, 15, 20]
    best = max(losses, key=losses.get)
    assert best == 5  # The premise above.
    assert _steps(work) == [5, 20]  # keep=1 (the latest) plus the best.
    summary = json.loads((work / 'summary.json').read_text())
    assert summary['best_step'] == 5
    assert summary['best/eval/loss'] == pytest.approx(losses[5])

    # Resumed, the best is read back from the checkpoint's metrics.
    assert train.main([*args, '--config.num_train_steps=25']) == 0
    assert _steps(work) == [5, 25]
    assert json.loads((work / 'summary.json').read_text())['best_step'] == 5
    # The kept checkpoint is a whole one (evaluate/translate --step 5 load it).
    state = checkpoint.read_state(str(work / 'checkpoints' / '5'))
    assert int(state['step']) == 5 and state['params']


def test_best_metric_settings_are_named():
    fake = types.SimpleNamespace(ckpt=types.SimpleNamespace(best_metric='eval/blue'))
    with pytest.raises(ConfigError, match=r"'eval/blue' is not among .*eval/bleu"):
        trainer.Trainer._best_value(fake, {'eval/bleu': 1.0, 'eval/loss': 2.0})
    assert trainer.Trainer._best_value(fake, {'eval/blue': 3}) == {'eval/blue': 3.0}
    from jaxdistill import configuration  # pylint: disable=g-import-not-at-top

    config = configuration.load_config(helpers.CONFIG)
    configuration.apply_overrides(config, ['checkpoint.best_mode=highest'])
    with pytest.raises(ConfigError, match="best_mode='highest' must be 'max' or"):
        trainer._check_loop_settings(config)
    configuration.apply_overrides(
        config,
        [
            'checkpoint.best_mode=min',
            'checkpoint.best_metric=eval/loss',
            'eval.every_steps=0',
            'eval.at_end=False',
        ],
    )
    with pytest.raises(ConfigError, match='this run never evaluates'):
        trainer._check_loop_settings(config)
