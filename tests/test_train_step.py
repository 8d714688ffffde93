"""The shared train step: the same result on 1 device and on 8."""

import dataclasses

import jax
import ml_collections
import numpy as np
import pytest

from jaxdistill import optim
from jaxdistill import sharding
from jaxdistill import train_step
from jaxdistill.methods import Supervised
from jaxdistill.models.transformer import Transformer, TransformerConfig
from jaxdistill.tasks.translation import transformer_fns


def _batch(rows=16, length=12, vocab=50, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, length + 1, size=(2, rows))
    batch = {}
    for name, lens in zip(('inputs', 'targets'), lengths):
        x = rng.integers(4, vocab, size=(rows, length)).astype(np.int32)
        x[np.arange(length)[None, :] >= lens[:, None]] = 0
        x[np.arange(rows), lens - 1] = 3  # EOS
        batch[name] = x
    return batch


def _optimizer():
    # SGD: Adam's g/sqrt(v) turns float noise in near-zero gradients into
    # full-size steps, which would hide what this test compares.
    cfg = ml_collections.ConfigDict(
        dict(
            name='sgd',
            learning_rate=0.5,
            schedule='constant',
            warmup_steps=0,
            total_steps=10,
            grad_clip_norm=1.0,
        )
    )
    return optim.make_optimizer(cfg)


def _train(
    mesh,
    steps=3,
    shard_params=False,
    chunk_rows=0,
    share_embeddings=True,
    microbatches=1,
    dropout_rate=0.1,
    auxes=None,
):
    """Three steps of a small Transformer; returns (state, losses).

    `auxes`: a list that receives each step's aux metrics (as floats).
    """
    model = Transformer(
        TransformerConfig(
            vocab_size=50,
            d_model=32,
            num_heads=2,
            d_ff=64,
            num_encoder_layers=1,
            num_decoder_layers=1,
            dropout_rate=dropout_rate,
            share_embeddings=share_embeddings,
        )
    )
    method = Supervised(
        model=transformer_fns(model), label_smoothing=0.1, output_chunk_rows=chunk_rows
    )
    tx = _optimizer()
    batch = _batch()
    init, state_sharding, _ = train_step.make_init(
        method, tx, batch, mesh, seed=0, shard_params=shard_params, shard_min_size=1024
    )
    bs = sharding.batch_sharding(mesh)
    step = train_step.make_train_step(
        method,
        tx,
        state_sharding=state_sharding,
        batch_sharding=bs,
        microbatches=microbatches,
    )
    state, losses = init(), []
    for i in range(steps):
        state, aux = step(state, sharding.global_batch(_batch(seed=i), bs))
        losses.append(float(aux['train/loss']))
        if auxes is not None:
            auxes.append({k: float(v) for k, v in aux.items()})
    return state, losses


def test_one_device_and_eight_devices_agree():
    assert jax.device_count() == 8
    state1, losses1 = _train(sharding.make_mesh(devices=jax.devices()[:1]))
    state8, losses8 = _train(sharding.make_mesh())
    np.testing.assert_allclose(losses1, losses8, rtol=1e-5)
    assert losses1[-1] < losses1[0]  # It actually trains.
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(
            np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6
        ),
        state1.params,
        state8.params,
    )
    assert int(state8.step) == 3


def test_parameters_sharded_over_a_model_axis_agree():
    mesh = sharding.make_mesh(model_axis_size=2)
    assert dict(mesh.shape) == {'replica': 1, 'data': 4, 'model': 2}
    state_sh, losses_sh = _train(mesh, shard_params=True)
    _, losses8 = _train(sharding.make_mesh())
    np.testing.assert_allclose(losses_sh, losses8, rtol=1e-5)
    specs = {str(x.sharding.spec) for x in jax.tree.leaves(state_sh.params)}
    assert any('model' in s for s in specs), specs


@pytest.mark.parametrize('share_embeddings', [True, False])
def test_fused_output_layer_trains_as_the_materialised_one(share_embeddings):
    # 16 rows x 12 target tokens = 192, in blocks of 40: a padded last block.
    mesh1 = sharding.make_mesh(devices=jax.devices()[:1])
    plain, plain_losses = _train(mesh1, share_embeddings=share_embeddings)
    for mesh in (mesh1, sharding.make_mesh()):
        fused, fused_losses = _train(
            mesh, chunk_rows=40, share_embeddings=share_embeddings
        )
        np.testing.assert_allclose(fused_losses, plain_losses, rtol=1e-5)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(
                np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6
            ),
            fused.params,
            plain.params,
        )
    assert plain_losses[-1] < plain_losses[0]


def test_microbatches_give_the_whole_batchs_update():
    # 16 rows of 3-12 tokens: micro-batches of every other row hold different
    # numbers of target tokens, so this checks their weighting too. On 8
    # devices: each micro-batch takes its rows from every device's share.
    mesh = sharding.make_mesh()
    whole_aux, micro_aux = [], []
    whole, whole_losses = _train(mesh, dropout_rate=0.0, auxes=whole_aux)
    micro, micro_losses = _train(
        mesh, dropout_rate=0.0, microbatches=2, auxes=micro_aux
    )
    np.testing.assert_allclose(micro_losses, whole_losses, rtol=1e-5)
    assert whole_losses[-1] < whole_losses[0]
    for w, m in zip(whole_aux, micro_aux):
        assert w.keys() == m.keys()
        assert m['train/tokens'] == w['train/tokens']  # Summed, not averaged.
        for key in ('train/nll', 'train/accuracy', 'train/grad_norm'):
            np.testing.assert_allclose(m[key], w[key], rtol=1e-5, err_msg=key)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(
            np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6
        ),
        micro.params,
        whole.params,
    )


def test_microbatches_that_do_not_divide_the_rows_are_an_error():
    from jaxdistill.errors import ConfigError

    # 16 rows on 8 devices: 2 a device, which 4 micro-batches cannot share.
    with pytest.raises(ConfigError, match=r"microbatches=4: batch entry \['inputs'\]"):
        _train(sharding.make_mesh(), microbatches=4, steps=1)
    with pytest.raises(ConfigError, match='microbatches=0'):
        _train(sharding.make_mesh(), microbatches=0, steps=1)


def test_batch_that_does_not_split_over_processes_is_an_error():
    from jaxdistill.errors import ConfigError

    assert sharding.process_slice(8) == slice(0, 8)  # One process here.
    with pytest.raises(ConfigError, match='model_axis_size=3'):
        sharding.make_mesh(model_axis_size=3)


def test_fused_output_layer_config_errors():
    from jaxdistill.errors import ConfigError
    from jaxdistill.methods import make_method

    fns = transformer_fns(Transformer(TransformerConfig(vocab_size=50, d_model=32)))
    cfg = lambda rows: ml_collections.ConfigDict(
        dict(name='supervised', output_chunk_rows=rows)
    )
    assert make_method(cfg(64), fns).output_chunk_rows == 64
    with pytest.raises(ConfigError, match=r'output_chunk_rows=-1 must be an int >= 0'):
        make_method(cfg(-1), fns)
    no_features = dataclasses.replace(fns, features=None)
    with pytest.raises(ConfigError, match='offers no features/output table'):
        make_method(cfg(64), no_features)
    assert make_method(cfg(0), no_features).output_chunk_rows == 0


def test_the_start_note_says_what_shard_params_split():
    """The note counts the arrays split over `model`; a model whose arrays
    are all small (or indivisible) is said to have nothing split."""
    mesh = sharding.make_mesh(model_axis_size=2)
    params = {
        'big': jax.ShapeDtypeStruct((128, 256), np.float32),
        'odd': jax.ShapeDtypeStruct((129, 129), np.float32),
        'small': jax.ShapeDtypeStruct((16,), np.float32),
    }
    shardings = sharding.param_shardings(params, mesh, shard_params=True)
    note = sharding.model_split_note(params, shardings, mesh)
    assert '1 of 3 parameter arrays (32,768 of 49,425 entries)' in note, note
    assert 'model axis of 2 devices' in note
    small = {'small': params['small'], 'odd': params['odd']}
    note = sharding.model_split_note(
        small, sharding.param_shardings(small, mesh, shard_params=True), mesh
    )
    assert note.startswith('mesh.shard_params: 0 of 2 parameter arrays'), note
    assert 'nothing is saved by sharding them' in note
    one = sharding.make_mesh(model_axis_size=1)
    note = sharding.model_split_note(
        params, sharding.param_shardings(params, one, shard_params=True), one
    )
    assert 'does nothing with mesh.model_axis_size=1' in note
