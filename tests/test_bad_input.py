"""Each user mistake gets one clear message naming the culprit, exit code 2."""

import gzip
import json

import pytest

from jaxdistill import evaluate
from jaxdistill import train
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
        ('--config.optimizer.learning_rate=-1', 'optimizer.learning_rate must be >= 0'),
    ],
)
def test_out_of_range_values_are_named(capsys, tmp_path, override, message):
    code, _, err = _train(capsys, tmp_path, override)
    assert code == 2 and message in err and 'Traceback' not in err


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
        ]
    )
    assert code == 0
    return work


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


def test_evaluate_cli_on_trained_workdir(capsys, trained):
    code = evaluate.main(['--workdir', str(trained)])
    out = capsys.readouterr().out
    assert code == 0
    metrics = json.loads(out[out.index('{') :])
    assert metrics['step'] == 10 and 0 <= metrics['eval/bleu'] <= 100


def test_evaluate_without_a_run(capsys, tmp_path):
    assert evaluate.main(['--workdir', str(tmp_path)]) == 2
    assert 'holds no run' in capsys.readouterr().err
