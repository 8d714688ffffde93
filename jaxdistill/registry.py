"""Name -> factory registries, so configs choose components by name.

@registry.register('method', 'supervised')
class Supervised: ...

registry.get('method', 'supervised')
"""

import difflib
import hashlib
import importlib
import importlib.util
import os
import sys
from typing import Any, Callable, Iterable

from jaxdistill.errors import ConfigError, JaxdistillError, PluginError

_REGISTRY: dict[str, dict[str, Any]] = {}


def register(kind: str, name: str) -> Callable[[Any], Any]:
    """Decorator registering `obj` under `kind`/`name`."""

    def decorator(obj):
        table = _REGISTRY.setdefault(kind, {})
        if (
            name in table
            and table[name] is not obj
            and not _same_definition(table[name], obj)
        ):
            raise PluginError(_twice(kind, name, table[name], obj))
        table[name] = obj
        return obj

    return decorator


def _same_definition(old, new) -> bool:
    """The same class of the same module, defined again: a plugin whose
    first import failed after it registered (it is imported afresh once
    fixed), or a module reloaded. The new definition replaces the old."""
    key = lambda obj: (
        getattr(obj, '__module__', None),
        getattr(obj, '__qualname__', None),
    )
    return key(old) == key(new) and None not in key(old)


def _twice(kind: str, name: str, old, new) -> str:
    def where(obj):
        module = getattr(obj, '__module__', '?')
        path = getattr(sys.modules.get(module), '__file__', None) or '?'
        return f'{module}.{getattr(obj, "__qualname__", obj)} ({path})'

    same_file = where(old).rsplit(' (', 1)[1] == where(new).rsplit(' (', 1)[1]
    hint = (
        'The same file was imported twice, under two module names (e.g. once by '
        'its path and once by its module name in config.imports, or by the '
        'config file as well): list it in config.imports once, and do not also '
        'import it in the config file.'
        if same_file
        else f'Register yours under another name (taken: {", ".join(names(kind))}).'
    )
    return (
        f'{kind} {name!r} is registered twice: by {where(old)} and by '
        f'{where(new)}. {hint}'
    )


def names(kind: str) -> list[str]:
    """Registered names of one kind, sorted."""
    return sorted(_REGISTRY.get(kind, {}))


def get(kind: str, name: str) -> Any:
    """Returns the object registered as `kind`/`name`; ConfigError if none."""
    table = _REGISTRY.get(kind, {})
    if name not in table:
        close = difflib.get_close_matches(name, table, n=3, cutoff=0.4)
        hint = f' Did you mean {", ".join(map(repr, close))}?' if close else ''
        raise ConfigError(
            f'Unknown {kind} {name!r}.{hint} Known: {", ".join(sorted(table))}.'
        )
    return table[name]


def import_plugins(entries: Iterable[str], *, key: str = 'imports') -> None:
    """Imports the modules a config names in `config.imports`, so that the
    methods, models or tasks they register exist before the run is built.

    Each entry is a module name (importable from `sys.path`) or the path of a
    `.py` file. A file is imported once per process, under a name made from
    its absolute path, so a run, `evaluate` and `translate` (which read the
    entries back from the run's config.json) register the same classes.

    Raises:
      ConfigError: an entry that is not a string, a missing file, or a module
        that cannot be found. Errors raised inside a plugin propagate with a
        note naming it: they are bugs in its code.
    """
    if isinstance(entries, str):
        entries = (entries,)
    for entry in entries:
        if not isinstance(entry, str) or not entry:
            raise ConfigError(
                f'{key} holds {entry!r}: each entry must be a module name or the '
                'path of a .py file.'
            )
        try:
            if entry.endswith('.py'):
                _import_file(entry, key)
            else:
                importlib.import_module(entry)
        except ModuleNotFoundError as e:
            if e.name is None or not entry.startswith(e.name.split('.')[0]):
                raise  # A module the plugin itself imports: its own bug.
            raise ConfigError(
                f'{key}: cannot import {entry!r} ({e}). Put its folder on '
                'PYTHONPATH, or name the .py file by its path.'
            ) from None
        except JaxdistillError:
            raise
        except Exception as e:
            e.add_note(f'(raised while importing {entry!r}, listed in {key})')
            raise


def _file_module_name(path: str) -> str:
    digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:12]
    return f'_jaxdistill_plugin_{digest}'


def plugin_file(entry: str) -> str | None:
    """The source file of an entry of `config.imports` that has been
    imported (a package: its `__init__.py`), or None if it has none."""
    name = _file_module_name(entry) if entry.endswith('.py') else entry
    module = sys.modules.get(name)
    return getattr(module, '__file__', None) if module else None


def _import_file(path: str, key: str) -> None:
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f'{key}: plugin file {path} does not exist.')
    name = _file_module_name(path)
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
