"""Each user mistake gets one clear message naming the culprit, exit code 2."""

import gzip
import json
import re
import shutil

import jax
import numpy as np
import pytest

from jaxdistill import checkpoint
from jaxdistill import configuration
from jaxdistill import evaluate
from jaxdistill import train
from jaxdistill.errors import ConfigError, JaxdistillError
from tests import helpers

BASE = ['--config', helpers.CONFIG]


def _train(capsys, workdir, *overrides):
    code = train.main(BASE + ['--workdir', str(workdir), *overrides])
    out = capsys.readouterr()
    return code, out.out, out.err


def _files(tmp_path, en, de, gz=False):
    d = tmp_path / 'data'
    d.mkdir(exist_ok=True)
    for lang, content in (('en', en), ('de', de)):
        for split in ('train', 'val'):
            if gz:
                with gzip.open(d / f'{split}.{lang}.gz', 'wb') as f:
                    f.write(content)
            else:
                (d / f'{split}.{lang}').write_bytes(content)
    return [
        '--config.data.source=files',
        f'--config.data.files_dir={d}',
        '--config.data.pairs=("en-de",)',
    ]


def test_unknown_config_key_lists_close_keys(capsys, tmp_path):
    code, _, err = _train(capsys, tmp_path, '--config.model.num_layer=2')
    assert code == 2
    assert "Unknown config key 'model.num_layer'" in err
    assert 'model.num_encoder_layers' in err and 'Traceback' not in err


def test_unknown_method_name_suggests(capsys, tmp_path):
    code, _, err = _train(capsys, tmp_path, '--config.method.name=supervisd')
    assert code == 2 and "Did you mean 'supervised'" in err


@pytest.mark.parametrize(
    'override, message',
    [
        ('--config.model.d_model=0', 'model.d_model=0 must be >= 1'),
        ('--config.model.dropout_rate=1.5', 'model.dropout_rate=1.5 must be in [0, 1)'),
        ('--config.eval.beam_size=-1', 'eval.beam_size=-1 must be >= 0'),
        ('--config.log_every_steps=0', 'log_every_steps=0 must be an integer >= 1'),
        ('--config.microbatches=0', 'microbatches=0 must be an integer >= 1'),
        ('--config.optimizer.learning_rate=-1', 'optimizer.learning_rate must be >= 0'),
        ('--config.model.dtype=float16', "model.dtype='float16' must be one of"),
        ('--config.seed=-1', 'seed=-1 must be an integer >= 0'),
        (
            '--config.optimizer.b2=1.0',
            'optimizer.b2=1.0 must be a number >= 0.0 and < 1.0',
        ),
        ('--config.data.too_long=trunc', "data.too_long is 'trunc'; valid values"),
    ],
)
def test_out_of_range_values_are_named(capsys, tmp_path, override, message):
    code, _, err = _train(capsys, tmp_path, override)
    assert code == 2 and message in err and 'Traceback' not in err
    assert not (tmp_path / 'spm.model').exists()  # Named before any work.


def test_missing_data_file(capsys, tmp_path):
    code, _, err = _train(
        capsys,
        tmp_path,
        '--config.data.source=files',
        f'--config.data.files_dir={tmp_path}/nowhere',
    )
    assert code == 2 and 'nowhere/train.en' in err


def test_parallel_files_with_different_line_counts(capsys, tmp_path):
    args = _files(tmp_path, b'a b\nc d\ne f\n', b'x y\nz w\n')
    code, _, err = _train(capsys, tmp_path / 'w', *args)
    assert code == 2
    assert 'train.en' in err and 'train.de' in err and '3' in err and '2' in err


def test_empty_file(capsys, tmp_path):
    args = _files(tmp_path, b'', b'')
    code, _, err = _train(capsys, tmp_path / 'w', *args)
    assert code == 2 and 'is empty' in err and 'train.en' in err


def test_invalid_utf8_names_file_and_line(capsys, tmp_path):
    args = _files(tmp_path, b'good line\nbad \xff line\n', b'gut\nschlecht\n', gz=True)
    code, _, err = _train(capsys, tmp_path / 'w', *args)
    assert code == 2 and 'train.en.gz line 2' in err and 'UTF-8' in err


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A finished 10-step run with a checkpoint at step 10."""
    work = tmp_path_factory.mktemp('trained')
    code = train.main(
        BASE
        + [
            '--workdir',
            str(work),
            '--config.num_train_steps=10',
            '--config.eval.at_end=False',
            '--config.profile_steps=2',
        ]
    )
    assert code == 0
    return work


def test_profile_steps_write_a_trace(trained):
    # Steps 6-7, after the first log line at step 5 (runlocal logs every 5).
    traces = list((trained / 'profile').glob('plugins/profile/*/*.xplane.pb'))
    assert len(traces) == 1 and traces[0].stat().st_size > 0


def test_long_sentences_are_counted(trained):
    record = json.loads((trained / 'summary.json').read_text())
    assert record['step'] == 10
    cfg = json.loads((trained / 'config.json').read_text())
    assert cfg['data']['too_long'] == 'filter'
    # The runlocal max_len of 48 drops some of the up-to-20-word sentences.
    assert record['data/filtered_too_long'] > 0


def test_incompatible_checkpoint_config(capsys, trained):
    code, _, err = _train(
        capsys, trained, '--config.num_train_steps=20', '--config.model.d_model=48'
    )
    assert code == 2
    assert 'incompatible config' in err and 'model.d_model: 32 -> 48' in err
    assert (trained / 'checkpoints' / '10').is_dir()  # Nothing lost.


def test_a_start_that_saved_no_checkpoint_binds_no_later_config(
    capsys, tmp_path, trained
):
    """config.json of a start that stopped before its first checkpoint (a
    model too large for the device, say) does not refuse the corrected
    config: nothing was trained with the old one."""
    from jaxdistill import trainer  # pylint: disable=g-import-not-at-top

    shutil.copy(trained / 'config.json', tmp_path / 'config.json')
    config = configuration.load_config(helpers.CONFIG)
    configuration.apply_overrides(config, ['model.d_model=48'])
    trainer._check_config_compatible(config, str(tmp_path))
    out = capsys.readouterr().out
    assert 'is from an earlier start that saved no checkpoint' in out
    assert 'model.d_model: 32 -> 48' in out
    (tmp_path / 'checkpoints' / '10').mkdir(parents=True)
    with pytest.raises(JaxdistillError, match='model.d_model: 32 -> 48'):
        trainer._check_config_compatible(config, str(tmp_path))


def test_a_model_axis_larger_than_the_devices_is_read_in_a_smaller_one(capsys, trained):
    """A run trained with a model axis over more devices than are here (16;
    these tests have 8) is evaluated with the largest axis that fits, with a
    note; training on is refused with the way out named."""
    from jaxdistill import evaluate  # pylint: disable=g-import-not-at-top

    wide = '--config.mesh.model_axis_size=16'
    capsys.readouterr()
    assert (
        evaluate.main(['--workdir', str(trained), wide, '--config.eval.bleu=False'])
        == 0
    )
    out, err = capsys.readouterr()
    assert (
        'mesh.model_axis_size=16, which does not divide these 8 devices; it is read with 8'
        in err
    )
    assert np.isfinite(json.loads(out)['eval/loss'])  # stdout: the JSON alone.
    code, _, err = _train(capsys, trained, '--config.num_train_steps=12', wide)
    assert code == 2 and 'give --config.mesh.model_axis_size=N, N dividing 8' in err
    assert (trained / 'checkpoints' / '10').is_dir()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(capsys, trained):
    code, _, err = _train(
        capsys,
        trained,
        '--config.num_train_steps=20',
        '--config.optimizer.learning_rate=1e38',
        '--config.log_every_steps=1',
    )
    assert code == 2, err
    assert 'Non-finite' in err and 'step 10' in err
    steps = sorted(
        int(p.name) for p in (trained / 'checkpoints').iterdir() if p.name.isdigit()
    )
    assert steps[-1] == 10, steps
    # Recorded for `jaxdistill.runs` ('failed'), until a run starts again.
    error = json.loads((trained / 'error.json').read_text())
    assert error['error'] == 'NonFiniteLossError' and 'Non-finite' in error['message']
    from jaxdistill import runs  # pylint: disable=g-import-not-at-top

    assert runs.describe(str(trained))['state'] == 'failed'
    code, _, err = _train(capsys, trained, '--config.num_train_steps=10')
    assert code == 0, err
    assert not (trained / 'error.json').exists()


def test_nan_loss_with_a_save_in_flight_keeps_that_checkpoint(capsys, tmp_path):
    """The last finite step's checkpoint is still being written in the
    background when the next step's non-finite loss stops the run: it is
    finished, not abandoned."""
    code, _, err = _train(
        capsys,
        tmp_path,
        '--config.num_train_steps=20',
        '--config.optimizer.learning_rate=1e38',
        '--config.log_every_steps=1',
        '--config.checkpoint.every_steps=1',
        '--config.checkpoint.async_save=True',
    )
    assert code == 2 and 'Non-finite' in err, err
    last = re.search(r'the last good checkpoint \(step (\d+)\)', err).group(1)
    names = [p.name for p in (tmp_path / 'checkpoints').iterdir()]
    assert last in names and not [n for n in names if 'tmp' in n], names


def test_nan_parameters_are_never_saved_by_a_ranked_evaluation(capsys, tmp_path):
    """A ranked evaluation saves at steps that are not log steps, where the
    window's metrics had not been checked: diverged parameters were saved
    and then called the last good checkpoint (or 'step None' with none)."""
    code, _, err = _train(
        capsys,
        tmp_path,
        '--config.num_train_steps=10',
        '--config.optimizer.learning_rate=1e38',
        '--config.optimizer.schedule=constant',
        '--config.log_every_steps=5',
        '--config.eval.every_steps=3',
        '--config.eval.bleu=False',
        '--config.checkpoint.best_metric=eval/loss',
        '--config.checkpoint.best_mode=min',
        '--config.data.bucket_lengths=(48,)',  # One compiled train step.
        '--config.eval.max_examples=16',
    )
    assert code == 2 and 'Non-finite' in err, err
    assert 'step None' not in err
    saved = [p.name for p in (tmp_path / 'checkpoints').glob('*') if p.name.isdigit()]
    for name in saved:
        state = checkpoint.read_state(str(tmp_path / 'checkpoints' / name))
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(state['params'])), name
    if saved:
        assert f'the last good checkpoint (step {max(map(int, saved))})' in err
    else:
        assert 'no checkpoint was saved before it diverged' in err, err


def test_evaluate_cli_on_trained_workdir(capsys, trained):
    # A save the run is still writing (as if it were training there now):
    # a read-only tool must leave it alone, not clean it up as a leftover.
    in_flight = trained / 'checkpoints' / '20.orbax-checkpoint-tmp'
    (in_flight / 'state.orbax-checkpoint-tmp').mkdir(parents=True)
    try:
        code = evaluate.main(['--workdir', str(trained)])
        out = capsys.readouterr().out
        assert code == 0
        metrics = json.loads(out[out.index('{') :])
        assert metrics['step'] == 10 and 0 <= metrics['eval/bleu'] <= 100
        assert (in_flight / 'state.orbax-checkpoint-tmp').is_dir()
    finally:
        shutil.rmtree(in_flight, ignore_errors=True)


def test_evaluate_while_the_first_save_is_in_flight(capsys, trained, tmp_path):
    """Only a half-written checkpoint: no checkpoint yet, said as such (not
    an evaluation of freshly initialised parameters), and nothing deleted."""
    for name in ('config.json', 'spm.model'):
        shutil.copy(trained / name, tmp_path / name)
    in_flight = tmp_path / 'checkpoints' / '5.orbax-checkpoint-tmp'
    in_flight.mkdir(parents=True)
    assert evaluate.main(['--workdir', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f'No checkpoints in {tmp_path}/checkpoints (has the run saved' in err
    assert in_flight.is_dir()


def test_train_refuses_step_and_its_help_shows_overrides(capsys, tmp_path):
    """`--step` picks a checkpoint for evaluate and translate; train always
    resumes from the latest, so it refuses the flag instead of ignoring it."""
    with pytest.raises(SystemExit) as e:
        train.main(
            ['--config', helpers.CONFIG, '--workdir', str(tmp_path), '--step', '5']
        )
    assert e.value.code == 2
    assert 'unrecognized arguments: --step 5' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(['--help'])
    out = capsys.readouterr().out
    assert out.startswith('usage: python -m jaxdistill.train ')
    assert '--config.a.b=value, e.g. --config.num_train_steps=100' in ' '.join(
        out.split()
    )
    assert not list(tmp_path.iterdir())


def test_evaluate_without_a_run(capsys, tmp_path):
    assert evaluate.main(['--workdir', str(tmp_path)]) == 2
    assert 'holds no run' in capsys.readouterr().err


@pytest.mark.parametrize(
    'overrides, message',
    [
        (
            ['eval.max_decode_len=500'],
            'eval.max_decode_len=500 must be in 1..model.max_len (256)',
        ),
        (['eval.batch_size=0'], 'eval.batch_size=0 must be an integer >= 1'),
        (['data.batch_tokens=-1'], 'data.batch_tokens=-1 must be an integer >= 1'),
        (['model.max_len=16'], 'data.max_len=48 exceeds model.max_len=16'),
        (
            ['model.max_len=50', 'data.bucket_lengths=(24, 64)'],
            'pads sequences of data.max_len=48 tokens to 64, more than '
            'model.max_len=50',
        ),
        (['data.bucket_lengths=()'], 'data.bucket_lengths=() must be one or more'),
        (['data.source="file"'], "data.source is 'file'; valid values"),
        (['data.max_examples=-1'], 'data.max_examples=-1 must be an integer >= 0'),
        (['data.pairs=("en_de",)'], "data.pairs entry 'en_de' is not of the form"),
    ],
)
def test_translation_lengths_checked_before_any_data_is_read(
    tmp_path, overrides, message
):
    """TranslationTask refuses these before it reads data (the data folder
    does not exist), so before the trainer can run a step."""
    from jaxdistill.tasks import translation  # pylint: disable=g-import-not-at-top

    config = configuration.load_config(helpers.CONFIG)
    configuration.apply_overrides(
        config,
        ['data.source="files"', f'data.files_dir="{tmp_path}/nowhere"', *overrides],
    )
    with pytest.raises(ConfigError) as e:
        translation.TranslationTask(config, str(tmp_path), mesh=None)
    assert message in str(e.value)


def test_a_start_on_other_data_remakes_the_tokenizer_until_a_checkpoint(tmp_path):
    """A first start that stopped before its first checkpoint (killed, or an
    error in its first step) left spm.model trained on its data; the
    corrected start on other data trains it again, as a new workdir would.
    Once a checkpoint holds embeddings for its pieces, it is kept."""
    from jaxdistill import sharding  # pylint: disable=g-import-not-at-top
    from jaxdistill.tasks import translation  # pylint: disable=g-import-not-at-top

    mesh = sharding.make_mesh()

    def task(workdir, seed):
        config = configuration.load_config(helpers.CONFIG)
        configuration.apply_overrides(config, [f'data.synthetic_seed={seed}'])
        return translation.TranslationTask(config, str(workdir), mesh=mesh)

    run, fresh = tmp_path / 'run', tmp_path / 'fresh'
    task(run, seed=1)
    first = (run / 'spm.model').read_bytes()
    task(fresh, seed=2)
    assert (fresh / 'spm.model').read_bytes() != first
    task(run, seed=2)
    assert (run / 'spm.model').read_bytes() == (fresh / 'spm.model').read_bytes()
    (run / 'checkpoints' / '5').mkdir(parents=True)
    task(run, seed=1)
    assert (run / 'spm.model').read_bytes() == (fresh / 'spm.model').read_bytes()


def test_batches_raised_past_batch_tokens_get_a_note(tmp_path):
    """On 8 devices every batch needs a multiple of 8 rows; with
    data.batch_tokens=128 the 24- and 48-token buckets get 8 rows anyway
    (192 and 384 tokens), and the run says so at its start."""
    from jaxdistill import sharding  # pylint: disable=g-import-not-at-top
    from jaxdistill.tasks import translation  # pylint: disable=g-import-not-at-top

    config = configuration.load_config(helpers.CONFIG)
    mesh = sharding.make_mesh()
    task = translation.TranslationTask(config, str(tmp_path), mesh=mesh)
    assert task.start_notes() == []  # batch_tokens=512: 16 and 8 rows.
    configuration.apply_overrides(config, ['data.batch_tokens=128'])
    task = translation.TranslationTask(config, str(tmp_path), mesh=mesh)
    assert task.train_batches.raised_buckets() == {24: 8, 48: 8}
    (note,) = task.start_notes()
    assert 'data.batch_tokens=128 gives fewer rows than the 8' in note
    assert 'bucket length 24 (192 tokens), 48 (384 tokens) hold 8 rows' in note
    # Two micro-batches a step: every batch holds a multiple of 16 rows.
    configuration.apply_overrides(config, ['data.batch_tokens=512', 'microbatches=2'])
    task = translation.TranslationTask(config, str(tmp_path), mesh=mesh)
    assert {b % 16 for b, _ in task.train_batches.batch_shapes().values()} == {0}
    assert task.train_batches.raised_buckets() == {48: 16}
    assert 'the 16 that every batch needs' in task.start_notes()[0]


def test_image_batch_size_must_split_into_microbatches():
    from jaxdistill import sharding  # pylint: disable=g-import-not-at-top
    from jaxdistill.tasks import classification  # pylint: disable=g-import-not-at-top

    config = configuration.load_config(
        str(helpers.REPO / 'configs' / 'self_distill_mnist.py') + ':runlocal'
    )
    configuration.apply_overrides(config, ['data.batch_size=24', 'microbatches=2'])
    with pytest.raises(ConfigError, match=r'times microbatches=2 \(16\)'):
        classification._batch_multiple(config, sharding.make_mesh())
    configuration.apply_overrides(config, ['data.batch_size=32'])
    assert classification._batch_multiple(config, sharding.make_mesh()) == 8


def test_zero_codistill_replicas_named_before_the_mesh(tmp_path):
    from jaxdistill import trainer  # pylint: disable=g-import-not-at-top

    config = configuration.load_config(
        str(helpers.REPO / 'configs' / 'codistill_synthetic.py') + ':runlocal'
    )
    configuration.apply_overrides(config, ['method.num_replicas=0'])
    # The method's own check (made without data, before anything is built).
    with pytest.raises(ConfigError, match=r'method.num_replicas=0'):
        trainer.Trainer(config, str(tmp_path))


def test_too_small_vocab_size_names_the_key(tmp_path):
    from jaxdistill.data import tokenizer  # pylint: disable=g-import-not-at-top

    with pytest.raises(ConfigError, match=r'data.vocab_size=5 is too small.*>= 18'):
        tokenizer.Tokenizer.train(
            ['hello world abc xyz'] * 10, 5, str(tmp_path / 'spm.model')
        )
    # Below the special pieces themselves, SentencePiece's own error would
    # not name the key.
    with pytest.raises(
        ConfigError,
        match=r'data.vocab_size=4 is too small .* PAD, UNK, BOS, EOS and 1 tag '
        r'symbols alone take 5 pieces; set data.vocab_size >= 6',
    ):
        tokenizer.Tokenizer.train(
            ['hello world'] * 10,
            4,
            str(tmp_path / 'm.model'),
            user_defined_symbols=['<2de>'],
        )


def test_a_tokenizer_with_other_special_ids_is_refused(tmp_path):
    """A SentencePiece model trained with its defaults (UNK/BOS/EOS at
    0/1/2, no PAD) put in a workdir would have its piece 3 read as EOS."""
    import io

    import sentencepiece as spm

    from jaxdistill.data import tokenizer  # pylint: disable=g-import-not-at-top
    from jaxdistill.errors import DataError  # pylint: disable=g-import-not-at-top

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(['a dog runs', 'two men in a boat'] * 20),
        model_writer=model,
        vocab_size=19,
        minloglevel=2,
    )
    path = tmp_path / 'spm.model'
    path.write_bytes(model.getvalue())
    with pytest.raises(
        DataError,
        match=r'spm.model has PAD/UNK/BOS/EOS ids \(-1, 0, 1, 2\); jaxdistill needs '
        r'\(0, 1, 2, 3\)',
    ):
        tokenizer.load_or_train_tokenizer(str(path), lambda: ['a dog'], 19)


@pytest.mark.parametrize('key', ['data.batch_size', 'eval.batch_size'])
def test_image_batch_sizes_checked_before_any_data_is_read(tmp_path, key):
    from jaxdistill.tasks import classification  # pylint: disable=g-import-not-at-top

    config = configuration.load_config(
        str(helpers.REPO / 'configs' / 'self_distill_mnist.py') + ':runlocal'
    )
    configuration.apply_overrides(
        config, [f'data.data_dir="{tmp_path}/nowhere"', f'{key}=0']
    )
    with pytest.raises(ConfigError, match=rf'{key}=0 must be an integer >= 1'):
        classification.ImageClassificationTask(config, str(tmp_path), mesh=None)


@pytest.mark.parametrize(
    'thresholds, message',
    [
        ('(0.5, 1.5)', r'eval.thresholds holds 1.5: a softmax confidence threshold '),
        ('(-0.1,)', r'eval.thresholds holds -0.1: '),
        (
            '(0.9, 0.9000001)',
            r'eval.thresholds holds 0.9 and 0.9000001, which would both be '
            r'logged as eval/early_exit_0.9/',
        ),
    ],
)
def test_early_exit_thresholds_checked_before_any_data_is_read(
    tmp_path, thresholds, message
):
    from jaxdistill.tasks import classification  # pylint: disable=g-import-not-at-top

    config = configuration.load_config(
        str(helpers.REPO / 'configs' / 'self_distill_mnist.py') + ':runlocal'
    )
    configuration.apply_overrides(
        config, [f'data.data_dir="{tmp_path}/nowhere"', f'eval.thresholds={thresholds}']
    )
    with pytest.raises(ConfigError, match=message):
        classification.ImageClassificationTask(config, str(tmp_path), mesh=None)


def test_a_teacher_of_another_task_is_named(tmp_path):
    import types

    from jaxdistill.tasks import translation  # pylint: disable=g-import-not-at-top

    (tmp_path / 'config.json').write_text('{"task": "image_classification"}')
    student = types.SimpleNamespace(workdir=str(tmp_path / 'student'))
    with pytest.raises(ConfigError, match="is a 'image_classification' run"):
        translation.TranslationTask.load_teacher(student, str(tmp_path))


def test_method_and_teacher_settings_named():
    import types

    import ml_collections
    import numpy as np

    from jaxdistill import checkpoint
    from jaxdistill import trainer
    from jaxdistill.errors import CheckpointMismatchError
    from jaxdistill.methods import make_method

    with pytest.raises(CheckpointMismatchError, match='No checkpoints in /nowhere'):
        checkpoint.latest_step_dir('/nowhere/checkpoints')
    smoothing = ml_collections.ConfigDict(
        {'name': 'supervised', 'label_smoothing': 1.5}
    )
    with pytest.raises(ConfigError, match=r'label_smoothing=1.5 must be in \[0, 1\)'):
        make_method(smoothing, None)
    rl = make_method(
        ml_collections.ConfigDict(
            {'name': 'rl_multi_teacher', 'num_teachers': 2, 'num_classes': 3}
        ),
        types.SimpleNamespace(apply_exits=object()),
    )
    with pytest.raises(ConfigError, match=r'^method.policy_every=0 must be an integer'):
        make_method(
            ml_collections.ConfigDict(
                {'name': 'rl_multi_teacher', 'num_teachers': 2, 'policy_every': 0}
            ),
            types.SimpleNamespace(apply_exits=object()),
        )
    batch = {'teacher_logits': np.zeros((4, 2, 2), np.float32)}
    with pytest.raises(ConfigError, match='num_classes=3 but the teachers predict 2'):
        rl.loss(None, None, batch, None, 0)
    # Settings the run's length leaves without effect get a note.
    config = configuration.load_config(
        str(helpers.REPO / 'configs' / 'codistill_synthetic.py')
    )
    configuration.apply_overrides(
        config, ['num_train_steps=300', 'method.burn_in_steps=400']
    )
    notes = trainer._inert_settings(config, {'skipgram_off_step': 500, 'x': 1})
    assert len(notes) == 2 and 'never distil' in notes[0] and "'skipgram'" in notes[1]
    config = configuration.load_config(
        str(helpers.REPO / 'configs' / 'tsjt_synthetic.py') + ':runlocal'
    )
    configuration.apply_overrides(
        config, ['num_train_steps=4', 'method.stage2_start=100']
    )
    (note,) = trainer._inert_settings(config, {})
    assert note.startswith('method.stage2_start=100 >= num_train_steps=4: stage 2')
    config = configuration.load_config(
        str(helpers.REPO / 'configs' / 'rlkd_sst2.py') + ':arm=rl,teachers=/t1+/t2'
    )
    configuration.apply_overrides(
        config, ['num_train_steps=50', 'method.warmup_steps=50']
    )
    (note,) = trainer._inert_settings(config, {})
    assert 'the teacher-selection policy never runs' in note
    configuration.apply_overrides(config, ['method.warmup_steps=49'])
    assert trainer._inert_settings(config, {}) == []


def test_choosing_checkpoints_on_a_test_split_gets_a_note():
    from jaxdistill import trainer  # pylint: disable=g-import-not-at-top

    def notes(spec, *overrides):
        config = configuration.load_config(str(helpers.REPO / 'configs' / spec))
        configuration.apply_overrides(config, list(overrides))
        return trainer._selection_on_test(config)  # pylint: disable=protected-access

    # MT2ST: the unprefixed eval/* metrics are eval.splits[0], 'test'.
    (note,) = notes(
        'mt2st_sst2.py:runlocal',
        'checkpoint.best_metric="eval/accuracy"',
        'checkpoint.patience=3',
    )
    assert "ranks evaluations of the 'test' split (eval.splits)" in note
    assert 'the best checkpoint and the early stop are chosen on it' in note
    assert (
        notes('mt2st_sst2.py:runlocal', 'checkpoint.best_metric="eval/dev/accuracy"')
        == []
    )
    assert notes('mt2st_sst2.py:runlocal', 'checkpoint.best_metric="eval/test/loss"')
    assert notes('mt2st_sst2.py:runlocal') == []  # Nothing ranked.
    # Images evaluate data.eval_split='test'; translation 'val'.
    (note,) = notes(
        'self_distill_mnist.py:runlocal', 'checkpoint.best_metric="eval/accuracy"'
    )
    assert "'test' split (data.eval_split): the best checkpoint is chosen" in note
    assert (
        notes('translate_synthetic.py:runlocal', 'checkpoint.best_metric="eval/bleu"')
        == []
    )


def test_sst2_damaged_files_and_text_settings_named(tmp_path):
    import gzip as gzip_lib

    from jaxdistill.data import sst2
    from jaxdistill.errors import DataError
    from jaxdistill.tasks import classification

    good = b'sentence\tlabel\na fine film\t1\n'
    (tmp_path / 'cut.tsv.gz').write_bytes(gzip_lib.compress(good * 50)[:40])
    with pytest.raises(DataError, match='cut.tsv.gz: corrupt gzip data'):
        sst2.read_sst2(tmp_path / 'cut.tsv.gz')
    (tmp_path / 'latin1.tsv').write_bytes(good + b'caf\xe9 noir\t0\n')
    with pytest.raises(DataError, match='latin1.tsv line 3: invalid UTF-8'):
        sst2.read_sst2(tmp_path / 'latin1.tsv')
    # A row with no sentence would train on all-padding input.
    (tmp_path / 'empty.tsv').write_bytes(good + b'   \t0\n')
    with pytest.raises(DataError, match='empty.tsv:3: the sentence is empty.'):
        sst2.read_sst2(tmp_path / 'empty.tsv')
    (tmp_path / 'four.tsv').write_bytes(good + b'so so\t2\n')
    with pytest.raises(
        DataError, match=r'four.tsv:3: expected sentence<TAB>0\|1 \(two'
    ):
        sst2.read_sst2(tmp_path / 'four.tsv')
    for override, message in [
        ('data.max_len=0', 'data.max_len=0 must be an integer >= 1'),
        ('data.vocab_size=2', 'data.vocab_size=2 must be an integer >= 3'),
        ('data.eval_split=validation', "data.eval_split='validation'; valid:"),
    ]:
        bad = configuration.apply_overrides(
            configuration.load_config(
                str(helpers.REPO / 'configs' / 'self_distill_sst2.py') + ':runlocal'
            ),
            [f'data.data_dir="{tmp_path}/nowhere"', override],
        )
        with pytest.raises(ConfigError, match=message):
            classification.TextClassificationTask(bad, str(tmp_path), mesh=None)


# Run in a process that imported the commands already (not so from a shell).
@pytest.mark.filterwarnings('ignore:.*found in sys.modules:RuntimeWarning')
def test_python_m_jaxdistill_lists_every_command(capsys):
    """The list cannot go stale: it holds exactly the modules that run as
    `python -m jaxdistill.X`."""
    import importlib
    import pathlib

    from jaxdistill import __main__ as entry

    package = pathlib.Path(entry.__file__).parent
    runnable = {
        p.stem
        for p in package.glob('*.py')
        if p.stem != '__main__' and "if __name__ == '__main__':" in p.read_text()
    }
    assert set(entry.COMMANDS) == runnable
    for name in entry.COMMANDS:
        assert callable(importlib.import_module(f'jaxdistill.{name}').main)
    assert entry.main([]) == 0
    assert 'python -m jaxdistill.plot ' in capsys.readouterr().out
    # `python -m jaxdistill NAME ...` runs the command (it printed the list
    # and exited 0, so a script recorded success with nothing done).
    assert entry.main(['trian', '--workdir', 'x']) == 2
    assert "error: no command 'trian'; the commands: train," in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        entry.main(['plot', '--help'])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith('usage: python -m jaxdistill.plot ')
    with pytest.raises(SystemExit) as stop:
        entry.main(['runs', str(pathlib.Path('/nonexistent/runs'))])
    assert stop.value.code == 2


def test_a_remote_workdir_is_refused_not_written_locally(capsys, tmp_path, monkeypatch):
    from jaxdistill import trainer  # pylint: disable=g-import-not-at-top

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match='2'):
        train.main(['--config', helpers.CONFIG, '--workdir', 'gs://bucket/run'])
    assert (
        '--workdir gs://bucket/run: remote paths (gs://) are not supported'
        in capsys.readouterr().err
    )
    config = configuration.load_config(helpers.CONFIG)
    with pytest.raises(JaxdistillError, match=r'workdir s3://b/r: remote paths'):
        trainer.Trainer(config, 's3://b/r')
    assert not list(tmp_path.iterdir())  # No local 'gs:' or 's3:' folder.


def test_workdir_and_config_file_mistakes_are_named(capsys, tmp_path):
    """A workdir that is a file, a run's config.json given as --config, and a
    damaged config.json in the workdir: one line each, nothing written."""
    afile = tmp_path / 'afile'
    afile.write_text('hi')
    code, _, err = _train(capsys, afile)
    assert code == 2 and f'error: --workdir {afile} is a file, not a folder.' in err
    assert afile.read_text() == 'hi'

    saved = tmp_path / 'config.json'
    saved.write_text(configuration.to_json(configuration.load_config(helpers.CONFIG)))
    code = train.main(['--config', str(saved), '--workdir', str(tmp_path / 'j')])
    err = capsys.readouterr().err
    assert code == 2 and 'Traceback' not in err
    assert f'error: --config {saved}: a config is a Python file (.py)' in err
    assert 'resume it with --workdir DIR alone' in err
    assert not (tmp_path / 'j').exists()

    work = tmp_path / 'run'
    work.mkdir()
    for text, problem in [
        ('{"model": {\n', 'not valid JSON (line 2, column 1: Expecting property name'),
        ('[1, 2]', 'a JSON list, not an object of config keys'),
    ]:
        (work / 'config.json').write_text(text)
        code, _, err = _train(capsys, work)
        assert code == 2 and 'Traceback' not in err, err
        assert f'error: {work}/config.json is damaged: {problem}' in err, err
        assert (work / 'config.json').read_text() == text  # Left as it was.
        assert evaluate.main(['--workdir', str(work)]) == 2
        assert f'{work}/config.json is damaged' in capsys.readouterr().err


def test_a_read_only_tool_does_not_make_a_missing_tokenizer_again(
    capsys, trained, tmp_path
):
    import os
    import shutil

    umask = os.umask(0)
    os.umask(umask)
    assert (trained / 'spm.model').stat().st_mode & 0o777 == 0o666 & ~umask
    work = tmp_path / 'copy'
    shutil.copytree(trained, work)
    (work / 'spm.model').unlink()
    capsys.readouterr()
    assert evaluate.main(['--workdir', str(work)]) == 2
    err = capsys.readouterr().err
    assert f'error: {work}/spm.model is missing: the tokenizer the run was ' in err
    assert not (work / 'spm.model').exists()


def test_config_shapes_and_spellings(capsys, tmp_path, monkeypatch):
    """get_config() without a parameter; `--config.key value` with a space;
    a config of one's own that lacks a key the spine reads; a misspelt
    method named before any data is read."""
    plain = tmp_path / 'plain.py'
    monkeypatch.syspath_prepend(str(helpers.REPO / 'configs'))
    plain.write_text(
        'import translate_synthetic\n\n\n'
        'def get_config():\n'
        "    config = translate_synthetic.get_config('runlocal')\n"
        '    del config.num_train_steps\n'
        '    return config\n'
    )
    config = configuration.load_config(str(plain))
    assert 'num_train_steps' not in config
    with pytest.raises(ConfigError, match=r"takes no argument, so 'runlocal'"):
        configuration.load_config(f'{plain}:runlocal')
    code = train.main(['--config', str(plain), '--workdir', str(tmp_path / 'w')])
    err = capsys.readouterr().err
    assert code == 2 and 'Traceback' not in err
    assert "The config has no key 'num_train_steps', which this run needs." in err

    assert configuration.split_overrides(
        ['--config.seed', '5', '--workdir', 'w', '--config.eval.bleu=False']
    ) == (['--workdir', 'w'], ['seed=5', 'eval.bleu=False'])
    with pytest.raises(ConfigError, match='--config.seed needs a value'):
        configuration.split_overrides(['--config.seed', '--workdir', 'w'])
    # On the command line: a usage error, not a traceback; translate and
    # sweep take the space form too.
    from jaxdistill import sweep  # pylint: disable=g-import-not-at-top
    from jaxdistill import translate  # pylint: disable=g-import-not-at-top

    for main in (train.main, sweep.main, translate.main):
        with pytest.raises(SystemExit) as e:
            main(['--workdir', str(tmp_path / 'w'), '--config.seed'])
        err = capsys.readouterr().err
        assert e.value.code == 2 and 'Traceback' not in err, err
        assert 'error: --config.seed needs a value (--config.seed=V).' in err, err
    args, overrides = translate._parse(  # pylint: disable=protected-access
        ['--workdir', 'w', '--config.eval.use_ema', 'False', '--beam', '2']
    )
    assert overrides == ['eval.use_ema=False'] and args.beam == 2

    code, _, err = _train(
        capsys,
        tmp_path / 'm',
        '--config.method.name=supervisd',
        '--config.data.source=files',
        f'--config.data.files_dir={tmp_path}/nowhere',
    )
    assert code == 2 and "Did you mean 'supervised'" in err and 'nowhere' not in err


def test_every_pair_too_long_names_the_split_and_max_len(capsys, tmp_path):
    long = (' '.join(f'w{i}' for i in range(300)) + '\n').encode() * 40
    args = _files(tmp_path, long, long)
    code, _, err = _train(capsys, tmp_path / 'w', *args)
    assert code == 2 and 'Traceback' not in err, err[-2000:]
    assert "data.train_split 'train': no pair is left to train on (examples 0" in err
    assert 'filtered_too_long 40' in err and 'data.max_len=' in err, err


def test_runs_names_a_damaged_log_and_an_unmatched_metric(capsys, tmp_path):
    from jaxdistill import runs

    work = tmp_path / 'r'
    work.mkdir()
    config = configuration.load_config(helpers.CONFIG)
    (work / 'config.json').write_text(configuration.to_json(config))
    (work / 'metrics.jsonl').write_text(
        '{"step": 5, "eval/loss": 2.0}\nnot json\n{"step": 10, "eval/loss": 1.0}\n'
    )
    assert runs.main([str(work)]) == 0
    out, err = capsys.readouterr()
    assert '(metrics.jsonl damaged)' in out
    assert f'note: {work}/metrics.jsonl:2: not a JSON record' in err, err
    (work / 'metrics.jsonl').write_text('{"step": 5, "eval/loss": 2.0}\n')
    assert runs.main([str(work), '--metric', 'eval/zzz*']) == 2
    assert (
        'error: --metric eval/zzz* matches no evaluation metric of these runs; '
        'they have: eval/loss.'
    ) in capsys.readouterr().err


def test_check_config_refuses_without_data_what_a_run_would():
    """trainer.check_config (the sweep's planning): every task's static
    checks, the model's fields included, with no data read."""
    from jaxdistill import trainer

    for spec, override, message in [
        (helpers.CONFIG, 'model.d_ff=-4', 'model.d_ff=-4 must be >= 1'),
        (helpers.CONFIG, 'method.name=supervisd', "Did you mean 'supervised'"),
        (
            'configs/self_distill_mnist.py:runlocal',
            'model.exit_head=bad',
            "exit_head 'bad' is not one of blocks, branch, pool",
        ),
        (
            'configs/self_distill_sst2.py:runlocal',
            'data.vocab_size=2',
            'data.vocab_size=2',
        ),
        (
            'configs/mt2st_sst2.py:runlocal',
            'model.pooling=max',
            "model.pooling='max'; valid: mean, cnn.",
        ),
        (
            'configs/mt2st_sst2.py:runlocal,arm=switch',
            "eval.splits=('test', 'val')",
            "eval.splits=('test', 'val'): each must be one of train, dev, test "
            "(not 'val').",
        ),
        (
            'configs/mt2st_sst2.py:runlocal',
            "method.aux_weights.skipgram={'kind': 'diminsh'}",
            "method.aux_weights.skipgram.kind 'diminsh' is unknown",
        ),
        (
            'configs/mt2st_sst2.py:runlocal',
            'data.skipgram.negatives=0',
            'data.skipgram.negatives=0 must be an integer >= 1.',
        ),
    ]:
        config = configuration.load_config(str(helpers.REPO / spec))
        trainer.check_config(config)  # The file's own settings pass.
        configuration.apply_overrides(config, [override])
        with pytest.raises(JaxdistillError, match=re.escape(message)):
            trainer.check_config(config)


def test_a_run_that_never_evaluates_needs_no_evaluation_files(tmp_path, capsys, caplog):
    """Translation files with only a training split: a run that evaluates
    is refused before training, naming the missing file; one with
    evaluation off trains."""
    data = tmp_path / 'data'
    data.mkdir()
    (data / 'train.en').write_text('a small dog runs\nthe cat sleeps\n' * 40)
    (data / 'train.fr').write_text('un petit chien court\nle chat dort\n' * 40)
    args = [
        '--config.data.source=files',
        f'--config.data.files_dir={data}',
        "--config.data.pairs=('en-fr',)",
        '--config.data.vocab_size=64',
        '--config.num_train_steps=2',
        '--config.data.bucket_lengths=(48,)',
    ]
    code, out, err = _train(capsys, tmp_path / 'evaluates', *args)
    assert code == 2 and 'Training' not in out
    assert f'neither {data}/val.en nor {data}/val.en.gz exists' in err
    code, out, err = _train(
        capsys,
        tmp_path / 'no_eval',
        *args,
        '--config.eval.every_steps=0',
        '--config.eval.at_end=False',
    )
    assert code == 0, err[-2000:]
    assert json.loads((tmp_path / 'no_eval' / 'summary.json').read_text())['step'] == 2
    # An evaluation split with a blank line: left out, and said.
    # And one longer than data.max_len: cut, and said.
    (data / 'val.en').write_text('a small dog runs ' * 80 + '\nthe cat sleeps\n')
    (data / 'val.fr').write_text('un petit chien court\n\n')
    code, out, err = _train(
        capsys, tmp_path / 'evaluates', *args, '--config.eval.bleu=False'
    )
    assert code == 0, err[-2000:]
    assert (
        "Evaluation split 'val': 1 of its 2 pairs have an empty side and are left out."
    ) in caplog.text
    assert "Evaluation split 'val': 1 of its 1 pairs are longer than" in caplog.text


@pytest.mark.parametrize(
    'model, message',
    [
        (
            {'name': 'bag_of_embeddings', 'dropout_rate': 1.5},
            'dropout_rate=1.5 must be in [0, 1)',
        ),
        ({'name': 'cnn_text', 'widths': ()}, 'widths=() must be one or more'),
        (
            {'name': 'bilstm_text', 'hidden_size': 0},
            'hidden_size=0 must be an integer >= 1',
        ),
        (
            {'name': 'text_classifier', 'num_heads': 5},
            'd_model=128 is not divisible by num_heads=5',
        ),
    ],
)
def test_text_model_settings_are_named_when_the_model_is_built(model, message):
    """Before any data or parameters: a rate above 1 would drop every input."""
    import ml_collections

    from jaxdistill.tasks import classification  # pylint: disable=g-import-not-at-top

    with pytest.raises(ConfigError, match=re.escape(message)):
        classification.build_model(
            ml_collections.ConfigDict(model), num_classes=2, vocab_size=10
        )


@pytest.mark.parametrize(
    'override, message',
    [
        # A negative count kept all but that many examples.
        ('eval.max_examples=-1', 'eval.max_examples=-1 must be an integer >= 0'),
        (
            'data.max_train_examples=-5',
            'data.max_train_examples=-5 must be an integer >= 0',
        ),
        (
            'data.augment="crop-flip"',
            "data.augment='crop-flip' is unknown; valid: crop_flip",
        ),
    ],
)
def test_image_data_settings_checked_before_any_data_is_read(
    tmp_path, override, message
):
    from jaxdistill.tasks import classification  # pylint: disable=g-import-not-at-top

    config = configuration.load_config(
        str(helpers.REPO / 'configs' / 'self_distill_mnist.py') + ':runlocal'
    )
    configuration.apply_overrides(
        config, [f'data.data_dir="{tmp_path}/nowhere"', override]
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        classification.ImageClassificationTask.check_config(config)


def test_a_model_axis_across_processes_is_refused():
    """Each process builds its own rows; a model axis spanning two processes
    would make them hold the same rows (a raw JAX error at the first batch)."""
    import types

    from jaxdistill import sharding  # pylint: disable=g-import-not-at-top

    devices = [types.SimpleNamespace(process_index=i // 4, id=i) for i in range(8)]
    with pytest.raises(
        ConfigError,
        match=r'model_axis_size=8 must divide the 4 devices of each process',
    ):
        sharding.make_mesh(8, devices)


def test_help_texts_keep_their_line_continuations():
    """A docstring shown by --help (argparse's description) with a shell
    line continuation must be raw: in a plain string, backslash-newline
    joins the lines, and the example command in the help ran together."""
    import ast
    import pathlib

    repo = pathlib.Path(helpers.REPO)
    for path in [*repo.glob('jaxdistill/**/*.py'), *repo.glob('benchmarks/*.py')]:
        tree = ast.parse(path.read_text())
        doc = ast.get_docstring(tree, clean=False)
        if doc is None:
            continue
        first = tree.body[0].value
        source = ast.get_source_segment(path.read_text(), first)
        if '\\\n' in source:
            assert '\\\n' in doc, f'{path}: make its docstring raw (r""")'
