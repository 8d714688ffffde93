"""MT2ST: scheduled auxiliary weights, phase pruning, pair sampling, SST-2 task."""

import gzip
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxdistill import configuration
from jaxdistill import metrics
from jaxdistill import optim
from jaxdistill import sharding
from jaxdistill import train_step
from jaxdistill.data import multitask as multitask_data
from jaxdistill.errors import ConfigError
from jaxdistill.methods import make_method
from jaxdistill.methods import multitask
from jaxdistill.models import multitask as multitask_model

CONFIG = pathlib.Path(__file__).resolve().parents[1] / 'configs' / 'mt2st_sst2.py'
V, D, B, L, P, K = 40, 8, 8, 6, 16, 3


def _fns(with_skipgram=True):
    head = multitask_model.PooledClassifier(hidden=(8,))
    return multitask_model.make_fns(
        head, vocab_size=V, dim=D, embed_init_scale=0.1, with_skipgram=with_skipgram
    )


def _method(aux, threshold=0.0, fns=None):
    cfg = ml_collections.ConfigDict(
        {'name': 'multitask', 'aux_weights': {'skipgram': aux}, 'threshold': threshold}
    )
    return make_method(cfg, fns or _fns())


def _batch(aux=True, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(2, V, (B, L)).astype(np.int32)
    tokens[:, 4:] = 0
    batch = {'tokens': tokens, 'label': rng.integers(0, 2, B).astype(np.int32)}
    if aux:
        batch.update(
            sg_input=rng.integers(2, V, P).astype(np.int32),
            sg_target=rng.integers(2, V, P).astype(np.int32),
            sg_negatives=rng.integers(2, V, (P, K)).astype(np.int32),
            sg_where=rng.random(P) < 0.8,
        )
    return batch


def test_off_steps_and_phases_follow_the_schedules():
    off = multitask.aux_off_steps(
        {
            'a': {'kind': 'switch', 'value': 1.0, 'step': 30},
            'b': {'kind': 'diminish', 'init': 0.95, 'steps_per_epoch': 10},
            'c': 0.5,
            'd': 0.0,
        },
        threshold=0.01,
    )
    # 0.95^(2^t) <= 0.01 first at t = 7 (0.95^128 = 0.0014; 0.95^64 = 0.0375).
    assert off == {'a': 30, 'b': 70, 'c': None, 'd': 0}
    assert multitask.active_aux(off, 29) == ('a', 'b', 'c')
    assert multitask.active_aux(off, 30) == ('b', 'c')
    assert multitask.active_aux(off, 70) == ('c',)
    method = _method({'kind': 'switch', 'value': 1.0, 'step': 5})
    assert [method.phase(s) for s in (0, 4, 5, 100)] == [('skipgram',)] * 2 + [()] * 2


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match='aux_weights.skipgram.kind'):
        _method({'kind': 'diminsh', 'init': 0.9})
    with pytest.raises(ConfigError, match="no auxiliary loss 'skipgram'"):
        _method(1.0, fns=_fns(with_skipgram=False))
    # A task that is off from step 0 needs no head (single-task learning).
    assert _method(0.0, fns=_fns(with_skipgram=False)).phase(0) == ()
    with pytest.raises(ConfigError, match='aux_weights.skipgram must be >= 0'):
        _method({'kind': 'linear', 'init': 1.0, 'end': -0.5, 'steps': 10})
    for head, dim, match in [
        (multitask_model.PooledClassifier(), 0, 'model.dim=0'),
        (multitask_model.PooledClassifier(hidden=(8, 0)), D, r'model.hidden=\(8, 0\)'),
        (multitask_model.PooledClassifier(dropout_rate=1.0), D, 'dropout_rate'),
    ]:
        with pytest.raises(ConfigError, match=match):
            multitask_model.make_fns(
                head, vocab_size=V, dim=dim, embed_init_scale=0.1, with_skipgram=True
            )


def test_aux_loss_is_differentiable_and_weighted():
    method = _method({'kind': 'diminish', 'init': 0.5, 'steps_per_epoch': 1})
    fns = method.model
    params = fns.init(jax.random.key(0), _batch())
    params['skipgram_output'] = 0.1 * jax.random.normal(jax.random.key(1), (V, D))
    batch = jax.tree.map(jnp.asarray, _batch())
    rng = jax.random.key(2)

    def grads(p, phase):
        def loss(p):
            return method.loss(p, {}, batch, rng, 1, phase=phase)

        return jax.value_and_grad(loss, has_aux=True)(p)

    @jax.jit  # One compilation for both phases.
    def both(p):
        return (
            grads(p, ('skipgram',)),
            grads(p, ()),
            fns.aux_losses['skipgram'](p, batch),
        )

    ((l_on, aux_on), g_on), ((l_off, aux_off), g_off), sg = both(params)
    # w = 0.5^(2^1) at step 1 of 1-step epochs.
    np.testing.assert_allclose(aux_on['train/skipgram_weight'], 0.25)
    np.testing.assert_allclose(l_on, l_off + 0.25 * sg, rtol=1e-5)
    assert set(aux_on) == set(aux_off)  # Log windows may span a switch.
    # Skip-gram's gradient reaches the shared table, and only through its rows.
    diff = np.abs(np.asarray(g_on['embed'] - g_off['embed'])).sum(1)
    used = np.unique(np.asarray(batch['sg_input'])[np.asarray(batch['sg_where'])])
    assert np.all(diff[used] > 0) and np.all(np.delete(diff, used) == 0)
    assert np.abs(np.asarray(g_on['skipgram_output'])).sum() > 0
    assert np.abs(np.asarray(g_off['skipgram_output'])).sum() == 0


def test_post_switch_step_computes_no_auxiliary_work():
    """The pruned phase's compiled step has neither the aux forward nor backward."""
    method = _method({'kind': 'switch', 'value': 1.0, 'step': 3})
    tx = optim.make_optimizer(
        ml_collections.ConfigDict(
            {'name': 'adam', 'learning_rate': 1e-2, 'schedule': 'constant'}
        )
    )
    mesh = sharding.make_mesh(devices=jax.devices()[:1])  # Whole-program FLOPs.
    init, state_sharding, _ = train_step.make_init(method, tx, _batch(), mesh, seed=0)
    bs = sharding.batch_sharding(mesh)
    step = train_step.make_train_step(
        method, tx, state_sharding=state_sharding, batch_sharding=bs
    )
    state = init()
    compiled = {}
    for phase, aux in ((('skipgram',), True), ((), False)):
        batch = sharding.global_batch(_batch(aux), bs)
        with jax.set_mesh(mesh):
            compiled[phase] = step.build(phase).lower(state, batch).compile()
    flops = {k: c.cost_analysis()['flops'] for k, c in compiled.items()}
    sg_flops = (
        jax.jit(lambda p, b: jax.grad(multitask_model.skipgram_batch_loss)(p, b))
        .lower(state.params, jax.tree.map(jnp.asarray, _batch()))
        .compile()
        .cost_analysis()['flops']
    )
    # The saving is at least the aux loss's forward + backward on its own.
    assert flops[('skipgram',)] - flops[()] >= 0.9 * sg_flops > 0, (flops, sg_flops)
    # The negatives' rows [P, K, D] are gathered before the switch, never after.
    assert f'[{P},{K},{D}]' in compiled[('skipgram',)].as_text()
    assert f'[{P},{K},{D}]' not in compiled[()].as_text()
    # After the switch the skip-gram output table is frozen: Adam momentum
    # from the earlier steps no longer moves it, and its moments stay put.
    state, _ = step(state, sharding.global_batch(_batch(True), bs), ('skipgram',))
    before = jax.device_get((state.params, state.opt_state))
    state, _ = step(state, sharding.global_batch(_batch(False), bs), ())
    after = jax.device_get((state.params, state.opt_state))
    np.testing.assert_array_equal(
        after[0]['skipgram_output'], before[0]['skipgram_output']
    )
    assert np.abs(after[0]['embed'] - before[0]['embed']).max() > 0
    mu = lambda s: [  # noqa: E731
        x['skipgram_output']
        for x in jax.tree.leaves(s, is_leaf=lambda x: isinstance(x, dict))
        if isinstance(x, dict) and 'skipgram_output' in x
    ]
    assert len(mu(after[1])) == 2  # Adam's mu and nu.
    for a, b in zip(mu(after[1]), mu(before[1])):
        np.testing.assert_array_equal(a, b)


def test_skipgram_pairs_are_word2vec_pairs_and_deterministic():
    ids = np.arange(2, 42, dtype=np.int32)  # 40 distinct words, one each...
    sentence = np.repeat(np.arange(4), 10)  # ...in 4 sentences of 10.
    counts = np.ones(40, np.int64)
    sampler = multitask_data.SkipgramPairs(
        ids,
        sentence,
        counts,
        offset=2,
        pairs=64,
        negatives=4,
        window=3,
        sample=0.0,
        seed=1,
        table_size=1000,
    )
    a, b = sampler.at(7), sampler.at(7)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert a['sg_negatives'].shape == (64, 4) and a['sg_negatives'].min() >= 2
    w = a['sg_where']
    # Token id - 2 is its position: valid pairs are within 3 and one sentence.
    gap = np.abs(a['sg_input'][w] - a['sg_target'][w])
    assert w.sum() > 30 and np.all((gap >= 1) & (gap <= 3))
    assert np.all((a['sg_input'][w] - 2) // 10 == (a['sg_target'][w] - 2) // 10)
    assert not np.array_equal(sampler.at(8)['sg_target'], a['sg_target'])


class _Primary:
    def batches_per_epoch(self):
        return 3

    def batch_at(self, epoch, index, part=None):
        assert part is None
        return {'tokens': np.full((2, 2), epoch * 3 + index)}


class _Aux:
    def at(self, step):
        return {'sg_input': np.full(4, step)}


def test_batches_carry_aux_data_only_while_it_is_active():
    batches = multitask_data.MultiTaskBatches(
        _Primary(), {'skipgram': _Aux()}, lambda s: ('skipgram',) if s < 4 else ()
    )
    got = [next(batches) for _ in range(6)]
    assert [int(g['tokens'][0, 0]) for g in got] == list(range(6))
    assert ['sg_input' in g for g in got] == [True] * 4 + [False] * 2
    assert batches.position == {'step': 6}
    batches.set_position({'step': 2})
    assert int(next(batches)['sg_input'][0]) == 2
    with pytest.raises(Exception, match='does not fit'):
        batches.set_position({'epoch': 0, 'index': 0})


def test_config_fields_have_comments():
    lines = [x.strip() for x in CONFIG.read_text().split('if args.get(')[0].split('\n')]
    for i, line in enumerate(lines):
        if line.startswith('config.') and ' = ' in line and 'ConfigDict()' not in line:
            j = i - 1
            while (
                j >= 0
                and lines[j].startswith('config.')
                and 'ConfigDict()' not in lines[j]
            ):
                j -= 1
            assert lines[j].startswith('#') or lines[j].endswith('('), line


def test_switch_run_end_to_end(shared_data, tmp_path, monkeypatch):
    """runlocal Switch on real data: two phases compiled, aux gone after."""
    from jaxdistill import trainer  # pylint: disable=g-import-not-at-top

    monkeypatch.chdir(CONFIG.parents[1])
    config = configuration.load_config(f'{CONFIG}:runlocal,arm=switch')
    corpus = tmp_path / 'brown_head.txt'  # A slice of Brown keeps set-up short.
    with gzip.open(shared_data / 'words' / 'brown.txt.gz', 'rt') as f:
        corpus.write_text(''.join(next(f) for _ in range(3000)))
    config.data.corpus = str(corpus)
    config.data.min_count = 5
    config.checkpoint.every_steps = 10
    config.eval.every_steps = 0  # Once, at the end.
    run = trainer.Trainer(config, str(tmp_path / 'run'))
    assert run.method.off_steps == {'skipgram': 6}
    summary = run.run()
    assert set(run.step_fn.compiled) == {('skipgram',), ()}
    assert 'sg_input' in run.task.train_batches.at_step(5)
    assert 'sg_input' not in run.task.train_batches.at_step(6)
    records = metrics.read_metrics(str(tmp_path / 'run'))
    weights = {
        r['step']: r['train/skipgram_weight'] for r in records if 'train/loss' in r
    }
    # Steps 0-4 weigh 0.95; of steps 5-9 only step 5 computes skip-gram.
    np.testing.assert_allclose([weights[5], weights[10]], [0.95, 0.19], rtol=1e-5)
    assert 0.0 <= summary['eval/dev/accuracy'] <= 1.0
    assert np.isfinite(summary['eval/ws353']) and summary['data/vocab_size'] > 100


def test_pretrained_rows_set_only_those_rows():
    ids = np.array([3, 7])
    vectors = np.arange(2 * D, dtype=np.float32).reshape(2, D)
    head = multitask_model.PooledClassifier(hidden=(8,))
    kw = dict(vocab_size=V, dim=D, embed_init_scale=0.1, with_skipgram=False)
    plain = multitask_model.make_fns(head, **kw)
    fns = multitask_model.make_fns(head, pretrained=(ids, vectors), **kw)
    rng, batch = jax.random.key(0), _batch(aux=False)
    got, want = fns.init(rng, batch)['embed'], plain.init(rng, batch)['embed']
    np.testing.assert_array_equal(got[ids], vectors)
    rest = np.setdiff1d(np.arange(V), ids)
    np.testing.assert_array_equal(got[rest], want[rest])


def test_init_vectors_start_the_table(shared_data, tmp_path, monkeypatch):
    """model.init_vectors: the vocabulary's words get the file's vectors;
    a wrong width or a missing file is an error naming it."""
    from jaxdistill import trainer  # pylint: disable=g-import-not-at-top
    from jaxdistill import word2vec  # pylint: disable=g-import-not-at-top
    from jaxdistill.errors import DataError  # pylint: disable=g-import-not-at-top

    monkeypatch.chdir(CONFIG.parents[1])
    config = configuration.load_config(f'{CONFIG}:runlocal,arm=stl')
    corpus = tmp_path / 'brown_head.txt'
    with gzip.open(shared_data / 'words' / 'brown.txt.gz', 'rt') as f:
        corpus.write_text(''.join(next(f) for _ in range(3000)))
    config.data.corpus = str(corpus)
    dim = config.model.dim
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3, dim)).astype(np.float32)
    path = tmp_path / 'vectors.txt'
    word2vec.save_word2vec(path, ['the', 'and', 'zzz-not-a-word'], vectors)
    config.model.init_vectors = str(path)
    run = trainer.Trainer(config, str(tmp_path / 'run'))
    embed = np.asarray(run.state.params['embed'])
    index = run.task.index
    np.testing.assert_allclose(embed[index['the']], vectors[0], rtol=1e-5)
    np.testing.assert_allclose(embed[index['and']], vectors[1], rtol=1e-5)
    assert run.task.data_summary()['init_vectors_words'] == 2
    others = np.delete(embed, [index['the'], index['and']], axis=0)
    assert np.abs(others).max() < 0.1  # The random init, scale 0.01.

    # Once the run has a checkpoint, the file is not needed (the table is in
    # the checkpoint), and the key may change on resume.
    config.num_train_steps = config.checkpoint.every_steps = 2
    config.optimizer.warmup_steps = 1
    config.eval.at_end = False
    run.run()
    run.close()
    trained = np.asarray(run.state.params['embed'])
    path.rename(tmp_path / 'moved.txt')
    reader = trainer.Trainer(config, str(tmp_path / 'run'), read_only=True)
    np.testing.assert_array_equal(np.asarray(reader.state.params['embed']), trained)
    reader.close()
    config.model.init_vectors = ''
    trainer.Trainer(config, str(tmp_path / 'run')).close()
    config.model.init_vectors = str(path)

    word2vec.save_word2vec(path, ['the'], vectors[:1, :5])
    with pytest.raises(ConfigError, match='model.init_vectors.*5-dimensional'):
        trainer.Trainer(config, str(tmp_path / 'run2'))
    config.model.init_vectors = str(tmp_path / 'missing.txt')
    with pytest.raises(DataError, match='missing.txt does not exist'):
        trainer.Trainer(config, str(tmp_path / 'run3'))
    config.model.init_vectors = ''

    # The other files are read at the start too, each named with its key
    # (the similarity files were read at the first evaluation, after training).
    config.data.similarity.simlex = str(tmp_path / 'no_simlex.txt')
    with pytest.raises(DataError, match=r'data.similarity.simlex: .*no_simlex.txt'):
        trainer.Trainer(config, str(tmp_path / 'run4'))
    config.data.corpus = str(tmp_path / 'no_corpus.txt')
    with pytest.raises(DataError, match=r'^data.corpus: .*no_corpus.txt'):
        trainer.Trainer(config, str(tmp_path / 'run5'))
    config.data.sst2_dir = str(tmp_path / 'no_sst2')
    with pytest.raises(DataError, match=r'no_sst2 is not a folder \(data.sst2_dir'):
        trainer.Trainer(config, str(tmp_path / 'run6'))


def test_skipgram_pair_distances_follow_word2vecs_reduced_window():
    """word2vec takes every context within a window b ~ U{1..W}: distance d
    is seen with probability (W - d + 1) / sum; the sampler draws the same."""
    n, window = 5000, 5
    sampler = multitask_data.SkipgramPairs(
        np.arange(2, n + 2, dtype=np.int32),  # Token id - 2 is its position.
        np.zeros(n, np.int64),  # One long sentence.
        np.ones(n, np.int64),
        offset=2,
        pairs=1000,
        negatives=1,
        window=window,
        sample=0.0,
        seed=0,
        table_size=1000,
    )
    gaps = []
    for step in range(40):
        a = sampler.at(step)
        gaps.append(np.abs(a['sg_input'] - a['sg_target'])[a['sg_where']])
    freq = np.bincount(np.concatenate(gaps), minlength=window + 1)[1:]
    reach = np.arange(window, 0, -1)
    np.testing.assert_allclose(freq / freq.sum(), reach / reach.sum(), atol=0.01)


def test_word_similarity_logs_the_share_of_pairs_left_out(tmp_path):
    """Spearman over the pairs whose words are known, with the share left
    out beside it: runs with other vocabularies score other pairs."""
    import types

    from jaxdistill.evaluation import word_similarity
    from jaxdistill.tasks import multitask as multitask_task

    path = tmp_path / 'sim.tsv'
    path.write_text('a\tb\t1.0\na\tc\t2.0\nb\tc\t3.0\na\tzzz\t4.0\n')
    vectors = np.array([[0, 0], [0, 0], [1, 0], [1, 0.2], [0, 1]], np.float32)
    task = types.SimpleNamespace(  # Read at the task's start: data.similarity.
        _similarity={'sim': word_similarity.read_pairs(path)},
        index={'a': 2, 'b': 3, 'c': 4},
    )
    out = multitask_task.MT2STSST2Task.word_similarity(task, {'embed': vectors})
    assert out['eval/sim_oov_fraction'] == 0.25
    # Cosines a-b 0.98, a-c 0, b-c 0.2 against scores 1, 2, 3: ranks 3,1,2
    # against 1,2,3.
    np.testing.assert_allclose(out['eval/sim'], -0.5)


def test_brown_contractions_split_as_sst2_splits_them():
    from jaxdistill.tasks import multitask as multitask_task

    brown = "i didn't say it's atlanta's , can't o'clock ''".split()
    assert multitask_task.split_contractions(brown) == [
        'i', 'did', "n't", 'say', 'it', "'s", 'atlanta', "'s", ',', 'ca', "n't",
        "o'clock", "''",
    ]  # fmt: skip


def test_method_threshold_drops_a_diminishing_task():
    # 0.5^(2^e) for e = 0..3: 0.5, 0.25, 0.0625, 0.0039 <= 0.01 from step 30.
    method = _method(
        {'kind': 'diminish', 'init': 0.5, 'steps_per_epoch': 10}, threshold=0.01
    )
    assert method.off_steps == {'skipgram': 30}
    assert [method.phase(s) for s in (29, 30)] == [('skipgram',), ()]
