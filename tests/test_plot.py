"""`python -m jaxdistill.plot`: runs that have not logged yet, and --out."""

import json

import pytest

from jaxdistill import plot
from jaxdistill.errors import ConfigError, DataError

PNG = b'\x89PNG\r\n\x1a\n'


def _run(workdir, steps=(1, 2), logged=True):
    """A fake run folder: config.json, and metrics.jsonl once it has logged."""
    workdir.mkdir(parents=True)
    (workdir / 'config.json').write_text('{}')
    if logged:
        (workdir / 'metrics.jsonl').write_text(
            ''.join(
                json.dumps({'step': s, 'time': 1000.0 + s, 'train/loss': 3.0 / s})
                + '\n'
                for s in steps
            )
        )
    return str(workdir)


def test_a_run_that_has_not_logged_yet_is_skipped_with_a_note(tmp_path, capsys):
    sweep = tmp_path / 'sweep'
    a = _run(sweep / 'a')
    late = _run(sweep / 'b' / 'late', logged=False)
    out = tmp_path / 'sweep.png'
    assert plot.main(['--workdir', str(sweep), '--out', str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err == f'note: skipping {late}: it has not logged yet.\n'
    assert f'wrote {out} (training loss)' in captured.out
    assert out.read_bytes()[:8] == PNG
    # The same with several --workdir, and from the library.
    assert plot.main(['--workdir', a, '--workdir', late, '--out', str(out)]) == 0
    assert late in capsys.readouterr().err
    assert plot.plot_runs([late, a], str(out)) == ['training loss']


def test_no_run_has_logged_yet_is_an_error_that_says_so(tmp_path, capsys):
    one = _run(tmp_path / 'one', logged=False)
    assert plot.main(['--workdir', one]) == 2
    err = capsys.readouterr().err
    assert err == (
        f'error: {one}/metrics.jsonl does not exist yet: the run in {one} has '
        'started but not logged yet.\n'
    )
    assert 'holds no training run' not in err
    two = _run(tmp_path / 'sweep' / 'two', logged=False)
    three = _run(tmp_path / 'sweep' / 'three', logged=False)
    out = tmp_path / 'x.png'
    assert plot.main(['--workdir', str(tmp_path / 'sweep'), '--out', str(out)]) == 2
    assert capsys.readouterr().err == (
        f'error: no run has logged yet: {three}, {two} (each holds config.json '
        'but no metrics.jsonl yet).\n'
    )
    assert not out.exists()
    # A path that holds no run at all is still an error, among others too.
    good = _run(tmp_path / 'good')
    with pytest.raises(DataError, match='holds no training run'):
        plot.plot_runs([good, str(tmp_path / 'typo')], str(out))


def test_out_folder_or_name_without_extension_reports_the_file_written(
    tmp_path, capsys
):
    run = _run(tmp_path / 'r')
    folder = tmp_path / 'plots'
    folder.mkdir()
    assert plot.main(['--workdir', run, '--out', str(folder)]) == 0
    written = folder / 'metrics.png'
    assert f'wrote {written} ' in capsys.readouterr().out
    assert written.read_bytes()[:8] == PNG
    # A path ending in a separator is a folder, made if need be.
    assert plot.main(['--workdir', run, '--out', str(tmp_path / 'new') + '/']) == 0
    written = tmp_path / 'new' / 'metrics.png'
    assert f'wrote {written} ' in capsys.readouterr().out
    assert written.read_bytes()[:8] == PNG
    # No extension: matplotlib's .png, and the message names that file.
    assert plot.main(['--workdir', run, '--out', str(tmp_path / 'curves')]) == 0
    assert f'wrote {tmp_path / "curves.png"} ' in capsys.readouterr().out
    assert (tmp_path / 'curves.png').read_bytes()[:8] == PNG
    assert not (tmp_path / 'curves').exists()
    # Other formats follow the extension.
    assert plot.main(['--workdir', run, '--out', str(tmp_path / 'c.svg')]) == 0
    assert f'wrote {tmp_path / "c.svg"} ' in capsys.readouterr().out
    assert b'<svg' in (tmp_path / 'c.svg').read_bytes()
    assert plot.out_path('a/b.png') == 'a/b.png'


def test_out_with_an_unsupported_extension_is_a_clear_error(tmp_path, capsys):
    run = _run(tmp_path / 'r')
    out = tmp_path / 'sub' / 'p.txt'
    assert plot.main(['--workdir', run, '--out', str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out '{out}': cannot write a .txt image; ")
    assert 'the supported formats are: ' in err
    for fmt in ('pdf', 'png', 'svg'):
        assert fmt in err
    assert err.count('\n') == 1  # One line, no traceback.
    assert not out.parent.exists()  # Nothing drawn, no folder made.
    # Checked before the runs are read, and in the library too.
    assert plot.main(['--workdir', str(tmp_path / 'none'), '--out', str(out)]) == 2
    assert 'cannot write a .txt image' in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r'supported formats are: .*png'):
        plot.plot_runs([run], str(out))


def test_tsjt_runs_get_a_panel_of_each_capacitys_training_nll():
    """TSJT's train/loss is a sum over capacities; each capacity's own NLL
    gets a panel, without the middle capacities sampled anew each step."""
    keys = {
        'step',
        'train/loss',
        'train/nll',
        'train/x0.25/nll',
        'train/x1.0/nll',
        'train/middle0/nll',
        'train/x0.25/kd',
        'eval/x0.25/loss',
    }
    panels = dict(plot.panels_for(keys))
    assert panels['training NLL per capacity'] == ['train/x0.25/nll', 'train/x1.0/nll']
    assert panels['training loss'] == ['train/loss']
    # Runs of other methods get no such panel.
    assert 'training NLL per capacity' not in dict(
        plot.panels_for({'step', 'train/loss', 'train/nll'})
    )


def test_non_finite_values_are_gaps_with_a_note(tmp_path, capsys):
    """metrics.jsonl holds a NaN as the string 'nan': it was dropped without
    a word, so a diverged evaluation left an empty panel."""
    import math

    run = tmp_path / 'run'
    run.mkdir()
    (run / 'config.json').write_text('{}')
    values = [2.0, 'nan', 1.0, 'inf']
    (run / 'metrics.jsonl').write_text(
        ''.join(
            json.dumps({'step': s, 'time': 1000.0 + s, 'eval/loss': v}) + '\n'
            for s, v in enumerate(values, 1)
        )
    )
    records = [json.loads(l) for l in (run / 'metrics.jsonl').open()]
    xs, ys, bad = plot._series(records, 'eval/loss', 'step')
    assert xs == [1, 2, 3, 4] and bad == [2, 4]
    assert ys[0] == 2.0 and math.isnan(ys[1]) and ys[2] == 1.0 and math.isnan(ys[3])
    out = tmp_path / 'x.png'
    assert plot.main(['--workdir', str(run), '--out', str(out)]) == 0
    err = capsys.readouterr().err
    assert 'eval/loss is not finite at 2 step(s) (2, 4); drawn as gaps.' in err, err
    assert out.read_bytes()[:8] == PNG


def test_an_out_that_cannot_be_written_is_named(tmp_path, capsys):
    """A folder that cannot be made (a file in the way, a read-only mount)
    or a remote path, which was written as a local folder named 'gs:'."""
    run = _run(tmp_path / 'r')
    (tmp_path / 'afile').write_text('')
    out = tmp_path / 'afile' / 'p.png'
    assert plot.main(['--workdir', run, '--out', str(out)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f'error: --out {out} cannot be written: ')
        and err.count('\n') == 1
    ), err
    assert plot.main(['--workdir', run, '--out', 'gs://bucket/p.png']) == 2
    assert 'remote paths (gs://) are not supported' in capsys.readouterr().err
