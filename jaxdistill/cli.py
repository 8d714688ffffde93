"""Shared command-line handling: `--config FILE[:arg]`, `--config.k=v`."""

import argparse
import json
import os
import re
import shlex
import sys
from typing import Callable, Sequence

from jaxdistill import configuration
from jaxdistill import interrupts
from jaxdistill.errors import ConfigError, JaxdistillError


OVERRIDES_HELP = (
    'Any config field can be set after the config: --config.a.b=value, e.g. '
    '--config.num_train_steps=100 --config.optimizer.learning_rate=1e-3 '
    "--config.data.bucket_lengths='(16, 32)'."
)


def parser_for(module: str, doc: str, epilog: str | None = None):
    """An ArgumentParser for `python -m jaxdistill.MODULE` whose help shows
    the module's docstring as written. Every tool starts here, before JAX is
    imported, so its Ctrl-C handler (`interrupts`) goes in here too."""
    interrupts.install()
    return argparse.ArgumentParser(
        prog=f'python -m jaxdistill.{module}',
        description=doc.strip(),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


STEP_HELP = (
    "checkpoint step to use: a number, or 'best' (the checkpoint ranked best "
    "by the run's checkpoint.best_metric; summary.json's best_step); "
    'default: the latest'
)


def step_arg(value: str):
    """argparse type of `--step`: a step number or 'best'."""
    if value == 'best':
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither a step number nor 'best'"
        ) from None


def resolve_step(workdir: str, config, step):
    """The checkpoint step `--step` names: None (the latest) and numbers as
    given; 'best' the step of the checkpoint ranked best by the run's
    `checkpoint.best_metric`, or a JaxdistillError saying why there is none."""
    if step != 'best':
        return step
    metric = config.checkpoint.get('best_metric', '')
    if not metric:
        raise JaxdistillError(
            f'--step best: {workdir} was trained without '
            'checkpoint.best_metric, so no checkpoint is ranked; pass a step '
            'number (see its checkpoints folder).'
        )
    directory = os.path.join(workdir, 'checkpoints')
    if not os.path.isdir(directory):
        raise JaxdistillError(f'--step best: no checkpoints in {directory}.')
    from jaxdistill import checkpoint  # pylint: disable=g-import-not-at-top

    ckpt = checkpoint.Checkpointer(
        directory,
        every=1,
        keep=0,
        async_save=False,
        best_metric=metric,
        best_mode=config.checkpoint.get('best_mode', 'max'),
        read_only=True,  # The run may still be training (and saving) there.
    )
    try:
        best = ckpt.best_step()
    finally:
        ckpt.close()
    if best is None:
        raise JaxdistillError(
            f'--step best: no checkpoint in {directory} was saved '
            f'with a value of {metric} (evaluated, and not NaN) yet; pass a '
            'step number.'
        )
    return best[0]


def parse(
    argv: Sequence[str],
    module: str,
    doc: str,
    *,
    need_config: bool = True,
    with_step: bool = False,
    with_print_config: bool = False,
) -> tuple[argparse.Namespace, list[str]]:
    """Parses the flags of `python -m jaxdistill.MODULE`; returns (args,
    config overrides without `--config.`). `with_step` offers `--step`;
    `with_print_config` offers `--print_config` (then `--workdir` may be
    left out)."""
    parser = parser_for(module, doc, OVERRIDES_HELP)
    parser.add_argument(
        '--config',
        required=need_config,
        help='FILE.py[:arg], e.g. configs/translate_synthetic.py:runlocal (a '
        "name under configs/ that is not in this folder is the library's "
        'own config of that name)',
    )
    parser.add_argument(
        '--workdir',
        required=not with_print_config,
        help='where checkpoints, logs and the tokenizer live',
    )
    if with_print_config:
        parser.add_argument(
            '--print_config',
            action='store_true',
            help='print the config as the overrides leave it, and exit '
            '(nothing is built or trained)',
        )
    if with_step:
        parser.add_argument('--step', type=step_arg, default=None, help=STEP_HELP)
    rest, overrides = split_overrides(parser, argv)
    args = expand_user(parser.parse_args(rest))
    if with_print_config and not args.print_config and not args.workdir:
        parser.error('the following arguments are required: --workdir')
    if args.workdir:
        try:
            check_local(args.workdir, '--workdir')
        except JaxdistillError as e:
            parser.error(str(e))
    return args, overrides


# Command-line arguments that name files or folders.
PATH_ARGS = frozenset({'workdir', 'out', 'corpus', 'config', 'paths', 'similarity'})


def expand_user(args):
    """`args` with `~` expanded in its path arguments (`PATH_ARGS`): the
    shell leaves `--workdir=~/run` as it is, which would make a folder
    named '~' here."""
    for name, value in vars(args).items():
        if name not in PATH_ARGS:
            continue
        if isinstance(value, str):
            setattr(args, name, os.path.expanduser(value))
        elif isinstance(value, list):
            setattr(
                args,
                name,
                [os.path.expanduser(v) if isinstance(v, str) else v for v in value],
            )
    return args


def split_overrides(parser, argv) -> tuple[list[str], list[str]]:
    """`configuration.split_overrides`, its error (a `--config.KEY` with no
    value) as the parser's usage error (exit status 2)."""
    try:
        return configuration.split_overrides(argv)
    except ConfigError as e:
        parser.error(str(e))


_REMOTE = re.compile(r'^([A-Za-z][A-Za-z0-9+.-]*)://')


def check_local(path: str, what: str = 'workdir'):
    """A remote path (gs://, s3://, ...) as a workdir: a JaxdistillError.

    The workdir is written with local file operations (and a `flock`), so
    `gs://b/run` would become a local folder named 'gs:'; refused instead.
    """
    m = _REMOTE.match(str(path))
    if m:
        raise JaxdistillError(
            f'{what} {path}: remote paths ({m.group(1)}://) are not supported; '
            'the workdir is written with local file operations. Use a local '
            'path, or the bucket mounted as a folder (e.g. with gcsfuse).'
        )


def make_folder(path: str, what: str = '--workdir', *, writes: bool = True) -> None:
    """Creates the folder `path` (given as `what`, e.g. '--workdir'); a
    JaxdistillError naming it if it is a remote path, a file, cannot be
    created, or (where `writes`) cannot be written."""
    check_local(path, what)
    if os.path.exists(path) and not os.path.isdir(path):
        raise JaxdistillError(f'{what} {path} is a file, not a folder.')
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise JaxdistillError(
            f'{what} {path} cannot be created: {e.strerror or e} '
            f'({e.filename or path}).'
        ) from None
    if writes and not os.access(path, os.W_OK | os.X_OK):
        raise JaxdistillError(f'{what} {path} is not writable by this user.')


def main_guard(fn: Callable[[], object], *, workdir: str | None = None) -> int:
    """Runs `fn`, turning user errors into one clear line and exit code 2,
    and Ctrl-C into one line (which says what `workdir` has saved) and exit
    code 130. An int that `fn` returns is the exit code (a tool that did
    part of its work and named what it could not)."""
    try:
        code = fn()
    except JaxdistillError as e:
        print(f'error: {e}', file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(_interrupted(workdir), file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (`| head -1`, `| grep -q`): end as a
        # Unix filter does, without a traceback, and with SIGPIPE's status.
        _silence_stdout()
        return SIGPIPE_EXIT
    return code if type(code) is int else 0  # pylint: disable=unidiomatic-typecheck


# A process ended by SIGPIPE, as a shell reports it (128 + 13).
SIGPIPE_EXIT = 141


def _silence_stdout() -> None:
    """Points stdout at /dev/null, so that flushing it at exit (with output
    still buffered for the closed pipe) raises nothing more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def exit_process(code: int) -> None:
    """Ends a tool's process with `code`. After a Ctrl-C (130) it skips the
    interpreter's teardown (`os._exit`, once the output is flushed): an
    interrupt that lands while XLA is compiling leaves its threads running,
    and tearing the interpreter down under them crashed with a segmentation
    fault (exit 139) instead of 130. Everything a run writes is already
    closed by then (`main_guard` runs after the Trainer's own cleanup)."""
    if code in (130, SIGPIPE_EXIT):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)  # pylint: disable=protected-access
    sys.exit(code)


def saved_steps(directory: str) -> list[int]:
    """The steps of the finished checkpoints in `directory` (a save still
    being written is not one), sorted; [] if there is no such folder. Read
    from the folder names, without Orbax (and so without JAX)."""
    try:
        return sorted(int(n) for n in os.listdir(directory) if n.isdigit())
    except OSError:
        return []


def has_checkpoint(workdir: str) -> bool:
    """Whether the run in `workdir` has saved a finished checkpoint (in
    WORKDIR/checkpoints): until then nothing of it is trained."""
    return bool(saved_steps(os.path.join(workdir, 'checkpoints')))


def _interrupted(workdir: str | None) -> str:
    """The line a Ctrl-C ends a tool with."""
    if not workdir:
        return 'interrupted.'
    directory = os.path.join(workdir, 'checkpoints')
    steps = saved_steps(directory)
    if not steps:
        return (
            f'interrupted before the first checkpoint: nothing is saved in '
            f'{workdir} to resume from; the same command starts the run again.'
        )
    return (
        f'interrupted; the checkpoints in {directory} are complete and kept '
        f'(the latest: step {steps[-1]}; a save cut short, which Orbax may '
        'report above as failed, is not among them, and one Orbax names there '
        'may have finished all the same); the same command resumes from the '
        'latest.'
    )


def quiet_tensorflow():
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')


def load(args, overrides):
    config = configuration.load_config(args.config)
    return configuration.apply_overrides(config, overrides)


def source_record(spec: str, overrides) -> dict:
    """What a run's `DIR/config_source.json` holds: the config file (made
    absolute, so a resume from another folder finds it), its argument and the
    overrides, as given to `train`."""
    path, sep, arg = configuration.split_spec(spec)
    path = configuration.resolve_config_path(path)
    return {
        'config': os.path.abspath(path) + sep + arg,
        'overrides': list(overrides),
        # The folder relative paths in the file and the overrides start from.
        'cwd': os.getcwd(),
    }


def _absolute_overrides(overrides, config) -> list[str]:
    """`overrides` with those that set a path (`configuration.path_fields`)
    rewritten to the absolute value `config` now holds, so the record stays
    right from whichever folder the next resume runs."""
    paths = set(configuration.path_fields(config))
    out = []
    for override in overrides:
        key = override.partition('=')[0]
        if key in paths:
            node = config
            for part in key.split('.'):
                node = node[part]
            override = f'{key}={node!r}'
        out.append(override)
    return out


def merged_overrides(saved, new) -> list[str]:
    """`saved` then `new`, without the saved ones whose key `new` sets again."""
    keys = {o.partition('=')[0] for o in new}
    return [o for o in saved if o.partition('=')[0] not in keys] + list(new)


def command_line(source: dict, workdir: str) -> str:
    """The `python -m jaxdistill.train` line a source record stands for
    (from the folder the run started in, where that is not this one: its
    relative paths start there)."""
    cwd = source.get('cwd')
    elsewhere = cwd and os.path.realpath(cwd) != os.path.realpath(os.getcwd())
    return ('cd ' + shlex.quote(cwd) + ' && ' if elsewhere else '') + ' '.join(
        [
            'python -m jaxdistill.train',
            '--config',
            shlex.quote(source['config']),
            *(shlex.quote('--config.' + o) for o in source['overrides']),
            '--workdir',
            shlex.quote(os.path.abspath(workdir) if elsewhere else workdir),
        ]
    )


def _read_source(workdir: str) -> tuple[dict | None, str]:
    """(the run's source record, '') or (None, why there is none)."""
    path = os.path.join(workdir, configuration.SOURCE_FILE)
    if not os.path.exists(path):
        return None, (
            f'it has no {configuration.SOURCE_FILE} (`train --config` records '
            'one since 2026-12-06; extract and runs started from Python do not)'
        )
    try:
        with open(path, encoding='utf-8') as f:
            record = json.load(f)
        if not isinstance(record.get('config'), str) or not all(
            isinstance(o, str) for o in record.get('overrides', ())
        ):
            raise ValueError('expected {"config": str, "overrides": [str, ...]}')
    except (ValueError, AttributeError, OSError) as e:
        return None, f'{path} is unreadable: {e}'
    out = {'config': record['config'], 'overrides': list(record.get('overrides', ()))}
    if isinstance(record.get('cwd'), str):  # Recorded since 2026-12-07.
        out['cwd'] = record['cwd']
    return out, ''


def config_for_resume(workdir: str, overrides) -> tuple[object, dict | None, str]:
    """`train --workdir DIR` without `--config`: the config to resume DIR with.

    Returns (config, source record to save, a line saying what was used). The
    config file and overrides the run was started with (DIR/config_source.json)
    are loaded again and `overrides` applied after them, so fields the file
    links (`optimizer.total_steps` to `num_train_steps`) move together. Where
    that file no longer loads, the run's own DIR/config.json is used, with
    `overrides` applied to it key by key, and the line says so.
    """
    if not os.path.exists(os.path.join(workdir, 'config.json')):
        raise JaxdistillError(
            f'{workdir} holds no run to resume (no config.json); start one with '
            '--config configs/FILE.py[:arg].'
        )
    source, reason = _read_source(workdir)
    if source is not None:
        try:
            config = configuration.load_config(source['config'])
        except Exception as e:  # pylint: disable=broad-except
            # A bug in the file or its imports too: config.json still holds
            # the run's config.
            if not isinstance(e, JaxdistillError):
                e = f'{type(e).__name__}: {e}'
            reason = f'its config file does not load: {str(e).rstrip(".")}'
        else:
            saved = source['overrides']
            try:
                configuration.apply_overrides(config, saved)
            except JaxdistillError as e:
                raise type(e)(
                    f'{e} (an override {workdir} was started with, saved in '
                    f'{os.path.join(workdir, configuration.SOURCE_FILE)}; pass --config to '
                    'give the run its config again)'
                ) from None
            # The file's and the saved overrides' relative paths start from
            # the folder the run started in; the new overrides' from this one.
            configuration.absolute_paths(config, source.get('cwd', os.getcwd()))
            configuration.apply_overrides(config, overrides)
            configuration.absolute_paths(config, os.getcwd())
            overrides = _absolute_overrides(overrides, config)
            source = {**source, 'overrides': merged_overrides(saved, overrides)}
            return (
                config,
                source,
                'Resuming with the config the run was started with: '
                + command_line(source, workdir),
            )
    config = configuration.apply_overrides(workdir_config(workdir), overrides)
    if source is not None:  # Its file will do again once it is back.
        source = {
            **source,
            'overrides': merged_overrides(source['overrides'], overrides),
        }
    return (
        config,
        source,
        f'Note: resuming from {os.path.join(workdir, "config.json")}, since '
        f'{reason}. There, fields a config file links (e.g. '
        'optimizer.total_steps to num_train_steps) are separate values: an '
        'override changes only the key it names.',
    )


def workdir_config(workdir: str, *, task: str = '', needed_by: str = ''):
    """The ConfigDict a training run saved in `workdir` (its config.json).

    `task`: the task the caller needs the run to have trained; another is a
    ConfigError naming `workdir` as `needed_by` gave it (a flag or a key).
    """
    import ml_collections  # pylint: disable=g-import-not-at-top

    from jaxdistill.errors import ConfigError  # pylint: disable=g-import-not-at-top

    path = os.path.join(workdir, 'config.json')
    if not os.path.exists(path):
        if needed_by.startswith('method.') or needed_by.startswith('data.'):
            # A run the config names (a teacher), not the user's --workdir.
            raise ConfigError(
                f'{needed_by}: {workdir} holds no run (no config.json); if it '
                f'moved, pass --config.{needed_by}=ITS_NEW_PATH.'
            )
        raise JaxdistillError(
            f'{workdir} holds no run (no config.json); pass the --workdir used for training.'
        )
    config = ml_collections.ConfigDict(configuration.read_saved(path))
    if task and 'task' not in config:  # Else the run's start names it.
        raise ConfigError(
            f"{path} has no 'task' key: it is damaged or not a run's config "
            '(restore it from a copy).'
        )
    if task and config.get('task') != task:
        raise ConfigError(
            f'{workdir} is a {config.get("task")!r} run; {needed_by} needs a '
            f'{task} run.'
        )
    from jaxdistill import registry  # pylint: disable=g-import-not-at-top

    # The run's own methods or models, if it named any (config.imports).
    registry.import_plugins(config.get('imports', ()))
    return config
