"""A method or task of the user's own that breaks its side of the face is
named (class, file, member) by a PluginError, not a JAX traceback."""

import dataclasses
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxdistill import contracts
from jaxdistill import losses as losses_lib
from jaxdistill import registry
from jaxdistill import sharding
from jaxdistill import train_step
from jaxdistill.errors import PluginError
from jaxdistill.methods.base import Method, ModelFns, make_method

HERE = __file__


def _linear_fns():
    def init(rng, batch):
        return {'w': jax.random.normal(rng, (batch['x'].shape[1], 3)) * 0.1}

    def apply(params, batch, *, train, rng=None):
        del train, rng
        return batch['x'] @ params['w']

    return ModelFns(
        init=init, apply=apply, labels=lambda b: (b['label'], b['label'] >= 0)
    )


def _batch():
    r = np.random.default_rng(0)
    return {
        'x': r.normal(size=(8, 4)).astype(np.float32),
        'label': r.integers(0, 3, 8).astype(np.int32),
    }


@dataclasses.dataclass(frozen=True)
class Faulty(Method):
    """Cross entropy, returned in the way `mode` says (most of them wrong)."""

    model: ModelFns
    mode: str = 'ok'

    def init_extra(self, rng, params):
        return {'teacher': params}

    def loss(self, params, extra, batch, rng, step):
        logits = self.model.apply(params, batch, train=True, rng=rng)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
        m = jnp.mean(ce)
        return {
            'ok': (m, {'train/ce': m}),
            'per_example_loss': (ce, {}),
            'no_aux': m,
            'aux_tuple': (m, (m,)),
            'int_loss': (jnp.int32(1), {}),
            'vector_metric': (m, {'train/ce': ce}),
            'string_metric': (m, {'train/note': 'hi'}),
            'stray_key': (m, {'loss': m}),
            'extra_tree': (m, {'train/ce': m}),
            'extra_dtype': (m, {'train/ce': m}),
        }[self.mode]

    def update_extra(self, extra, params, aux, step, **kwargs):
        if self.mode == 'extra_tree':
            return params  # The bare tree, not {'teacher': ...}.
        if self.mode == 'extra_dtype':
            return {'teacher': jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)}
        return extra


def _run(method, steps=1):
    """`steps` traced and run train steps of `method`, each in the phase the
    method names: (the step function, the last step's aux)."""
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    tx = optax.sgd(0.1)
    init, state_sharding, _ = train_step.make_init(method, tx, _batch(), mesh, seed=0)
    bs = sharding.batch_sharding(mesh)
    step = train_step.make_train_step(
        method, tx, state_sharding=state_sharding, batch_sharding=bs
    )
    state, aux = init(), None
    for i in range(steps):
        state, aux = step(state, sharding.global_batch(_batch(), bs), method.phase(i))
    return step, aux


def _step(mode):
    """One traced and run train step of `Faulty(mode)`; returns its aux."""
    return _run(Faulty(model=_linear_fns(), mode=mode))[1]


def test_a_good_method_passes_the_checks():
    aux = _step('ok')
    assert set(aux) == {'train/loss', 'train/ce', 'train/grad_norm'}


@pytest.mark.parametrize(
    'mode, message',
    [
        (
            'per_example_loss',
            'loss() returned a loss of shape (8,) float32; it must be a float scalar',
        ),
        ('no_aux', 'it must return (loss, aux)'),
        ('aux_tuple', 'an aux of a tuple of 1; it must be a dict'),
        ('int_loss', 'a loss of shape () int32'),
        (
            'vector_metric',
            "aux['train/ce'] of shape (8,) float32: metrics are scalars;",
        ),
        ('string_metric', "aux['train/note'] of a str: metrics are scalars"),
        ('stray_key', "loss() put 'loss' in aux, which is not a metric"),
        (
            'extra_tree',
            "update_extra() returned an extra of another structure than init_extra's",
        ),
        (
            'extra_dtype',
            "update_extra() returned extra['teacher']['w'] of shape (4, 3) bfloat16; init_extra gave shape (4, 3) float32",
        ),
    ],
)
def test_a_faulty_method_is_named_at_its_first_step(mode, message):
    with pytest.raises(PluginError) as e:
        _step(mode)
    text = str(e.value)
    assert text.startswith(f'Faulty ({HERE}): ') and message in text, text


def test_a_method_without_from_config_gets_the_default_one():
    @dataclasses.dataclass(frozen=True)
    class Scheduled(Method):
        model: ModelFns
        weight: optax.Schedule = None
        temperature: float = 1.0
        schedule_keys = ('weight',)

        def loss(self, params, extra, batch, rng, step):
            raise NotImplementedError

    registry.register('method', 'test_scheduled')(Scheduled)
    cfg = ml_collections.ConfigDict(
        {
            'name': 'test_scheduled',
            'temperature': 2.0,
            'weight': {'kind': 'switch', 'value': 1.0, 'step': 10},
        }
    )
    method = make_method(cfg, _linear_fns())
    assert method.temperature == 2.0
    assert [float(method.weight(s)) for s in (0, 9, 10)] == [1.0, 1.0, 0.0]


def test_a_name_registered_twice_names_both_holders(tmp_path):
    plugin = tmp_path / 'collides.py'
    plugin.write_text(
        'from jaxdistill import registry\n'
        "@registry.register('method', 'supervised')\n"
        'class Mine:\n    pass\n'
    )
    with pytest.raises(PluginError) as e:
        registry.import_plugins([str(plugin)])
    text = str(e.value)
    assert "method 'supervised' is registered twice: by " in text
    assert 'jaxdistill.methods.supervised.Supervised (' in text
    assert f'Mine ({plugin})' in text and 'Register yours under another name' in text


def test_a_plugin_whose_import_failed_imports_once_fixed(tmp_path):
    """Its first import registered the class, then failed: fixed, the file
    imports in the same process (a notebook), its class replacing the one
    the failed import left; it was refused as registered twice."""
    plugin = tmp_path / 'half.py'
    source = (
        'from jaxdistill import registry\n'
        "@registry.register('method', 'test_half')\n"
        'class Half:\n    pass\n'
    )
    plugin.write_text(source + 'BROKEN\n')
    with pytest.raises(NameError, match='BROKEN'):
        registry.import_plugins([str(plugin)])
    plugin.write_text(source + 'FIXED = True\n')
    registry.import_plugins([str(plugin)])
    assert sys.modules[registry.get('method', 'test_half').__module__].FIXED


class _Task:
    """A task with every member; tests delete or break one."""

    def __init__(self):
        self.model_fns = _linear_fns()

        class Batches:
            position = 0

            def __next__(self):
                return _batch()

            def set_position(self, p):
                self.position = p

            def batches_per_epoch(self):
                return 1

        self.train_batches = Batches()

    def init_batch(self):
        return _batch()

    def data_summary(self):
        return {}

    def evaluate(self, params):
        return {'eval/accuracy': np.float32(0.5)}


def test_a_task_is_checked_when_it_is_built():
    contracts.check_task(_Task(), 'mine')  # Nothing missing.
    task = _Task()
    del task.model_fns
    with pytest.raises(
        PluginError, match=r"task 'mine', _Task \(.*\), has no model_fns"
    ):
        contracts.check_task(task, 'mine')
    task = _Task()
    task.model_fns = lambda: None
    with pytest.raises(PluginError, match='model_fns is a function, not a jaxdistill'):
        contracts.check_task(task, 'mine')
    task = _Task()
    task.train_batches = iter([])
    with pytest.raises(PluginError, match='train_batches .* has no position, set_pos'):
        contracts.check_task(task, 'mine')
    task = _Task()
    task.throughput = 'examples'
    with pytest.raises(
        PluginError, match=r"throughput is 'examples'; it must be a pair"
    ):
        contracts.check_task(task, 'mine')
    task = _Task()
    task.throughput_unit = 'ex'
    with pytest.raises(
        PluginError, match=r'sets throughput_unit; it is now throughput'
    ):
        contracts.check_task(task, 'mine')
    task = _Task()
    task.throughput = ('examples', 'ex')
    contracts.check_task(task, 'mine')


def test_evaluate_and_predict_results_are_checked():
    task = _Task()
    assert contracts.checked_eval(task, task.evaluate(None)) == {'eval/accuracy': 0.5}
    for result, message in [
        (None, 'returned a NoneType, not a dict'),
        ({'accuracy': 0.5}, "the key 'accuracy': metrics are named 'eval/NAME'"),
        (
            {'eval/accuracy': np.ones(3)},
            'eval/accuracy shape (3,) float64; each value must be a number',
        ),
        ({'eval/name': 'x'}, 'eval/name a str; each value must be a number'),
    ]:
        with pytest.raises(
            PluginError, match=r'_Task \(.*\): evaluate\(params\) returned'
        ) as e:
            contracts.checked_eval(task, result)
        assert message in str(e.value), str(e.value)
    contracts.check_predictions(task, (np.arange(4), np.ones(4, bool)))
    with pytest.raises(
        PluginError,
        match=r'predict\(params\) returned a ndarray; it must return \(labels',
    ):
        contracts.check_predictions(task, np.arange(4))


@dataclasses.dataclass(frozen=True)
class Phased(Method):
    """Cross entropy in phases; `mode` breaks one rule of the face."""

    model: ModelFns
    mode: str = 'ok'

    def init_extra(self, rng, params):
        if self.mode == 'opaque_extra':
            return {'note': 'hello'}
        return {}

    def phase(self, step):
        return f'step{step}' if self.mode == 'many_phases' else 'only'

    def loss(self, params, extra, batch, rng, step, phase=None):
        logits = self.model.apply(params, batch, train=True, rng=rng)
        if self.mode == 'flat_logits':
            logits = logits[:, 0]
        ce = losses_lib.cross_entropy(logits, batch['label'])
        m = jnp.mean(ce)
        return m, {'train/ce': m}

    def update_extra(self, extra, params, aux, step, **kwargs):
        return extra


@dataclasses.dataclass(frozen=True)
class PhasedNoKeyword(Phased):
    def update_extra(self, extra, params, aux, step):
        return extra


def test_extra_that_is_not_arrays_is_named():
    with pytest.raises(
        PluginError, match=r"init_extra returned str at extra\['note'\]"
    ):
        _run(Phased(model=_linear_fns(), mode='opaque_extra'))


def test_phases_need_a_phase_keyword_in_update_extra():
    with pytest.raises(PluginError, match='so its update_extra must accept'):
        _run(PhasedNoKeyword(model=_linear_fns()))


def test_logits_without_the_class_axis_are_named():
    with pytest.raises(
        ValueError, match=r'labels of shape \(8,\) for logits of shape \(8,\)'
    ):
        _run(Phased(model=_linear_fns(), mode='flat_logits'))


def test_a_phase_per_step_is_warned_about(caplog):
    caplog.set_level('WARNING')
    step, _ = _run(
        Phased(model=_linear_fns(), mode='many_phases'), train_step.MANY_PHASES
    )
    assert len(step.compiled) == train_step.MANY_PHASES
    assert 'different phases; each compiles its own step' in caplog.text
