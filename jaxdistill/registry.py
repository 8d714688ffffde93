"""Name -> factory registries, so configs choose components by name.

@registry.register('method', 'supervised')
class Supervised: ...

registry.get('method', 'supervised')
"""

import difflib
from typing import Any, Callable

from jaxdistill.errors import ConfigError

_REGISTRY: dict[str, dict[str, Any]] = {}


def register(kind: str, name: str) -> Callable[[Any], Any]:
    """Decorator registering `obj` under `kind`/`name`."""

    def decorator(obj):
        table = _REGISTRY.setdefault(kind, {})
        if name in table and table[name] is not obj:
            raise ValueError(f'{kind} {name!r} is registered twice.')
        table[name] = obj
        return obj

    return decorator


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
