"""The compile clock behind the trainer's compile-free throughput."""

import threading
import time

import jax
import jax.numpy as jnp
import pytest

from jaxdistill import metrics

TRACE = '/jax/core/compile/jaxpr_trace_duration'
COMPILE = '/jax/core/compile/backend_compile_duration'


def test_overlapping_compile_spans_count_once():
    with metrics.CompileClock() as clock:
        jax.monitoring.record_event_time_span(TRACE, 10.0, 12.0)
        jax.monitoring.record_event_time_span(TRACE, 10.5, 11.0)  # Nested.
        jax.monitoring.record_event_time_span(COMPILE, 11.0, 13.0)
        jax.monitoring.record_event_time_span(COMPILE, 20.0, 21.0)
        jax.monitoring.record_event_time_span('/not/a/compile', 30.0, 40.0)
        assert clock.seconds(11.5, 12.5) == pytest.approx(1.0)
        assert clock.seconds(0.0, 100.0) == pytest.approx(4.0)
        assert clock.seconds(13.0, 20.0) == 0.0
    jax.monitoring.record_event_time_span(COMPILE, 50.0, 60.0)  # Closed: ignored.
    # Spans that ended before an earlier query's start (13.0) are forgotten.
    assert clock.seconds(0.0, 100.0) == pytest.approx(1.0)


def test_counts_a_real_compile_and_not_a_cached_call():
    f = jax.jit(lambda x: jnp.sin(x) * 3.0 + x.sum())
    x = jnp.arange(1000.0)
    with metrics.CompileClock() as clock:
        start = time.time()
        f(x).block_until_ready()
        mid = time.time()
        f(x).block_until_ready()
        end = time.time()
        first, second = clock.seconds(start, mid), clock.seconds(mid, end)
    assert 0.0 < first <= mid - start
    assert second == 0.0


def test_compiles_of_other_threads_do_not_count():
    with metrics.CompileClock() as clock:
        worker = threading.Thread(
            target=lambda: jax.monitoring.record_event_time_span(COMPILE, 1.0, 2.0)
        )
        worker.start()
        worker.join()
        jax.monitoring.record_event_time_span(COMPILE, 3.0, 3.5)
        assert clock.seconds(0.0, 10.0) == pytest.approx(0.5)
