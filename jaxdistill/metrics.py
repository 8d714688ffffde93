"""Metric logs: a JSONL file in the workdir plus TensorBoard event files.

Only process 0 writes. On resume, JSONL records newer than the restored step
(written after the last checkpoint of a killed run) are dropped so the log
matches the training that actually counts.
"""

import json
import math
import os
import threading
import time
from typing import Any

import jax
import numpy as np

from jaxdistill.errors import DataError


def plain(value: Any):
    value = np.asarray(value).item() if np.ndim(value) == 0 else value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricWriter:
    """Writes `{'step': s, 'time': t, name: value, ...}` records."""

    def __init__(
        self,
        workdir: str,
        *,
        resume_step: int | None = None,
        tensorboard: bool = True,
        enabled: bool = True,
    ):
        self.enabled = enabled and jax.process_index() == 0
        self.path = os.path.join(workdir, 'metrics.jsonl')
        self._tb = None
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self._truncate_after(resume_step)
        if tensorboard:
            from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

            # purge_step: TensorBoard hides the events an earlier run wrote
            # from this step on (steps redone after a resume from an older
            # checkpoint), as _truncate_after does for metrics.jsonl.
            self._tb = SummaryWriter(
                os.path.join(workdir, 'tensorboard'),
                purge_step=0 if resume_step is None else resume_step + 1,
            )

    def _rewrite(self, edit):
        """Replaces metrics.jsonl's records with `edit(record)` of each (None
        drops it), written whole to a temporary file and moved over it."""
        if not os.path.exists(self.path):
            return
        kept = [e for e in map(edit, _read_records(self.path)) if e is not None]
        with open(self.path + '.tmp', 'w', encoding='utf-8') as f:
            f.writelines(json.dumps(r) + '\n' for r in kept)
        os.replace(self.path + '.tmp', self.path)

    def _truncate_after(self, step: int | None):
        step = -1 if step is None else step
        self._rewrite(lambda r: r if r['step'] <= step else None)

    def drop(self, step: int, prefix: str):
        """Removes the `prefix` metrics (e.g. 'eval/') logged at `step` from
        metrics.jsonl, before they are logged again (an evaluation repeated
        with other settings): one value per step and name, not two. A record
        left with nothing but its step and time goes."""
        if not self.enabled:
            return

        def edit(r):
            if r['step'] != step:
                return r
            r = {k: v for k, v in r.items() if not k.startswith(prefix)}
            return None if set(r) <= {'step', 'time'} else r

        self._rewrite(edit)

    def write(self, step: int, metrics: dict[str, Any]):
        if not self.enabled:
            return
        record = {'step': int(step), 'time': time.time()}
        record.update({k: plain(v) for k, v in metrics.items()})
        with open(self.path, 'a', encoding='utf-8') as f:
            f.write(json.dumps(record) + '\n')
        if self._tb is not None:
            for k, v in metrics.items():
                if np.ndim(v) == 0 and isinstance(plain(v), (int, float)):
                    self._tb.add_scalar(k, float(v), step)
            self._tb.flush()

    def close(self):
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class CompileClock:
    """Wall time this process spends tracing, lowering and compiling.

    Listens to JAX's own compile events (`jax.monitoring` time spans of the
    jaxpr trace, the lowering to MLIR and the backend compile, a persistent
    cache hit included), so the trainer can keep compilation out of its
    throughput. Only compiles in the thread that made the clock count (not,
    e.g., those of a background checkpoint writer); overlapping spans (a
    function traced inside another) count once. Use as a context manager, or
    call `close()` to stop listening.

        clock = CompileClock()
        start = time.time(); ...; clock.seconds(start, time.time())
    """

    EVENTS = frozenset(
        {
            '/jax/core/compile/jaxpr_trace_duration',
            '/jax/core/compile/jaxpr_to_mlir_module_duration',
            '/jax/core/compile/backend_compile_duration',
        }
    )

    def __init__(self):
        self._spans: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        self._thread = threading.get_ident()
        jax.monitoring.register_event_time_span_listener(self._listen)
        self._listening = True

    def _listen(self, event, start_time, end_time, **kwargs):
        del kwargs
        if event in self.EVENTS and threading.get_ident() == self._thread:
            with self._lock:
                self._spans.append((start_time, end_time))

    def seconds(self, start: float, end: float) -> float:
        """Seconds of [start, end] (`time.time()` values) spent compiling.

        Any interval may be asked about, the run's whole time as well as a
        log window (every span is kept: a few per compiled program, so a
        handful over a run, as the programs compile once per shape).
        """
        with self._lock:
            spans = sorted(
                (max(a, start), min(b, end))
                for a, b in self._spans
                if b > start and a < end
            )
        total, reach = 0.0, start
        for a, b in spans:  # Length of the union of the spans.
            if b > reach:
                total += b - max(a, reach)
                reach = b
        return total

    def close(self):
        if self._listening:
            jax.monitoring.unregister_event_time_span_listener(self._listen)
            self._listening = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_metrics(workdir: str) -> list[dict]:
    """All records of a workdir's metrics.jsonl.

    A last line cut short (no line end: the process was killed while writing
    it) is left out. Raises DataError for a missing file or a damaged line
    elsewhere, naming the file and the line.
    """
    return _read_records(os.path.join(workdir, 'metrics.jsonl'))


def _read_records(path: str) -> list[dict]:
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.readlines()
    except FileNotFoundError:
        raise DataError(
            f'{path} does not exist: {os.path.dirname(path)} holds no training run '
            '(or it has not logged yet).'
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f'cannot read {path}: {e}') from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) and not line.endswith('\n'):
                break  # Cut by a kill mid-write.
            raise DataError(
                f'{path}:{number}: not a JSON record: {line[:80]!r}'
            ) from None
        if not isinstance(record, dict) or not isinstance(record.get('step'), int):
            raise DataError(f'{path}:{number}: a record needs an integer "step".')
        records.append(record)
    return records
