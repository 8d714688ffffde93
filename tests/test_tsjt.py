"""Composite Transformers and Two-Stage Joint-Training (TSJT)."""

import dataclasses
import json
import os
import shutil

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill import checkpoint as checkpoint_lib
from jaxdistill import evaluate
from jaxdistill import extract as extract_lib
from jaxdistill import optim
from jaxdistill import train
from jaxdistill.errors import ConfigError, JaxdistillError
from jaxdistill.methods import make_method
from jaxdistill.models import composite as composite_lib
from jaxdistill.models import transformer as transformer_lib
from jaxdistill.tasks import translation
from tests import helpers

import ml_collections

CFG = transformer_lib.TransformerConfig(
    vocab_size=40,
    d_model=16,
    num_heads=4,
    d_ff=32,
    num_encoder_layers=2,
    num_decoder_layers=2,
    dropout_rate=0.0,
    max_len=16,
)


def _batch(seed=0, rows=3, length=7):
    rng = np.random.default_rng(seed)
    inputs = rng.integers(4, CFG.vocab_size, (rows, length)).astype(np.int32)
    targets = rng.integers(4, CFG.vocab_size, (rows, length)).astype(np.int32)
    inputs[0, -2:] = 0  # Some padding.
    targets[1, -3:] = 0
    return {'inputs': jnp.asarray(inputs), 'targets': jnp.asarray(targets)}


def _apply(config, params, batch):
    model = transformer_lib.Transformer(config)
    return jax.jit(lambda p, b: model.apply({'params': p}, *b.values(), train=False))(
        params, batch
    )


def _composite(kind, fractions):
    comp = composite_lib.Composite(CFG, kind, fractions)
    return comp, comp.init(jax.random.key(0), *_batch().values())


def _method(kind, fractions, **options):
    comp = composite_lib.Composite(CFG, kind, fractions)
    fns = composite_lib.make_fns(comp, translation.translation_labels)
    cfg = ml_collections.ConfigDict({'name': 'tsjt', **options})
    return make_method(cfg, fns), comp


def test_width_slice_is_the_subnetwork_of_the_full_model():
    comp, params = _composite('width', (0.5, 1.0))
    small_cfg = comp.capacity_config(0)
    assert (small_cfg.num_heads, small_cfg.d_ff, small_cfg.head_dim) == (2, 16, 4)
    # Silencing the dropped heads and FFN units in the full model (their
    # output projections) must give exactly the small model's function.
    flat = flax.traverse_util.flatten_dict(params['model'])
    masked = {}
    for path, x in flat.items():
        if path[-2:] == ('out', 'kernel'):
            x = x.at[2:].set(0.0)
        if path[-2:] == ('wo', 'kernel'):
            x = x.at[16:].set(0.0)
        masked[path] = x
    masked = flax.traverse_util.unflatten_dict(masked)
    batch = _batch()
    full = _apply(CFG, masked, batch)
    small = _apply(small_cfg, comp.extract(params, 0), batch)
    np.testing.assert_allclose(full, small, atol=1e-5)
    unmasked = _apply(CFG, params['model'], batch)
    assert np.abs(unmasked - small).max() > 1e-3  # The slice really is smaller.


@pytest.mark.parametrize(
    'kind,fractions', [('width', (0.25, 0.5, 1.0)), ('depth', (0.5, 1.0))]
)
def test_extract_gives_plain_transformer_params(kind, fractions):
    comp, params = _composite(kind, fractions)
    sizes = []
    for i in range(len(fractions)):
        sub = comp.extract(params, i)
        assert transformer_lib.infer_config(sub, CFG) == comp.capacity_config(i)
        abstract = jax.eval_shape(
            lambda: transformer_lib.Transformer(comp.capacity_config(i)).init(
                {'params': jax.random.key(1)}, *_batch().values(), train=False
            )['params']
        )
        assert jax.tree.structure(sub) == jax.tree.structure(abstract)
        assert [x.shape for x in jax.tree.leaves(sub)] == [
            x.shape for x in jax.tree.leaves(abstract)
        ]
        sizes.append(comp.num_params(params, i))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_depth_capacities_own_their_norms_and_share_lower_layers():
    comp, params = _composite('depth', (0.5, 1.0))
    batch = _batch()

    def nll(p, i):
        fns = composite_lib.make_fns(comp, translation.translation_labels)
        logits = fns.apply_capacity(p, batch, i, train=False)
        return jnp.mean(jax.nn.log_softmax(logits)[..., 5])

    norm = lambda tree: float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(tree)))
    grad = jax.jit(jax.grad(nll), static_argnums=1)
    g_small = grad(params, 0)
    assert norm(g_small['model']['encoder']['layers_1']) == 0.0
    assert norm(g_small['model']['decoder']['layers_1']) == 0.0
    assert norm(g_small['model']['decoder']['norm']) == 0.0
    assert norm(g_small['model']['encoder']['layers_0']) > 0.0
    assert norm(g_small['exit_norms']['x0.5']) > 0.0
    g_large = grad(params, 1)
    assert norm(g_large['exit_norms']) == 0.0
    assert norm(g_large['model']['decoder']['layers_1']) > 0.0


def test_stage2_distills_into_small_only_with_teacher_stop_gradient():
    method, _ = _method('depth', (0.5, 1.0), stage2_start=10, distill_weight=0.5)
    assert [method.phase(s) for s in (0, 9, 10, 11)] == [
        'stage1',
        'stage1',
        'stage2',
        'stage2',
    ]
    params = method.init_params(jax.random.key(0), _batch())
    batch, rng = _batch(1), jax.random.key(3)

    def loss(p, phase):
        return method.loss(p, {}, batch, rng, 10, phase=phase)

    value_and_grad = jax.jit(
        jax.value_and_grad(loss, has_aux=True), static_argnames='phase'
    )
    (l1, aux1), g1 = value_and_grad(params, phase='stage1')
    (l2, aux2), g2 = value_and_grad(params, phase='stage2')
    assert float(aux1['train/x0.5/kd']) == 0.0
    kd = float(aux2['train/x0.5/kd'])
    assert kd > 0.0
    np.testing.assert_allclose(l2 - l1, 0.5 * kd, rtol=1e-5)
    diff = jax.tree.map(lambda a, b: jnp.sum(jnp.abs(a - b)), g2, g1)
    # Layers only the teacher uses get no gradient from distillation.
    assert float(sum(jax.tree.leaves(diff['model']['decoder']['layers_1']))) == 0.0
    assert float(sum(jax.tree.leaves(diff['model']['decoder']['norm']))) == 0.0
    assert float(sum(jax.tree.leaves(diff['model']['decoder']['layers_0']))) > 0.0


def test_sample_middle_trains_one_drawn_middle_capacity_per_step():
    fractions = (0.25, 0.5, 0.75, 1.0)
    method, comp = _method('width', fractions, sample_middle=1, stage2_start=100)
    params = method.init_params(jax.random.key(0), _batch())
    batch = _batch(2)
    labels, where = translation.translation_labels(batch)

    def ce(i):
        logits = method.model.apply_capacity(params, batch, i, train=False)
        logp = jax.nn.log_softmax(logits)
        nll = -jnp.take_along_axis(logp, labels[..., None], -1)[..., 0]
        return float(jnp.sum(nll * where) / jnp.sum(where))

    each = [ce(i) for i in range(4)]
    loss = jax.jit(lambda r: method.loss(params, {}, batch, r, 0, phase='stage1')[0])
    drawn = set()
    for seed in range(12):
        total = float(loss(jax.random.key(seed)))
        middle = total - each[0] - each[3]
        match = [i for i in (1, 2) if abs(middle - each[i]) < 1e-4]
        assert len(match) == 1, (total, each)
        drawn.add(match[0])
    assert drawn == {1, 2}
    assert loss._cache_size() == 1  # One compiled step for every draw.


def test_bad_composite_configs_are_named():
    with pytest.raises(
        ConfigError, match=r'model\.composite\.fractions: num_heads x 0\.3'
    ):
        composite_lib.Composite(CFG, 'width', (0.3, 1.0))
    with pytest.raises(ConfigError, match='must increase'):
        composite_lib.Composite(CFG, 'depth', (1.0, 0.5))
    with pytest.raises(ConfigError, match='valid: width, depth'):
        composite_lib.Composite(CFG, 'deep', (0.5, 1.0))
    plain = translation.transformer_fns(transformer_lib.Transformer(CFG))
    with pytest.raises(ConfigError, match='model.composite.kind'):
        make_method(ml_collections.ConfigDict({'name': 'tsjt'}), plain)
    with pytest.raises(ConfigError, match='sample_middle=2'):
        _method('width', (0.25, 0.5, 1.0), sample_middle=2)


def _ok(module, argv, capsys):
    """Runs `python -m jaxdistill.MODULE ARGV` in this process; its stdout."""
    capsys.readouterr()
    assert module.main(argv) == 0
    return capsys.readouterr().out


def _json(stdout):
    """The JSON object a CLI printed last (indent=2)."""
    start = stdout.rindex('{\n  "')
    return json.loads(stdout[start : stdout.index('\n}', start) + 2])


# `python -m jaxdistill.train` of the small TSJT config; the workdir follows.
_TSJT_RUN = (
    '--config',
    str(helpers.REPO / 'configs' / 'tsjt_synthetic.py') + ':runlocal',
    '--workdir',
)


def test_train_extract_evaluate_cli(tmp_path, capsys):
    run, out = str(tmp_path / 'run'), str(tmp_path / 'small')
    _ok(
        train,
        [
            *_TSJT_RUN,
            run,
            '--config.num_train_steps=4',
            '--config.method.stage2_start=2',
            '--config.model.composite.fractions=(0.25, 1.0)',
            '--config.checkpoint.every_steps=4',
            '--config.eval.at_end=False',
            '--config.log_every_steps=2',
            # One bucket: one step per stage to compile.
            '--config.data.bucket_lengths=(48,)',
        ],
        capsys,
    )
    records = [json.loads(l) for l in open(os.path.join(run, 'metrics.jsonl'))]
    assert records[0]['train/x0.25/kd'] == 0.0 and records[-1]['train/x0.25/kd'] > 0
    summary = json.load(open(os.path.join(run, 'summary.json')))
    assert summary['num_params/x0.25'] < summary['num_params/x1']
    assert open(os.path.join(run, 'metrics.png'), 'rb').read(4) == b'\x89PNG'

    info = _json(
        _ok(
            extract_lib,
            ['--workdir', run, '--capacity', 'x0.25', '--out', out],
            capsys,
        )
    )
    assert info['num_params'] == summary['num_params/x0.25']
    # The tokenizer's sidecar (the vocabulary size asked for) goes with it.
    for name in ('spm.model', 'spm.model.json'):
        with (
            open(os.path.join(run, name), 'rb') as a,
            open(os.path.join(out, name), 'rb') as b,
        ):
            assert a.read() == b.read(), name
    assert info['architecture']['num_heads'] == 1
    # Nothing is overwritten: not a model folder, not a file.
    with pytest.raises(
        JaxdistillError, match='holds checkpoints, config.json, spm.model'
    ):
        extract_lib.extract(run, 'x0.25', out)
    with pytest.raises(JaxdistillError, match='is a file'):
        extract_lib.extract(run, 'x0.25', os.path.join(run, 'summary.json'))
    # A remote --out (written as a local 'gs:' folder before a tensorstore
    # traceback), or one that cannot be made: named, before or as it is made.
    with pytest.raises(JaxdistillError, match=r'remote paths \(gs://\)'):
        extract_lib.extract(run, 'x0.25', 'gs://bucket/small')
    blocked = os.path.join(run, 'summary.json', 'small')
    with pytest.raises(JaxdistillError, match='--out .*summary.json/small cannot be'):
        extract_lib.extract(run, 'x0.25', blocked)
    # A step the run did not keep: the steps it has are listed.
    with pytest.raises(
        JaxdistillError, match=r'No checkpoint for step 3 in .*; available: \[4\]\.'
    ):
        extract_lib.extract(run, 'x0.25', str(tmp_path / 'other'), step=3)
    assert not os.path.exists(tmp_path / 'other' / 'checkpoints')
    src = checkpoint_lib.read_state(os.path.join(run, 'checkpoints', '4'))['params']
    dst = checkpoint_lib.read_state(os.path.join(out, 'checkpoints', '4'))['params']
    comp = composite_lib.Composite(
        transformer_lib.infer_config(src['model'], CFG), 'width', (0.25, 1.0)
    )
    jax.tree.map(np.testing.assert_array_equal, dst, comp.extract(src, 0))

    metrics = _json(
        _ok(
            evaluate,
            [
                '--workdir',
                out,
                '--config.eval.max_examples=8',
                '--config.eval.max_decode_len=6',
            ],
            capsys,
        )
    )
    assert np.isfinite(metrics['eval/loss']) and 'eval/bleu' in metrics
    # Trained further, it is evaluated first as the extracted model it is.
    out_text = _ok(
        train,
        ['--workdir', out, '--config.num_train_steps=5', '--config.eval.every_steps=4',
         '--config.eval.max_examples=8',
         '--config.eval.max_decode_len=6'],
        capsys,
    )  # fmt: skip
    assert 'Evaluating step 4 first: the extracted model, before training' in out_text

    # Resumed at step 4 (stage 2 since step 2) with a boundary moved past it,
    # as `stage2_start = num_train_steps // 2` does for a longer run: refused,
    # not trained back in stage 1; the saved config is kept.
    saved = open(os.path.join(run, 'config.json')).read()
    capsys.readouterr()
    argv = ['--workdir', run, '--config.num_train_steps=16']
    assert train.main(argv + ['--config.method.stage2_start=8']) == 2
    err = capsys.readouterr().err
    assert "at step 4 this run is in stage 1 of method 'tsjt' (phase 'stage2')" in err
    assert 'method.stage2_start: 2 -> 8' in err
    assert '--config.method.stage2_start=2' in err
    assert open(os.path.join(run, 'config.json')).read() == saved


def test_distill_mixes_label_loss_and_frozen_teacher():
    teacher_model = transformer_lib.Transformer(CFG)
    batch = _batch(4)
    teacher_params = teacher_model.init(
        {'params': jax.random.key(7)}, *batch.values(), train=False
    )['params']
    teacher_fns = translation.transformer_fns(teacher_model)
    small = dataclasses.replace(CFG, num_heads=2, d_ff=16)
    fns = dataclasses.replace(
        translation.transformer_fns(transformer_lib.Transformer(small)),
        load_teacher=lambda workdir: (teacher_fns, teacher_params),
    )

    def make(alpha):
        cfg = {'name': 'distill', 'teacher_workdir': '/run', 'alpha': alpha}
        return make_method(ml_collections.ConfigDict(cfg), fns)

    method = make(0.25)
    params = method.init_params(jax.random.key(0), batch)
    extra = method.init_extra(jax.random.key(1), params)
    loss, aux = jax.jit(lambda p, e: method.loss(p, e, batch, jax.random.key(2), 0))(
        params, extra
    )
    # With dropout 0, the mix is exactly 0.75 · NLL + 0.25 · KD.
    np.testing.assert_allclose(
        loss, 0.75 * aux['train/nll'] + 0.25 * aux['train/kd'], rtol=1e-5
    )
    assert float(aux['train/kd']) > 0
    grads = jax.grad(lambda e: method.loss(params, e, batch, jax.random.key(2), 0)[0])(
        extra
    )
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))
    with pytest.raises(ConfigError, match='teacher_workdir'):
        make_method(ml_collections.ConfigDict({'name': 'distill'}), fns)
    # Without a loader (a run read for its model): built, but cannot train.
    bare = dataclasses.replace(fns, load_teacher=None)
    cfg = {'name': 'distill', 'teacher_workdir': '/gone'}
    reader = make_method(ml_collections.ConfigDict(cfg), bare)
    assert reader.eval_params(params, {}) is params
    with pytest.raises(ConfigError, match='this task cannot load teachers'):
        reader.init_extra(None, params)


def test_eval_subset_is_shared_among_target_languages():
    langs = ['de'] * 5 + ['fr'] * 5 + ['cs'] * 5
    keep = translation._first_per_language(langs, 6)
    assert keep == [0, 1, 5, 6, 10, 11]
    assert translation._first_per_language(langs, 0) == list(range(15))


def test_distilled_student_translates_and_teaches(tmp_path, capsys):
    """A 'distill' run is read like any other: translate loads it and it is
    a teacher itself (neither needs its own teacher); a teacher that moved
    is named by its config key."""
    from jaxdistill import cli
    from jaxdistill import translate

    teacher, student, third = (str(tmp_path / n) for n in ('t', 's', 'u'))
    common = [
        '--config.num_train_steps=2',
        '--config.checkpoint.every_steps=2',
        '--config.eval.at_end=False',
        '--config.data.bucket_lengths=(48,)',
    ]
    plain = str(helpers.REPO / 'configs' / 'translate_synthetic.py') + ':runlocal'
    _ok(train, ['--config', plain, '--workdir', teacher] + common, capsys)
    distill = str(helpers.REPO / 'configs' / 'distill_synthetic.py') + ':runlocal'
    for run, of, kind in (
        (student, teacher, 'supervised'),
        (third, student, 'distill'),
    ):
        os.makedirs(run)
        shutil.copy(os.path.join(teacher, 'spm.model'), run)
        out = _ok(
            train,
            ['--config', distill, '--workdir', run]
            + [f'--config.method.teacher_workdir={of}']
            + common,
            capsys,
        )
        assert (
            f"Note: method.teacher_workdir: {of}, a '{kind}' run, at step 2.\n" in out
        )
    config = cli.workdir_config(student)
    model, params, _, steps = translate.load_model(student, config)
    assert steps == [2] and model.config.num_heads == 1  # The student: half of 2.
    with pytest.raises(ConfigError, match='trained one model'):
        extract_lib.extract(student, 'x0.5', str(tmp_path / 'none'))
    # The third run's teacher was the student: its parameters, frozen in the
    # third's checkpoint.
    state = checkpoint_lib.read_state(os.path.join(third, 'checkpoints', '2'))
    jax.tree.map(np.testing.assert_array_equal, state['extra']['teacher'], params)

    # The teacher's folder gone: the third run resumes with the teacher
    # frozen in its own checkpoint (the config kept at its first start).
    shutil.move(student, str(tmp_path / 'moved'))
    out = _ok(train, ['--workdir', third, '--config.num_train_steps=4'], capsys)
    assert f'Note: method.teacher_workdir: {student} is gone; the teacher' in out
    state = checkpoint_lib.read_state(os.path.join(third, 'checkpoints', '4'))
    jax.tree.map(np.testing.assert_array_equal, state['extra']['teacher'], params)
    # A new run cannot start from a teacher that is gone: the key is named.
    fresh = str(tmp_path / 'v')
    os.makedirs(fresh)
    shutil.copy(os.path.join(teacher, 'spm.model'), fresh)
    capsys.readouterr()
    argv = ['--config', distill, '--workdir', fresh]
    argv += [f'--config.method.teacher_workdir={student}'] + common
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert f'method.teacher_workdir: {student} holds no run' in err
    assert '--config.method.teacher_workdir=ITS_NEW_PATH' in err


def test_teacher_note_says_when_the_teacher_has_not_finished(tmp_path):
    from jaxdistill import teacher_cache

    run = tmp_path / 'teacher'
    (run / 'checkpoints' / '4').mkdir(parents=True)
    (run / 'checkpoints' / '6.orbax-checkpoint-tmp').mkdir()  # In flight.
    (run / 'config.json').write_text(
        json.dumps({'num_train_steps': 10, 'method': {'name': 'tsjt'}})
    )
    note = teacher_cache.teacher_note(str(run), 'method.teacher_workdir')
    assert note.startswith(
        f"method.teacher_workdir: {run}, a 'tsjt' run, at step 4 of its "
        'num_train_steps=10: it has not trained to its end'
    )
    (run / 'checkpoints' / '10').mkdir()
    assert teacher_cache.teacher_note(str(run), 'k').endswith('at step 10.')


def test_extracted_model_of_a_run_with_a_moving_average(tmp_path, capsys):
    """A run with `optimizer.ema_decay` is evaluated on its moving average;
    the extracted capacity is that average, and the extracted folder's own
    moving average starts as it (not as a random init), so `evaluate` on
    the folder gives the in-run figures of that capacity."""
    run, out = str(tmp_path / 'run'), str(tmp_path / 'small')
    _ok(
        train,
        [
            *_TSJT_RUN,
            run,
            '--config.num_train_steps=3',
            '--config.optimizer.ema_decay=0.9',
            '--config.model.composite.fractions=(0.25, 1.0)',
            '--config.checkpoint.every_steps=3',
            '--config.eval.every_steps=3',
            '--config.eval.bleu=False',
            '--config.eval.max_examples=16',
            '--config.log_every_steps=3',
            '--config.data.bucket_lengths=(48,)',
        ],
        capsys,
    )
    in_run = json.load(open(os.path.join(run, 'summary.json')))['eval/x0.25/loss']
    _ok(extract_lib, ['--workdir', run, '--capacity', 'x0.25', '--out', out], capsys)
    state = checkpoint_lib.read_state(os.path.join(out, 'checkpoints', '3'))
    jax.tree.map(
        np.testing.assert_array_equal,
        optim.ema_params(state['opt_state']),
        state['params'],
    )
    metrics = _json(_ok(evaluate, ['--workdir', out], capsys))
    assert metrics['eval/loss'] == pytest.approx(in_run, rel=1e-5)


@pytest.mark.parametrize('sample_middle', [0, 2])
def test_stage2_loss_by_hand(sample_middle):
    # label_weight · Σ_c CE_c + distill_weight · Σ_{c<C} T²·KL(z_C ‖ z_c), each
    # a masked mean over tokens, in float64 numpy from each capacity's logits.
    # sample_middle=2 of the two middle capacities gives the same sum with
    # every draw: each is drawn once, and never the largest.
    lw, dw, t = 0.3, 0.5, 2.0
    method, _ = _method(
        'width',
        (0.25, 0.5, 0.75, 1.0),
        stage2_start=0,
        label_weight=lw,
        distill_weight=dw,
        temperature=t,
        sample_middle=sample_middle,
    )
    batch = _batch(4)
    params = jax.jit(method.init_params)(jax.random.key(0), batch)
    labels, where = (np.asarray(x) for x in translation.translation_labels(batch))
    logits = jax.jit(
        lambda p: [
            method.model.apply_capacity(p, batch, i, train=False) for i in range(4)
        ]
    )(params)
    mean = lambda v: np.sum(v * where) / np.sum(where)
    log_p = helpers.np_log_softmax(np.asarray(logits[-1]) / t)
    want = 0.0
    for i, z in enumerate(logits):
        log_s = helpers.np_log_softmax(z)
        want += lw * mean(-np.take_along_axis(log_s, labels[..., None], -1)[..., 0])
        if i < 3:
            kl = np.sum(
                np.exp(log_p) * (log_p - helpers.np_log_softmax(np.asarray(z) / t)), -1
            )
            want += dw * mean(t**2 * kl)
    loss = jax.jit(lambda r: method.loss(params, {}, batch, r, 0, phase='stage2')[0])
    for seed in range(6):
        np.testing.assert_allclose(loss(jax.random.key(seed)), want, rtol=1e-5)
