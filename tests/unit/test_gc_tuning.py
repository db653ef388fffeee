"""The worker's garbage-collector settings (``streams/gc_tuning.py``)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streams.gc_tuning import tune_collector


@pytest.fixture(autouse=True)
def restore_collector() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


class Node:
    """An object that can be part of a reference cycle."""

    other: Node | None = None


def test_zero_leaves_python_s_collector_alone() -> None:
    gc.set_threshold(700, 10, 10)
    tune_collector(0)
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_sets_the_young_threshold_and_keeps_the_older_generations() -> None:
    gc.set_threshold(700, 11, 12)
    tune_collector(10_000)
    assert gc.get_threshold() == (10_000, 11, 12)


def test_start_up_garbage_is_collected_before_the_rest_is_frozen() -> None:
    dropped = Node()
    dropped.other = Node()
    dropped.other.other = dropped  # a cycle only the cyclic collector frees
    gone = weakref.ref(dropped)
    del dropped
    tune_collector(10_000)
    assert gone() is None, "a start-up cycle was frozen instead of freed"
    assert gc.get_freeze_count() > 0


def test_cycles_made_after_start_up_are_still_collected() -> None:
    tune_collector(10_000)
    late = Node()
    late.other = late
    gone = weakref.ref(late)
    del late
    gc.collect()
    assert gone() is None
