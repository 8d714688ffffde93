"""`python -m jaxdistill.translate`, checkpoint averaging and beam evaluation."""

import io
import json
import os
import select
import subprocess
import sys
from unittest import mock

import jax
import numpy as np
import pytest

from jaxdistill import averaging
from jaxdistill import checkpoint
from jaxdistill import configuration
from jaxdistill import metrics as metrics_lib
from jaxdistill import translate
from jaxdistill import trainer as trainer_lib
from jaxdistill.errors import CheckpointMismatchError, ConfigError, DataError
from tests import helpers


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A 20-step synthetic run with checkpoints at steps 10 and 20."""
    workdir = tmp_path_factory.mktemp('translate_run')
    config = configuration.load_config(helpers.CONFIG)
    config.eval.at_end = False
    config.data.bucket_lengths = (48,)  # One compiled train step.
    tr = trainer_lib.Trainer(config, str(workdir))
    tr.run()
    return tr, workdir


def test_compilation_is_logged_apart_from_throughput(run):
    """The first window compiles the train step; the later ones reuse it."""
    _, workdir = run
    windows = [
        r for r in metrics_lib.read_metrics(str(workdir)) if 'train/steps_per_s' in r
    ]
    assert len(windows) >= 2
    first = windows[0]
    assert first['train/compile_seconds'] > 0.0
    assert all(
        w['train/compile_seconds'] < 0.1 * first['train/compile_seconds']
        for w in windows[1:]
    )
    # Counted with its compilation, the first window could not run faster than
    # its steps / compile seconds.
    assert first['train/steps_per_s'] > first['step'] / first['train/compile_seconds']
    # The summary has the session's total, not the last window's (about 0).
    summary = json.loads((workdir / 'summary.json').read_text())
    assert 'train/compile_seconds' not in summary
    total = sum(w['train/compile_seconds'] for w in windows)
    assert total <= summary['compile_seconds'] < summary['train_seconds']


def _mean_params(workdir, steps):
    trees = [
        checkpoint.read_state(str(workdir / 'checkpoints' / str(s)))['params']
        for s in steps
    ]
    return jax.tree.map(lambda *x: np.mean(np.stack(x), axis=0), *trees)


def test_average_checkpoints_is_the_elementwise_mean(run):
    _, workdir = run
    ckpt_dir = str(workdir / 'checkpoints')
    assert averaging.checkpoint_steps(ckpt_dir) == [10, 20]
    mean, steps = averaging.average_checkpoints(ckpt_dir, 2)
    assert steps == [10, 20]
    expected = _mean_params(workdir, [10, 20])
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        mean,
        expected,
    )
    single, steps = averaging.average_checkpoints(ckpt_dir, 1, upto=10)
    assert steps == [10]
    jax.tree.map(np.testing.assert_array_equal, single, _mean_params(workdir, [10]))
    with pytest.raises(CheckpointMismatchError, match='holds 2'):
        averaging.average_checkpoints(ckpt_dir, 5)
    with pytest.raises(CheckpointMismatchError, match='step 15'):
        averaging.average_checkpoints(ckpt_dir, 1, upto=15)


def test_averaging_refuses_a_best_checkpoint_kept_outside_the_last_keep(tmp_path):
    """With checkpoint.keep=2 and a best checkpoint kept at step 10, "the
    last 3" would be [10, 35, 40]: refused, naming step 10, not averaged."""
    for step in (10, 35, 40):
        (tmp_path / str(step)).mkdir()
    assert averaging.select_steps(str(tmp_path), 2, keep=2) == [35, 40]
    assert averaging.select_steps(str(tmp_path), 1, upto=35, keep=2) == [35]
    assert averaging.select_steps(str(tmp_path), 1, upto=10, keep=2) == [10]
    assert averaging.select_steps(str(tmp_path), 3) == [10, 35, 40]  # keep=0: all
    with pytest.raises(
        CheckpointMismatchError,
        match=r'step\(s\) \[10\] .* not among the run.s last checkpoint.keep=2 '
        r'\(\[35, 40\]\).* Average at most 2 \(--average 2\)',
    ):
        averaging.select_steps(str(tmp_path), 3, keep=2)
    with pytest.raises(CheckpointMismatchError, match=r'Average at most 1 '):
        averaging.select_steps(str(tmp_path), 2, upto=35, keep=2)


def test_read_state_logs_no_missing_metadata_warning(run, caplog):
    # The step metadata belongs to the manager's step folder, not the item's;
    # reading the item must not warn about it once per checkpoint averaged.
    _, workdir = run
    with caplog.at_level('WARNING'):
        state = checkpoint.read_state(str(workdir / 'checkpoints' / '20'))
    assert 'params' in state
    assert not [r for r in caplog.records if 'Metadata file' in r.getMessage()]


def test_cli_loads_the_mean_of_the_last_checkpoints(run):
    tr, workdir = run
    model, params, tokenizer, steps = translate.load_model(
        str(workdir), tr.config, average=2
    )
    assert steps == [10, 20] and tokenizer.vocab_size == tr.task.tokenizer.vocab_size
    assert model.config == tr.task.model.config
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        params,
        _mean_params(workdir, [10, 20]),
    )


def test_cli_translates_stdin_as_the_sharded_evaluation_does(run):
    """Beam search on one device (the CLI) against the task's on 8 devices."""
    tr, workdir = run
    assert jax.device_count() == 8 and tr.mesh.shape['data'] == 8
    metrics = tr.task.evaluate(tr.state.params, beam_size=3, length_penalty=0.6)
    assert 0 <= metrics['eval/bleu'] <= 100 and 0 <= metrics['eval/bleu_tok_lc'] <= 100
    evaluated = list(tr.task.last_hypotheses[:16])
    lines = list(tr.task.eval_data.source[:16])
    lines.insert(3, '')
    lines.append('a long line ' * 200)  # Cut to data.max_len, with a note.
    result = subprocess.run(
        [sys.executable, '-m', 'jaxdistill.translate', '--workdir', str(workdir)]
        + ['--beam', '3', '--length_penalty', '0.6', '--batch_size', '8'],
        cwd=helpers.REPO,
        env=helpers.env(devices=1),
        input='\n'.join(lines) + '\n',
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'checkpoint(s) [20]' in result.stderr
    room = tr.config.data.max_len - 1  # Tokens a source keeps, before EOS.
    long = sum(len(tr.task.tokenizer.encode(line)) > room for line in lines)
    assert long >= 1  # The long line, and any evaluation source as long.
    assert f'note: {long} of {len(lines)} lines were longer than' in result.stderr
    got = result.stdout.split('\n')
    assert len(got) == len(lines) + 1 and got[-1] == '' and got[3] == ''
    del got[3]
    # Shapes differ (batching, sharding), so a near-tie may flip; most match.
    same = np.mean([a == b for a, b in zip(got[:-1], evaluated)])
    assert same >= 0.85, (same, got[:3], evaluated[:3])
    # A 20-step model may end a sentence at once (EOS first: an empty line,
    # as in the evaluation's hypotheses); not most.
    assert np.mean([bool(x) for x in got[:-1]]) >= 0.5, got
    assert abs([bool(x) for x in evaluated].count(False) - got[:-2].count('')) <= 1


def test_cli_errors_name_the_problem(run, tmp_path, capsys):
    _, workdir = run
    assert translate.main(['--workdir', str(tmp_path)]) == 2
    assert 'holds no run (no config.json)' in capsys.readouterr().err
    (tmp_path / 'config.json').write_text('{"task": "image_classification"}')
    assert translate.main(['--workdir', str(tmp_path)]) == 2
    assert "is a 'image_classification' run" in capsys.readouterr().err
    assert translate.main(['--workdir', str(workdir), '--step', '7']) == 2
    assert 'No checkpoint for step 7' in capsys.readouterr().err
    assert translate.main(['--workdir', str(workdir), '--average', '3']) == 2
    assert 'average the last 3 checkpoints' in capsys.readouterr().err
    assert translate.main(['--workdir', str(workdir), '--beam', '-2']) == 2
    assert '--beam must be >= 0' in capsys.readouterr().err
    for penalty in ('-1', 'nan'):  # NaN printed blank lines.
        assert (
            translate.main(['--workdir', str(workdir), '--length_penalty', penalty])
            == 2
        )
        assert (
            '--length_penalty must be a finite number >= 0' in capsys.readouterr().err
        )
    stdin = io.TextIOWrapper(io.BytesIO(b'a dog\n\xff\xfe runs\n'))
    with mock.patch.object(sys, 'stdin', stdin):
        assert translate.main(['--workdir', str(workdir)]) == 2
    assert (
        'error: stdin line 2: invalid UTF-8 (byte offset 0)' in capsys.readouterr().err
    )
    (tmp_path / 'config.json').write_text('{}')  # No task: not "a None run".
    assert translate.main(['--workdir', str(tmp_path)]) == 2
    assert "config.json has no 'task' key" in capsys.readouterr().err
    (tmp_path / 'config.json').write_text('{"model": {\n')
    assert translate.main(['--workdir', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f'error: {tmp_path}/config.json is damaged: not valid JSON (line 2' in err
    assert 'Traceback' not in err


def test_translate_texts_says_what_it_cut_and_keeps_empty_lines_blank(run, monkeypatch):
    """Translations that reach the length limit without EOS are counted for
    a note; a line the tokenizer keeps nothing of (a lone zero-width space)
    stays blank instead of being translated from EOS alone; a data.max_len
    past the model's positions is named."""
    from jaxdistill.tasks import translation  # pylint: disable=g-import-not-at-top

    tr, workdir = run
    model, params, tokenizer, _ = translate.load_model(
        str(workdir), tr.config, step=None, average=1, capacity=None
    )
    assert tokenizer.encode('\u200b') == []
    eos = translation.data_lib.EOS_ID

    def fake_generate(model, params, inputs, **kw):
        # Row r of the batch: EOS at once for even r, never for odd r.
        rows = np.full((inputs.shape[0], kw['max_len']), 7, np.int32)
        rows[::2, 0] = eos
        return rows

    monkeypatch.setattr(translation, 'generate', fake_generate)
    got = []
    out = translation.translate_texts(
        model, params, tokenizer, ['a dog', '\u200b', 'a cat', ' ', 'two men'],
        data_cfg=tr.config.data, beam_size=1, max_len=5, batch_size=8,
        on_unfinished=got.append,
    )  # fmt: skip
    assert out[1] == '' and out[3] == ''
    # Three sources in one batch: two ended (empty), one reached the limit.
    assert got == [1] and sum(bool(out[i]) for i in (0, 2, 4)) == 1
    cfg = tr.config.copy_and_resolve_references()
    cfg.data.max_len = too_long = model.config.max_len + 1
    with pytest.raises(ConfigError, match=rf'data.max_len={too_long} must be in 2\.\.'):
        translation.translate_texts(
            model,
            params,
            tokenizer,
            ['a dog'],
            data_cfg=cfg.data,
            beam_size=1,
            max_len=5,
        )


@pytest.mark.parametrize('ends', [True, False])
def test_evaluation_logs_the_share_of_hypotheses_cut_at_the_limit(
    run, monkeypatch, ends
):
    from jaxdistill.tasks import translation  # pylint: disable=g-import-not-at-top

    tr, _ = run

    def fake_generate(model, params, inputs, **kw):
        rows = np.full((inputs.shape[0], kw['max_len']), 7, np.int32)
        if ends:
            rows[:, 3] = translation.data_lib.EOS_ID
        return jax.numpy.asarray(rows)

    monkeypatch.setattr(translation, 'generate', fake_generate)
    metrics = tr.task.evaluate(tr.state.params)
    assert metrics['eval/unfinished'] == (0.0 if ends else 1.0)


def test_cli_translates_each_line_as_it_comes_and_ends_quietly_on_a_closed_pipe(run):
    """A sentence typed (or written by a slow producer) is translated before
    the input ends, not after it; a reader that goes away (`| head -1`)
    ends the tool with SIGPIPE's status, without a traceback."""
    _, workdir = run
    proc = subprocess.Popen(
        [sys.executable, '-m', 'jaxdistill.translate', '--workdir', str(workdir)],
        cwd=helpers.REPO,
        env=helpers.env(devices=1),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        proc.stdin.write('a man rides a bike\n')
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 180)
        assert ready, 'no translation came before the input ended'
        assert proc.stdout.readline().endswith('\n')
        proc.stdout.close()  # The reader goes away...
        proc.stdin.write('a dog runs\n')  # ...before the next translation.
        proc.stdin.close()
        code = proc.wait(timeout=180)
        err = proc.stderr.read()
    finally:
        proc.kill()
    assert 'translating stdin as it comes' in err
    assert code == 141 and 'Traceback' not in err, err[-2000:]


def test_lines_of_a_pipe_come_in_chunks_as_they_arrive():
    read_end, write_end = os.pipe()
    with open(read_end, 'rb') as stream:
        chunks = translate.read_chunks(stream, 'stdin', size=2)
        os.write(write_end, 'a b\nc\r\nd\n'.encode())
        # The writer is still open: what has come is translated now.
        assert next(chunks) == ['a b', 'c']  # At most `size` lines a chunk.
        assert next(chunks) == ['d']
        os.write(write_end, b'\xff\nlast')
        os.close(write_end)
        with pytest.raises(DataError, match=r'stdin line 4: invalid UTF-8'):
            next(chunks)
    read_end, write_end = os.pipe()
    with open(read_end, 'rb') as stream:
        os.write(write_end, 'é\n\nlast'.encode())
        os.close(write_end)
        chunks = list(translate.read_chunks(stream, 'stdin', size=8))
    assert chunks == [['é', '', 'last']]  # The last line needs no newline.
