"""The one place that knows Orbax.

A checkpoint holds the train state (a pytree of arrays) and a small JSON item
(the data position and anything else needed to resume exactly). Orbax writes
each step into a temporary folder and renames it when complete, so a run killed
mid-save leaves only a temporary folder, which is removed on the next start;
a finished folder that still fails to restore is skipped in favour of the
previous step.
"""

from typing import Any

import contextlib
import copy
import dataclasses
import json
import logging as std_logging
import math
import os
import re
import shutil
import sys
import time
import traceback
import warnings

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from jaxdistill.errors import CheckpointMismatchError


class _QuietUnrankedSaves(std_logging.Filter):
    """Drops Orbax's warning for a save without metrics: with `best_metric`
    the periodic saves between evaluations have none, by design."""

    def filter(self, record):
        return 'did not provide metrics' not in record.getMessage()


_QUIET_UNRANKED = _QuietUnrankedSaves()


@dataclasses.dataclass
class _RankedByAnotherMetric:
    """Orbax preservation policy: keeps the checkpoints saved with metrics
    that lack `metric` ('': any metrics). An earlier run of the workdir
    ranked them by another `best_metric`; the best of them is a result the
    user may still want, and this run cannot rank them, so it deletes none
    of them."""

    metric: str

    def should_preserve(self, checkpoints, *, context):
        del context
        return [bool(c.metrics) and self.metric not in c.metrics for c in checkpoints]


def _save_whole_arrays_on_cpu():
    """Turns off Orbax's replica-parallel saving on the CPU.

    Replica-parallel saving (Orbax's default off GPUs) has every device that
    holds a copy of an array write a slice of it, so that the hosts of a
    multi-host run share the writing. Each slice is a small jitted program:
    compiled once per shape (a second or more at the first save) and run for
    every leaf of every save. On the CPU every local device's copy is in the
    same memory, and CPU runs of several processes are local ones (tests,
    development), so the slicing is pure cost: saving the tiny Transformer's
    training state (277 arrays) on 8 CPU devices took 3.25 s with it and
    0.49 s without the first time, 1.17 s and 0.42 s later on
    (`benchmarks/checkpoint_save.py`; on one device, with no copies to
    slice, both take the same). Only the chunking of the files differs: a
    checkpoint written either way restores under the other
    (tests/test_checkpoint_save.py). GPUs and TPUs keep Orbax's default.
    """
    if jax.default_backend() != 'cpu':
        return
    handler = ocp.type_handlers.get_type_handler(jax.Array)
    if not getattr(handler, '_use_replica_parallel', False):
        return  # Already off (or an Orbax that names the setting otherwise).
    whole = copy.copy(handler)  # Orbax has no public setter for the flag.
    whole._use_replica_parallel = False  # pylint: disable=protected-access
    with _orbax_errors_only():  # Orbax warns of any override.
        ocp.type_handlers.register_type_handler(jax.Array, whole, override=True)


@contextlib.contextmanager
def _orbax_errors_only(quiet: bool = True):
    """Orbax's warnings (absl's logger) left out while inside, if `quiet`."""
    absl = std_logging.getLogger('absl')
    level = absl.level
    if quiet:
        absl.setLevel(std_logging.ERROR)
    try:
        yield
    finally:
        absl.setLevel(level)


class Checkpointer:
    """Saves every `every` steps (and when forced), keeps the last `keep`.

    With `best_metric` (a logged name such as 'eval/bleu'), the checkpoint
    saved with the best value of it (`save(..., metrics=)`; the highest, or
    the lowest with `best_mode='min'`) is kept as well, however old.

    `read_only` (tools that read a run: evaluate, translate, `--step best`)
    writes, creates and deletes nothing: above all not the half-written
    `N.orbax-checkpoint-tmp` of a run still training in the same workdir,
    which a writing manager removes as a leftover when it opens.
    """

    def __init__(
        self,
        directory: str,
        *,
        every: int,
        keep: int,
        async_save: bool = True,
        best_metric: str = '',
        best_mode: str = 'max',
        read_only: bool = False,
    ):
        _save_whole_arrays_on_cpu()
        self.best_metric, self.best_mode = best_metric, best_mode
        self.read_only = read_only
        latest = keep if keep and keep > 0 else None
        self._options = dict(
            save_interval_steps=max(int(every), 1),
            cleanup_tmp_directories=not read_only,
            enable_async_checkpointing=async_save,
            create=not read_only,
            read_only=read_only,
        )
        if best_metric:
            worst = -math.inf if best_mode == 'max' else math.inf

            def rank(metrics):
                # A NaN ranks last: unranked, it would sort anywhere, and
                # Orbax could keep it as the best and delete the real best.
                # So does a save ranked by another metric (an earlier run of
                # this workdir with another best_metric): it is kept below.
                value = metrics.get(best_metric, math.nan)
                return worst if math.isnan(value) else value

            # best_fn makes Orbax write each save's metrics and rank them
            # (`best_step`); the preservation policy decides what is kept.
            std_logging.getLogger('absl').addFilter(_QUIET_UNRANKED)
            self._options['best_fn'] = rank
            self._options['best_mode'] = best_mode
            self._options['preservation_policy'] = pp.AnyPreservationPolicy(
                [
                    pp.LatestN(n=latest),
                    pp.BestN(
                        get_metric_fn=rank,
                        reverse=best_mode == 'min',  # Keeps the sort's last.
                        n=1,
                        keep_checkpoints_without_metrics=False,
                    ),
                    _RankedByAnotherMetric(best_metric),
                ]
            )
        else:
            # A save an earlier run of this workdir ranked (with a
            # best_metric this run leaves out) is kept as it would be under
            # another metric: the best it kept is not this run's to delete.
            self._options['preservation_policy'] = pp.AnyPreservationPolicy(
                [pp.LatestN(n=latest), _RankedByAnotherMetric('')]
            )
        # Orbax refuses a relative path (at the first save or read, with an
        # error that looked like damage): `--workdir run` is as good as any.
        self.directory = os.path.abspath(directory)
        self._open()

    def best_step(self) -> tuple[int, float] | None:
        """(step, value) of the kept checkpoint with the best `best_metric`
        (Orbax's ranking of the saves that had metrics), or None; None too
        where every ranked value is NaN (Orbax then names one of them)."""
        step = self._manager.best_step()
        metrics = self._manager.metrics(step) if step is not None else None
        if not metrics or self.best_metric not in metrics:
            return None
        value = float(metrics[self.best_metric])
        return None if math.isnan(value) else (step, value)

    def ranked_by_another_metric(self) -> dict[int, list[str]]:
        """{step: its metric names} of the kept checkpoints that an earlier
        run ranked by another `best_metric` (by any, for a run without one).
        Never deleted by this run."""
        out = {}
        for step in self.all_steps():
            metrics = self._manager.metrics(step)
            if metrics and self.best_metric not in metrics:
                out[step] = sorted(metrics)
        return out

    def _damaged_metrics(self) -> list[tuple[str, Exception]]:
        """(path, error) of each finished step's `metrics/metrics` that is
        not JSON (a partial copy, a full disk). Orbax reads every one when
        the manager opens, and fails on the first with a bare JSON error."""
        out = []
        if not os.path.isdir(self.directory):
            return out
        for name in sorted(os.listdir(self.directory)):
            path = os.path.join(self.directory, name, 'metrics', 'metrics')
            if not name.isdigit() or not os.path.isfile(path):
                continue
            try:
                with open(path) as f:
                    json.load(f)
            except (OSError, ValueError) as e:
                out.append((path, e))
        return out

    def _set_aside_metrics(self):
        """Moves damaged metrics files aside (a writing run), or names them
        (a tool that only reads). The checkpoint itself stays usable; only
        its rank for `best_metric` is lost."""
        damaged = self._damaged_metrics()
        if not damaged:
            return
        if self.read_only:
            path, e = damaged[0]
            raise CheckpointMismatchError(
                f'{path} is damaged ({type(e).__name__}: {e}): the metrics a '
                'checkpoint was ranked with for checkpoint.best_metric. Move it '
                'aside (the checkpoint itself is not affected; it loses its '
                'rank), or train in the workdir again, which does so.'
                + (f' {len(damaged) - 1} more like it.' if len(damaged) > 1 else '')
            )
        stamp = int(time.time())
        for path, e in damaged:
            step = os.path.basename(os.path.dirname(os.path.dirname(path)))
            target = f'{self.directory}_damaged/{step}.metrics.{stamp}'
            logging.warning(
                'The metrics of checkpoint %s/%s are unreadable (%s: %s); moved '
                'to %s. The checkpoint is kept, without its rank for '
                'checkpoint.best_metric.',
                self.directory,
                step,
                type(e).__name__,
                e,
                target,
            )
            if jax.process_index() == 0:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.move(os.path.dirname(path), target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices('jaxdistill_set_aside_metrics')

    def _open(self):
        self._set_aside_metrics()
        # Read-only, Orbax warns that the manager saves nothing and keeps
        # everything, and that the folder is read-only: as asked.
        with _orbax_errors_only(self.read_only):
            self._manager = ocp.CheckpointManager(
                self.directory,
                options=ocp.CheckpointManagerOptions(**self._options),
                item_names=('state', 'meta'),
            )

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(
        self,
        step: int,
        state: Any,
        meta: dict,
        *,
        force: bool = False,
        metrics: dict | None = None,
    ) -> bool:
        """Saves `state` and the JSON-able `meta` at `step`; True if written.

        `metrics`: {name: float} the step was evaluated with, which the
        `best_metric` policy ranks checkpoints by.
        """
        if self.read_only:
            raise RuntimeError(f'{self.directory} was opened read-only.')
        return self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            metrics=metrics,
            force=force,
        )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """Restores `step` into the shapes/shardings of `abstract_state`."""
        _quiet_closed_loop_reports()  # Should it be damaged.
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return restored['state'], restored['meta']

    def restore_named(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """`restore`, with a CheckpointMismatchError that says why `step`
        cannot be restored: it does not fit `abstract_state`, or it is
        unreadable (naming the other steps there are)."""
        try:
            return self.restore(step, abstract_state)
        except Exception as e:  # pylint: disable=broad-except
            if _is_mismatch(e):
                raise _does_not_fit(self.directory, step, e) from None
            if self.read_only and not self._exists(step):
                raise _vanished(self.directory, step) from None
            raise _unreadable(self.directory, step, e, self.all_steps()) from None

    def restore_latest(
        self, abstract_state: Any, *, set_aside: bool = True
    ) -> tuple[int, Any, dict] | None:
        """Restores the newest readable checkpoint; None when there is none.

        A checkpoint whose shapes do not match `abstract_state` raises
        CheckpointMismatchError. An unreadable (damaged) one is moved aside
        once an older one restores; if none restores, nothing is moved and
        CheckpointMismatchError names each one's error: one failure on every
        checkpoint (a file system down, a bug) must not set a whole run aside
        and silently start it again from step 0. `set_aside=False` (tools
        that only read a run) moves nothing and uses no older checkpoint in
        its place: a damaged newest one is a CheckpointMismatchError.
        """
        failed, vanished = [], 0
        steps = list(reversed(self.all_steps()))
        while steps:
            step = steps.pop(0)
            try:
                state, meta = self.restore(step, abstract_state)
            except Exception as e:  # pylint: disable=broad-except
                if _is_mismatch(e):
                    raise _does_not_fit(self.directory, step, e) from None
                if self.read_only and vanished < 3 and not self._exists(step):
                    # The run training in this workdir deleted it (its
                    # `keep` rotation) while it was read: the newest again.
                    vanished += 1
                    self._manager.reload()
                    steps = list(reversed(self.all_steps()))
                    continue
                if not set_aside:
                    raise _unreadable(
                        self.directory, step, e, self.all_steps()
                    ) from None
                failed.append((step, e))
                continue
            for bad_step, error in failed:
                self._set_aside(bad_step, error)
            return step, state, meta
        if failed:
            raise CheckpointMismatchError(
                f'None of the {len(failed)} checkpoints in {self.directory} could '
                'be read; nothing was moved or deleted. '
                + '; '.join(f'step {s}: {_first_lines(e, 1)}' for s, e in failed)
                + '. If they are damaged, move the folder aside to start again '
                'from step 0; otherwise fix the cause and rerun to resume.'
            )
        return None

    def _exists(self, step: int) -> bool:
        return os.path.isdir(os.path.join(self.directory, str(step)))

    def _set_aside(self, step: int, error: Exception):
        """Moves a damaged checkpoint out of the way (kept, not deleted)."""
        target = f'{self.directory}_damaged/{step}.{int(time.time())}'
        logging.warning(
            'Checkpoint %s/%d is unreadable (%s); moved to %s.',
            self.directory,
            step,
            _first_lines(error, 1, 300).rstrip('.'),
            target,
        )
        if jax.process_index() == 0:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.move(os.path.join(self.directory, str(step)), target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices('jaxdistill_set_aside')
        self._manager.close()
        self._open()

    def wait(self):
        self._manager.wait_until_finished()

    def close(self):
        self._manager.wait_until_finished()
        self._manager.close()


# Orbax's advice on a shape mismatch names options of its own API that a
# user of this library does not set; the rest of its message is kept.
_ORBAX_ADVICE = re.compile(
    # Orbax's advice on shapes and on tree structures, and TensorStore's
    # spec repr (a bound method's).
    r'\s*(Truncating/padding is disabled\.|See full TensorStore details: <'
    r'|If this mismatch is\s+intentional, pass `partial_restore=True`).*',
    re.DOTALL,
)


def _vanished(directory: str, step: int) -> CheckpointMismatchError:
    """Step `step` was deleted while it was read (not damaged)."""
    return CheckpointMismatchError(
        f'Checkpoint {directory}/{step} was deleted while it was read: a run '
        'training in this workdir removes its older checkpoints as it saves '
        '(checkpoint.keep). Run the command again, or pass a newer --step.'
    )


def _quiet_closed_loop_reports() -> None:
    """If a restore fails, TensorStore's reads still in flight report to
    the asyncio loop Orbax has already closed, and each report prints a
    'RuntimeError: Event loop is closed' traceback (hundreds per damaged
    checkpoint, burying the one useful line). Drops those reports, and only
    those, from `sys.excepthook` and `sys.unraisablehook`; installed once,
    before the first restore."""
    if getattr(sys.excepthook, '_jaxdistill_quiet', False):
        return

    def closed_loop(exc) -> bool:
        return isinstance(exc, RuntimeError) and str(exc) == 'Event loop is closed'

    def orbax_coroutine(obj) -> bool:
        code = getattr(obj, 'cr_code', None)
        return code is not None and '/orbax/' in code.co_filename

    excepthook, unraisablehook = sys.excepthook, sys.unraisablehook

    def quiet_excepthook(kind, value, tb):
        if not closed_loop(value):
            excepthook(kind, value, tb)

    def quiet_unraisablehook(report):
        if not (closed_loop(report.exc_value) or orbax_coroutine(report.object)):
            unraisablehook(report)

    quiet_excepthook._jaxdistill_quiet = True
    sys.excepthook, sys.unraisablehook = quiet_excepthook, quiet_unraisablehook
    # The same reads' exceptions, which nothing awaits any more, logged by
    # asyncio when their tasks are collected.
    std_logging.getLogger('asyncio').addFilter(_OrphanedReads())
    warnings.filterwarnings(
        'ignore',
        message=r"coroutine '(_read_array_index_and_device_put|async_deserialize|"
        r"_read_shard|_read_and_create_array)' was never awaited",
        category=RuntimeWarning,
    )


class _OrphanedReads(std_logging.Filter):
    """Drops asyncio's 'exception was never retrieved' records of Orbax's
    reads (see `_quiet_closed_loop_reports`)."""

    def filter(self, record):
        text = str(record.msg)
        if 'exception was never retrieved' not in text:
            return True
        # A Task's record names its coroutine (Orbax's); a bare Future's
        # does not, so its exception's text and traceback are read too.
        text += repr(record.args)
        if record.exc_info and record.exc_info[1] is not None:
            text += ''.join(traceback.format_exception(*record.exc_info))
        text = text.lower()
        return not any(w in text for w in ('orbax', 'ocdbt', 'tensorstore'))


def _does_not_fit(directory: str, step: int, error: Exception):
    return CheckpointMismatchError(
        f'Checkpoint {directory}/{step} does not fit the current model and '
        f'optimizer: {_first_lines(error)}'
    )


def _is_mismatch(error: Exception) -> bool:
    """Whether a restore failed because the checkpoint's tree or shapes do
    not fit the target (not because its files are damaged). Read from the
    message without TensorStore's spec, which names shapes either way."""
    text = _first_lines(error).lower()
    return isinstance(error, (ValueError, TypeError)) and (
        'shape' in text or 'structure' in text
    )


def _unreadable(directory: str, step: int, error: Exception, others=()):
    """The CheckpointMismatchError for a checkpoint that cannot be read."""
    rest = [s for s in others if s != step]
    hint = (
        f' Other checkpoints: {rest} (--step N).' if rest else ''
    ) + ' Training in the workdir again moves a damaged one aside and resumes.'
    return CheckpointMismatchError(
        f'Checkpoint {directory}/{step} is unreadable: '
        f'{_first_lines(error, 1, 300).rstrip(".")}.{hint}'
    )


def _first_lines(error: Exception, lines: int = 6, chars: int = 800) -> str:
    """The start of an error's message (orbax's tree diffs run long)."""
    text = _ORBAX_ADVICE.sub('', str(error))
    text = '\n'.join(text.splitlines()[:lines]) or type(error).__name__
    return text if len(text) <= chars else text[:chars] + ' ...'


def abstract_of(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) of a pytree of arrays."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            x.shape, x.dtype, sharding=getattr(x, 'sharding', None)
        ),
        tree,
    )


def latest_step_dir(directory: str) -> tuple[int, str]:
    """(step, path) of the newest finished checkpoint in `directory`."""
    steps = (
        [int(n) for n in os.listdir(directory) if n.isdigit()]
        if os.path.isdir(directory)
        else []
    )
    if not steps:
        raise CheckpointMismatchError(
            f'No checkpoints in {directory} (has the run saved one yet?).'
        )
    return max(steps), os.path.join(directory, str(max(steps)))


def read_state(step_dir: str) -> Any:
    """A checkpoint's whole train state as arrays on one local device.

    Works whatever topology wrote it (several processes, a model axis), so
    tools can inspect, average or extract parameters without the run's mesh.
    """
    path = os.path.abspath(os.path.join(step_dir, 'state'))
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    _quiet_closed_loop_reports()  # Should it be damaged.
    try:
        with ocp.StandardCheckpointer() as c:
            # The item's own metadata: the step metadata lives one folder up
            # (the manager's), so `c.metadata(path)` would warn it is missing.
            tree = ocp.StandardCheckpointHandler().metadata(epath.Path(path))
            target = jax.tree.map(
                lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                tree,
            )
            return c.restore(path, target)
    except Exception as e:  # pylint: disable=broad-except
        raise _read_error(step_dir, e) from None


def _read_error(step_dir: str, error: Exception) -> CheckpointMismatchError:
    """Why `step_dir` could not be read: deleted meanwhile (a training run's
    keep rotation), or damaged."""
    directory, step = os.path.split(os.path.normpath(step_dir))
    step = int(step) if step.isdigit() else step
    if not os.path.isdir(step_dir):
        return _vanished(directory, step)
    return _unreadable(directory, step, error)


def read_meta(step_dir: str) -> dict:
    """A checkpoint's JSON item (data position, step)."""
    path = os.path.abspath(os.path.join(step_dir, 'meta'))
    try:
        with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as c:
            return c.restore(path)
    except Exception as e:  # pylint: disable=broad-except
        raise _read_error(step_dir, e) from None
