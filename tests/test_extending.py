"""docs/extending.md: the method and config on the page, taken from it, train."""

import json
import re
import sys

import numpy as np
import pytest

from jaxdistill import registry
from jaxdistill import train
from jaxdistill.errors import ConfigError
from tests import helpers

PAGE = helpers.REPO / 'docs' / 'extending.md'


def _page_files() -> dict:
    """{file name: code} of the page's `<!-- file: NAME -->` blocks."""
    text = PAGE.read_text(encoding='utf-8')
    return dict(re.findall(r'<!-- file: (\S+) -->\n```python\n(.*?)```', text, re.S))


@pytest.fixture(scope='module')
def page_dir(tmp_path_factory):
    """The page's files, written once: a plugin path is imported once per
    process, and a second copy elsewhere would register its names again."""
    folder = tmp_path_factory.mktemp('page')
    for name, code in _page_files().items():
        (folder / name).write_text(code, encoding='utf-8')
    return folder


def _records(workdir):
    return [json.loads(line) for line in (workdir / 'metrics.jsonl').open()]


def test_the_pages_method_trains_and_evaluates(page_dir, tmp_path, monkeypatch):
    assert set(_page_files()) == {
        'mean_teacher.py',
        'mean_teacher_synthetic.py',
        'npz_task.py',
        'npz_supervised.py',
        'from_python.py',
    }
    monkeypatch.syspath_prepend(str(helpers.REPO / 'configs'))  # As the page says.
    work = tmp_path / 'run'
    args = [
        '--config',
        f'{page_dir}/mean_teacher_synthetic.py:runlocal',
        '--workdir',
        str(work),
        '--config.method.decay=0.9',
        '--config.num_train_steps=10',
        '--config.eval.bleu=False',  # Losses and churn say enough; no decoding.
    ]
    assert train.main(args) == 0
    records = _records(work)
    kd = [r['train/kd'] for r in records if 'train/kd' in r]
    assert len(kd) == 2 and kd[-1] > 0  # The teacher drifts from the student.
    assert {'eval/student/loss', 'eval/teacher/loss', 'eval/churn'} <= set(records[-1])
    # A fresh process (evaluate, translate) imports the plugin from config.json.
    probe = (
        'import sys; from jaxdistill import cli, registry; '
        'cli.workdir_config(sys.argv[1]); '
        "print(registry.get('method', 'mean_teacher').__name__)"
    )
    r = helpers.run([sys.executable, '-c', probe, str(work)], timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == 'MeanTeacher', r.stderr[-2000:]


def _features(path, n=1200):
    """The page's example data: y = [x0 + x1² > 1], 8 features."""
    r = np.random.default_rng(0)
    x = r.normal(size=(n, 8))
    y = (x[:, 0] + x[:, 1] ** 2 > 1).astype(int)
    k = n * 5 // 6
    np.savez(path, x_train=x[:k], y_train=y[:k], x_test=x[k:], y_test=y[k:])


def test_the_pages_task_trains_with_two_methods(
    page_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.syspath_prepend(str(helpers.REPO / 'configs'))
    _features(tmp_path / 'features.npz')
    config = f'{page_dir}/npz_supervised.py'
    common = [
        '--config',
        config,
        f'--config.data.path={tmp_path}/features.npz',
        '--config.num_train_steps=120',
        '--config.optimizer.warmup_steps=10',
    ]
    plain = tmp_path / 'plain'
    assert train.main([*common, '--workdir', str(plain)]) == 0
    records = _records(plain)
    last = records[-1]
    train_losses = [r['train/loss'] for r in records if 'train/loss' in r]
    majority = 1 - np.load(tmp_path / 'features.npz')['y_test'].mean()
    assert last['eval/accuracy'] > max(majority, 0.5) + 0.15, last
    assert train_losses[-1] < train_losses[0] - 0.1, train_losses
    summary = json.loads((plain / 'summary.json').read_text())
    assert summary['data/features'] == 8 and summary['data/classes'] == 2
    # The task's `throughput` names what train/tokens counts: examples here.
    rates = [r for r in records if 'train/steps_per_s' in r]
    assert rates and all(
        r['train/examples_per_s'] > 0 and 'train/tokens_per_s' not in r for r in rates
    )
    assert re.search(r'\| [\d,]+ ex/s \|', capsys.readouterr().out)
    # The mean teacher on the same task: its file joins config.imports.
    teacher = tmp_path / 'teacher'
    args = [
        *common,
        '--workdir',
        str(teacher),
        '--config.num_train_steps=20',
        f"--config.imports=('{page_dir}/npz_task.py', '{page_dir}/mean_teacher.py')",
        "--config.method={'name': 'mean_teacher', 'decay': 0.9, 'weight': 1.0}",
    ]
    assert train.main(args) == 0
    records = _records(teacher)
    assert any(r.get('train/kd', 0) > 0 for r in records)
    assert {'eval/student/accuracy', 'eval/teacher/accuracy'} <= set(records[-1])
    # A file without the arrays the task needs is named, with what is missing.
    np.savez(tmp_path / 'bad.npz', x_train=np.zeros((4, 2)))
    bad = [
        *common,
        '--workdir',
        str(tmp_path / 'bad'),
        f'--config.data.path={tmp_path}/bad.npz',
    ]
    capsys.readouterr()
    assert train.main(bad) == 2
    assert 'bad.npz has no y_train, x_test, y_test' in capsys.readouterr().err


def test_bad_imports_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r'imports: plugin file .*nowhere.py'):
        registry.import_plugins([str(tmp_path / 'nowhere.py')])
    with pytest.raises(ConfigError, match=r"cannot import 'no_such_module_xyz'"):
        registry.import_plugins(['no_such_module_xyz'])
    with pytest.raises(ConfigError, match='each entry must be a module name'):
        registry.import_plugins([3])
    bug = tmp_path / 'buggy.py'
    bug.write_text('raise RuntimeError("a bug in the plugin")\n')
    with pytest.raises(RuntimeError, match='a bug in the plugin') as e:
        registry.import_plugins([str(bug)])
    assert 'listed in imports' in ' '.join(e.value.__notes__)


def test_the_multi_process_check_covers_plugin_sources(tmp_path):
    """Two hosts with different copies of a plugin file trace different
    programs: the config that process 0 broadcasts carries a digest of each
    `config.imports` module's source, and the diff names the entry."""
    import json

    from jaxdistill import configuration, process_check, registry

    plugin = tmp_path / 'my_plugin.py'
    plugin.write_text('X = 1\n')
    config = configuration.load_config('configs/translate_synthetic.py:runlocal')
    config.imports = (str(plugin),)
    registry.import_plugins(config.imports)

    def compared():
        return json.loads(process_check._config_bytes(config).tobytes().decode())

    first = compared()
    assert set(first['(process)']['plugin_source_sha256']) == {str(plugin)}
    assert compared() == first  # The same file: the same bytes.
    plugin.write_text('X = 2\n')  # Another host's copy of the file.
    diffs = configuration.compare_for_resume(first, compared(), sorted(first))
    assert len(diffs) == 1 and diffs[0].startswith(
        f'(process).plugin_source_sha256.{plugin}: '
    ), diffs


def test_the_pages_python_use_trains_reopens_and_evaluates(
    page_dir, tmp_path, monkeypatch, capsys
):
    import runpy

    work = tmp_path / 'run'
    argv = ['from_python.py', str(helpers.REPO / 'configs'), str(work)]
    monkeypatch.setattr(sys, 'argv', argv)
    runpy.run_path(str(page_dir / 'from_python.py'), run_name='__main__')
    out = capsys.readouterr().out
    trained = re.search(r'trained: 20 steps, eval/loss ([\d.]+)', out)
    again = re.search(r'evaluated again: ([\d.]+)', out)
    assert trained and again, out
    assert trained.group(1) == again.group(1)  # The same checkpoint, read back.
    summary = json.loads((work / 'summary.json').read_text())
    assert f'parameters: {summary["num_params"]}' in out
    # Read-only: the evaluation wrote no second record at step 20.
    assert sum(r['step'] == 20 and 'eval/loss' in r for r in _records(work)) == 1


def test_relative_plugin_paths_are_saved_absolute(tmp_path):
    """config.json must name the same file for `evaluate` run elsewhere."""
    import ml_collections

    from jaxdistill import configuration

    config = ml_collections.ConfigDict({'imports': ('a.py', 'my.module', '/x/b.py')})
    assert configuration.absolute_paths(config, str(tmp_path)) == ['imports']
    assert config.imports == (str(tmp_path / 'a.py'), 'my.module', '/x/b.py')
