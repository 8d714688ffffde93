"""Several runs in one Python process (a notebook, a script): each Trainer
behaves as in a process of its own."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from jaxdistill import compile_cache
from jaxdistill import configuration
from jaxdistill import registry
from jaxdistill import trainer as trainer_lib
from jaxdistill.errors import JaxdistillError
from jaxdistill.errors import NonFiniteLossError
from jaxdistill.methods import supervised
from tests import helpers


def _config(steps, **overrides):
    config = configuration.load_config(helpers.CONFIG)
    config.num_train_steps = config.checkpoint.every_steps = steps
    config.eval.at_end = False
    config.data.bucket_lengths = (48,)  # One compiled train step.
    config.update(overrides)
    return config


def test_a_trainer_runs_once_and_its_end_releases_the_workdir(tmp_path, monkeypatch):
    """run() again trained without the workdir's lock into a closed
    checkpointer (a raw Orbax error, a half-written step); a Ctrl-C while
    the summary was plotted kept the lock, so the same workdir was refused
    as in use by this very process."""
    work = str(tmp_path / 'w')
    t = trainer_lib.Trainer(_config(2), work)
    t.run()
    with pytest.raises(JaxdistillError, match='This Trainer has run already'):
        t.run()

    def interrupted(workdir):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_lib, '_plot_quietly', interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer_lib.Trainer(_config(4), work).run()
    monkeypatch.undo()
    again = trainer_lib.Trainer(_config(6), work)  # Not refused as in use.
    assert again.start_step == 4
    assert again.run()['step'] == 6


def test_each_trainer_compiles_into_its_own_cache(tmp_path):
    """The cache directory is one setting of the process: a read-only
    Trainer made for another run pointed it at that run's, and a writing
    Trainer made before it then filled the other run's cache."""
    session = jax.config.jax_compilation_cache_dir
    mine, other = str(tmp_path / 'mine_jit'), str(tmp_path / 'other_jit')
    try:
        first = trainer_lib.Trainer(_config(2), str(tmp_path / 'a'))
        first.run()
        writer = trainer_lib.Trainer(
            _config(2, compilation_cache_dir=mine), str(tmp_path / 'b')
        )
        reader = trainer_lib.Trainer(
            _config(2, compilation_cache_dir=other),
            str(tmp_path / 'a'),
            read_only=True,
        )
        assert jax.config.jax_compilation_cache_dir == other
        writer.run()
        assert jax.config.jax_compilation_cache_dir == mine
        reader.evaluate(reader.start_step)
        assert jax.config.jax_compilation_cache_dir == other
        reader.close()
    finally:
        jax.config.update('jax_compilation_cache_dir', session)
        jax.config.update('jax_enable_compilation_cache', True)
        compile_cache._ours = compile_cache._UNSET  # pylint: disable=protected-access
        compile_cache.compilation_cache.reset_cache()


@registry.register('method', 'test_diverging_state')
@dataclasses.dataclass(frozen=True)
class _DivergingState(supervised.Supervised):
    """Supervised training with a state of its own that overflows by its
    second step (as an RL policy with too large a learning rate did) while
    the parameters and every logged metric stay finite."""

    def init_extra(self, rng, params):
        del rng, params
        return {'policy': jnp.ones(3), 'count': jnp.zeros((), jnp.int32)}

    def update_extra(self, extra, params, aux, step, **kwargs):
        del params, aux, step, kwargs
        return {'policy': extra['policy'] * 1e30, 'count': extra['count'] + 1}


def test_a_method_state_that_diverges_is_never_saved(tmp_path):
    """Only the parameters were checked before a save: a method's own
    diverged state was saved as the last good checkpoint, and the run ended
    as if it had trained."""
    config = _config(4, log_every_steps=4)
    config.checkpoint.every_steps = 2
    config.method.name = 'test_diverging_state'
    work = tmp_path / 'w'
    with pytest.raises(
        NonFiniteLossError,
        match="Non-finite method state 'policy' after step 2; not saved. Stopped; "
        'no checkpoint was saved before it diverged',
    ):
        trainer_lib.Trainer(config, str(work)).run()
    assert not [p for p in (work / 'checkpoints').glob('*') if p.name.isdigit()]
