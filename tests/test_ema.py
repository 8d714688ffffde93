"""optimizer.ema_decay: the moving average is what a run's models are."""

import json

import jax
import numpy as np
import pytest

from jaxdistill import averaging
from jaxdistill import checkpoint
from jaxdistill import configuration
from jaxdistill import optim
from jaxdistill import teacher_cache
from jaxdistill import train
from jaxdistill import trainer as trainer_lib
from jaxdistill import translate
from jaxdistill.errors import ConfigError
from tests import helpers

ARGS = [
    '--config',
    helpers.CONFIG,
    '--config.optimizer.ema_decay=0.9',
    '--config.checkpoint.every_steps=6',
    '--config.data.bucket_lengths=(48,)',  # One compiled train step.
    '--config.eval.bleu=False',
]


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def test_evaluation_translation_and_resume_use_the_average(tmp_path):
    whole, split = tmp_path / 'whole', tmp_path / 'split'
    assert (
        train.main([*ARGS, '--workdir', str(whole), '--config.num_train_steps=12']) == 0
    )
    # Stopped at step 6 and resumed: the average goes on exactly.
    assert (
        train.main([*ARGS, '--workdir', str(split), '--config.num_train_steps=6']) == 0
    )
    assert (
        train.main([*ARGS, '--workdir', str(split), '--config.num_train_steps=12']) == 0
    )
    state = checkpoint.read_state(str(whole / 'checkpoints' / '12'))
    ema = optim.ema_params(state['opt_state'])
    for a, b in zip(
        _leaves(ema),
        _leaves(
            optim.ema_params(
                checkpoint.read_state(str(split / 'checkpoints' / '12'))['opt_state']
            )
        ),
        strict=True,
    ):
        assert a.tobytes() == b.tobytes()
    # An average, not the parameters.
    assert any(
        not np.allclose(a, b) for a, b in zip(_leaves(ema), _leaves(state['params']))
    )

    # The run's evaluation is the average's.
    config = configuration.load_config(helpers.CONFIG)
    configuration.apply_overrides(config, [a[len('--config.') :] for a in ARGS[2:]])
    t = trainer_lib.Trainer(config, str(whole), read_only=True)
    evaluated = t.evaluate(12)
    summary = json.loads((whole / 'summary.json').read_text())
    assert summary['eval/loss'] == evaluated['eval/loss']
    live = optim.ema_params(t.state.opt_state)  # Restored onto the devices.
    assert t.task.evaluate(live)['eval/loss'] == evaluated['eval/loss']
    assert t.task.evaluate(t.state.params)['eval/loss'] != evaluated['eval/loss']

    # translate and checkpoint averaging read the average too.
    _, params, _, _ = translate.load_model(str(whole), config)
    for a, b in zip(_leaves(params), _leaves(ema), strict=True):
        np.testing.assert_array_equal(a, b)
    mean, steps = averaging.average_checkpoints(str(whole / 'checkpoints'), 2)
    assert steps == [6, 12]
    six = optim.ema_params(
        checkpoint.read_state(str(whole / 'checkpoints' / '6'))['opt_state']
    )
    for m, a, b in zip(_leaves(mean), _leaves(six), _leaves(ema), strict=True):
        np.testing.assert_allclose(m, (a + b) / 2, rtol=1e-6)

    # eval.use_ema=False: the parameters themselves, for a comparison.
    raw_config = configuration.load_config(helpers.CONFIG)
    configuration.apply_overrides(
        raw_config, [a[len('--config.') :] for a in ARGS[2:]] + ['eval.use_ema=False']
    )
    raw = trainer_lib.Trainer(raw_config, str(whole), read_only=True)
    assert raw.evaluate(12)['eval/loss'] == t.task.evaluate(t.state.params)['eval/loss']
    _, params, _, _ = translate.load_model(str(whole), raw_config)
    for a, b in zip(_leaves(params), _leaves(state['params']), strict=True):
        np.testing.assert_array_equal(a, b)

    # A teacher reads what its own evaluation used: the average by default,
    # the parameters where its run set eval.use_ema=False.
    _, teacher = t.task.load_teacher(str(whole))
    for a, b in zip(_leaves(teacher), _leaves(ema), strict=True):
        np.testing.assert_array_equal(a, b)
    saved = json.loads((whole / 'config.json').read_text())
    saved['eval']['use_ema'] = False
    (whole / 'config.json').write_text(json.dumps(saved))
    _, teacher = t.task.load_teacher(str(whole))
    for a, b in zip(_leaves(teacher), _leaves(state['params']), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_classification_teacher_reads_what_its_evaluation_used(tmp_path):
    state = {
        'params': {'w': np.ones(3, np.float32)},
        'opt_state': {'params_ema': {'w': np.zeros(3, np.float32)}, 'count': 1},
    }
    ckpt = checkpoint.Checkpointer(
        str(tmp_path / 'checkpoints'), every=1, keep=1, async_save=False
    )
    ckpt.save(1, state, {}, force=True)
    ckpt.close()
    for use_ema, expected in ((True, 0.0), (False, 1.0)):
        (tmp_path / 'config.json').write_text(
            json.dumps({'task': 'text_classification', 'eval': {'use_ema': use_ema}})
        )
        _, params, step = teacher_cache.load_teacher(str(tmp_path))
        assert step == 1
        np.testing.assert_array_equal(params['w'], np.full(3, expected, np.float32))
    # A damaged config.json (a JSONDecodeError traceback before) or one
    # without a task is named as the teacher's.
    for text, message in (
        ('{"task": "text_classification", "mod', 'is damaged: not valid JSON'),
        ('{}', "config.json has no 'task' key"),
        ('{"task": "translation"}', "is a 'translation' run; data.teachers needs a"),
    ):
        (tmp_path / 'config.json').write_text(text)
        with pytest.raises(ConfigError, match=f'^data.teachers: .*{message}'):
            teacher_cache.load_teacher(str(tmp_path))
