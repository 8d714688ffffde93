"""Codistillation: stacked replicas, stale peers, exchange only every K steps."""

import json
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxdistill import losses
from jaxdistill import optim
from jaxdistill import sharding
from jaxdistill import train_step
from jaxdistill.errors import ConfigError
from jaxdistill.methods import make_method
from jaxdistill.models.transformer import Transformer, TransformerConfig
from jaxdistill.tasks.translation import transformer_fns
from tests import helpers
from tests.test_train_step import _batch

COLLECTIVES = (
    'all-reduce',
    'all-gather',
    'collective-permute',
    'all-to-all',
    'reduce-scatter',
)


def _config(num_heads=2):
    return TransformerConfig(
        vocab_size=50,
        d_model=32,
        num_heads=num_heads,
        d_ff=64,
        num_encoder_layers=1,
        num_decoder_layers=1,
        dropout_rate=0.0,
    )


def _fns():
    return transformer_fns(Transformer(_config()))


def _method(**kw):
    cfg = ml_collections.ConfigDict(
        dict(name='codistill', num_replicas=2, burn_in_steps=2, exchange_every=3, **kw)
    )
    return make_method(cfg, _fns())


def _setup(method, mesh, microbatches=1, shard_params=False):
    tx = optim.make_optimizer(
        ml_collections.ConfigDict(
            dict(
                name='sgd',
                learning_rate=0.5,
                schedule='constant',
                warmup_steps=0,
                total_steps=10,
                grad_clip_norm=1.0,
            )
        ),
        stacked=True,
    )
    init, state_sharding, _ = train_step.make_init(
        method,
        tx,
        _batch(),
        mesh,
        seed=0,
        shard_params=shard_params,
        shard_min_size=1024,
    )
    bs = sharding.batch_sharding(mesh)
    step = train_step.make_train_step(
        method,
        tx,
        state_sharding=state_sharding,
        batch_sharding=bs,
        microbatches=microbatches,
    )
    return init(), step, bs


def test_config_errors():
    with pytest.raises(ConfigError, match='method.distance'):
        _method(distance='l2')
    with pytest.raises(ConfigError, match='num_replicas >= 2'):
        make_method(
            ml_collections.ConfigDict(dict(name='codistill', num_replicas=1)), _fns()
        )
    with pytest.raises(ConfigError, match='burn_in_steps=-1 must be >= 0'):
        make_method(
            ml_collections.ConfigDict({'name': 'codistill', 'burn_in_steps': -1}),
            _fns(),
        )
    with pytest.raises(ConfigError, match='method.temperature must be > 0'):
        make_method(
            ml_collections.ConfigDict({'name': 'codistill', 'temperature': 0.0}),
            _fns(),
        )
    with pytest.raises(ConfigError, match='exchange_evry'):
        make_method(
            ml_collections.ConfigDict(dict(name='codistill', exchange_evry=1)), _fns()
        )


def test_distillation_term_for_two_replicas_is_kl_to_the_other():
    method = _method(temperature=2.0)
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2, 3, 5, 7)), jnp.float32)
    other = jnp.asarray(rng.normal(size=(1, 2, 3, 5, 7)), jnp.float32)
    where = jnp.asarray(rng.random((2, 3, 5)) > 0.3)
    got = method.distillation(logits, other, where)  # [N-1=1, N, B, L, V] peers
    for r in range(2):
        kl = losses.distill_kl(logits[r], other[0, r], temperature=2.0, where=where[r])
        np.testing.assert_allclose(got[r], losses.masked_mean(kl, where[r]), rtol=1e-5)


def test_distillation_target_is_the_peers_mean_probability():
    # Three replicas: each distils towards the mean of two peers' tempered
    # probabilities; extreme logits (probabilities that underflow) stay finite.
    t = 2.0
    cfg = dict(name='codistill', num_replicas=3, temperature=t)
    method = make_method(ml_collections.ConfigDict(cfg), _fns())
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(3, 4, 6)), jnp.float32)
    peers = jnp.asarray(rng.normal(size=(2, 3, 4, 6)) * 60.0, jnp.float32)
    where = jnp.ones((3, 4), bool)
    got = method.distillation(logits, peers, where)

    # Reference in float64 numpy (jax would compute in float32).
    def log_softmax(x):
        x = np.asarray(x, np.float64) / t
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    p = np.mean(np.exp(log_softmax(peers)), axis=0)
    q = log_softmax(logits)
    with np.errstate(divide='ignore', invalid='ignore'):
        kl = np.where(p > 0, p * (np.log(p) - q), 0.0).sum(-1) * t**2
    np.testing.assert_allclose(got, kl.mean(-1), rtol=1e-4)
    assert np.all(np.isfinite(np.asarray(got)))


def test_replicas_differ_stale_copies_refresh_only_on_exchange():
    mesh = sharding.make_mesh(replica_axis_size=2)
    method = _method()
    state, step, bs = _setup(method, mesh)
    p = jax.device_get(state.params)
    # Own init seed per replica: every random-initialised kernel differs.
    kernels = [x for x in jax.tree.leaves(p) if np.std(x[0]) > 0]
    assert kernels and all(not np.allclose(x[0], x[1]) for x in kernels)
    spec = jax.tree.leaves(state.params)[0].sharding.spec
    assert spec[0] == 'replica'
    phases = [method.phase(i) for i in range(7)]
    assert phases == ['burn_in'] * 2 + ['distil'] * 5
    refresh = [method.refresh_due(i) for i in range(7)]
    assert refresh == [
        False,
        True,  # Refresh right before distillation starts.
        True,  # (2 + 1) % 3 == 0
        False,
        False,
        True,
        False,
    ]
    # During a longer burn-in the copies are not refreshed (nothing reads them).
    long = make_method(
        ml_collections.ConfigDict(
            dict(name='codistill', num_replicas=2, burn_in_steps=7, exchange_every=3)
        ),
        _fns(),
    )
    assert [long.refresh_due(i) for i in range(9)] == [False] * 6 + [True] + [
        False,
        True,
    ]
    for i in range(6):
        before = jax.device_get(state.extra['stale'])
        state, aux = step(
            state, sharding.global_batch(_batch(seed=i), bs), phases[i], refresh[i]
        )
        params = jax.device_get(state.params)
        stale = jax.device_get(state.extra['stale'])
        same_as_params = all(
            jax.tree.leaves(jax.tree.map(np.array_equal, stale, params))
        )
        unchanged = all(jax.tree.leaves(jax.tree.map(np.array_equal, stale, before)))
        assert same_as_params == refresh[i], i
        assert unchanged == (not refresh[i]), i
        assert ('train/distill' in aux) == (phases[i] == 'distil')
        assert aux['train/loss'].shape == (2,)
    # Two phases, and one refresh program whatever the batch shapes.
    assert set(step.compiled) == {'burn_in', 'distil'}


def _groups(line):
    """Device groups of one HLO collective, as lists of logical ids."""
    m = re.search(
        r'replica_groups=\[(\d+),(\d+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?', line
    )
    if m:
        g, s = int(m.group(1)), int(m.group(2))
        dims = [int(x) for x in m.group(3).split(',')]
        ids = np.arange(np.prod(dims)).reshape(dims)
        if m.group(4):
            ids = ids.transpose([int(x) for x in m.group(4).split(',')])
        return ids.reshape(g, s).tolist()
    # Newer XLA: the mesh's axes and the ones the collective runs over,
    # replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_0'}, the devices in
    # iota order unless device_ids gives them (a list, or an iota
    # `[dims]T(perm)` like the format above).
    m = re.search(
        r'replica_groups=mesh\[([^\]]*)\],?'
        r'(?:\s*device_ids=\((\[[\d,]+\](?:T\([\d,]+\))?|[\d, ]+)\))?'
        r'\s*\{([^}]*)\}',
        line,
    )
    if m:
        axes = re.findall(r"'([^']+)'=(\d+)", m.group(1))
        names, sizes = [a for a, _ in axes], [int(n) for _, n in axes]
        ids = np.arange(int(np.prod(sizes)))
        iota = re.fullmatch(r'\[([\d,]+)\](?:T\(([\d,]+)\))?', m.group(2) or '')
        if iota:
            dims = [int(x) for x in iota.group(1).split(',')]
            ids = ids.reshape(dims)
            if iota.group(2):
                ids = ids.transpose([int(x) for x in iota.group(2).split(',')])
            ids = ids.reshape(-1)
        elif m.group(2):
            ids = np.array([int(x) for x in m.group(2).replace(' ', '').split(',')])
        over = [names.index(a) for a in re.findall(r"'([^']+)'", m.group(3))]
        rest = [i for i in range(len(sizes)) if i not in over]
        size = int(np.prod([sizes[i] for i in over]))
        return ids.reshape(sizes).transpose(rest + over).reshape(-1, size).tolist()
    m = re.search(r'(?:replica_groups|source_target_pairs)=\{(\{[\d,{}]*\})\}', line)
    if m:
        return [
            [int(x) for x in grp.split(',') if x]
            for grp in re.findall(r'\{([\d,]*)\}', m.group(1))
        ]
    # No groups listed (or `{}`): every device, XLA's meaning. A format this
    # does not know fails loudly rather than being read as all devices.
    listed = re.search(r'(?:replica_groups|source_target_pairs)=(\S*)', line)
    assert listed is None or listed.group(1).rstrip(',') == '{}', (
        f'unparsed device groups: {line[:300]}'
    )
    return [list(range(8))]


def _elements(line):
    head = line.split('=', 1)[1]
    head = head[: min(head.find(op) for op in COLLECTIVES if op in head)]
    return sum(
        int(np.prod([int(d) for d in dims.split(',') if d] or [1]))
        for dims in re.findall(r'[a-z]\d*\[([\d,]*)\]', head)
    )


def _cross_replica_traffic(hlo: str, per_replica: int = 4) -> list[int]:
    """Element counts of collectives whose groups span several replicas."""
    out = []
    for line in hlo.splitlines():
        line = line.strip()
        if '=' not in line or not any(
            f' {op}(' in line or f' {op}-start(' in line for op in COLLECTIVES
        ):
            continue
        if any(len({i // per_replica for i in g}) > 1 for g in _groups(line)):
            out.append(_elements(line))
    return out


def test_device_groups_read_from_each_hlo_format():
    assert _groups('x, replica_groups=[2,4]<=[8], dimensions') == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
    ]
    assert _groups('x, replica_groups=[4,2]<=[2,2,2]T(0,2,1), y') == [
        [0, 2],
        [1, 3],
        [4, 6],
        [5, 7],
    ]
    assert _groups('x, replica_groups={{0,4},{1,5}}, y') == [[0, 4], [1, 5]]
    mesh = "replica_groups=mesh['axis_0'=2,'axis_1'=1,'axis_3'=4]"
    assert _groups(f"x, {mesh} {{'axis_0'}}, dimensions={{0}}") == [
        [0, 4],
        [1, 5],
        [2, 6],
        [3, 7],
    ]
    assert _groups(f"x, {mesh} {{'axis_3'}}, y") == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # Devices as an iota: [2,2,2] transposed (0,2,1) is 0,2,1,3,4,6,5,7.
    mesh = "replica_groups=mesh['a'=2,'b'=2,'c'=2], device_ids=([2,2,2]T(0,2,1))"
    assert _groups(f"x, {mesh} {{'b'}}, y") == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert _groups(f"x, {mesh} {{'c'}}, y") == [[0, 2], [1, 3], [4, 6], [5, 7]]
    with pytest.raises(AssertionError, match='unparsed device groups'):
        _groups('x, replica_groups=something_new, y')


def test_compiled_hlo_moves_weights_between_groups_only_when_exchanging():
    mesh = sharding.make_mesh(replica_axis_size=2)
    method = _method()
    state, step, bs = _setup(method, mesh)
    batch = sharding.global_batch(_batch(), bs)
    n_params = sum(int(np.prod(x.shape[1:])) for x in jax.tree.leaves(state.params))
    traffic = {}
    with jax.set_mesh(mesh):
        for phase in ['burn_in', 'distil']:
            hlo = step.build(phase).lower(state, batch).compile().as_text()
            traffic[phase] = _cross_replica_traffic(hlo)
        hlo = step.refresh_fn.lower(state).compile().as_text()
        traffic['exchange'] = _cross_replica_traffic(hlo)
    # Plain and distilling steps: at most metric scalars cross groups.
    for phase in ['burn_in', 'distil']:
        assert all(n <= 2 for n in traffic[phase]), (phase, traffic[phase])
    # The exchange gathers every replica's weights across groups.
    assert sum(traffic['exchange']) >= n_params, (traffic['exchange'], n_params)


def _split(batch, n=2):
    """The global batch's rows as the n replica blocks (contiguous)."""
    rows = batch['inputs'].shape[0] // n
    return [
        {k: v[r * rows : (r + 1) * rows] for k, v in batch.items()} for r in range(n)
    ]


def test_prediction_exchange_distils_towards_peers_current_predictions():
    mesh = sharding.make_mesh(replica_axis_size=2)
    method = _method(exchange='predictions', shared_fraction=0.5)
    state, step, bs = _setup(method, mesh)
    assert state.extra == {}  # No stale copies to keep.
    assert [method.phase(i) for i in range(4)] == ['burn_in'] * 2 + ['distil'] * 2
    assert not any(method.refresh_due(i) for i in range(100))
    for i in range(2):  # Burn-in.
        batch = _batch(seed=i)
        state, aux = step(state, sharding.global_batch(batch, bs), method.phase(i))
        assert 'train/distill' not in aux
    batch = _batch(seed=2)
    params = jax.device_get(state.params)
    state, aux = step(state, sharding.global_batch(batch, bs), method.phase(2))
    # The shared batch: the first half of each replica's 8 rows, r0's then r1's.
    blocks = _split(batch)
    shared = {k: np.concatenate([b[k][:4] for b in blocks]) for k in batch}
    fns = _fns()  # Dropout 0: training and eval forwards agree.
    logits = [
        fns.apply(jax.tree.map(lambda p, r=r: p[r], params), shared, train=False)
        for r in range(2)
    ]
    where = fns.labels(shared)[1]
    for r in range(2):
        kl = losses.distill_kl(logits[r], logits[1 - r], temperature=1.0, where=where)
        np.testing.assert_allclose(
            aux['train/distill'][r], losses.masked_mean(kl, where), rtol=1e-4
        )
    assert np.all(np.asarray(aux['train/distill']) > 0)


def test_replicas_of_different_capacities():
    from jaxdistill.models import composite as composite_lib
    from jaxdistill.tasks import translation

    comp = composite_lib.Composite(_config(num_heads=4), 'width', (0.5, 1.0))
    fns = composite_lib.make_fns(comp, translation.translation_labels)
    options = dict(name='codistill', num_replicas=2, burn_in_steps=1, exchange_every=1)
    with pytest.raises(ConfigError, match="unknown capacity 'x2'"):
        make_method(
            ml_collections.ConfigDict(dict(options, replica_capacities=('x0.5', 'x2'))),
            fns,
        )
    with pytest.raises(ConfigError, match='needs a composite model'):
        make_method(
            ml_collections.ConfigDict(dict(options, replica_capacities=('x0.5', 'x1'))),
            _fns(),
        )
    method = make_method(
        ml_collections.ConfigDict(dict(options, replica_capacities=('x0.5', 'x1'))), fns
    )
    assert method.replica_capacities == (0, 1)
    mesh = sharding.make_mesh(replica_axis_size=2)
    state, step, bs = _setup(method, mesh)
    models = method.eval_models(state.params, state.extra)
    sizes = {n: sum(x.size for x in jax.tree.leaves(p)) for n, p in models.items()}
    assert sizes['r0'] < sizes['r1']  # Half the heads and FFN units.
    assert sizes['r1'] == sum(
        x.size
        for x in jax.tree.leaves(
            comp.extract(jax.tree.map(lambda p: p[1], jax.device_get(state.params)), 1)
        )
    )
    batch = _batch(seed=0)
    params = jax.device_get(state.params)
    state, aux = step(
        state, sharding.global_batch(batch, bs), method.phase(0), method.refresh_due(0)
    )
    # Each replica's loss is its own capacity's cross entropy on its own rows.
    for r, block in enumerate(_split(batch)):
        p = jax.tree.map(lambda x, r=r: x[r], params)
        logits = fns.apply_capacity(p, block, r, train=False)
        labels, where = fns.labels(block)
        ce = losses.masked_mean(
            losses.cross_entropy(logits, labels, where=where), where
        )
        np.testing.assert_allclose(aux['train/ce'][r], ce, rtol=1e-4)
    # Distilling from the stale peer of the other size, after the exchange.
    for i in (1, 2):
        state, aux = step(
            state,
            sharding.global_batch(_batch(seed=i), bs),
            method.phase(i),
            method.refresh_due(i),
        )
        assert np.all(np.isfinite(np.asarray(aux['train/loss'])))
    assert np.all(np.asarray(aux['train/distill']) > 0)


def _capacity_method():
    from jaxdistill.models import composite as composite_lib
    from jaxdistill.tasks import translation

    comp = composite_lib.Composite(_config(num_heads=4), 'width', (0.5, 1.0))
    fns = composite_lib.make_fns(comp, translation.translation_labels)
    cfg = dict(
        name='codistill',
        num_replicas=2,
        burn_in_steps=2,
        exchange_every=3,
        replica_capacities=('x0.5', 'x1'),
    )
    return make_method(ml_collections.ConfigDict(cfg), fns)


@pytest.mark.parametrize('variant', ['params', 'predictions', 'capacities'])
def test_replicas_stacked_on_fewer_groups_match_a_group_each(variant):
    """Two replicas on one group of 8 devices, or both on a single device
    (vmapped; a loop for different capacities), train exactly as with a
    group of 4 devices each: same per-replica losses through burn-in, the
    exchanges and distillation."""

    def losses_on(mesh):
        if variant == 'capacities':
            method = _capacity_method()
        else:
            method = _method(exchange=variant)
        state, step, bs = _setup(method, mesh)
        out = []
        for i in range(4):  # Burn-in, exchange, distillation, exchange.
            batch = sharding.global_batch(_batch(seed=i), bs)
            state, aux = step(state, batch, method.phase(i), method.refresh_due(i))
            out.append(np.asarray(aux['train/loss']))
        assert 'train/distill' in aux
        return np.array(out), state

    want, state = losses_on(sharding.make_mesh(replica_axis_size=2))
    assert not np.allclose(want[:, 0], want[:, 1])  # Two different models.
    if variant == 'params':  # One group of 8: the stacking of a single
        # device, data-parallel; one exchange kind is enough (compile time).
        one_group, _ = losses_on(sharding.make_mesh(replica_axis_size=1))
        np.testing.assert_allclose(one_group, want, rtol=1e-5)
    single, state1 = losses_on(
        sharding.make_mesh(replica_axis_size=1, devices=jax.devices()[:1])
    )
    np.testing.assert_allclose(single, want, rtol=1e-5)
    same = jax.tree.map(
        lambda a, b: np.allclose(a, b, atol=1e-5),
        jax.device_get(state.params),
        jax.device_get(state1.params),
    )
    assert all(jax.tree.leaves(same))


def test_microbatches_give_each_replica_its_whole_batchs_update():
    """Gradient accumulation with replicas: each replica's update from two
    micro-batches is the one from its whole block of rows, through burn-in,
    an exchange and distillation (its micro-batches' weights are its own
    rows' token counts, which differ between the replicas). The weights
    scale the stacked parameters' replica axis, which every layout has."""

    def run(microbatches):
        method = _method()
        mesh = sharding.make_mesh(replica_axis_size=2)
        state, step, bs = _setup(method, mesh, microbatches)
        out = []
        for i in range(4):
            batch = sharding.global_batch(_batch(seed=i), bs)
            state, aux = step(state, batch, method.phase(i), method.refresh_due(i))
            out.append(jax.device_get((aux['train/loss'], aux['train/tokens'])))
        assert 'train/distill' in aux
        return out, jax.device_get(state.params)

    want, want_params = run(1)
    got, got_params = run(2)
    for (loss, tokens), (want_loss, want_tokens) in zip(got, want):
        assert loss.shape == (2,)
        np.testing.assert_array_equal(tokens, want_tokens)
        np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        got_params,
        want_params,
    )


def test_replica_axis_size():
    size = sharding.replica_axis_size
    assert size(2, devices=8) == 2  # A group each where the devices divide.
    assert size(4, devices=6) == 2  # Otherwise 2 replicas stacked per group.
    assert size(3, devices=8) == 1
    assert size(2, devices=1) == 1  # Both on one device.
    assert size(2, devices=8, model_axis_size=8) == 1
    assert size(2, 1, devices=8) == 1  # Asked for: one group of 8.
    with pytest.raises(ConfigError, match='replica_axis_size=3 must divide'):
        size(2, 3, devices=8)
    mesh = sharding.make_mesh(replica_axis_size=1)
    assert sharding.batch_multiple(mesh, 3) == 24  # 8 devices, 3 replica blocks.


OVERRIDES = (
    '--config.num_train_steps=10',
    '--config.log_every_steps=2',
    '--config.checkpoint.every_steps=5',
    '--config.eval.at_end=False',
    '--config.optimizer.name=sgd',
    '--config.optimizer.weight_decay=0.0',
    '--config.optimizer.learning_rate=0.5',
    # Few compiled shapes: one bucket, one phase (distil) and the exchange.
    '--config.data.bucket_lengths=(48,)',
    '--config.method.burn_in_steps=0',
)
CONFIG = str(helpers.REPO / 'configs' / 'codistill_synthetic.py') + ':runlocal'


def _losses(workdir):
    records = [json.loads(l) for l in (workdir / 'metrics.jsonl').open()]
    return [
        [r['train/loss/r0'], r['train/loss/r1']] for r in records if 'train/loss' in r
    ]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    one = tmp_path / 'one'
    r = helpers.run(helpers.train_cmd(one, *OVERRIDES, config=CONFIG))
    assert r.returncode == 0, r.stderr[-3000:]
    two = tmp_path / 'two'
    helpers.run_two_processes(two, *OVERRIDES, config=CONFIG)
    a, b = _losses(one), _losses(two)
    assert len(a) == 6  # Every 2 steps, plus the checkpoint at step 5.
    np.testing.assert_allclose(b, a, rtol=1e-5)
    assert a[-1][0] != a[-1][1]  # Two different models.


@pytest.mark.slow
def test_resume_between_exchanges_is_bitwise_identical(tmp_path):
    """The stale copies are checkpointed with the replicas: a run resumed
    from step 5 (last exchange after step 3) through the exchanges after
    steps 6 and 9 ends with the same replicas and copies as an unbroken run."""
    import shutil

    from jaxdistill import configuration
    from jaxdistill import trainer as trainer_lib

    overrides = [o.removeprefix('--config.') for o in OVERRIDES]
    overrides += ['method.exchange_every=3', 'checkpoint.keep=3']

    def run(workdir):
        config = configuration.apply_overrides(
            configuration.load_config(CONFIG), overrides
        )
        t = trainer_lib.Trainer(config, str(workdir))
        start = t.start_step
        t.run()
        return start, jax.device_get((t.state.params, t.state.extra))

    full = tmp_path / 'full'
    assert run(full)[0] == 0
    resumed = tmp_path / 'resumed'
    shutil.copytree(full, resumed)
    shutil.rmtree(resumed / 'checkpoints' / '10')
    start, state = run(resumed)
    assert start == 5
    _, want = run(full)  # Already finished: restores step 10 as it was saved.
    same = jax.tree.map(np.array_equal, state, want)
    assert all(jax.tree.leaves(same))
    # The copies are from the exchange after step 9, one step behind.
    params, extra = state
    assert not any(
        jax.tree.leaves(jax.tree.map(np.array_equal, params, extra['stale']))
    )


def test_agreement_metrics_and_translation_predict(tmp_path):
    from jaxdistill import trainer as trainer_lib
    from jaxdistill import configuration

    config = configuration.load_config(CONFIG)
    configuration.apply_overrides(config, ['num_train_steps=2', 'eval.max_examples=16'])
    t = trainer_lib.Trainer(config, str(tmp_path))
    models = t.method.eval_models(t.state.params, t.state.extra)
    preds = {k: t.task.predict(p) for k, p in models.items()}
    (p0, v0), (p1, _) = preds['r0'], preds['r1']
    assert p0.shape == v0.shape and v0.sum() > 0
    m = trainer_lib.agreement_metrics(preds)
    expected = float(np.mean(p0[v0] == p1[v0]))
    assert m['eval/agreement_r0_r1'] == pytest.approx(expected)
    assert m['eval/churn'] == pytest.approx(1 - expected)
    same = trainer_lib.agreement_metrics({'a': preds['r0'], 'b': preds['r0']})
    assert same['eval/churn'] == 0.0


@pytest.mark.parametrize('distance, layout', [('kl', 'groups'), ('soft_ce', 'stacked')])
def test_fused_output_layer_trains_as_the_materialised_logits(distance, layout):
    """`output_chunk_rows` (a fused output layer: no [tokens, vocabulary]
    logits for the replica or its peers) gives the losses, distillation terms
    and parameters of the materialised loss, through burn-in, exchange and
    distillation: with one group per replica (KL) and with both replicas
    stacked on one device (soft cross-entropy)."""
    options = dict(temperature=2.0, label_smoothing=0.1, distance=distance)

    def run(mesh, **kw):
        method = _method(**options, **kw)
        state, step, bs = _setup(method, mesh)
        out = []
        for i in range(5):
            batch = sharding.global_batch(_batch(seed=i), bs)
            state, aux = step(state, batch, method.phase(i), method.refresh_due(i))
            out.append([np.asarray(aux[k]) for k in ('train/loss', 'train/ce')])
            if method.phase(i) == 'distil':
                out[-1].append(np.asarray(aux['train/distill']))
        return out, jax.device_get(state.params)

    if layout == 'groups':
        mesh = sharding.make_mesh(replica_axis_size=2)
    else:
        mesh = sharding.make_mesh(replica_axis_size=1, devices=jax.devices()[:1])
    want, want_params = run(mesh)
    # Blocks of 7 rows: a replica's 8 x 12 target positions end in a padded block.
    got, got_params = run(mesh, output_chunk_rows=7)
    assert [len(x) for x in got] == [len(x) for x in want] == [2, 2, 3, 3, 3]
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.array(g), np.array(w), rtol=2e-5, atol=1e-6)
    close = jax.tree.map(
        lambda a, b: np.allclose(a, b, rtol=1e-4, atol=1e-6), got_params, want_params
    )
    assert all(jax.tree.leaves(close))
    # Distillation did move the replicas: the term is not zero.
    assert float(np.min(want[-1][2])) > 0


def test_fused_output_layer_config_errors():
    with pytest.raises(ConfigError, match='output_chunk_rows=-1 must be an int >= 0'):
        _method(output_chunk_rows=-1)
    with pytest.raises(ConfigError, match="works with method.exchange='params'"):
        _method(output_chunk_rows=8, exchange='predictions')
    from jaxdistill.methods.base import ModelFns

    fns = _fns()
    no_table = ModelFns(init=fns.init, apply=fns.apply, labels=fns.labels)
    with pytest.raises(ConfigError, match='offers no features/output table'):
        make_method(
            ml_collections.ConfigDict(dict(name='codistill', output_chunk_rows=8)),
            no_table,
        )


def test_translate_and_extract_pick_a_replica(tmp_path):
    """`--capacity r1` names replica 1 of a codistillation run (translate,
    extract); the default is replica 0, the model the run evaluates."""
    from jaxdistill import checkpoint as checkpoint_lib
    from jaxdistill import cli
    from jaxdistill import configuration
    from jaxdistill import extract
    from jaxdistill import trainer as trainer_lib
    from jaxdistill import translate

    overrides = [o.removeprefix('--config.') for o in OVERRIDES]
    overrides += ['num_train_steps=2', 'checkpoint.every_steps=2']
    config = configuration.apply_overrides(configuration.load_config(CONFIG), overrides)
    run = tmp_path / 'run'
    t = trainer_lib.Trainer(config, str(run))
    t.run()
    t.close()
    stacked = jax.device_get(t.state.params)
    saved = cli.workdir_config(str(run))
    replica = lambda i: jax.tree.map(lambda x: x[i], stacked)
    for name, i in ((None, 0), ('r0', 0), ('r1', 1)):
        _, got, _, _ = translate.load_model(str(run), saved, capacity=name)
        jax.tree.map(np.testing.assert_array_equal, got, replica(i))
    with pytest.raises(ConfigError, match=r'--capacity x0.5: .* has the models r0, r1'):
        translate.load_model(str(run), saved, capacity='x0.5')
    out = tmp_path / 'r1'
    summary = extract.extract(str(run), 'r1', str(out))
    assert summary['num_params'] == summary['num_params_largest']
    state = checkpoint_lib.read_state(str(out / 'checkpoints' / '2'))
    jax.tree.map(np.testing.assert_array_equal, state['params'], replica(1))
    assert cli.workdir_config(str(out)).method.name == 'supervised'


def test_parameters_sharded_over_a_model_axis_train_as_replicated():
    """mesh.shard_params on a model axis of 2 (2 replicas x 2 data x 2
    model): the vocabulary dimension is split over `model`; the step used to
    abort in XLA's partitioner (a failed CHECK that killed the process: with
    jax 0.10 on the logits, with jax 0.11 on any sharded parameter). Same
    per-replica losses as with replicated parameters."""

    mesh = sharding.make_mesh(model_axis_size=2, replica_axis_size=2)

    def losses(shard_params):
        method = _method()
        state, step, bs = _setup(method, mesh, shard_params=shard_params)
        out = []
        for i in range(4):  # Burn-in, exchange, distillation.
            batch = sharding.global_batch(_batch(seed=i), bs)
            state, aux = step(state, batch, method.phase(i), method.refresh_due(i))
            out.append(np.asarray(aux['train/loss']))
        return np.array(out), state, step, batch

    want, *_ = losses(False)
    got, state, step, batch = losses(True)
    # Still nothing crosses between the replicas' groups outside the
    # exchange (groups of 4 devices: 2 data x 2 model).
    with jax.set_mesh(mesh):
        hlo = step.build('distil').lower(state, batch).compile().as_text()
    assert _cross_replica_traffic(hlo) == []
    np.testing.assert_allclose(got, want, rtol=1e-5)
    specs = [str(leaf.sharding.spec) for leaf in jax.tree.leaves(state.params)]
    assert any('model' in spec for spec in specs)  # Sharded, not replicated.


def test_classification_batches_hold_whole_replica_blocks():
    """Image and text batches split into replica blocks: their rows must be a
    multiple of the replicas too (the error names both), and evaluation
    batches are padded to it."""
    import ml_collections

    from jaxdistill import sharding
    from jaxdistill.errors import ConfigError
    from jaxdistill.tasks import classification

    config = ml_collections.ConfigDict(
        {
            'method': {'name': 'codistill', 'num_replicas': 2},
            'data': {'batch_size': 33},
            'eval': {'batch_size': 500},
        }
    )
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    with pytest.raises(ConfigError, match=r'batch_size=33 must be a multiple of 2 '):
        classification._batch_multiple(config, mesh)
    config.data.batch_size = 34
    assert classification._batch_multiple(config, mesh) == 2
    config.method = ml_collections.ConfigDict({'name': 'supervised'})
    config.data.batch_size = 33
    assert classification._batch_multiple(config, mesh) == 1


@pytest.mark.parametrize('exchange', ['params', 'predictions'])
def test_resume_with_a_shorter_burn_in_exchanges_at_once(tmp_path, capsys, exchange):
    """Saved at step 4 in burn-in (burn_in_steps 8), resumed with 2: the run
    is past the boundary whose exchange it never made, so the copies are
    refreshed from the replicas before distilling, not left at their init.
    Exchanging predictions, there are no copies: nothing to refresh (the
    refresh gave the state a key it was not built with, a JAX error)."""
    from jaxdistill import configuration
    from jaxdistill import trainer as trainer_lib

    overrides = [o.removeprefix('--config.') for o in OVERRIDES]
    overrides += [
        'method.exchange_every=50',
        'eval.at_end=False',
        f'method.exchange={exchange}',
    ]

    def trainer(*more):
        config = configuration.apply_overrides(
            configuration.load_config(CONFIG), overrides + list(more)
        )
        return trainer_lib.Trainer(config, str(tmp_path / 'run'))

    first = trainer('method.burn_in_steps=8', 'num_train_steps=4')
    first.run()
    first.close()
    again = trainer('method.burn_in_steps=2', 'num_train_steps=6')
    assert again.start_step == 4
    if exchange == 'predictions':
        assert again.state.extra == {}
        assert 'extra state was refreshed' not in capsys.readouterr().out
        again.run()  # It distils from the peers' predictions at once.
        records = [json.loads(l) for l in open(tmp_path / 'run' / 'metrics.jsonl')]
        assert 'train/distill' in records[-1], records[-1]
        # Each replica's throughput is a rate, as the whole run's is.
        rates = [records[-1][f'train/tokens_per_s/r{r}'] for r in (0, 1)]
        assert sum(rates) == pytest.approx(records[-1]['train/tokens_per_s'])
        assert not [k for k in records[-1] if k.startswith('train/tokens/')]
        again.close()
        return
    params, extra = jax.device_get((again.state.params, again.state.extra))
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, params, extra['stale'])))
    assert 'extra state was refreshed now' in capsys.readouterr().out
    again.close()


def test_stale_peers_are_the_other_replicas_in_turn():
    # Replica r distils from the stale copies of (r+1) % N, (r+2) % N, ...,
    # never from its own.
    cfg = dict(name='codistill', num_replicas=3, burn_in_steps=0, exchange_every=1)
    method = make_method(ml_collections.ConfigDict(cfg), _fns())
    stale = {'w': jnp.asarray([[10.0], [11.0], [12.0]])}
    for r, want in ((0, [1, 2]), (1, [2, 0]), (2, [0, 1])):
        peers = list(method._stale_peers(stale, r))
        assert [q for q, _ in peers] == want
        np.testing.assert_array_equal(
            [float(p['w'][0]) for _, p in peers], [10.0 + q for q in want]
        )


def test_distillation_weight_starts_at_the_first_step_after_burn_in():
    # burn_in_steps=2: steps 0 and 1 train on labels only; step 2 (the first
    # 'distil' step) already has the full weight.
    method = _method(weight=0.7)
    got = [float(method._weight(jnp.asarray(s))) for s in range(5)]
    np.testing.assert_allclose(got, [0.0, 0.0, 0.7, 0.7, 0.7], rtol=1e-6)
    assert method.phase(2) == 'distil'


def test_a_distillation_step_loss_by_hand():
    """Replica r's loss after burn-in: its label cross entropy, a mean over
    its real target tokens only, plus `method.weight` times T²·KL from the
    stale copy of its peer; in float64 numpy from each model's logits."""
    t, w = 2.0, 0.3
    mesh = sharding.make_mesh(replica_axis_size=2)
    method = _method(weight=w, temperature=t)
    state, step, bs = _setup(method, mesh)
    for i in range(2):  # Burn-in.
        batch = sharding.global_batch(_batch(seed=i), bs)
        state, _ = step(state, batch, method.phase(i), method.refresh_due(i))
    params = jax.device_get(state.params)  # The stale copies of step 2.
    batch = _batch(seed=2)
    assert method.phase(2) == 'distil' and method.refresh_due(2)
    state, aux = step(state, sharding.global_batch(batch, bs), 'distil', True)
    fns = _fns()  # Dropout 0: training and eval forwards agree.
    for r, block in enumerate(_split(batch)):
        labels, where = (np.asarray(x) for x in fns.labels(block))
        assert 0 < where.mean() < 1  # Padding, which must not count.
        z = [
            np.asarray(
                fns.apply(
                    jax.tree.map(lambda p, q=q: p[q], params), block, train=False
                ),
                np.float64,
            )
            for q in range(2)
        ]
        mean = lambda v: np.sum(v * where) / np.sum(where)
        gold = np.maximum(labels, 0)[..., None]
        ce = mean(-np.take_along_axis(helpers.np_log_softmax(z[r]), gold, -1)[..., 0])
        log_p = helpers.np_log_softmax(z[1 - r] / t)
        log_q = helpers.np_log_softmax(z[r] / t)
        kl = mean(t**2 * np.sum(np.exp(log_p) * (log_p - log_q), -1))
        np.testing.assert_allclose(aux['train/ce'][r], ce, rtol=1e-4)
        np.testing.assert_allclose(aux['train/distill'][r], kl, rtol=1e-4)
        np.testing.assert_allclose(aux['train/loss'][r], ce + w * kl, rtol=1e-4)


def test_peers_current_predictions_carry_no_gradient():
    """With exchange='predictions', a replica's distillation term must not
    train its peers through their gathered logits (the stale-copy exchange
    is frozen by construction; this one by a stop-gradient)."""
    method = _method(exchange='predictions')
    mesh = jax.make_mesh((2,), ('replica',), devices=jax.devices()[:2])
    spec = jax.sharding.PartitionSpec('replica')

    def grads(own):
        index = jax.lax.axis_index('replica')[None]
        peers = lambda o: jnp.sum(method.peer_predictions(o, index) ** 2)
        value, g = jax.value_and_grad(peers)(own)
        return value[None], g

    logits = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)
    own = jax.device_put(logits, jax.sharding.NamedSharding(mesh, spec))
    value, g = jax.jit(
        jax.shard_map(grads, mesh=mesh, in_specs=spec, out_specs=(spec, spec))
    )(own)
    # Each replica reads the other's logits...
    np.testing.assert_allclose(value, [np.sum(logits[1] ** 2), np.sum(logits[0] ** 2)])
    np.testing.assert_array_equal(g, 0.0)  # ...and sends nothing back.
