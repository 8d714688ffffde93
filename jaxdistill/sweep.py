"""`python -m jaxdistill.sweep`: one config trained over a grid of settings.

  python -m jaxdistill.sweep --config configs/translate_synthetic.py:runlocal \\
      --workdir /tmp/sweep --grid seed=0,1,2 --grid optimizer.learning_rate=1e-3,3e-3 \\
      [--config.KEY=VALUE ...]

Every combination of the `--grid` values (the last grid varies fastest) is a
training run of its own, `python -m jaxdistill.train` in a process of its own,
in WORKDIR/KEY=VALUE,KEY=VALUE with the `--config.` overrides given here and
then its grid values. (A value whose folder name would lose something, a '/'
or a space inside a string, gets '@' and a short hash of its exact text:
`data.files_dir=_a_b@662b7b62`.) Every combination is checked against the
config before anything trains, and against what a run would refuse at its
start without data (`trainer.check_config`: ranges, model fields), so a grid
key or value the config or the run refuses is an error naming it, with
nothing run; so is a key both in `--grid` and given
as `--config.KEY=V`, and two values of a key that the config reads as the
same value (`0.001,1e-3`).

Run the same command again to go on: runs that finished with the config they
would get now are skipped, stopped ones resume from their last checkpoint,
new grid values add runs. Ctrl-C or SIGTERM stops the run in progress (it
saves, as `train` does) and the sweep. A run that fails is reported and the sweep goes
on with the next (exit status 1 at the end); `--stop_on_error` stops instead.

With JAX's default compilation cache (`compilation_cache_dir='auto'` and no
JAX_COMPILATION_CACHE_DIR), the runs share WORKDIR/compilation_cache: runs
that differ only in values the program does not depend on (seeds) compile
once.

`--parallel N` trains N runs at a time, each writing its output to
WORKDIR/NAME/sweep_output.log; `--slot_env KEY=V0;V1;...` gives each slot its
own environment, and their number of slots: `--slot_env
'CUDA_VISIBLE_DEVICES=0;1;2;3'` trains four runs at once, on a GPU each.

At the end a table gives, for each group of runs that differ only in the
`--over` keys (default: seed), the number of runs and the mean and standard
deviation of their last evaluation; `WORKDIR/sweep.json` holds the same and
each run's state and evaluation. `python -m jaxdistill.runs WORKDIR` and
`python -m jaxdistill.plot --workdir WORKDIR` show the runs as they go.
"""

import ast
import hashlib
import itertools
import json
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time

from jaxdistill import cli
from jaxdistill import configuration
from jaxdistill import workdir_lock
from jaxdistill.process_check import PER_PROCESS
from jaxdistill.errors import ConfigError, JaxdistillError

RESULT_FILE = 'sweep.json'
_COORDINATOR = 'JAX_COORDINATOR_ADDRESS'
_DONE = ('finished', 'stopped early', 'time limit')


def split_values(text: str) -> list[str]:
    """'0,1,(16,32)' -> ['0', '1', '(16,32)']: commas inside brackets or
    quotes belong to the value."""
    values, depth, quote, start = [], 0, '', 0
    for i, ch in enumerate(text):
        if quote:
            quote = '' if ch == quote else quote
        elif ch in '\'"':
            quote = ch
        elif ch in '([{':
            depth += 1
        elif ch in ')]}':
            depth -= 1
        elif ch == ',' and depth == 0:
            values.append(text[start:i])
            start = i + 1
    values.append(text[start:])
    return [v.strip() for v in values]


def parse_grid(specs) -> dict[str, list[str]]:
    """['seed=0,1', 'a.b=x'] -> {'seed': ['0', '1'], 'a.b': ['x']}."""
    grid = {}
    for spec in specs:
        key, sep, values = spec.partition('=')
        key = key.strip().removeprefix('--config.').removeprefix('config.')
        if not sep or not key or not values.strip():
            raise ConfigError(
                f'--grid {spec!r}: expected KEY=VALUE,VALUE,... (e.g. '
                '--grid seed=0,1,2).'
            )
        if key in grid:
            raise ConfigError(f'--grid {key} is given twice; give its values once.')
        for other in grid:
            outer, inner = sorted((key, other), key=len)
            if inner.startswith(outer + '.'):
                # Applied in order, the later would silently undo the earlier.
                raise ConfigError(
                    f'--grid {inner} lies inside the group --grid {outer} '
                    f'replaces; grid either the group or its fields, not both.'
                )
        values = split_values(values)
        if any(not v for v in values) or len(set(values)) < len(values):
            raise ConfigError(
                f'--grid {spec!r}: a value is empty or repeated ({values}).'
            )
        grid[key] = values
    return grid


_NAME_BYTES = 255  # The most a folder name has on most filesystems.


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode('utf-8')).hexdigest()[:8]


def _name_part(text: str) -> str:
    """`text` as part of a folder name: '/' becomes '_' and spaces go, as
    before; where that loses something (a path, a space inside a string),
    '@' and a hash of the exact text follow, so distinct values stay apart."""
    safe = text.replace(os.sep, '_').replace('/', '_').replace(' ', '')
    if safe == text:
        return text
    if '/' not in text and os.sep not in text:
        # Spaces between the items of a literal ('(24, 48)') mean nothing.
        try:
            if repr(ast.literal_eval(text)) == repr(ast.literal_eval(safe)):
                return safe
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    return f'{safe}@{_digest(text)}'


def _run_name(combo: dict) -> str:
    """The run's folder name: KEY=VALUE,... (see `_name_part`; a name too
    long for a folder is cut, with a hash of the whole combination)."""
    if not combo:
        return 'run'
    name = ','.join(f'{_name_part(k)}={_name_part(v)}' for k, v in combo.items())
    if len(name.encode('utf-8')) > _NAME_BYTES:
        head = name.encode('utf-8')[: _NAME_BYTES - 9].decode('utf-8', 'ignore')
        name = f'{head}@{_digest(json.dumps(list(combo.items())))}'
    return name


def check_overrides(grid: dict, overrides) -> None:
    """ConfigError for a `--config.KEY=V` that a `--grid` key also sets (the
    grid's value would silently replace it), KEY itself or a field inside a
    gridded group."""
    for item in overrides:
        key = item.partition('=')[0].strip()
        for g in grid:
            if key == g or key.startswith(g + '.'):
                raise ConfigError(
                    f'--config.{item} sets {key}, which --grid {g}='
                    f'{",".join(grid[g])} also sets (each run would take the '
                    f"grid's value); give {key} either as --grid or as "
                    '--config., not both.'
                )


def _at(config: dict, key: str):
    """The value at dotted `key` of a config's JSON (None if absent)."""
    for part in key.split('.'):
        if not isinstance(config, dict) or part not in config:
            return None
        config = config[part]
    return config


def _check_distinct(runs: list[dict]) -> None:
    """ConfigError where two combinations train the same config (values
    spelt differently that the config reads as one: '0.001' and '1e-3'), or
    would share a folder."""
    seen = {}
    for run in runs:
        text = json.dumps(run['config'], sort_keys=True)
        first = seen.setdefault(text, run)
        if first is run:
            continue
        keys = [k for k in run['grid'] if run['grid'][k] != first['grid'][k]]
        if len(keys) == 1:
            (k,) = keys
            value = json.dumps(_at(run['config'], k))
            raise ConfigError(
                f'--grid {k}: {first["grid"][k]!r} and {run["grid"][k]!r} are '
                f'the same value ({value}) for the config; give each value once.'
            )
        which = ', '.join(
            f'{k} {first["grid"][k]!r} and {run["grid"][k]!r}' for k in keys
        )
        raise ConfigError(
            f'--grid: runs {first["name"]} and {run["name"]} would train the '
            f'same config ({which}); give each setting once.'
        )
    names = {}
    for run in runs:
        # Case apart too: some filesystems do not tell 'A' from 'a'.
        first = names.setdefault(run['name'].casefold(), run)
        if first is not run:
            which = ', '.join(
                f'{k} {first["grid"][k]!r} and {run["grid"][k]!r}'
                for k in run['grid']
                if run['grid'][k] != first['grid'][k]
            )
            raise ConfigError(
                f'--grid: two runs ({which}) would share the folder '
                f'{first["name"]!r}; give values that differ in more than '
                'case or spaces.'
            )


def _check_config(config) -> None:
    """What the run would refuse at its start (`trainer.check_config`)."""
    from jaxdistill import trainer  # pylint: disable=g-import-not-at-top

    trainer.check_config(config)


def plan(config_spec: str, overrides, grid) -> list[dict]:
    """One entry per combination: its name, grid values, overrides and the
    config it trains with (JSON). Every combination's config is built here,
    so a value the config refuses is a ConfigError naming it, and so are two
    combinations with the same config or folder. (The shared
    `overrides` are checked by the caller, with an error of their own.)"""
    runs = []
    for values in itertools.product(*grid.values()):
        combo = dict(zip(grid, values))
        extra = [f'{k}={v}' for k, v in combo.items()]
        config = configuration.load_config(config_spec)
        try:
            configuration.apply_overrides(config, [*overrides, *extra])
            # As the run's config.json will hold them, so a finished run is
            # recognised as one when the sweep is run again.
            configuration.absolute_paths(config, os.getcwd())
            _check_config(config)
        except JaxdistillError as e:
            raise type(e)(f'{e} (--grid, run {_run_name(combo)})') from None
        runs.append(
            {
                'name': _run_name(combo),
                'grid': combo,
                'overrides': [*overrides, *extra],
                'config': json.loads(configuration.to_json(config)),
            }
        )
    _check_distinct(runs)
    return runs


def _finished(workdir: str, config: dict) -> str:
    """How the run in `workdir` ended (finished, early stop, time limit)
    with the config it would get now, in words for the line that skips it;
    '' if it has not (or another config made it)."""
    from jaxdistill import runs as runs_lib  # pylint: disable=g-import-not-at-top

    saved = runs_lib.read_json(os.path.join(workdir, 'config.json'))
    # `distributed` differs between processes (process 0 writes the file).
    drop = lambda c: {k: v for k, v in (c or {}).items() if k not in PER_PROCESS}
    if saved is None or drop(saved) != drop(config):
        return ''
    d = runs_lib.describe(workdir)
    if d['state'] not in _DONE:
        return ''
    if d['state'] == 'finished':
        return 'finished already'
    # A time limit is each run's budget: the same sweep again keeps it (the
    # runs stay comparable); `train --workdir` gives the run more.
    return (
        f'{d["state"]} at step {d["step"]} of {d["num_train_steps"]} '
        f'(python -m jaxdistill.train --workdir {workdir} trains it on)'
    )


def _mean_std(values):
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(
        values
    ) > 1 else 0.0


def summarize(entries: list[dict], over) -> list[dict]:
    """Groups of runs that differ only in the `over` keys: their settings,
    run count, and mean/std of each evaluation metric every run of the group
    logged (its last evaluation). Only runs that ended (finished, stopped
    early or by a time limit) count: a failed or interrupted run's last
    evaluation is of an early step ('evaluated' says how many counted)."""
    groups = {}
    for e in entries:
        settings = {k: v for k, v in e['grid'].items() if k not in over}
        groups.setdefault(json.dumps(settings), (settings, []))[1].append(e)
    out = []
    for settings, members in groups.values():
        done = [m for m in members if m['eval'] and m.get('state') in _DONE]
        evaluated = [m['eval'] for m in done]
        steps = sorted({m['eval_step'] for m in done if m.get('eval_step') is not None})
        common = (
            [k for k in evaluated[0] if all(k in ev for ev in evaluated)]
            if evaluated
            else []
        )
        stats = {}
        for k in common:
            values = [float(ev[k]) for ev in evaluated]
            if all(math.isfinite(v) for v in values):
                stats[k] = _mean_std(values)
        out.append(
            {
                'settings': settings,
                'runs': len(members),
                'evaluated': len(evaluated),
                # The evaluated steps: more than one when a time limit or an
                # early stop ended the runs at different steps.
                'steps': steps,
                'mean': {k: m for k, (m, _) in stats.items()},
                'std': {k: s for k, (_, s) in stats.items()},
            }
        )
    return out


def table(groups: list[dict], patterns=()) -> str:
    """The groups as an aligned text table: mean ± std (over the runs)."""
    import fnmatch  # pylint: disable=g-import-not-at-top

    from jaxdistill import runs as runs_lib  # pylint: disable=g-import-not-at-top

    names = []
    for g in groups:
        names += [n for n in g['mean'] if n not in names]
    if patterns:
        logged = names
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        if logged and not names:
            return (
                f'--metric {" ".join(patterns)}: matches none of the metrics '
                f'the runs logged: {", ".join(logged)}.'
            )
    else:
        names = [n for n in runs_lib.DEFAULT_METRICS if n in names] or names[:3]
    rows = [('group', 'runs', 'step', *names)]
    mixed = False
    for g in groups:
        label = ','.join(f'{k}={v}' for k, v in g['settings'].items()) or 'all'
        cells = [
            f'{g["mean"][n]:.4g} ± {g["std"][n]:.2g}' if n in g['mean'] else '-'
            for n in names
        ]
        steps = g.get('steps', [])
        mixed = mixed or len(steps) > 1
        step = (
            f'{steps[0]}-{steps[-1]}'
            if len(steps) > 1
            else str(steps[0])
            if steps
            else '-'
        )
        rows.append((label, f'{g["evaluated"]}/{g["runs"]}', step, *cells))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    text = '\n'.join(
        '  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows
    )
    if mixed:
        text += (
            '\nNote: a group whose step is a range averages evaluations made at '
            'different steps (runs ended by a time limit or an early stop): its '
            '± holds the training lengths as well as the seeds.'
        )
    return text


def _parse(argv):
    parser = cli.parser_for('sweep', __doc__, cli.OVERRIDES_HELP)
    parser.add_argument('--config', required=True, help='configs/FILE.py[:arg]')
    parser.add_argument(
        '--workdir', required=True, help='the folder of the runs (one each)'
    )
    parser.add_argument(
        '--grid',
        action='append',
        default=[],
        metavar='KEY=V1,V2,...',
        help='a config key and its values (repeatable: every combination runs)',
    )
    parser.add_argument(
        '--over',
        action='append',
        default=None,
        metavar='KEY',
        help='grid key the summary averages over (repeatable; default: seed)',
    )
    parser.add_argument(
        '--metric',
        action='append',
        default=[],
        help='evaluation metric the summary shows, glob allowed (repeatable)',
    )
    parser.add_argument(
        '--stop_on_error',
        action='store_true',
        help='stop the sweep at the first run that fails',
    )
    parser.add_argument(
        '--parallel',
        type=int,
        default=0,
        help='runs at a time (default 1, or the number of --slot_env values)',
    )
    parser.add_argument(
        '--slot_env',
        action='append',
        default=[],
        metavar='KEY=V0;V1;...',
        help='environment variable of each parallel slot, e.g. '
        "'CUDA_VISIBLE_DEVICES=0;1;2;3' (a GPU a run; repeatable)",
    )
    parser.add_argument(
        '--dry_run',
        action='store_true',
        help='print the runs and their commands, and train nothing',
    )
    rest, overrides = cli.split_overrides(parser, argv)
    args = cli.expand_user(parser.parse_args(rest))
    try:
        cli.check_local(args.workdir, '--workdir')
    except JaxdistillError as e:
        parser.error(str(e))
    return args, overrides


def _command(args, run: dict, workdir: str) -> list[str]:
    return [
        sys.executable,
        '-m',
        'jaxdistill.train',
        '--config',
        args.config,
        '--workdir',
        workdir,
        *(f'--config.{o}' for o in run['overrides']),
    ]


def _process_id(config: dict) -> int:
    """Which process of a multi-process sweep this is (0 alone): from the
    config's `distributed.process_id`, else JAX_PROCESS_ID."""
    pid = (config.get('distributed') or {}).get('process_id', -1)
    if pid is None or pid < 0:
        pid = os.environ.get('JAX_PROCESS_ID') or 0
    return int(pid)


def _shared_cache(config, workdir: str) -> list[str]:
    """The override that points every run at WORKDIR/compilation_cache,
    where the runs would otherwise each have their own ([] if the user set
    a cache)."""
    if config.get('compilation_cache_dir', 'auto') != 'auto':
        return []
    if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
        return []
    path = os.path.join(os.path.abspath(workdir), 'compilation_cache')
    return [f'compilation_cache_dir={path}']


def _config_coordinator(config) -> str:
    """The config's `distributed.coordinator_address` ('' if unset)."""
    distributed = config.get('distributed') or {}
    return distributed.get('coordinator_address') or ''


def sweep(args, overrides) -> int:
    grid = parse_grid(args.grid)
    over = args.over if args.over is not None else [k for k in ('seed',) if k in grid]
    unknown = [k for k in over if k not in grid]
    if unknown:
        raise ConfigError(
            f'--over {", ".join(unknown)}: not a --grid key ({", ".join(grid)}).'
        )
    check_overrides(grid, overrides)
    base = configuration.apply_overrides(
        configuration.load_config(args.config), overrides
    )
    coordinator = _config_coordinator(base)
    slots = parse_slots(args.parallel, args.slot_env, config_coordinator=coordinator)
    runs = plan(args.config, [*overrides, *_shared_cache(base, args.workdir)], grid)
    total = len(runs)
    print(
        f'Sweep of {total} run{"s" if total != 1 else ""} in {args.workdir}: '
        + (' x '.join(f'{k} ({len(v)})' for k, v in grid.items()) or 'no grid'),
        flush=True,
    )
    if args.dry_run:
        for n, env in enumerate(slots if len(slots) > 1 else []):
            shown = ' '.join(f'{k}={shlex.quote(v)}' for k, v in env.items())
            print(f'slot {n}: ' + (shown or '-'))
        for i, run in enumerate(runs, 1):
            workdir = os.path.join(args.workdir, run['name'])
            print(f'[{i}/{total}] ' + shlex.join(_command(args, run, workdir)))
        return 0
    cli.make_folder(args.workdir, '--workdir')
    # One sweep per folder (two would take turns refusing each other's runs).
    # With several processes each run's own lock guards it; the sweep, which
    # never starts JAX, cannot agree on one lock for all of them.
    lock = None
    if not (coordinator or os.environ.get(_COORDINATOR)):
        lock = workdir_lock.WorkdirLock(args.workdir).acquire()
    try:
        return _train_all(args, runs, grid, over, slots)
    finally:
        if lock is not None:
            lock.release()


def parse_slots(parallel: int, specs, *, config_coordinator: str = '') -> list[dict]:
    """The environment of each slot (a run at a time each): `--slot_env
    KEY=V0;V1;...` gives slot i the value Vi (`''` for an empty value); their
    count is the number of slots, which `--parallel` must match where both
    are given. `config_coordinator`: the config's coordinator address (a
    multi-process sweep's runs at once cannot share it)."""
    values = {}
    for spec in specs:
        key, sep, text = spec.partition('=')
        if not sep or not key.strip():
            raise ConfigError(
                f'--slot_env {spec!r}: expected KEY=VALUE;VALUE;... (e.g. '
                'CUDA_VISIBLE_DEVICES=0;1;2;3, a GPU a run).'
            )
        items = text.split(';')
        empty = [i for i, v in enumerate(items) if not v.strip()]
        if empty:
            raise ConfigError(
                f'--slot_env {spec!r}: slot {empty[0]} has no value (a stray '
                "';'?); write '' for a value that is meant to be empty."
            )
        values[key.strip()] = ['' if v.strip() in ("''", '""') else v for v in items]
    counts = {len(v) for v in values.values()}
    if len(counts) > 1:
        raise ConfigError(
            '--slot_env: every variable needs one value per slot; got '
            + ', '.join(f'{k} ({len(v)})' for k, v in values.items())
            + '.'
        )
    n = counts.pop() if counts else parallel or 1
    if parallel and parallel != n:
        raise ConfigError(f'--parallel {parallel}, but --slot_env gives {n} slots.')
    if n < 1:
        raise ConfigError(f'--parallel {n}: at least 1.')
    if n > 1 and config_coordinator:
        raise ConfigError(
            f'--parallel {n} with --config.distributed.coordinator_address='
            f'{config_coordinator}: the runs at once would share one '
            'coordinator. Leave the address out of the config and give each '
            f"slot its own: --slot_env '{_COORDINATOR}=host:port0;host:port1;...'."
        )
    if n > 1 and os.environ.get(_COORDINATOR) and _COORDINATOR not in values:
        raise ConfigError(
            f'--parallel {n} with several processes ({_COORDINATOR} is set): '
            'the runs at once would share one coordinator. Run them one at a '
            f'time, or give each slot its own: --slot_env '
            f"'{_COORDINATOR}=host:port0;host:port1;...'."
        )
    return [{k: v[i] for k, v in values.items()} for i in range(n)]


def _last_line(path: str, limit: int = 300) -> str:
    """The last non-empty line of a run's output log ('' if none), cut to
    `limit` characters: in a failed run, its error."""
    try:
        with open(path, 'rb') as f:
            f.seek(max(0, os.path.getsize(path) - 8192))
            lines = f.read().decode('utf-8', 'replace').splitlines()
    except OSError:
        return ''
    last = next((line.strip() for line in reversed(lines) if line.strip()), '')
    return last if len(last) <= limit else last[: limit - 3] + '...'


def _launch(args, run, workdir, env, log):
    """The run's `train` process: its output to this terminal (one slot) or
    to `log` (several: WORKDIR/NAME/sweep_output.log)."""
    if log is None:
        return subprocess.Popen(_command(args, run, workdir), env=env)  # pylint: disable=consider-using-with
    os.makedirs(workdir, exist_ok=True)
    with open(log, 'ab') as out:
        return subprocess.Popen(  # pylint: disable=consider-using-with
            _command(args, run, workdir), env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _train_all(args, runs, grid, over, slots) -> int:
    from jaxdistill import runs as runs_lib  # pylint: disable=g-import-not-at-top

    # `stopped`: by a signal (exit 130); `halted`: by --stop_on_error.
    total, failed, stopped, halted = len(runs), {}, False, False
    started = time.time()
    pending = []
    for i, run in enumerate(runs, 1):
        workdir = os.path.join(args.workdir, run['name'])
        ended = _finished(workdir, run['config'])
        if ended:
            print(f'[{i}/{total}] {run["name"]}: {ended}; skipped.', flush=True)
        else:
            pending.append((i, run, workdir))
    active = {}  # Popen -> (index, run, slot)
    free = list(range(len(slots)))

    def forward(signum, frame):
        del frame
        nonlocal stopped
        stopped = True
        for proc in active:
            proc.send_signal(signum)  # Each run saves and stops.

    # SIGTERM (a scheduler's notice) is passed to the runs; Ctrl-C reaches
    # them by itself (the terminal signals the whole process group).
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, forward) if main else None
    try:
        while active or (pending and not (stopped or halted)):
            while pending and free and not (stopped or halted):
                i, run, workdir = pending.pop(0)
                slot = free.pop(0)
                log = (
                    os.path.join(workdir, 'sweep_output.log')
                    if len(slots) > 1
                    else None
                )
                where = f' (slot {slot}; output in {log})' if log else ''
                print(f'\n[{i}/{total}] {run["name"]}{where}', flush=True)
                env = {**os.environ, **slots[slot]}
                active[_launch(args, run, workdir, env, log)] = (i, run, slot)
            try:
                if len(slots) == 1:
                    next(iter(active)).wait()
                else:
                    time.sleep(0.2)
            except KeyboardInterrupt:  # Let the runs save.
                stopped = True
                for proc in active:
                    proc.wait()
            for proc in [p for p in active if p.poll() is not None]:
                i, run, slot = active.pop(proc)
                free.append(slot)
                code = proc.returncode
                if code in (130, -signal.SIGINT, -signal.SIGTERM):
                    stopped = True
                    print(f'[{i}/{total}] {run["name"]} stopped.', flush=True)
                elif code != 0:
                    failed[run['name']] = code
                    log = os.path.join(args.workdir, run['name'], 'sweep_output.log')
                    last = _last_line(log) if len(slots) > 1 else ''
                    print(
                        f'[{i}/{total}] {run["name"]} failed (exit status {code})'
                        + (f': {last}' if last else '.'),
                        flush=True,
                    )
                    halted = halted or args.stop_on_error
                elif len(slots) > 1:
                    print(f'[{i}/{total}] {run["name"]} done.', flush=True)
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    if (stopped or halted) and pending:
        left = len(pending)
        print(
            f'Sweep stopped with {left} run{"s" if left != 1 else ""} not '
            'started; run the same command to go on.',
            flush=True,
        )
    entries = []
    for run in runs:
        workdir = os.path.join(args.workdir, run['name'])
        if os.path.exists(os.path.join(workdir, 'config.json')):
            d = runs_lib.describe(workdir)
        else:
            d = {'state': 'not started', 'eval': {}, 'eval_step': None, 'best': None}
        if run['name'] in failed and d['state'] != 'failed':
            # Refused before it trained (no error.json): the exit status says.
            d['state'] = f'failed (exit status {failed[run["name"]]})'
        entries.append(
            {
                'name': run['name'],
                'workdir': workdir,
                'grid': run['grid'],
                'overrides': run['overrides'],
                'state': d['state'],
                'eval_step': d['eval_step'],
                'eval': d['eval'],
                'best': d['best'],
            }
        )
    groups = summarize(entries, over)
    record = {
        'config': args.config,
        'grid': grid,
        'over': over,
        'runs': entries,
        'groups': groups,
        'seconds': time.time() - started,
    }
    path = os.path.join(args.workdir, RESULT_FILE)
    if _process_id(runs[0]['config']) == 0:  # One writer of the shared file.
        with open(path + '.tmp', 'w', encoding='utf-8') as f:
            json.dump(record, f, indent=2)
        os.replace(path + '.tmp', path)
    states = {}
    for e in entries:
        states[e['state']] = states.get(e['state'], 0) + 1
    print('\nRuns: ' + ', '.join(f'{n} {s}' for s, n in states.items()) + f'. ({path})')
    print(f'Last evaluation, mean ± std over {", ".join(over) or "nothing"}:')
    print(table(groups, args.metric))
    if stopped:
        return 130
    return 1 if failed else 0


def main(argv=None) -> int:
    args, overrides = _parse(sys.argv[1:] if argv is None else argv)
    code = [0]

    def run():
        code[0] = sweep(args, overrides)

    guarded = cli.main_guard(run)
    return guarded or code[0]


if __name__ == '__main__':
    cli.exit_process(main())
