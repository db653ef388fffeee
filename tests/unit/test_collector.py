"""The worker's collector settings: start-up objects frozen, a larger youngest generation."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streams.collector import GEN0_THRESHOLD, tune_collector


@pytest.fixture
def collector() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("collector")
def test_tuning_freezes_what_exists_and_raises_the_first_threshold() -> None:
    survivor = [{"kept": i} for i in range(100)]
    gen1, gen2 = gc.get_threshold()[1:]
    tune_collector()
    assert gc.get_freeze_count() >= len(survivor)
    assert gc.get_threshold() == (GEN0_THRESHOLD, gen1, gen2)
    assert not gc.is_finalized(survivor)


def test_the_worker_tunes_the_collector_once_started() -> None:
    from streams.settings import Settings
    from streams.worker import build_worker

    worker = build_worker(Settings(store="memory", detectors_enabled=False, spend_tables=False))
    assert "tune_garbage_collector" in {task.__name__ for task in worker.app._app_tasks}
