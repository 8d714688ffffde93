"""Reinforced multi-teacher distillation: weights, policy, devices, cache, run."""

import functools
import os
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxdistill import configuration
from jaxdistill import losses
from jaxdistill import optim
from jaxdistill import sharding
from jaxdistill import teacher_cache
from jaxdistill import train_step
from jaxdistill.errors import ConfigError
from jaxdistill.methods import make_method
from jaxdistill.models import multi_exit
from jaxdistill.models import text_models
from tests.conftest import SHARED_DATA
from tests import helpers

CONFIG = str(pathlib.Path(__file__).resolve().parents[1] / 'configs' / 'rlkd_sst2.py')
B, L, K, V, D = 16, 6, 3, 40, 8


FNS = multi_exit.make_fns(
    text_models.BagOfEmbeddings(
        num_classes=2, vocab_size=V, embed_dim=D, hidden_dim=D, dropout_rate=0.0
    ),
    'tokens',
)


@functools.cache
def _params():
    """Student parameters (jitted: eager Flax init compiles op by op)."""
    return jax.jit(FNS.init)(jax.random.key(0), _batch())


def _method(**kw):
    options = dict(
        name='rl_multi_teacher',
        num_teachers=K,
        feature_dim=D,
        warmup_steps=0,
        pretrain_steps=0,
        policy_every=1,
        policy_learning_rate=0.05,
    )
    options.update(kw)
    return make_method(ml_collections.ConfigDict(options), FNS)


def _batch(seed=0):
    """Teacher 0 is right and confident, 1 is wrong, 2 is unsure."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, B).astype(np.int32)
    gold = np.eye(2, dtype=np.float32)[label] * 2 - 1  # +1 on the gold class.
    teacher = np.stack([3 * gold, -3 * gold, 0.1 * gold], axis=1)
    return {
        'tokens': rng.integers(1, V, (B, L)).astype(np.int32),
        'label': label,
        'teacher_logits': teacher.astype(np.float32),
    }


def test_weights_normalise_over_selected_with_fallbacks():
    probs = jnp.array([[0.9, 0.5, 0.2], [0.3, 0.6, 0.1], [0.3, 0.6, 0.1]])
    actions = jnp.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    select = _method(fallback='all').weights(probs, actions)
    np.testing.assert_allclose(select[0], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(select[1], [1 / 3] * 3, rtol=1e-6)
    np.testing.assert_allclose(select[2], [0.0, 0.0, 1.0])
    soft = _method(weighting='soft', fallback='argmax').weights(probs, actions)
    np.testing.assert_allclose(soft[0], [0.9 / 1.4, 0.5 / 1.4, 0.0], rtol=1e-6)
    np.testing.assert_allclose(soft[1], [0.0, 1.0, 0.0])
    none = _method(fallback='none').weights(probs, actions)
    np.testing.assert_allclose(none[1], [0.0, 0.0, 0.0])


def test_loss_is_ce_plus_weighted_teacher_kl_in_equal_phase():
    method = _method(weighting='equal', alpha=0.25, temperature=2.0)
    batch, params = _batch(), _params()
    extra = method.init_extra(None, params)
    loss, aux, logits = jax.jit(
        lambda p, e: (
            *method.loss(p, e, batch, jax.random.key(2), 0, 'equal'),
            method.model.apply(p, batch, train=False),
        )
    )(params, extra)
    ce = losses.cross_entropy(logits, batch['label'])
    kl = [
        losses.distill_kl(logits, batch['teacher_logits'][:, k], temperature=2.0)
        for k in range(K)
    ]
    expected = np.mean(0.75 * ce + 0.25 * sum(kl) / K)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert float(aux['train/weight_t1']) == pytest.approx(1 / K)


def test_every_phase_reports_the_same_metric_keys():
    """The trainer averages a window of steps: keys may not depend on phase."""
    method = _method()
    batch, params = _batch(), _params()
    extra = method.init_extra(None, params)
    keys = []
    for phase in ('equal', 'act', 'learn'):

        def run(params, extra, phase=phase):
            _, aux = method.loss(params, extra, batch, jax.random.key(2), 0, phase)
            extra = method.update_extra(extra, params, aux, 0, phase=phase)
            return aux, extra

        aux, new_extra = jax.eval_shape(run, params, extra)
        keys.append(sorted(aux))
        assert jax.tree.structure(new_extra) == jax.tree.structure(extra)
    assert keys[0] == keys[1] == keys[2]
    assert 'train/weight_conf_corr_t2' in keys[0] and '_rl' not in keys[2]


def test_phase_schedule():
    m = _method(warmup_steps=3, pretrain_steps=2, policy_every=3)
    phases = [m.phase(s) for s in range(11)]
    assert phases == ['equal'] * 3 + ['learn'] * 2 + ['learn', 'act', 'act'] * 2
    assert {_method(weighting='equal').phase(s) for s in range(5)} == {'equal'}


def test_microbatches_are_refused():
    # The policy update replays the whole batch's forward: no accumulation.
    from jaxdistill import train_step

    train_step.check_microbatches(_method(), 1)
    with pytest.raises(ConfigError, match='microbatches=2: method RLMultiTeacher'):
        train_step.check_microbatches(_method(), 2)


def test_config_errors():
    with pytest.raises(ConfigError, match='method.reward'):
        _method(reward='accuracy')
    with pytest.raises(ConfigError, match='method.weighting'):
        _method(weighting='hard')
    for options, match in [
        ({'baseline_decay': 1.0}, r'baseline_decay=1.0 must be in \[0, 1\)'),
        ({'warmup_steps': -1}, 'warmup_steps=-1 must be >= 0'),
        ({'temperature': 0.0}, 'method.temperature must be > 0'),
        ({'alpha': -0.1}, 'method.alpha must be >= 0 and <= 1'),
        (
            {'policy_learning_rate': float('inf')},
            'policy_learning_rate=inf must be a finite number >= 0',
        ),
    ]:
        with pytest.raises(ConfigError, match=match):
            _method(**options)
    method = _method(num_teachers=2)
    batch, params = _batch(), _params()
    with pytest.raises(ConfigError, match='num_teachers=2'):
        method.loss(
            params, method.init_extra(None, params), batch, jax.random.key(0), 0
        )


def test_eight_devices_match_one_device():
    """The shared train step gives the same loss, weights and REINFORCE update
    on 8 devices as on 1 (and update_extra keeps the private aux out)."""
    method = _method(reward='neg_ce_kd')
    tx = optim.make_optimizer(
        ml_collections.ConfigDict(
            {
                'name': 'sgd',
                'learning_rate': 0.5,
                'schedule': 'constant',
                'warmup_steps': 0,
                'total_steps': 10,
                'grad_clip_norm': 0.0,
            }
        )
    )
    params = _params()
    state = jax.device_get(  # Host copies: the step donates its input.
        train_step.TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            extra=method.init_extra(None, params),
            rng=jax.random.key_data(jax.random.key(3)),
        )
    )
    results = []
    for devices in (jax.devices()[:8], jax.devices()[:1]):
        mesh = sharding.make_mesh(1, devices=devices)
        replicated = jax.tree.map(lambda _: sharding.replicated(mesh), state)
        bs = sharding.batch_sharding(mesh)
        step = train_step.make_train_step(
            method, tx, state_sharding=replicated, batch_sharding=bs
        )
        new, aux = step(
            jax.device_put(state, replicated),
            sharding.global_batch(_batch(), bs),
            'learn',
        )
        results.append(jax.device_get((aux, new.extra)))
    (a8, e8), (a1, e1) = results
    assert '_rl' not in a8  # update_extra consumed the private data.
    for key in ('train/loss', 'train/weight_t0', 'train/weight_t2', 'train/baseline'):
        np.testing.assert_allclose(a8[key], a1[key], rtol=1e-5, atol=1e-8)
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-7), e8, e1
    )
    assert float(np.abs(e8['policy']['w']).sum()) > 0  # The policy moved.


def test_reinforce_learns_to_prefer_the_helpful_teacher():
    """Teacher 0 is right, 1 wrong: the policy learns to select 0, not 1."""
    method = _method(reward='neg_ce', policy_learning_rate=0.1, alpha=0.9)
    batches = [_batch(i) for i in range(150)]
    batches = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
    params = _params()
    extra = method.init_extra(None, params)

    def step(carry, batch):
        params, extra, i = carry
        grads, aux = jax.grad(method.loss, has_aux=True)(
            params, extra, batch, jax.random.key(i), i, 'learn'
        )
        params = jax.tree.map(lambda p, g: p - 0.5 * g, params, grads)
        extra = method.update_extra(extra, params, aux, i, phase='learn')
        return (params, extra, i + 1), aux['train/weight_t0'] - aux['train/weight_t1']

    (_, extra, _), gaps = jax.jit(lambda c, b: jax.lax.scan(step, c, b))(
        (params, extra, 0), batches
    )
    states = method.policy_states(
        jnp.zeros((1, D)),
        jnp.asarray(batches['teacher_logits'][0, :1]),
        jnp.asarray(batches['label'][0, :1]),
        jnp.zeros((1, K)),
    )
    probs = np.asarray(method.select_probs(extra['policy'], states))[0]
    assert probs[0] > 0.6 > 0.4 > probs[1], probs
    assert np.mean(gaps[-20:]) > np.mean(gaps[:20]) + 0.1


def test_gather_batcher_gives_the_plain_batches_plus_gathered_rows():
    from jaxdistill.data import images

    rng = np.random.default_rng(0)
    tokens, labels = rng.integers(0, 9, (50, 4)), rng.integers(0, 2, 50)
    extra = rng.normal(size=(50, 3, 2)).astype(np.float32)
    plain = images.ImageBatcher(tokens, labels, batch_size=8, seed=3, key='tokens')
    ids = images.ImageBatcher(np.arange(50), labels, batch_size=8, seed=3, key='index')
    gathered = teacher_cache.GatherBatcher(ids, {'tokens': tokens, 'extra': extra})
    gathered.set_position({'epoch': 1, 'index': 2})
    plain.set_position({'epoch': 1, 'index': 2})
    for _ in range(8):  # Across an epoch boundary.
        a, b = next(plain), next(gathered)
        np.testing.assert_array_equal(a['tokens'], b['tokens'])
        np.testing.assert_array_equal(a['label'], b['label'])
        np.testing.assert_array_equal(b['extra'], extra[b['index']])
    assert gathered.position == plain.position


# Teacher runs held in memory: workdir -> (config, params, step). Reading a
# real checkpoint is `checkpoint.read_state` (tested with the checkpoints); the
# benchmark reads real teacher runs. Orbax costs seconds a call here.
RUNS = {}


@functools.cache
def _teacher_shapes():
    """(config, parameter shapes) of a tiny bag-of-embeddings teacher run."""
    from jaxdistill.tasks import classification

    config = configuration.load_config(CONFIG + ':arm=student,runlocal')
    config.data.data_dir = str(SHARED_DATA / 'sst2')
    model = classification.build_model(
        config.model, num_classes=2, vocab_size=config.data.vocab_size, max_len=24
    )
    tokens = np.ones((1, 24), np.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, train=False))
    return config, shapes['params']


def _set_teacher(workdir, step, seed):
    """Stands in for a finished teacher run in `workdir` at `step`."""
    config, shapes = _teacher_shapes()
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda x: rng.normal(0, 0.5, x.shape).astype(x.dtype), shapes)
    RUNS[workdir] = (config, params, step)


@pytest.fixture
def teacher(tmp_path, monkeypatch):
    if not SHARED_DATA.is_dir():
        pytest.skip(f'real data folder {SHARED_DATA} is absent')
    workdir = str(tmp_path / 'teacher')
    _set_teacher(workdir, 1, seed=0)
    monkeypatch.setattr(teacher_cache, 'load_teacher', RUNS.__getitem__)
    return workdir


def test_task_from_config_carries_cached_teacher_logits(teacher):
    """Config -> text_classification task -> teacher logits in every batch."""
    from jaxdistill.tasks import classification

    config = configuration.load_config(
        f'{CONFIG}:arm=rl,runlocal,teachers={teacher}+{teacher}'
    )
    config.data.data_dir = str(SHARED_DATA / 'sst2')
    task = classification.TextClassificationTask(config, '', sharding.make_mesh(1))
    batch = next(task.train_batches)
    assert batch['teacher_logits'].shape == (32, 2, 2)
    assert np.isfinite(batch['teacher_logits']).all()
    np.testing.assert_array_equal(
        batch['teacher_logits'][:, 0], batch['teacher_logits'][:, 1]
    )
    assert task.train_batches.position == {'epoch': 0, 'index': 1}
    # runlocal: max_len 24 words, so some sentences are cut, and counted.
    summary = task.data_summary()
    assert summary['unk_fraction'] > 0 and summary['eval_unk_fraction'] > 0
    assert summary['train_truncated'] > 0 and summary['eval_truncated'] > 0
    method = make_method(config.method, task.model_fns)
    params = jax.eval_shape(method.init_params, jax.random.key(0), batch)
    loss, aux = jax.eval_shape(
        lambda p: method.loss(
            p, method.init_extra(None, p), batch, jax.random.key(1), 0
        ),
        params,
    )
    assert loss.shape == () and 'train/weight_t1' in aux


def test_teacher_cache_is_keyed_by_checkpoint_and_data(teacher, monkeypatch):
    sentences = ['a great movie', 'not good at all', 'dull']
    first = teacher_cache.teacher_logits(teacher, sentences)
    calls = []
    forward = teacher_cache._teacher_forward
    monkeypatch.setattr(
        teacher_cache,
        '_teacher_forward',
        lambda *a, **k: calls.append(1) or forward(*a, **k),
    )
    np.testing.assert_array_equal(
        first, teacher_cache.teacher_logits(teacher, sentences)
    )
    assert calls == [] and first.shape == (3, 2)  # A hit.
    _set_teacher(teacher, 2, seed=1)  # A new checkpoint: recomputed, differs.
    changed = teacher_cache.teacher_logits(teacher, sentences)
    assert calls == [1] and not np.allclose(changed, first)
    assert len(os.listdir(os.path.join(teacher, 'logit_cache'))) == 1  # Stale gone.
    config = configuration.load_config(CONFIG + ':arm=teacher_cnn,runlocal')
    params = {'a': np.ones(2, np.float32)}
    key = teacher_cache.cache_key(params, sentences, config)
    assert key != teacher_cache.cache_key(params, sentences[:2], config)  # Data.
    assert key != teacher_cache.cache_key({'a': np.ones(2) * 2}, sentences, config)
    # Model code: a changed forward pass gives other logits from the same
    # parameters, so a cache written by older code is not read.
    monkeypatch.setattr(teacher_cache, 'code_fingerprint', lambda: 'edited')
    assert key != teacher_cache.cache_key(params, sentences, config)
    # A cache folder that cannot be written (here: below a file) costs the
    # cache, not the run.
    blocked = os.path.join(teacher, 'logit_cache', 'file')
    open(blocked, 'w').close()
    again = teacher_cache.teacher_logits(
        teacher, sentences, cache_dir=os.path.join(blocked, 'cache')
    )
    np.testing.assert_array_equal(again, changed)
    # A damaged cache file is only a cache: computed again, not a traceback.
    teacher_cache.teacher_logits(teacher, sentences)  # Cached under this key.
    cache = os.path.join(teacher, 'logit_cache')
    for damage in (lambda b: b[:100], lambda b: b[:-8]):
        (entry,) = [n for n in os.listdir(cache) if n.endswith('.npy')]
        with open(os.path.join(cache, entry), 'rb') as f:
            data = f.read()
        with open(os.path.join(cache, entry), 'wb') as f:
            f.write(damage(data))
        before = len(calls)
        np.testing.assert_array_equal(
            teacher_cache.teacher_logits(teacher, sentences), changed
        )
        assert len(calls) == before + 1  # Recomputed.


def test_a_teachers_vocabulary_is_read_as_it_is_now(tmp_path):
    """A teacher trained again in its folder has a new vocab.txt: an
    in-process cache served the old one; without vocab.txt the vocabulary is
    rebuilt with the teacher's own min_count."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f'real data folder {SHARED_DATA} is absent')
    from jaxdistill.data import sst2 as sst2_lib

    data = configuration.load_config(CONFIG + ':arm=teacher_cnn,runlocal').data
    data.data_dir = str(SHARED_DATA / 'sst2')
    data.vocab_size = 16000
    workdir = tmp_path / 'teacher'
    workdir.mkdir()
    (workdir / sst2_lib.VOCAB_FILE).write_text('good\nbad\n')
    assert teacher_cache._vocab(str(workdir), data) == {'good': 2, 'bad': 3}
    (workdir / sst2_lib.VOCAB_FILE).write_text('fine\n')
    assert teacher_cache._vocab(str(workdir), data) == {'fine': 2}
    (workdir / sst2_lib.VOCAB_FILE).unlink()
    train = sst2_lib.load_split(data.data_dir, 'train')[0]
    assert data.min_count == 2
    assert (
        teacher_cache._vocab(str(workdir), data)
        == sst2_lib.build_vocab(train, 16000, 2)
        != sst2_lib.build_vocab(train, 16000, 1)
    )


def test_sentencepiece_teacher_reads_its_own_pieces(tmp_path):
    """A teacher trained with data.tokenizer='sentencepiece' is given its own
    pieces (its spm.model), not word ids of a vocabulary rebuilt from SST-2."""
    from jaxdistill.data import sst2 as sst2_lib
    from jaxdistill.data import tokenizer as tokenizer_lib
    from jaxdistill.tasks import classification

    workdir = tmp_path / 'teacher'
    workdir.mkdir()
    texts = [
        'a great movie with a fine cast',
        'not good at all , a dull film',
        'the plot is thin but the acting is great',
        'a tedious , overlong and dull movie',
    ] * 5
    tok = tokenizer_lib.Tokenizer.train(texts, 40, workdir / 'spm.model')
    config = configuration.load_config(CONFIG + ':arm=teacher_cnn,runlocal')
    config.data.tokenizer = 'sentencepiece'
    config.data.vocab_size = tok.vocab_size
    config.data.data_dir = str(tmp_path / 'no_such_sst2')  # Never read.
    max_len = config.data.max_len
    model = classification.build_model(
        config.model, num_classes=2, vocab_size=tok.vocab_size, max_len=max_len
    )
    params = jax.jit(
        lambda: model.init(
            jax.random.key(3), np.ones((1, max_len), np.int32), train=False
        )['params']
    )()
    sentences = ['a great cast', 'a dull , thin plot', 'overlong']
    got = teacher_cache._teacher_forward(str(workdir), config, params, sentences, 2)
    ids = sst2_lib.pad_ids((tok.encode(s) for s in sentences), 3, max_len)
    want = model.apply({'params': params}, ids, train=False)['logits'][-1]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    (workdir / 'spm.model').unlink()
    with pytest.raises(ConfigError, match='spm.model'):
        teacher_cache._teacher_forward(str(workdir), config, params, sentences, 2)


def test_codistillation_teacher_is_read_as_its_replica_0(tmp_path):
    """A codistillation run's parameters are stacked [replicas, ...]; as a
    teacher it is the model it evaluates: replica 0."""
    from jaxdistill.data import sst2 as sst2_lib
    from jaxdistill.tasks import classification

    workdir = tmp_path / 'teacher'
    workdir.mkdir()
    words = ['a', 'great', 'movie', 'dull', 'plot', 'not', 'good']
    (workdir / sst2_lib.VOCAB_FILE).write_text(''.join(w + '\n' for w in words))
    config = configuration.load_config(CONFIG + ':arm=teacher_cnn,runlocal')
    config.data.vocab_size = len(words) + 2
    config.method = ml_collections.ConfigDict(
        {'name': 'codistill', 'num_replicas': 2, 'burn_in_steps': 4}
    )
    max_len = config.data.max_len
    model = classification.build_model(
        config.model, num_classes=2, vocab_size=len(words) + 2, max_len=max_len
    )
    init = jax.jit(
        lambda key: model.init(key, np.ones((1, max_len), np.int32), train=False)[
            'params'
        ]
    )
    one, two = init(jax.random.key(0)), init(jax.random.key(1))
    stacked = jax.tree.map(lambda a, b: np.stack([a, b]), one, two)
    sentences = ['a great movie', 'not good , a dull plot']
    got = teacher_cache._teacher_forward(str(workdir), config, stacked, sentences, 2)
    ids = sst2_lib.encode(sentences, {w: i + 2 for i, w in enumerate(words)}, max_len)
    want = model.apply({'params': one}, ids, train=False)['logits'][-1]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', ['cnn_text', 'bilstm_text', 'bag_of_embeddings'])
def test_text_teachers_ignore_padding(name):
    """A sentence's logits do not depend on how much padding follows it nor
    on the (trained) PAD row: the CNN's convolutions read PAD as zeros."""
    cls = {
        'cnn_text': text_models.CNNText,
        'bilstm_text': text_models.BiLSTMText,
        'bag_of_embeddings': text_models.BagOfEmbeddings,
    }[name]
    model = cls(num_classes=2, vocab_size=V, dropout_rate=0.0)
    short = jnp.array([[5, 6, 7, 8, 0, 0]], jnp.int32)
    long = jnp.array([[5, 6, 7, 8, 0, 0, 0, 0, 0, 0]], jnp.int32)
    params = jax.jit(lambda k: model.init(k, long, train=False))(jax.random.key(0))
    run = jax.jit(lambda p, x: model.apply(p, x, train=False)['logits'][-1])
    want = run(params, short)
    np.testing.assert_allclose(run(params, long), want, atol=1e-5)
    table = params['params']['Embed_0']['embedding']
    moved = jax.tree.map(lambda x: x, params)
    moved['params']['Embed_0']['embedding'] = table.at[0].add(1.0)
    np.testing.assert_allclose(run(moved, short), want, atol=1e-5)


def test_cnn_pooled_mt2st_head_ignores_padding():
    from jaxdistill.models import multitask as multitask_model

    head = multitask_model.PooledClassifier(pooling='cnn', num_filters=8)
    rng = np.random.default_rng(0)
    embedded = jnp.asarray(rng.normal(size=(1, 10, 6)), jnp.float32)
    mask = jnp.arange(10)[None] < 4
    params = head.init(jax.random.key(0), embedded, mask, train=False)
    want = head.apply(params, embedded, mask, train=False)
    # Whatever the padded positions hold, the sentence's logits are the same.
    noisy = embedded.at[:, 4:].add(3.0)
    np.testing.assert_allclose(
        head.apply(params, noisy, mask, train=False), want, atol=1e-5
    )


def test_a_resumed_student_keeps_the_teacher_logits_it_started_with(
    tmp_path, monkeypatch
):
    """A teacher that trains on (or moves) between a student's stop and its
    resume must not change what the student learns from: the logits are
    frozen in the student's workdir at its start, and read back once it has
    a checkpoint."""
    version = {'t': 1.0}
    calls = []

    def logits(workdir, sentences, cache_dir=''):
        calls.append(workdir)
        return np.full((len(sentences), 2), version['t'], np.float32)

    monkeypatch.setattr(teacher_cache, 'teacher_logits', logits)
    student = tmp_path / 'student'
    student.mkdir()
    tokens, labels = np.ones((3, 4), np.int32), np.array([0, 1, 0], np.int32)
    sentences = ['a', 'b', 'c']

    def first_batch(teachers=('t0', 't1'), read=sentences):
        batcher = teacher_cache.with_teacher_logits(
            tokens, labels, read, teachers, batch_size=3, seed=0,
            student_workdir=str(student),
            frozen=teacher_cache.frozen_logits(str(student), teachers, read),
        )  # fmt: skip
        return float(next(batcher)['teacher_logits'][0, 0, 0])

    assert first_batch() == 1.0 and len(calls) == 2
    version['t'] = 2.0  # No checkpoint yet: a fresh start reads them again.
    assert first_batch() == 2.0 and len(calls) == 4
    (student / 'checkpoints' / '5').mkdir(parents=True)
    version['t'] = 3.0  # Resumed: the frozen logits, no teacher read.
    assert first_batch() == 2.0 and len(calls) == 4
    assert teacher_cache.frozen_logits(str(student), ('t0', 't1'), sentences).shape == (
        3,
        2,
        2,
    )
    # Other teachers or other sentences are not what was frozen.
    assert first_batch(teachers=('t0',)) == 3.0 and len(calls) == 5
    assert first_batch(read=['a', 'b', 'x']) == 3.0
    # A damaged frozen file (cut short) reads the teachers again, with a
    # warning (it raised zipfile.BadZipFile).
    frozen = student / teacher_cache.FROZEN
    frozen.write_bytes(frozen.read_bytes()[:300])
    assert teacher_cache.frozen_logits(str(student), ('t0', 't1'), sentences) is None


def test_policy_states_by_hand():
    # Columns: the feature, the teacher's probabilities, its CE on the gold
    # label and KL / T² (the T²-scaled KL divided back), both capped at 10.
    method = _method(temperature=2.0)
    batch = _batch()
    feature = np.random.default_rng(3).normal(size=(B, D)).astype(np.float32)
    kl = np.random.default_rng(4).uniform(0, 60, size=(B, K)).astype(np.float32)
    states = np.asarray(
        method.policy_states(
            jnp.asarray(feature),
            jnp.asarray(batch['teacher_logits']),
            jnp.asarray(batch['label']),
            jnp.asarray(kl),
        )
    )
    log_p = helpers.np_log_softmax(batch['teacher_logits'])  # [B, K, 2]
    gold = np.take_along_axis(log_p, batch['label'][:, None, None], -1)[..., 0]
    assert states.shape == (B, K, D + 2 + 2)
    np.testing.assert_allclose(states[..., :D], np.repeat(feature[:, None], K, 1))
    np.testing.assert_allclose(states[..., D : D + 2], np.exp(log_p), rtol=1e-5)
    np.testing.assert_allclose(
        states[..., D + 2], np.minimum(-gold, 10), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(states[..., D + 3], np.minimum(kl / 4.0, 10), rtol=1e-5)


def test_rewards_by_hand():
    # Each reward kind against numpy: the change from the stored 'before'
    # values to the updated student's values on the same batch.
    batch, params = _batch(), _params()
    logits = np.asarray(FNS.apply(params, batch, train=False), np.float64)
    log_s = helpers.np_log_softmax(logits)
    ce_after = -np.take_along_axis(log_s, batch['label'][:, None], -1)[:, 0]
    rng = np.random.default_rng(5)
    w = rng.dirichlet(np.ones(K), size=B).astype(np.float32)
    private = {
        'batch': batch,
        'rng': jax.random.key_data(jax.random.key(0)),
        'weights': jnp.asarray(w),
        'ce': jnp.asarray(rng.uniform(0, 2, B), jnp.float32),
        'kd': jnp.asarray(rng.uniform(0, 2, B), jnp.float32),
        'correct': jnp.zeros(B, jnp.float32),  # None right before the step.
    }
    t = 2.0
    log_p = helpers.np_log_softmax(batch['teacher_logits'] / t)
    log_q = helpers.np_log_softmax(logits / t)[:, None, :]
    kl_after = t**2 * (np.exp(log_p) * (log_p - log_q)).sum(-1)  # [B, K]
    kd_after = (w * kl_after).sum(-1)
    ce, kd = np.asarray(private['ce']), np.asarray(private['kd'])
    acc_after = np.mean(logits.argmax(-1) == batch['label'])
    assert acc_after > 0
    expected = {
        'neg_ce': ce - ce_after,
        'neg_ce_kd': ce + kd - ce_after - kd_after,
        'dev_acc': np.full(B, acc_after - np.mean(private['correct'])),
    }
    for reward, want in expected.items():
        got = _method(reward=reward, temperature=t).rewards(params, private)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=reward)


def test_reinforce_update_subtracts_the_baseline(monkeypatch):
    # With zero states only the policy's biases move. Adam's first step is
    # -lr · sign(g) with g = -mean_i (r_i - b)·(a_ik - p_k), p = sigmoid(bias):
    # the baseline b here is above every reward, which flips the sign of g
    # for teachers selected more often than not. The baseline then moves
    # to d·b + (1 - d)·mean(r).
    lr, d, b0 = 0.05, 0.9, 3.0
    method = _method(policy_learning_rate=lr, baseline_decay=d)
    rng = np.random.default_rng(6)
    reward = rng.uniform(0.0, 2.0, B)
    actions = (rng.random((B, K)) < [0.9, 0.1, 0.8]).astype(np.float32)
    monkeypatch.setattr(
        type(method), 'rewards', lambda self, params, private: jnp.asarray(reward)
    )
    extra = method.init_extra(None, None)
    extra['baseline'] = jnp.float32(b0)
    aux = {
        '_rl': {
            'batch': _batch(),
            'states': jnp.zeros((B, K, method.state_dim), jnp.float32),
            'actions': jnp.asarray(actions),
        }
    }
    new = method.update_extra(extra, _params(), aux, 0, phase='learn')
    p = 0.5  # init_select_prob
    g = -np.mean((reward - b0)[:, None] * (actions - p), axis=0)
    np.testing.assert_allclose(
        new['policy']['b'], np.log(p / (1 - p)) - lr * np.sign(g), atol=1e-6
    )
    np.testing.assert_allclose(new['policy']['w'], 0.0)
    np.testing.assert_allclose(
        new['baseline'], d * b0 + (1 - d) * reward.mean(), rtol=1e-6
    )
    np.testing.assert_allclose(aux['train/baseline'], new['baseline'])


def test_stage_counts_warmup_then_pretraining():
    m = _method(warmup_steps=3, pretrain_steps=2, policy_every=3)
    assert [m.stage(s) for s in range(8)] == [0, 0, 0, 1, 1, 2, 2, 2]
    assert {_method(weighting='equal').stage(s) for s in range(5)} == {0}
