"""Self-distillation: loss math, multi-exit models, the method, early exit, CLI."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from jaxdistill import losses_self_distill as sd
from jaxdistill.errors import ConfigError
from jaxdistill.evaluation import early_exit
from jaxdistill.methods import make_method
from jaxdistill.methods.base import ModelFns
from jaxdistill.models import multi_exit
from jaxdistill.models.resnet import ResNet
from tests import helpers

LOGITS = [
    np.array([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]], np.float32),
    np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0]], np.float32),
]
FEATURES = [
    np.array([[1.0, 2.0], [0.0, 0.0]], np.float32),
    np.array([[0.0, 1.0], [1.0, -1.0]], np.float32),
]
LABELS = np.array([0, 2])


def _numpy_loss(alpha, temperature, beta):
    """The BYOT loss written out in numpy, independently of jaxdistill.losses."""

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    ce = [-log_softmax(z)[np.arange(2), LABELS] for z in LOGITS]
    log_p = log_softmax(LOGITS[1] / temperature)
    log_q = log_softmax(LOGITS[0] / temperature)
    kl = temperature**2 * np.sum(np.exp(log_p) * (log_p - log_q), -1)
    hint = np.sum((FEATURES[0] - FEATURES[1]) ** 2, -1)
    return (1 - alpha) * (ce[0] + ce[1]) + alpha * kl + beta * hint


def test_loss_matches_golden_numbers_under_jit():
    fn = jax.jit(
        lambda lo, fe, y: sd.self_distill_loss(
            lo, fe, y, alpha=0.3, temperature=2.0, beta=0.5
        )[0]
    )
    got = fn(LOGITS, FEATURES, LABELS)
    np.testing.assert_allclose(got, _numpy_loss(0.3, 2.0, 0.5), rtol=1e-5)
    # Hand-checked first row: ce = log(e + 1 + 1/e) - 1 = 0.40761 for both
    # exits, hint = ‖(1, 2) - (0, 1)‖² = 2.
    assert _numpy_loss(0.0, 1.0, 1.0)[0] == pytest.approx(2 * 0.40760596 + 2)


def test_where_masks_rows_and_single_exit_is_plain_ce():
    loss, terms = sd.self_distill_loss(
        LOGITS, FEATURES, LABELS, where=np.array([True, False])
    )
    assert loss[1] == 0 and loss[0] > 0
    single, terms = sd.self_distill_loss(LOGITS[1:], FEATURES[1:], LABELS, alpha=0.0)
    assert terms['kd'].shape == (0, 2)
    ref = -jax.nn.log_softmax(LOGITS[1])[np.arange(2), LABELS]
    np.testing.assert_allclose(single, ref, rtol=1e-6)


def test_teacher_gets_no_distillation_gradient():
    def total(lo, fe):
        return jnp.sum(sd.self_distill_loss(lo, fe, LABELS, alpha=0.5, beta=1.0)[0])

    def ce_only(deep):
        return 0.5 * jnp.sum(sd.self_distill_terms([deep], [FEATURES[1]], LABELS)['ce'])

    g_logits, g_features = jax.grad(total, argnums=(0, 1))(LOGITS, FEATURES)
    # Teacher logits: only their own (1 - α)·CE; teacher features: nothing.
    np.testing.assert_allclose(g_logits[1], jax.grad(ce_only)(LOGITS[1]), atol=1e-6)
    np.testing.assert_allclose(g_features[1], 0.0)
    assert np.abs(g_features[0]).sum() > 0 and np.abs(g_logits[0]).sum() > 0


def test_gradients_match_finite_differences():
    student = lambda z, f: sd.self_distill_loss(
        [z, LOGITS[1]], [f, FEATURES[1]], LABELS, temperature=3.0, beta=0.1
    )[0]
    check_grads(student, (LOGITS[0], FEATURES[0]), order=1, modes=['rev'], eps=1e-2)


def _tiny_resnet(exits=(0, 1), **kw):
    return ResNet(
        num_classes=5, stage_sizes=(1, 1, 1), width=4, exits=exits, norm_groups=2, **kw
    )


@pytest.fixture(scope='module')
def tiny():
    """(MultiExitFns, params, batch) of a 3-exit ResNet; init compiles once."""
    fns = multi_exit.make_fns(_tiny_resnet(), 'image')
    rng = np.random.default_rng(0)
    batch = {
        'image': rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8),
        'label': np.array([0, 1, 2, -1], np.int32),
    }
    return fns, jax.jit(fns.init)(jax.random.key(0), batch), batch


def test_resnet_exit_shapes_and_prefixes(tiny):
    fns, params, batch = tiny
    apply = jax.jit(fns.apply_exits, static_argnames=('train', 'upto', 'only_last'))
    out = apply(params, batch, train=False)
    multi_exit.check_output(out, 3)
    assert [z.shape for z in out['logits']] == [(4, 5)] * 3
    assert [f.shape for f in out['features']] == [(4, 16)] * 3
    first = apply(params, batch, train=False, upto=0)
    assert len(first['logits']) == 1
    np.testing.assert_allclose(first['logits'][0], out['logits'][0], atol=1e-5)
    last = apply(params, batch, train=False, only_last=True)
    assert len(last['logits']) == 1
    np.testing.assert_allclose(last['logits'][0], out['logits'][-1], atol=1e-5)
    with pytest.raises(ValueError, match='exits'):
        _tiny_resnet(exits=(2,))


@pytest.mark.parametrize('head', ['branch', 'pool'])
def test_resnet_branch_exit_heads_are_three_convolutions_to_the_deepest_shape(head):
    """'branch': 1×1, k×k stride k = 2^(stages skipped), 1×1, for every exit;
    'pool': a k×k average pool of stride k, then 1×1, 3×3, 1×1."""
    model = ResNet(
        num_classes=5,
        stage_sizes=(1, 1, 1, 1),
        width=4,
        exits=(0, 1, 2),
        norm_groups=2,
        exit_head=head,
    )
    fns = multi_exit.make_fns(model, 'image')
    # 28×28 (MNIST): the stages run at 28, 14, 7 and 4; a SAME k×k stride-k
    # convolution (or pool) brings each exit to the deepest stage's 4×4 too.
    batch = {
        'image': np.zeros((2, 28, 28, 1), np.uint8),
        'label': np.zeros(2, np.int32),
    }
    params = jax.jit(fns.init)(jax.random.key(0), batch)
    heads = {k: v for k, v in params.items() if k.startswith('exit')}
    # Three shallow exits with a branch each; the deepest pools stage 3.
    assert sorted(heads) == sorted(
        [f'exit{i}_branch' for i in range(3)] + [f'exit{i}_head' for i in range(4)]
    )
    for i, k in enumerate((8, 4, 2)):
        branch = heads[f'exit{i}_branch']
        assert sorted(branch) == ['conv1', 'conv2', 'conv3', 'norm1', 'norm2', 'norm3']
        # The deepest width is 32, so the branch runs at 32 // 4 = 8 channels.
        assert branch['conv1']['kernel'].shape == (1, 1, 4 * 2**i, 8)
        middle = k if head == 'branch' else 3
        assert branch['conv2']['kernel'].shape == (middle, middle, 8, 8)
        assert branch['conv3']['kernel'].shape == (1, 1, 8, 32)
    # Jitted: op by op, the many small convolutions each compile on their own.
    _, state = jax.jit(
        lambda p, x: model.apply(
            {'params': p}, x, train=False, capture_intermediates=True, mutable=True
        )
    )(params, batch['image'])
    shapes = {
        name: inter['__call__'][0].shape
        for name, inter in state['intermediates'].items()
        if name.endswith('_branch') or name == 'stage3_block0'
    }
    assert set(shapes.values()) == {(2, 4, 4, 32)} and len(shapes) == 4
    # Trains: every branch gets a gradient from the self-distillation loss.
    method = make_method(ml_collections.ConfigDict({'name': 'self_distill'}), fns)
    grads = jax.jit(
        jax.grad(lambda p: method.loss(p, {}, batch, jax.random.key(1), 0)[0])
    )(params)
    for i in range(3):
        g = grads[f'exit{i}_branch']['conv2']['kernel']
        assert float(jnp.abs(g).sum()) > 0
    match = "exit_head 'patch' is not one of blocks, branch, pool"
    with pytest.raises(ValueError, match=match):
        ResNet(num_classes=5, exit_head='patch')


@pytest.mark.parametrize(
    'options, match',
    [
        ({'width': 0}, r'width \(0\)'),
        ({'stage_sizes': ()}, 'stage_sizes'),
        ({'stage_sizes': (1, 0)}, 'stage_sizes'),
        ({'width': 12, 'norm_groups': 8}, 'GroupNorm over 12 channels'),
        ({'dtype': 'float16'}, "dtype 'float16' is not one of bfloat16, float32"),
        # In range, but no stage index: the exit would silently not be built.
        ({'exits': (0.5,)}, r'exits \(0.5,\) must be integer stage indices'),
        ({'exits': (True,)}, 'True is not'),
    ],
)
def test_resnet_rejects_shapes_it_cannot_build(options, match):
    """Named before any JAX call, instead of an error deep inside GroupNorm."""
    from jaxdistill.models import resnet

    kw = {'num_classes': 3, 'stage_sizes': (1, 1), 'width': 8, 'norm_groups': 4}
    with pytest.raises(ValueError, match=match):
        resnet.ResNet(**{**kw, **options})


def test_resnet_bfloat16_computes_in_bfloat16_with_float32_params_and_outputs(tiny):
    """Mixed precision: the same parameters, outputs float32 and close."""
    fns, params, batch = tiny
    half = multi_exit.make_fns(_tiny_resnet(dtype='bfloat16'), 'image')
    # The parameter tree (names, shapes, float32) is the float32 model's.
    shapes = lambda t: jax.tree.map(lambda x: (x.shape, x.dtype), t)
    assert shapes(jax.eval_shape(half.init, jax.random.key(0), batch)) == shapes(params)
    full = jax.jit(fns.apply_exits, static_argnames='train')(params, batch, train=False)
    apply = jax.jit(half.apply_exits, static_argnames='train')
    out = apply(params, batch, train=False)
    hlo = apply.lower(params, batch, train=False).as_text()
    assert 'bf16' in hlo and 'convolution' in hlo
    for key in ('logits', 'features'):
        for h, f in zip(out[key], full[key]):
            assert h.dtype == jnp.float32
            scale = float(jnp.max(jnp.abs(f)))
            np.testing.assert_allclose(h, f, atol=0.05 * scale)
            # Not the float32 computation under another name.
            assert float(jnp.max(jnp.abs(h - f))) > 0


def test_method_loss_with_schedules_and_config_errors(tiny):
    fns, params, batch = tiny

    def method(**options):
        cfg = ml_collections.ConfigDict({'name': 'self_distill', **options})
        return make_method(cfg, fns)

    linear = {'kind': 'linear', 'init': 0.0, 'end': 1.0, 'steps': 10}
    loss_fn = jax.jit(method(alpha=linear).loss)
    loss, aux = loss_fn(params, {}, batch, jax.random.key(1), 5)
    assert np.isfinite(loss) and aux['train/alpha'] == pytest.approx(0.5)
    assert aux['train/tokens'] == 3 and 'train/accuracy_exit1' in aux
    loss0, aux0 = loss_fn(params, {}, batch, jax.random.key(1), 0)
    assert aux0['train/kd'] == aux['train/kd'] and loss0 != loss
    with pytest.raises(ConfigError, match='temperature'):
        method(temprature=2.0)
    for options, match in [
        ({'temperature': 0.0}, 'method.temperature must be > 0'),
        ({'alpha': 1.5}, 'method.alpha must be >= 0 and <= 1'),
        ({'beta': -1.0}, 'method.beta must be >= 0'),
    ]:
        with pytest.raises(ConfigError, match=match):
            method(**options)
    with pytest.raises(ConfigError, match='multi-exit'):
        make_method(
            ml_collections.ConfigDict({'name': 'self_distill'}),
            ModelFns(init=None, apply=None, labels=None),
        )
    # One exit: nothing to teach; its loss would be the baseline's, scaled.
    single = multi_exit.make_fns(_tiny_resnet(exits=()), 'image')
    with pytest.raises(ConfigError, match="has 1 exit .*method.name='supervised'"):
        make_method(ml_collections.ConfigDict({'name': 'self_distill'}), single)


def test_exit_features_of_different_widths_are_named():
    from jaxdistill.errors import PluginError

    def apply_exits(params, batch, *, train, rng=None, upto=None, only_last=False):
        del params, train, rng, upto, only_last
        n = batch['x'].shape[0]
        return {
            'logits': [jnp.zeros((n, 3)), jnp.zeros((n, 3))],
            'features': [jnp.zeros((n, 1)), jnp.zeros((n, 8))],  # Would broadcast.
        }

    fns = multi_exit.MultiExitFns(
        init=None,
        apply=None,
        labels=lambda b: (b['y'], b['y'] >= 0),
        apply_exits=apply_exits,
        num_exits=2,
    )
    method = make_method(ml_collections.ConfigDict({'name': 'self_distill'}), fns)
    batch = {'x': jnp.zeros((4, 2)), 'y': jnp.zeros((4,), jnp.int32)}
    with pytest.raises(PluginError, match=r'differ in width \(\[1, 8\]\)'):
        method.loss({}, None, batch, jax.random.key(0), 0)


def test_early_exit_curve_by_hand():
    confidence = np.array([[0.9, 0.4, 0.7], [0.8, 0.95, 0.6]])
    correct = np.array([[True, False, False], [False, True, True]])
    curve = early_exit.early_exit_curve(
        confidence, correct, [0.5, 0.75, 1.0], [0.4, 1.2]
    )
    assert [p['accuracy'] for p in curve] == pytest.approx([2 / 3, 1.0, 2 / 3])
    assert curve[0]['exit_fractions'] == pytest.approx([2 / 3, 1 / 3])
    assert curve[0]['time_fraction'] == pytest.approx((0.4 + 1.2 + 0.4) / 3)
    assert curve[2]['time_fraction'] == pytest.approx(1.2)
    np.testing.assert_array_equal(
        early_exit.exit_assignment(confidence, 0.85), [0, 1, 1]
    )
    # Exits [0, 1, 0] at 0.5 and [0, 1, 1] at 0.75: mean exit by hand.
    assert [p['mean_exit'] for p in curve[:2]] == pytest.approx([1 / 3, 2 / 3])
    # A confidence equal to the threshold reaches it (>=, not >).
    np.testing.assert_array_equal(
        early_exit.exit_assignment(confidence, 0.9), [0, 1, 1]
    )


def test_threshold_one_is_the_deepest_exit_even_when_softmax_saturates():
    # A shallow exit wrong by a logit gap of 40: float32 softmax gives 1.0.
    logits = np.array([[40.0, 0.0], [0.0, 1.0]], np.float32)
    confidence = np.asarray(jax.nn.softmax(logits, axis=-1)).max(-1)[:, None]
    assert confidence[0, 0] == 1.0
    correct = np.array([[False], [True]])
    (point,) = early_exit.early_exit_curve(confidence, correct, [1.0], [0.3, 1.0])
    assert point['accuracy'] == 1.0
    assert point['exit_fractions'] == [0.0, 1.0]
    assert point['time_fraction'] == 1.0


def test_measured_prefix_times_are_positive(tiny):
    fns, params, batch = tiny
    seconds, plain = early_exit.measure_prefix_seconds(
        fns.apply_exits, params, [batch], 3, repeats=1
    )
    assert len(seconds) == 3 and min(seconds) > 0 and plain > 0


def test_times_too_short_to_measure_get_a_note():
    assert 'mostly noise' in early_exit.timing_note(0.004)
    assert early_exit.timing_note(0.2) == early_exit.timing_note(None) == ''


def test_runlocal_mnist_through_cli(tmp_path, shared_data):
    del shared_data
    config = str(helpers.REPO / 'configs' / 'self_distill_mnist.py') + ':runlocal'
    result = helpers.run(
        helpers.train_cmd(tmp_path, '--config.num_train_steps=6', config=config),
        devices=2,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['step'] == 6 and summary['data/num_exits'] == 2
    for key in ('eval/accuracy_exit0', 'eval/accuracy'):
        assert 0.0 <= summary[key] <= 1.0
    assert summary['eval/early_exit_1/time_fraction'] > 0
    assert np.isfinite(summary['train/kd'])


def test_text_classifier_exits_and_sst2_reader(tmp_path):
    from jaxdistill.data import sst2
    from jaxdistill.errors import DataError
    from jaxdistill.models.text_classifier import TextClassifier

    # Blank lines at the end are ignored; one in the middle is named.
    (tmp_path / 'ok.tsv').write_text('sentence\tlabel\na fine film \t1\nbad\t0\n\n \n')
    sentences, labels = sst2.read_sst2(tmp_path / 'ok.tsv')
    assert sentences == ['a fine film ', 'bad'] and list(labels) == [1, 0]
    vocab = sst2.build_vocab(sentences * 2 + ['film'], 4)
    assert vocab == {'film': 2, 'a': 3}
    tokens = sst2.encode(['A film bad', ''], vocab, 4)
    np.testing.assert_array_equal(tokens, [[3, 2, sst2.UNK, 0], [0, 0, 0, 0]])
    # min_count: words seen once are UNK, so UNK occurs (and trains).
    assert sst2.build_vocab(sentences * 2 + ['film'], 10, min_count=3) == {'film': 2}
    cut_tokens, n = sst2.cut(sst2.encode(['a b', 'a b c', 'a b c d'], vocab, 3))
    assert n == 2 and cut_tokens.shape == (3, 2)  # Cut at 2: two are longer.
    np.testing.assert_array_equal(
        cut_tokens, sst2.encode(['a b', 'a b c', 'a b c d'], vocab, 2)
    )
    (tmp_path / 'bad.tsv').write_text('text\tlabel\nx\t1\n')
    with pytest.raises(DataError, match='header'):
        sst2.read_sst2(tmp_path / 'bad.tsv')
    (tmp_path / 'row.tsv').write_text('sentence\tlabel\nx\t1\ny\tpositive\n')
    with pytest.raises(DataError, match='row.tsv:3'):
        sst2.read_sst2(tmp_path / 'row.tsv')
    (tmp_path / 'gap.tsv').write_text('sentence\tlabel\nx\t1\n\ny\t0\n')
    with pytest.raises(DataError, match='gap.tsv:3'):
        sst2.read_sst2(tmp_path / 'gap.tsv')

    sizes = dict(num_classes=2, vocab_size=10, num_layers=2, d_model=8, num_heads=2)
    with pytest.raises(ValueError, match='must be integer layer indices; 0.5 is not'):
        TextClassifier(**sizes, d_ff=16, exits=(0.5,), max_len=8)
    model = TextClassifier(**sizes, d_ff=16, exits=(0,), max_len=8)
    fns = multi_exit.make_fns(model, 'tokens')
    batch = {'tokens': tokens, 'label': labels}
    params = jax.jit(fns.init)(jax.random.key(0), batch)
    apply = jax.jit(fns.apply_exits, static_argnames=('train', 'upto', 'only_last'))
    out = apply(params, batch, train=False)
    multi_exit.check_output(out, 2)
    assert out['logits'][0].shape == (2, 2) and out['features'][1].shape == (2, 8)
    first = apply(params, batch, train=False, upto=0)['logits']
    np.testing.assert_allclose(first[0], out['logits'][0], atol=1e-5)


def test_sst2_splits_are_read_gzipped_or_not_and_a_missing_one_is_named(tmp_path):
    import gzip

    from jaxdistill.data import sst2
    from jaxdistill.errors import DataError

    (tmp_path / 'train.tsv').write_text('sentence\tlabel\ngood\t1\n')
    with gzip.open(tmp_path / 'dev.tsv.gz', 'wt') as f:
        f.write('sentence\tlabel\nbad\t0\n')
    assert sst2.load_split(tmp_path, 'train')[0] == ['good']
    assert sst2.load_split(tmp_path, 'dev')[0] == ['bad']
    with pytest.raises(DataError, match=r'no glue_dev.tsv \(or glue_dev.tsv.gz\) in'):
        sst2.load_split(tmp_path, 'test')
    with pytest.raises(DataError, match=r'is not a folder \(data.data_dir;'):
        sst2.load_split(tmp_path / 'absent', 'train')


def test_sst2_sentencepiece_encoder_has_no_unknown_words(tmp_path):
    from jaxdistill.data import sst2

    train = [
        'a gripping , funny film',
        'the plot is thin and the acting is flat',
        'funny and warm',
        'a thin , flat film',
    ] * 50
    encode, size = sst2.text_encoder('sentencepiece', train, 28, 24, str(tmp_path))
    assert (tmp_path / 'spm.model').is_file() and size == 28
    # 'filmplot' is no training word: word-level gives UNK, pieces cover it.
    tokens = encode(['the filmplot is funny', ''])
    assert tokens.shape == (2, 24) and tokens.dtype == np.int32
    n = int((tokens[0] != sst2.PAD).sum())
    assert 0 < n < 24 and (tokens[0, n:] == sst2.PAD).all()
    assert (tokens[0, :n] != sst2.UNK).all() and (tokens[0, :n] < size).all()
    assert (tokens[1] == sst2.PAD).all()
    words, word_size = sst2.text_encoder('words', train, 28, 12, str(tmp_path))
    assert sst2.UNK in words(['the filmplot is funny'])[0] and word_size < 28
    # The words are kept: a resumed run whose data changed keeps their ids.
    assert (tmp_path / 'vocab.txt').is_file()
    kept, kept_size = sst2.text_encoder('words', ['other text'], 28, 12, str(tmp_path))
    assert kept_size == word_size
    np.testing.assert_array_equal(kept(train[:4]), words(train[:4]))
    # A second run in the workdir reads the same model, not a new one.
    again, _ = sst2.text_encoder('sentencepiece', ['other text'], 28, 24, str(tmp_path))
    np.testing.assert_array_equal(again(['the filmplot is funny']), tokens[:1])
    with pytest.raises(ConfigError, match="data.tokenizer .*'bpe'"):
        sst2.text_encoder('bpe', train, 28, 12, str(tmp_path))


def test_decoder_exits_are_the_extracted_shallow_decoders():
    from jaxdistill.models import composite as composite_lib
    from jaxdistill.models import transformer as transformer_lib
    from jaxdistill.tasks import translation

    cfg = transformer_lib.TransformerConfig(
        vocab_size=30,
        d_model=16,
        num_heads=2,
        d_ff=32,
        num_encoder_layers=1,
        num_decoder_layers=4,
        dropout_rate=0.0,
        max_len=16,
    )
    rng = np.random.default_rng(0)
    batch = {
        k: jnp.asarray(rng.integers(4, 30, (3, 6)), jnp.int32)
        for k in ('inputs', 'targets')
    }
    batch['targets'] = batch['targets'].at[1, -2:].set(0)  # Padding.
    comp = composite_lib.Composite(cfg, 'decoder', (0.25, 0.5, 1.0))
    assert [comp.capacity_config(i).num_decoder_layers for i in range(3)] == [1, 2, 4]
    assert comp.capacity_config(0).num_encoder_layers == 1
    fns = composite_lib.make_fns(comp, translation.translation_labels)
    params = fns.init(jax.random.key(0), batch)
    # Exit norms are their own parameters: make them differ from the final one.
    params['exit_norms']['x0.25']['decoder']['scale'] *= 2.0
    out = jax.jit(lambda p: fns.apply_exits(p, batch, train=False))(params)
    multi_exit.check_output(out, 3)
    for i in range(3):  # Each exit is exactly the extracted shallow model.
        plain = transformer_lib.Transformer(comp.capacity_config(i)).apply(
            {'params': comp.extract(params, i)}, *batch.values(), train=False
        )
        np.testing.assert_allclose(out['logits'][i], plain, rtol=2e-5, atol=2e-5)
    assert not np.allclose(out['logits'][0], out['logits'][1])
    only = fns.apply_exits(params, batch, train=False, upto=1, only_last=True)
    np.testing.assert_allclose(
        only['logits'][0], out['logits'][1], rtol=2e-5, atol=2e-5
    )

    method = make_method(
        ml_collections.ConfigDict({'name': 'self_distill', 'alpha': 0.5}), fns
    )
    loss, aux = method.loss(params, {}, batch, jax.random.key(1), 0)
    labels, where = translation.translation_labels(batch)
    assert float(aux['train/tokens']) == float(np.sum(where))
    assert np.isfinite(float(loss)) and float(aux['train/kd']) > 0
    # The deepest exit (the teacher) learns from the labels only: its own
    # cross-entropy gradient, scaled by (1 - alpha), is the whole of it.
    grads = jax.jit(
        jax.grad(lambda p: method.loss(p, {}, batch, jax.random.key(1), 0)[0])
    )(params)
    norm_grad = grads['model']['decoder']['norm']['scale']

    def deepest_ce(p):
        z = fns.apply_exits(p, batch, train=False)['logits'][-1]
        ce = optax.softmax_cross_entropy_with_integer_labels(z, labels)
        return 0.5 * jnp.sum(ce * where) / jnp.sum(where)

    np.testing.assert_allclose(
        norm_grad,
        jax.grad(deepest_ce)(params)['model']['decoder']['norm']['scale'],
        rtol=1e-4,
        atol=1e-7,
    )
    models = method.eval_models(params, {})
    assert list(models) == ['x1', 'x0.5', 'x0.25']
    assert len(models['x0.25']['decoder']) == 2  # layers_0 and norm


def test_interleaved_seconds_times_round_robin(monkeypatch):
    """Each repeat times every function once, in order; the best is kept."""
    calls = []
    clock = iter(range(1000))
    monkeypatch.setattr(early_exit.time, 'perf_counter', lambda: float(next(clock)))

    def make(name):
        def fn(params, batch):
            calls.append(name)
            return params

        return fn

    seconds = early_exit.interleaved_seconds(
        [make('a'), make('b')], np.zeros(1), [0, 1], repeats=2
    )
    # Warm-up a, b; then repeat 1: a a b b; repeat 2: a a b b (2 batches each).
    assert calls == ['a', 'b'] + ['a', 'a', 'b', 'b'] * 2
    assert seconds == [1.0, 1.0]


def test_codistillation_on_images_reports_agreement_and_churn(tmp_path, shared_data):
    """Classification tasks predict (the deepest exit's class), so the
    replicas of a codistillation run are compared: agreement and churn."""
    del shared_data
    from jaxdistill import configuration
    from jaxdistill import trainer as trainer_lib

    config = configuration.apply_overrides(
        configuration.load_config(
            str(helpers.REPO / 'configs' / 'self_distill_mnist.py') + ':runlocal'
        ),
        [
            'num_train_steps=4',
            "method={'name': 'codistill', 'num_replicas': 2, 'burn_in_steps': 2}",
            'eval.timing_repeats=0',
        ],
    )
    run = trainer_lib.Trainer(config, str(tmp_path))
    summary = run.run()
    agree = summary['eval/agreement_r0_r1']
    assert 0.0 <= agree <= 1.0 and summary['eval/churn'] == pytest.approx(1 - agree)
    # The predictions are the classes the accuracy counts.
    preds, valid = run.task.predict(run.model_params())
    labels = np.concatenate([b['label'] for b in run.task.eval_batches])
    assert valid.sum() == (labels >= 0).sum() and not valid[labels < 0].any()
    accuracy = np.mean(preds[valid] == labels[valid])
    assert accuracy == pytest.approx(summary['eval/r0/accuracy'], abs=1e-6)


def test_evaluation_keeps_the_first_models_curve_and_samples(capsys):
    """With several models (codistillation's replicas, TSJT's capacities)
    the unprefixed metrics are the first model's, and so are the early-exit
    curve `evaluate` prints and the sample translations in the log: the
    task's copies, which each model's evaluation replaces, are the last's."""
    import types

    from jaxdistill import trainer as trainer_lib

    class Task:
        def evaluate(self, params):
            self.last_curve = [{'threshold': 0.5, 'accuracy': params}]
            self.last_examples = [('a source', f'hypothesis of model {params}', 'ref')]
            return {'eval/loss': float(params)}

    fake = types.SimpleNamespace(
        method=types.SimpleNamespace(eval_models=lambda p, e: {'r0': 1, 'r1': 2}),
        _evaluated_params=lambda: None,
        state=types.SimpleNamespace(extra={}),
        task=Task(),
        writer=types.SimpleNamespace(write=lambda step, m: None),
        _use_compile_cache=lambda: None,
    )
    fake._evaluate_models = lambda: trainer_lib.Trainer._evaluate_models(fake)
    m = trainer_lib.Trainer.evaluate(fake, 3)
    assert m['eval/loss'] == 1.0 and m['eval/r1/loss'] == 2.0
    assert fake.last_curve == [{'threshold': 0.5, 'accuracy': 1}]
    assert fake.last_curve_model == 'r0'
    out = capsys.readouterr().out
    assert '(r0:)' in out and 'hypothesis of model 1' in out
    assert 'hypothesis of model 2' not in out


def test_prefix_timing_compiles_each_prefix_once():
    """Each evaluation timed the prefixes with new jitted functions, so it
    compiled every prefix again."""
    from jaxdistill.evaluation import early_exit

    def apply_exits(params, batch, *, train, upto, only_last):
        del train
        out = [batch * params * (k + 1) for k in range(upto + 1)]
        return {'logits': out[-1:] if only_last else out}

    batches = [jnp.ones((4, 3))]
    first = [early_exit._prefix(apply_exits, k, False) for k in range(2)]
    early_exit.measure_prefix_seconds(
        apply_exits, jnp.float32(2.0), batches, 2, repeats=1
    )
    early_exit.measure_prefix_seconds(
        apply_exits, jnp.float32(2.0), batches, 2, repeats=1
    )
    assert [early_exit._prefix(apply_exits, k, False) for k in range(2)] == first
    assert first[1]._cache_size() == 1  # One compilation, two evaluations.
