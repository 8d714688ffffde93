"""`python -m jaxdistill.runs DIR [DIR ...]`: where each training run stands.

Each DIR is a run's workdir, or a folder of runs (searched two levels down).
One line per run: its method and task, the latest checkpoint's step against
`num_train_steps`, its state, its last evaluation and, where the run ranks
checkpoints (`checkpoint.best_metric`), its best evaluation so far, and how
long ago it last logged. The state is one of

  training      a run holds the workdir's lock now (its pid, host, command)
  finished      the run reached num_train_steps
  stopped early / time limit
                `checkpoint.patience` or `time_limit_minutes` ended it
  failed        an error ended its training (DIR/error.json: which, and
                its message)
  stopped       it ended otherwise (Ctrl-C, SIGTERM, a kill): resume it with
                `python -m jaxdistill.train --workdir DIR`
  extracted     a model `python -m jaxdistill.extract` wrote from a
                composite run (DIR/extracted.json names the run and capacity)
  no checkpoint nothing saved yet

`--metric NAME` (repeatable, globs allowed) picks the evaluation metrics
shown (default: the run's best_metric, eval/loss, and BLEU or accuracy where
logged); `--json` prints everything as JSON instead of the table.

  python -m jaxdistill.runs /tmp/runs --metric 'eval/*bleu'
"""

import fnmatch
import json
import math
import os
import sys
import time

from jaxdistill import cli
from jaxdistill import workdir_lock
from jaxdistill.errors import CheckpointMismatchError, DataError, JaxdistillError

DEFAULT_METRICS = ('eval/loss', 'eval/bleu', 'eval/accuracy')
_NOT_RUNS = frozenset(
    {
        'checkpoints',
        'checkpoints_damaged',
        'tensorboard',
        'compilation_cache',
        'profile',
    }
)


def find_runs(path: str, depth: int = 2) -> list[str]:
    """`path` if it is a run (holds config.json), else the runs in its
    folders down to `depth` levels, sorted."""
    if os.path.isfile(os.path.join(path, 'config.json')):
        return [path]
    if depth == 0 or not os.path.isdir(path):
        return []
    found = []
    for name in sorted(os.listdir(path)):
        sub = os.path.join(path, name)
        if name not in _NOT_RUNS and os.path.isdir(sub):
            found += find_runs(sub, depth - 1)
    return found


def unique_paths(paths) -> list[str]:
    """`paths` without repeats of one folder spelt twice ('run', 'run/',
    '/abs/run'), in order, each as first given."""
    seen, out = set(), []
    for path in paths:
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            out.append(path)
    return out


def read_json(path: str):
    """A JSON file's content; None if it is missing or unreadable."""
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _eta(records: list[dict], total, since: float) -> float | None:
    """Seconds a training run needs to reach `total`, at the wall-clock pace
    of its last ten logged training windows since `since` (the run's start:
    a resumed run's pause is left out; evaluations and saves count); None
    without two such records."""
    train = [
        r
        for r in records
        if 'train/loss' in r and _number(r.get('time')) and r['time'] >= since
    ][-11:]
    if len(train) < 2 or not total:
        return None
    first, last = train[0], train[-1]
    steps, seconds = last['step'] - first['step'], last['time'] - first['time']
    if steps <= 0 or seconds <= 0:
        return None
    return max(total - last['step'], 0) * seconds / steps


def _number(value) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def describe(workdir: str) -> dict:
    """What `runs` knows of the run in `workdir`, as a JSON-able dict."""
    # Here, not at the top: they import JAX, which `runs --help` need not wait for.
    from jaxdistill import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
    from jaxdistill import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
    from jaxdistill import trainer  # pylint: disable=g-import-not-at-top

    config = _dict(read_json(os.path.join(workdir, 'config.json')))
    method = (config.get('method') or {}).get('name', '?')
    ckpt = config.get('checkpoint') or {}
    best_metric, best_mode = ckpt.get('best_metric', ''), ckpt.get('best_mode', 'max')
    try:
        step, _ = checkpoint_lib.latest_step_dir(os.path.join(workdir, 'checkpoints'))
    except CheckpointMismatchError:  # None saved yet.
        step = None
    summary = _dict(read_json(os.path.join(workdir, 'summary.json')))
    lock = workdir_lock.holder(workdir)
    holder = lock['text'] if lock else None
    extracted = _dict(read_json(os.path.join(workdir, 'extracted.json'))) or None
    if holder:
        state = 'training'
    elif extracted and step is not None and step == extracted.get('step'):
        # A model `extract` wrote, with no checkpoint since: nothing to
        # resume. Once a run trains on in it, it is a run like any other.
        state = 'extracted'
    elif step is None:
        state = 'no checkpoint'
    elif summary.get('step') == step and (
        summary.get('stopped_early')
        or summary.get('stopped_by_time_limit')
        or step >= (config.get('num_train_steps') or 0)
    ):
        state = (
            'stopped early'
            if summary.get('stopped_early')
            else 'time limit'
            if summary.get('stopped_by_time_limit')
            else 'finished'
        )
    else:
        state = 'stopped'
    error = _dict(read_json(os.path.join(workdir, trainer.ERROR_FILE))) or None
    if state in ('stopped', 'no checkpoint') and error:
        state = 'failed'
    path = os.path.join(workdir, 'metrics.jsonl')
    try:
        records, log_error = metrics_lib.read_metrics(workdir), None
    except DataError as e:  # Not logged yet, or a damaged line: no records.
        records, log_error = [], str(e) if os.path.exists(path) else None
    evals = [r for r in records if any(k.startswith('eval/') for k in r)]
    last = evals[-1] if evals else {}
    best = None
    if best_metric:
        scored = [r for r in evals if _number(r.get(best_metric))]
        if scored:
            # Ties go to the latest step, as Orbax's best_step (what
            # `--step best` and summary.json give) breaks them.
            sign = 1 if best_mode == 'max' else -1
            pick = max(scored, key=lambda r: (sign * r[best_metric], r['step']))
            best = {
                'metric': best_metric,
                'step': pick['step'],
                'value': pick[best_metric],
            }
    eta = None
    if lock:
        since = lock.get('time', 0.0)
        eta = _eta(records, config.get('num_train_steps'), since)
        limit = config.get('time_limit_minutes') or 0
        if eta is not None and _number(limit) and limit > 0 and since:
            # The run stops at its time limit, counted from about its start.
            eta = min(eta, max(since + 60 * limit - time.time(), 0.0))
    return {
        'workdir': workdir,
        'task': config.get('task', '?'),
        'method': method,
        'step': step,
        'num_train_steps': config.get('num_train_steps'),
        'state': state,
        'holder': holder,
        'error': error if state == 'failed' else None,
        'extracted_from': (
            {k: extracted.get(k) for k in ('from', 'capacity', 'step')}
            if extracted
            else None
        ),
        'eta_seconds': eta,
        'eval_step': last.get('step'),
        'eval': {k: v for k, v in last.items() if k.startswith('eval/')},
        'best': best,
        'best_metric': best_metric,
        'last_logged': os.path.getmtime(path) if os.path.exists(path) else None,
        'log_error': log_error,
    }


def _shown(run: dict, patterns) -> dict:
    """The evaluation metrics a table row shows."""
    names = list(run['eval'])
    if patterns:
        return {
            n: run['eval'][n]
            for n in names
            if any(fnmatch.fnmatchcase(n, p) for p in patterns)
        }
    wanted = [run['best_metric'], *DEFAULT_METRICS]
    return {n: run['eval'][n] for n in dict.fromkeys(wanted) if n in run['eval']}


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f'{seconds:.0f}s'
    if seconds < 7200:
        return f'{seconds / 60:.0f}m'
    if seconds < 2 * 86400:
        return f'{seconds / 3600:.0f}h'
    return f'{seconds / 86400:.0f}d'


def _ago(seconds: float) -> str:
    return _duration(seconds) + ' ago'


def _value(v) -> str:
    return f'{v:.4g}' if isinstance(v, float) else str(v)


def table(runs: list[dict], patterns=(), now: float | None = None) -> str:
    """The runs as an aligned text table."""
    now = time.time() if now is None else now
    paths = [os.path.abspath(r['workdir']) for r in runs]
    common = os.path.commonpath(paths) if len(runs) > 1 else ''
    rows = [
        (
            'run',
            'method/task',
            'checkpoint',
            'state',
            'last evaluation',
            'best',
            'logged',
        )
    ]
    for r, path in zip(runs, paths):
        name = os.path.relpath(path, common) if common else r['workdir']
        shown = _shown(r, patterns)
        last = ', '.join(f'{k} {_value(v)}' for k, v in shown.items())
        if last:
            last += f' @ {r["eval_step"]}'
        best = r['best']
        rows.append(
            (
                name,
                f'{r["method"]}/{r["task"]}',
                f'{"-" if r["step"] is None else r["step"]}/{r["num_train_steps"]}',
                r['state']
                + (f' ({r["holder"].split(", started")[0]})' if r['holder'] else '')
                + (f' ({r["error"].get("error", "?")})' if r['error'] else '')
                + (
                    f', {_duration(r["eta_seconds"])} to go'
                    if r['eta_seconds'] is not None
                    else ''
                ),
                last or ('(metrics.jsonl damaged)' if r.get('log_error') else '-'),
                f'{_value(best["value"])} @ {best["step"]}' if best else '-',
                _ago(now - r['last_logged']) if r['last_logged'] else '-',
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return '\n'.join(
        '  '.join(c.ljust(w) for c, w in zip(row, widths)) + '  ' + row[-1]
        for row in rows
    )


def main(argv=None) -> int:
    parser = cli.parser_for('runs', __doc__)
    parser.add_argument(
        'paths', nargs='+', metavar='DIR', help='a run, or a folder of runs'
    )
    parser.add_argument(
        '--metric',
        action='append',
        default=[],
        help='evaluation metric to show, glob allowed (repeatable)',
    )
    parser.add_argument('--json', action='store_true', help='print JSON, not a table')
    args = cli.expand_user(parser.parse_args(sys.argv[1:] if argv is None else argv))

    def run():
        workdirs, empty = [], []
        for path in args.paths:
            found = find_runs(path)
            if not found:
                empty.append(path)
            workdirs += found
        missing = (
            f'{", ".join(empty)} {"holds" if len(empty) == 1 else "hold"} no '
            'training run (no config.json in it or in its folders two levels '
            'down).'
        )
        if not workdirs:
            raise JaxdistillError(missing)
        if empty:  # The others are still listed; the exit status says so.
            print(f'error: {missing}', file=sys.stderr)
        runs = [describe(w) for w in unique_paths(workdirs)]
        logged = {k for r in runs for k in r['eval']}
        unmatched = [
            p for p in args.metric if not any(fnmatch.fnmatchcase(k, p) for k in logged)
        ]
        if unmatched and logged:
            raise JaxdistillError(
                f'--metric {", ".join(unmatched)} matches no evaluation metric of '
                f'these runs; they have: {", ".join(sorted(logged))}.'
            )
        for r in runs:
            if r['log_error']:
                print(f'note: {r["log_error"]}', file=sys.stderr)
        print(json.dumps(runs, indent=2) if args.json else table(runs, args.metric))
        return 2 if empty else 0

    return cli.main_guard(run)


if __name__ == '__main__':
    sys.exit(main())
