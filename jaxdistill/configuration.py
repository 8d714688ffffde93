"""Loading config files and applying command-line overrides.

`configs/x.py:arg` imports `configs/x.py` and calls `get_config('arg')`; a
config file rejects an argument it does not know by raising `ConfigError`,
which reaches the user as one line naming the file and the argument.
Overrides are `--config.a.b=value`; the value is parsed as a Python literal
and must fit the type of the field it replaces. Unknown keys are an error that
lists the closest valid keys.
"""

import ast
import dataclasses
import difflib
import importlib.util
import inspect
import json
import os
import sys
from typing import Any, Sequence

import ml_collections

from jaxdistill.errors import ConfigError


# Beside a run's config.json: the config file (absolute path, ':arg') and the
# `--config.` overrides that made it, for `train --workdir DIR` to resume with.
SOURCE_FILE = 'config_source.json'


def library_configs() -> str | None:
    """The folder of the library's own config files: `configs/` beside the
    package in a source checkout, else the copy an installed package carries
    as `jaxdistill.configs` (pyproject.toml maps it); None if neither."""
    beside = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'configs')
    if os.path.isfile(os.path.join(beside, 'spine.py')):
        return beside
    try:
        spec = importlib.util.find_spec('jaxdistill.configs')
    except ImportError:
        spec = None
    for folder in getattr(spec, 'submodule_search_locations', None) or ():
        if os.path.isfile(os.path.join(folder, 'spine.py')):
            return folder
    return None


def _library_names() -> list[str]:
    folder = library_configs()
    if not folder:
        return []
    return sorted(
        f for f in os.listdir(folder) if f.endswith('.py') and not f.startswith('_')
    )


# The library's config files already named in a note (once per process).
_NOTED: set[str] = set()


def resolve_config_path(path: str) -> str:
    """`path`, or the library's own config of that name where `path` is not a
    file but names one as `configs/NAME.py` or `NAME.py` (an installed
    jaxdistill run from another folder: the README's commands work there)."""
    if os.path.exists(path):
        return path
    folder = library_configs()
    if not _may_name_a_library_config(path) or not folder:
        return path
    candidate = os.path.join(folder, os.path.basename(path))
    if not os.path.isfile(candidate):
        return path
    if candidate not in _NOTED:
        _NOTED.add(candidate)
        print(
            f"note: {path} is not in {os.getcwd()}; using the library's "
            f'config {candidate}.',
            file=sys.stderr,
        )
    return candidate


def _may_name_a_library_config(path: str) -> bool:
    """`NAME.py` or `configs/NAME.py`: a name the library's configs may hold."""
    return os.path.dirname(os.path.normpath(path)) in ('', 'configs')


def _not_found(path: str) -> str:
    names = _library_names()
    if _may_name_a_library_config(path) and names:
        return (
            f"Config file not found: {path} (the library's configs, in "
            f'{library_configs()}: {", ".join(names)})'
        )
    return f'Config file not found: {path}'


def _missing_module(path: str, name: str) -> str:
    """The error for a config file whose import of `name` failed."""
    library = library_configs() or ''
    top = name.split('.')[0]
    if library and os.path.isfile(os.path.join(library, top + '.py')):
        where = f"the library's configs folder ({library})"
    else:
        where = 'the folder that holds it'
    return (
        f'The config file {path} needs the module {name!r}, which cannot be '
        f'found: put {where} on PYTHONPATH.'
    )


# The config files' on/off arguments: given bare (`:runlocal`), or with a
# value that says on or off (`:runlocal=False` from a script's variable).
CONFIG_FLAGS = ('runlocal', 'budget')
_ON, _OFF = ('true', '1', 'yes', 'on'), ('false', '0', 'no', 'off')


def parse_config_arg(arg: str | None) -> dict:
    """A config file's argument: 'runlocal,size=base' -> {'runlocal': True,
    'size': 'base'}; ConfigError for 'size=' (a name with no value).

    A flag of CONFIG_FLAGS given a value is on for True/1/yes/on and left out
    for False/0/no/off (any other value is refused): as a string, any value
    read as on, so `runlocal=False` shrank the run.
    """
    out = {}
    for item in filter(None, (arg or '').split(',')):
        key, sep, value = item.partition('=')
        key, value = key.strip(), value.strip()
        if sep and not value:
            raise ConfigError(f'config argument {item!r}: {key}= needs a value.')
        if sep and key in CONFIG_FLAGS:
            if value.lower() in _OFF:
                continue
            if value.lower() not in _ON:
                raise ConfigError(
                    f'config argument {item!r}: {key} is on or off; give it '
                    f'bare ({key}), or {key}=True / {key}=False.'
                )
            value, sep = '', ''
        out[key] = value if sep else True
    return out


# Modules that config files imported from their folders (their bases).
_CONFIG_MODULES: set[str] = set()


def _forget_config_modules(folder: str) -> None:
    """Drops the modules config files imported from their folders, and any
    module named like a file of `folder` but loaded from elsewhere, so that
    the next config's `import translation_base` reads its own folder's file
    as it is now (not another folder's, or an older copy). Only those: a
    plugin listed in `config.imports` is imported (and registers) once."""
    for name in _CONFIG_MODULES:
        sys.modules.pop(name, None)
    _CONFIG_MODULES.clear()
    for name, module in list(sys.modules.items()):
        own = os.path.join(folder, f'{name}.py')
        file = getattr(module, '__file__', None)
        if file and os.path.isfile(own) and os.path.abspath(file) != own:
            del sys.modules[name]


def _note_config_modules(before: set[str], folder: str) -> None:
    """Records the modules a config's execution imported from `folder`."""
    for name in set(sys.modules) - before:
        file = getattr(sys.modules[name], '__file__', None)
        if file and os.path.dirname(os.path.abspath(file)) == folder:
            _CONFIG_MODULES.add(name)


def split_spec(spec: str) -> tuple[str, str, str]:
    """'path.py:arg' -> (path, ':', arg); the first ':' after '.py' splits,
    so a folder named 'exp:2026-12-07T14:45' stays in the path."""
    cut = spec.find('.py:')
    if cut >= 0:
        return spec[: cut + 3], ':', spec[cut + 4 :]
    if spec.endswith('.py') or ':' not in spec:
        return spec, '', ''
    return spec.partition(':')  # Not a .py file: named as such below.


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Loads `path.py[:arg]` and returns `get_config(arg)`."""
    path, _, arg = split_spec(spec)
    path = resolve_config_path(path)
    if os.path.isdir(path):
        hint = (
            " (a run's folder: --workdir takes it)"
            if os.path.exists(os.path.join(path, 'config.json'))
            else ''
        )
        raise ConfigError(f'--config {path} is a folder, not a config file{hint}.')
    if not os.path.isfile(path):
        raise ConfigError(_not_found(path))
    if not path.endswith('.py'):
        hint = (
            " (a run's saved config: resume it with --workdir DIR alone, or "
            'start from the config file it names in DIR/config_source.json)'
            if path.endswith('.json')
            else ''
        )
        raise ConfigError(
            f'--config {path}: a config is a Python file (.py) with a '
            f'get_config(arg=None) function{hint}.'
        )
    module_spec = importlib.util.spec_from_file_location(
        f'_jaxdistill_config_{abs(hash(path))}', path
    )
    module = importlib.util.module_from_spec(module_spec)
    # Variants import their base from the same folder: that folder's copy,
    # read afresh (a base another folder's config imported earlier in this
    # process, or one edited since, must not be reused).
    folder = os.path.dirname(os.path.abspath(path))
    _forget_config_modules(folder)
    before = set(sys.modules)
    sys.path.insert(0, folder)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as e:  # In the file or in a base it imports.
        raise ConfigError(f'{e.filename or path} line {e.lineno}: {e.msg}') from None
    except ModuleNotFoundError as e:
        if not e.name:
            raise
        raise ConfigError(_missing_module(path, e.name)) from None
    except Exception as e:
        # Other errors in a config file are bugs in it: the traceback, which
        # ends at the file's own line, says more than one line could.
        e.add_note(f'(raised while loading the config file {path})')
        raise
    finally:
        sys.path.pop(0)
        _note_config_modules(before, folder)
    if not hasattr(module, 'get_config'):
        raise ConfigError(f'{path} has no get_config(arg=None) function.')
    takes_arg = bool(inspect.signature(module.get_config).parameters)
    if arg and not takes_arg:
        raise ConfigError(
            f'{spec}: get_config() of {path} takes no argument, so {arg!r} '
            'cannot be passed to it.'
        )
    try:
        config = module.get_config(arg or None) if takes_arg else module.get_config()
    except ConfigError as e:  # A deliberate rejection, e.g. an unknown argument.
        raise ConfigError(f'{spec}: {e}') from None
    except Exception as e:
        e.add_note(f'(raised by get_config({arg or None!r}) of the config file {path})')
        raise
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f'{path}: get_config must return a ConfigDict.')
    return config


def flat_keys(config: ml_collections.ConfigDict, prefix='') -> list[str]:
    """All dotted leaf keys of a config."""
    keys = []
    for k, v in config.items():
        name = f'{prefix}{k}'
        if isinstance(v, ml_collections.ConfigDict):
            keys.extend(flat_keys(v, name + '.'))
        else:
            keys.append(name)
    return keys


def _method_option_hint(key: str, config) -> str:
    """For `method.X` that the config lacks but the method takes: say so
    (an override changes only keys the config file sets)."""
    parts = key.split('.')
    if len(parts) != 2 or parts[0] != 'method' or 'method' not in config:
        return ''
    try:
        from jaxdistill import methods  # noqa: F401  pylint: disable=g-import-not-at-top
        from jaxdistill import registry  # pylint: disable=g-import-not-at-top

        cls = registry.get('method', config.method.name)
        fields = {f.name for f in dataclasses.fields(cls)}
    except Exception:  # pylint: disable=broad-except
        return ''
    if parts[1] not in fields:
        return ''
    return (
        f' It is an option of method {config.method.name!r}, but this config does '
        f'not set it: add `config.method.{parts[1]} = ...` to the config file '
        '(overrides and --grid change only keys a config sets).'
    )


def _unknown_key(key: str, config) -> ConfigError:
    option = _method_option_hint(key, config)
    if option:
        return ConfigError(f'Unknown config key {key!r}.{option}')
    valid = flat_keys(config)
    close = difflib.get_close_matches(key, valid, n=4, cutoff=0.6)
    hint = (
        f' Did you mean: {", ".join(close)}?'
        if close
        else f' Valid keys include: {", ".join(valid[:12])}...'
    )
    return ConfigError(f'Unknown config key {key!r}.{hint}')


def _parse(key: str, text: str, old: Any) -> Any:
    if isinstance(old, str):
        # The text as is; a quoted Python string ('val', "", as a shell
        # passes "--config.x='val'") is the string inside the quotes.
        if text[:1] in ('"', "'") and text[-1:] == text[:1] and len(text) >= 2:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return text
            return value if isinstance(value, str) else text
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if old is None:
            return text
        hint = ''
        if isinstance(old, bool):
            hint = ' Give True or False.'
        elif isinstance(old, (tuple, list)):
            # Bare words (en-de, en-de,en-fr) are not Python literals.
            items = [repr(t.strip()) for t in text.split(',') if t.strip()]
            shown = f'({items[0]},)' if len(items) == 1 else f'({", ".join(items)})'
            hint = f' Quote text items, e.g. "--config.{key}={shown}".'
        raise ConfigError(
            f'--config.{key}={text!r}: not a valid {type(old).__name__}.{hint}'
        ) from None
    if key.startswith('method.') and isinstance(old, float) and isinstance(value, dict):
        # A method's loss weight or temperature given as a schedule
        # (`schedules.from_config`); methods.make_method refuses one where the
        # method's field takes a plain number. A misspelt or missing kind is
        # named as such, not as a dict where a float was expected.
        from jaxdistill import schedules  # pylint: disable=g-import-not-at-top

        schedules.values(value, name=key)  # ConfigError naming the problem.
        return ml_collections.ConfigDict(value)
    if isinstance(old, bool) != isinstance(value, bool) and old is not None:
        raise ConfigError(f'--config.{key}={text!r}: expected a bool.')
    if isinstance(old, float) and isinstance(value, int):
        value = float(value)
    if (
        old is not None
        and not isinstance(value, type(old))
        and not (isinstance(old, (tuple, list)) and isinstance(value, (tuple, list)))
    ):
        raise ConfigError(
            f'--config.{key}={text!r}: expected {type(old).__name__}, got '
            f'{type(value).__name__}.'
        )
    if isinstance(old, tuple) and isinstance(value, list):
        value = tuple(value)
    return value


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """argv -> (the other arguments, `a.b=value` from each `--config.a.b=value`)."""
    rest, overrides = [], []
    args = iter(argv)
    for arg in args:
        if arg.startswith('--config.'):
            item = arg[len('--config.') :]
            if '=' not in item:  # `--config.seed 5`, as absl's flags take it.
                value = next(args, None)
                if value is None or value.startswith('--'):
                    raise ConfigError(
                        f'{arg} needs a value ({arg}=V).'
                        + (f' Next came {value}.' if value else '')
                    )
                item = f'{item}={value}'
            overrides.append(item)
        else:
            rest.append(arg)
    return rest, overrides


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Sequence[str]
) -> ml_collections.ConfigDict:
    """Applies `a.b=value` strings (the `--config.` prefix already removed)."""
    for item in overrides:
        key, sep, text = item.partition('=')
        if not sep:
            raise ConfigError(f'--config.{key} needs a value (--config.{key}=V).')
        *parents, leaf = key.split('.')
        node = config
        for p in parents:
            if not isinstance(node, ml_collections.ConfigDict) or p not in node:
                raise _unknown_key(key, config)
            node = node[p]
        if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
            raise _unknown_key(key, config)
        with node.ignore_type():
            if isinstance(node[leaf], ml_collections.ConfigDict):
                old = node[leaf]
                node[leaf] = _parse_group(key, text, old)
                _note_dropped(key, old, node[leaf])
            else:
                node[leaf] = _parse(key, text, node[leaf])
    return config


def _note_dropped(key: str, old, new) -> None:
    """A note on stderr when a dict given for group `key` left out fields
    the group had (a dict replaces the whole group; a schedule spec is
    replaced knowingly)."""
    if not isinstance(new, ml_collections.ConfigDict) or is_schedule_spec(old):
        return
    dropped = [f'{key}.{k}' for k in old.keys() if k not in new]
    if dropped:
        shown = ', '.join(dropped[:6]) + (', ...' if len(dropped) > 6 else '')
        note = (
            f'note: --config.{key} replaces the whole group, so its other '
            f'{len(dropped)} field(s) are gone ({shown}): the code takes its own '
            f'defaults for them. To change single fields, use --config.{key}.FIELD=V.'
        )
        if note not in _NOTES_SAID:  # Once a process (a sweep builds many configs).
            _NOTES_SAID.add(note)
            print(note, file=sys.stderr)


_NOTES_SAID: set[str] = set()


def is_schedule_spec(value) -> bool:
    """A dict or group that `schedules.from_config` reads ({'kind': 'linear', ...})."""
    from jaxdistill import schedules  # pylint: disable=g-import-not-at-top

    if not isinstance(value, (dict, ml_collections.ConfigDict)):
        return False
    return value.get('kind', None) in schedules.KINDS


def _parse_group(key: str, text: str, old: ml_collections.ConfigDict):
    """What replaces the group `old`: a dict (the whole group, every field
    not in it dropped), or a number where the group is a schedule spec."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    if isinstance(value, dict):
        return ml_collections.ConfigDict(value)
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and is_schedule_spec(old)
    ):
        return value
    fields = [f'{key}.{k}' for k in old.keys()]
    shown = ', '.join(fields[:5]) + (', ...' if len(fields) > 5 else '')
    example = f'--config.{fields[0]}=V' if fields else f'--config.{key}.FIELD=V'
    raise ConfigError(
        f'--config.{key}={text!r}: {key} is a group of settings '
        f'({shown or "empty"}), not a single value; set one of its fields '
        f'({example}) or give a dict, which replaces the whole group.'
    )


# Config fields that name a file or folder, by their last name (anywhere in
# the tree), and the groups whose every field does (`data.similarity.NAME`).
PATH_KEYS = frozenset(
    {
        'files_dir',
        'data_dir',
        'tfds_data_dir',
        'sst2_dir',
        'corpus',
        'cache_dir',
        'teacher_cache_dir',
        'teacher_workdir',
        'teachers',
        'compilation_cache_dir',
        'imports',
    }
)
PATH_GROUPS = frozenset({'similarity'})
# Values that name no path: none, the default place, a remote URL.
_NOT_PATHS = ('', 'auto')


def _absolute(value, base: str, *, imports: bool = False):
    """`value` (a path, or a tuple of them) with `~` expanded and a relative
    path joined to `base`; other values as they are. In `imports` only
    `.py` files are paths (the rest are module names)."""
    if isinstance(value, (tuple, list)):
        return type(value)(_absolute(v, base, imports=imports) for v in value)
    if (
        not isinstance(value, str)
        or value in _NOT_PATHS
        or '://' in value
        or (imports and not value.endswith('.py'))
    ):
        return value
    path = os.path.expanduser(value)
    return os.path.normpath(os.path.join(base, path))


def path_fields(config: ml_collections.ConfigDict, prefix: str = '') -> list[str]:
    """The dotted keys of `config` that name files or folders (`PATH_KEYS`)."""
    out = []
    for key, value in config.items():
        name = f'{prefix}{key}'
        if isinstance(value, ml_collections.ConfigDict):
            if key in PATH_GROUPS:
                out += [f'{name}.{k}' for k in value.keys()]
            else:
                out += path_fields(value, f'{name}.')
        elif key in PATH_KEYS:
            out.append(name)
    return out


def absolute_paths(config: ml_collections.ConfigDict, base: str) -> list[str]:
    """Makes the config's paths (`path_fields`) absolute, relative ones taken
    from the folder `base` (where the command that gave them ran), `~`
    expanded; -> the keys changed. Then config.json names the same files for
    a resume, `evaluate` or `translate` run from any folder."""
    changed = []
    for key in path_fields(config):
        *parents, last = key.split('.')
        node = config
        for part in parents:
            node = node[part]
        value = node[last]
        new = _absolute(value, base, imports=last == 'imports')
        if new != value:
            with node.ignore_type():
                node[last] = new
            changed.append(key)
    return changed


def check_counts(*checks: tuple[str, Any, int]) -> None:
    """ConfigError naming the first (key, value, minimum) whose value is not
    an integer >= its minimum (sizes, step counts, lengths)."""
    for key, value, low in checks:
        if not isinstance(value, int) or value < low:
            raise ConfigError(f'{key}={value!r} must be an integer >= {low}.')


def check_known_keys(group: str, cfg, valid, *, owner: str = '') -> None:
    """ConfigError for the first key of `cfg` (a ConfigDict or dict) that
    is not in `valid`: a key written in a config file is otherwise only added,
    and a misspelt one (`data.sourse`) leaves the run on the default.

    Args:
      group: the dotted prefix of the keys ('data', 'model'; '' at the top).
      cfg: the group's ConfigDict.
      valid: the keys the code reads in it.
      owner: who reads them, for the message (e.g. "method 'codistill'").
    """
    valid = sorted(valid)
    for key in cfg.keys():
        if key in valid:
            continue
        close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
        raise ConfigError(
            f'Unknown key {group + "." if group else ""}{key}'
            + (f' for {owner}' if owner else '')
            + '.'
            + (f' Did you mean {", ".join(close)}?' if close else '')
            + f' Valid keys: {", ".join(valid)}.'
        )


def require(config, *keys: str):
    """Raises ConfigError naming the first dotted key `config` lacks."""
    for key in keys:
        node = config
        for part in key.split('.'):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                raise ConfigError(
                    f'The config has no key {key!r}, which this run needs.'
                )
            node = node[part]


def read_saved(path: str) -> dict:
    """A run's saved config (DIR/config.json) as a dict; a ConfigError
    naming the file, and the line where JSON broke, if it is not one."""
    try:
        with open(path, encoding='utf-8') as f:
            saved = json.load(f)
    except json.JSONDecodeError as e:
        problem = f'not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})'
    except (OSError, UnicodeDecodeError) as e:
        problem = f'unreadable ({e})'
    else:
        if isinstance(saved, dict):
            return saved
        problem = f'a JSON {type(saved).__name__}, not an object of config keys'
    raise ConfigError(
        f"{path} is damaged: {problem}. It is the run's config, written at "
        'every start; restore it from a copy, or move it away to start the '
        'workdir afresh with --config (its checkpoints are then checked '
        'against the new config as they are restored).'
    )


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(
        json.loads(config.to_json_best_effort()), indent=2, sort_keys=True
    )


def compare_for_resume(
    saved: dict,
    current: dict,
    keys: Sequence[str],
    defaults: dict | None = None,
    *,
    added: bool = True,
    free: Sequence[str] = (),
) -> list[str]:
    """Differences in the given dotted prefixes between two config dicts.

    `free`: dotted keys under those prefixes that may differ.

    `defaults`: dotted keys added to the configs after some runs were saved,
    with the value those runs used; a saved config without such a key reads
    as having that value, so it still resumes. `added=False` leaves out the
    other keys `saved` lacks (added to the library's configs since).
    """

    def flat(d, prefix=''):
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f'{prefix}{k}.'))
            else:
                out[f'{prefix}{k}'] = v
        return out

    a, b = flat(saved), flat(current)
    a = {**{k: v for k, v in (defaults or {}).items() if k in b}, **a}
    diffs = []
    for k in sorted(set(a) | set(b) if added else set(a)):
        if k in free:
            continue
        if any(k == p or k.startswith(p + '.') for p in keys):
            if a.get(k, '<absent>') != b.get(k, '<absent>'):
                diffs.append(
                    f'{k}: {a.get(k, "<absent>")!r} -> {b.get(k, "<absent>")!r}'
                )
    return diffs
