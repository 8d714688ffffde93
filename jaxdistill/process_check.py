"""Several processes: one config and one workdir for all of them.

Every process of a run builds its own copy of the program and writes its own
part of every checkpoint, so two mistakes of a multi-host launch go wrong
late and far from their cause:

- processes started with different configs (an override left off one host's
  command line, a host with an older copy of the config file, of
  jaxdistill or of a plugin module in `config.imports`, another JAX, fewer devices) trace different programs, and hang
  in their first collective or train on mismatched halves;
- a workdir that is a local folder on each host (not one shared folder)
  gets each host's checkpoint shards in a different place: no checkpoint
  can be restored, and nothing says so until a restore.

`check(config, workdir)` finds both at the start, in every process, and
raises the same ConfigError in all of them: the config keys that differ
(with both values; the library versions and the source digests of
jaxdistill and of the run's plugin modules under '(process)'), the processes' device counts, or the processes that cannot
see the workdir's files.
"""

import collections
import hashlib
import importlib.metadata
import json
import os
import pathlib
import secrets
import time

import numpy as np

from jaxdistill import configuration
from jaxdistill.errors import ConfigError

# The settings that may differ between processes: each its own process_id.
PER_PROCESS = ('distributed',)
# The section of the compared dict that holds `_process()` (not a config key).
PROCESS_KEY = '(process)'
# How long a process looks for process 0's file before it concludes that it
# does not share the workdir (a shared filesystem may show a new file late).
SEE_WITHIN_S = 2.0


def _file_digest(path) -> str:
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()[:16]


def _plugin_digests(imports) -> dict:
    """entry -> a digest of the source file of each module in
    `config.imports` (already imported; a package: its `__init__.py`)."""
    from jaxdistill import registry  # pylint: disable=g-import-not-at-top

    if isinstance(imports, str):
        imports = (imports,)
    out = {}
    for entry in imports or ():
        path = registry.plugin_file(entry)
        out[entry] = _file_digest(path) if path else None
    return out


def _process(imports=()) -> dict:
    """What a process runs, beside its config: the versions of the
    libraries that build the program, a digest of jaxdistill's own source,
    and one of each plugin module's (`config.imports`)."""
    out = {}
    for name in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint'):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    digest = hashlib.sha256()
    root = pathlib.Path(__file__).resolve().parent
    for path in sorted(root.rglob('*.py')):
        digest.update(str(path.relative_to(root)).encode() + b'\0')
        digest.update(path.read_bytes())
    out['jaxdistill_source_sha256'] = digest.hexdigest()[:16]
    plugins = _plugin_digests(imports)
    if plugins:
        out['plugin_source_sha256'] = plugins
    return out


def _config_bytes(config) -> np.ndarray:
    current = json.loads(configuration.to_json(config))
    for key in PER_PROCESS:
        current.pop(key, None)
    current[PROCESS_KEY] = _process(config.get('imports', ()))
    return np.frombuffer(json.dumps(current, sort_keys=True).encode(), np.uint8)


def broadcast_bytes(data: np.ndarray) -> np.ndarray:
    """Process 0's `data` (a uint8 array of any length) in every process."""
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    size = int(multihost_utils.broadcast_one_to_all(np.int32(data.size)))
    padded = np.zeros(size, np.uint8)
    padded[: min(size, data.size)] = data[:size]
    return np.asarray(multihost_utils.broadcast_one_to_all(padded))


def share_error(error: Exception | None) -> tuple[str, str] | None:
    """Process 0's `error` in every process, as (class name, message); None
    where it had none (the others' `error` is ignored). A collective: every
    process calls it, so none waits for a process 0 that has failed."""
    said = b'' if error is None else f'{type(error).__name__}\0{error}'.encode()
    said = broadcast_bytes(np.frombuffer(said, np.uint8))
    if not said.size:
        return None
    kind, message = said.tobytes().decode().split('\0', 1)
    return kind, message


def _processes_where(flag: bool) -> list[int]:
    """The indices of the processes where `flag` holds (the same list in all)."""
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    flags = np.asarray(multihost_utils.process_allgather(np.int32(flag)))
    return [int(i) for i in np.flatnonzero(flags.reshape(-1))]


def _plural(ids: list[int]) -> str:
    return ('process ' if len(ids) == 1 else 'processes ') + ', '.join(map(str, ids))


def check_config(config):
    """ConfigError in every process if any process's config differs from
    process 0's (but for `PER_PROCESS` settings), or its libraries or its
    copy of jaxdistill (`_process`)."""
    import jax  # pylint: disable=g-import-not-at-top

    mine = _config_bytes(config)
    theirs = broadcast_bytes(mine)
    diffs = []
    if theirs.tobytes() != mine.tobytes():
        first = json.loads(theirs.tobytes().decode())
        current = json.loads(mine.tobytes().decode())
        diffs = configuration.compare_for_resume(
            first, current, sorted(set(first) | set(current))
        ) or ['(the configs differ)']
    differ = _processes_where(bool(diffs))
    if not differ:
        return
    if diffs:
        detail = (
            f'process {jax.process_index()} has, against process 0 '
            f'(process 0 -> this one): {"; ".join(diffs)}'
        )
    else:
        detail = 'see the error of those processes for the keys'
    raise ConfigError(
        f'The processes of this run do not match: {_plural(differ)} '
        f'{"differs" if len(differ) == 1 else "differ"} from process 0; '
        f'{detail}. Start every process with the same --config file and '
        'overrides and the same versions of jaxdistill and its libraries.'
    )


def check_shared_workdir(workdir: str):
    """ConfigError in every process if some process does not see a file that
    process 0 writes in `workdir` (each host has a folder of its own)."""
    import jax  # pylint: disable=g-import-not-at-top
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    nonce = np.frombuffer(secrets.token_bytes(8), np.uint8)
    nonce = broadcast_bytes(nonce)  # Process 0's, in every process.
    # A new name each start: no process has looked it up before (no cached
    # "no such file" on a network filesystem).
    path = os.path.join(workdir, f'.process_check_{nonce.tobytes().hex()}')
    if jax.process_index() == 0:
        with open(path, 'wb') as f:
            f.write(nonce.tobytes())
    multihost_utils.sync_global_devices('jaxdistill_process_check_written')
    deadline = time.monotonic() + SEE_WITHIN_S
    while True:
        try:
            with open(path, 'rb') as f:
                seen = f.read() == nonce.tobytes()
        except OSError:
            seen = False
        if seen or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    blind = _processes_where(not seen)  # Also: every process has looked.
    if jax.process_index() == 0:
        try:
            os.remove(path)
        except OSError:
            pass
    if blind:
        raise ConfigError(
            f'--workdir {workdir} is not one folder for all processes: '
            f'{_plural(blind)} cannot see the file process 0 wrote there. With '
            'several hosts the workdir must be a folder they all share (NFS, '
            'a bucket mounted with gcsfuse): every process writes its own '
            'part of each checkpoint into it.'
        )


def check_devices():
    """ConfigError in every process if the processes have different numbers
    of devices. Told from the global device list, which every process has:
    JAX's collectives between processes need equal counts."""
    import jax  # pylint: disable=g-import-not-at-top

    counts = collections.Counter(d.process_index for d in jax.devices())
    if len(set(counts.values())) > 1:
        each = ', '.join(f'process {p}: {n}' for p, n in sorted(counts.items()))
        raise ConfigError(
            f'The processes of this run have different numbers of devices '
            f'({each}). Each process feeds an equal part of every batch: give '
            'every process as many devices (CUDA_VISIBLE_DEVICES, TPU '
            'topology, XLA_FLAGS=--xla_force_host_platform_device_count on '
            'CPU).'
        )


def check(config, workdir: str, *, writes: bool = True):
    """Both checks where there are several processes (nothing otherwise);
    the workdir's only for a run that writes there."""
    import jax  # pylint: disable=g-import-not-at-top

    if jax.process_count() == 1:
        return
    check_devices()
    check_config(config)
    if writes:
        check_shared_workdir(workdir)
