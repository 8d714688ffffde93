"""jaxdistill: train several JAX/Flax models together.

Public names are re-exported here; the modules hold the code. They load on
first use (PEP 562), so that importing a light module (`jaxdistill.hostmem`,
`jaxdistill.configuration`) does not import JAX: a command-line tool then
restarts itself with huge pages (`hostmem.reexec_with_huge_pages`) before
the heavy imports, not after them.
"""

import importlib

__version__ = '0.1.0'

# Public name -> the module that defines it.
_EXPORTS = {
    'losses': 'jaxdistill.losses',
    'registry': 'jaxdistill.registry',
    'schedules': 'jaxdistill.schedules',
    'workdir_config': 'jaxdistill.cli',
    'apply_overrides': 'jaxdistill.configuration',
    'load_config': 'jaxdistill.configuration',
    'CheckpointMismatchError': 'jaxdistill.errors',
    'ConfigError': 'jaxdistill.errors',
    'DataError': 'jaxdistill.errors',
    'JaxdistillError': 'jaxdistill.errors',
    'NonFiniteLossError': 'jaxdistill.errors',
    'PluginError': 'jaxdistill.errors',
    'Method': 'jaxdistill.methods',
    'ModelFns': 'jaxdistill.methods',
    'make_method': 'jaxdistill.methods',
    'TrainState': 'jaxdistill.train_step',
    'make_init': 'jaxdistill.train_step',
    'make_train_step': 'jaxdistill.train_step',
    'Trainer': 'jaxdistill.trainer',
    'train_and_evaluate': 'jaxdistill.trainer',
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        # A submodule not imported yet (`jaxdistill.data` after a plain
        # `import jaxdistill`, which used to import them all).
        try:
            return importlib.import_module(f'jaxdistill.{name}')
        except ModuleNotFoundError as e:
            if e.name != f'jaxdistill.{name}':
                raise
        raise AttributeError(f"module 'jaxdistill' has no attribute {name!r}")
    loaded = importlib.import_module(module)
    value = loaded if module.rpartition('.')[2] == name else getattr(loaded, name)
    globals()[name] = value  # Looked up once.
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
