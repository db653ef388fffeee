"""The garbage collector's CPU metric: one timer per process, each pass counted in its generation."""

import gc

from streams.metrics import CollectorTimer, WorkerMetrics


def gc_seconds(metrics: WorkerMetrics, generation: int) -> float:
    labels = {"generation": str(generation)}
    value = metrics.registry.get_sample_value("burnwatch_gc_cpu_seconds_total", labels)
    assert value is not None
    return value


def test_a_timer_installed_later_takes_the_place_of_the_one_before() -> None:
    first, second = WorkerMetrics(), WorkerMetrics()
    before = list(gc.callbacks)
    try:
        CollectorTimer(first.gc_cpu).install()
        CollectorTimer(second.gc_cpu).install()
        assert sum(isinstance(hook, CollectorTimer) for hook in gc.callbacks) == 1
        counted = [gc_seconds(first, generation) for generation in range(3)]  # passes before the second
        for _ in range(3):
            gc.collect(0)
        gc.collect()
        assert [gc_seconds(first, generation) for generation in range(3)] == counted
        assert gc_seconds(second, 0) > 0.0 and gc_seconds(second, 2) > 0.0
    finally:
        gc.callbacks[:] = before
