"""docs/extending.md: the method and config on the page, taken from it, train."""

import json
import re
import sys

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


def _records(workdir):
    return [json.loads(line) for line in (workdir / 'metrics.jsonl').open()]


def test_the_pages_method_trains_and_evaluates(tmp_path, monkeypatch):
    files = _page_files()
    assert set(files) == {'mean_teacher.py', 'mean_teacher_synthetic.py'}
    for name, code in files.items():
        (tmp_path / name).write_text(code, encoding='utf-8')
    monkeypatch.syspath_prepend(str(helpers.REPO / 'configs'))  # As the page says.
    work = tmp_path / 'run'
    args = [
        '--config',
        f'{tmp_path}/mean_teacher_synthetic.py:runlocal',
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
