"""A batch whose handler raises is not acknowledged, and its partition is read again from it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types.tuples import ConsumerMessage

from streams import faust_fixes
from streams.batching import PartitionBatch, handle_batches
from streams.faust_fixes import guarded_ack, stalled_due
from tests.unit.test_faust_fixes import acking_consumer

GENERATION = 7


@pytest.fixture(autouse=True)
def no_stalled_partitions() -> Iterator[None]:
    faust_fixes.STALLED.clear()
    yield
    faust_fixes.STALLED.clear()


class TakingStream:
    """``take_events`` shaped like faust 0.15.3's: the whole take is acknowledged when the loop ends."""

    def __init__(self, consumer: Any, events: list[Any]) -> None:
        self.consumer, self.events = consumer, events

    async def take_events(self, max_messages: int, within: float) -> AsyncIterator[list[Any]]:
        try:
            yield list(self.events)
        finally:
            for event in self.events:
                guarded_ack(self.consumer, event.message)


class Event:
    """A stream event (faust's current event is held by weak reference, so not a SimpleNamespace)."""

    def __init__(self, message: ConsumerMessage) -> None:
        self.message = message


def event(partition: int, offset: int) -> Event:
    return Event(ConsumerMessage("costs.priced", partition, offset, 0.0, 0, [], b"k", b"v", None,
                                 generation_id=GENERATION))


FAILURES: list[str] = []


def run(
    failing_partition: int | None, error: BaseException | None = None
) -> tuple[Any, list[int], BaseException | None]:
    c = acking_consumer(GENERATION, flow_active=True)
    handled: list[int] = []

    async def handle(batch: PartitionBatch) -> None:
        if batch.partition == failing_partition:
            raise error or RuntimeError("a stage failed")
        handled.append(batch.partition)

    stream = TakingStream(c, [event(0, 85), event(1, 40), event(0, 86)])
    app = SimpleNamespace(consumer_generation_id=GENERATION)
    FAILURES.clear()
    try:
        asyncio.run(handle_batches(app, stream, handle, max_messages=100, within_s=0.1,
                                   failed=lambda: FAILURES.append("price_usage")))
    except (RuntimeError, asyncio.CancelledError) as raised:
        return c, handled, raised
    return c, handled, None


def acknowledged(c: Any) -> dict[int, list[int]]:
    return {tp.partition: sorted(offsets) for tp, offsets in c._acked.items() if offsets}


def test_every_handled_batch_is_acknowledged() -> None:
    c, handled, error = run(failing_partition=None)
    assert (handled, error) == ([0, 1], None)
    assert acknowledged(c) == {0: [85, 86], 1: [40]}
    assert FAILURES == []
    assert stalled_due(now=float("inf")) == {}


def test_the_failed_batch_is_not_acknowledged_and_is_read_again() -> None:
    c, handled, error = run(failing_partition=1)
    assert handled == [0] and error is not None  # the agent still crashes, as faust's would
    assert acknowledged(c) == {0: [85, 86]}
    assert FAILURES == ["price_usage"]  # counted (burnwatch_batches_failed_total)
    assert stalled_due(now=float("inf")) == {("costs.priced", 1): 40}


def test_the_batches_after_a_failed_one_are_not_acknowledged_either() -> None:
    c, handled, error = run(failing_partition=0)
    assert handled == [] and error is not None
    assert acknowledged(c) == {}
    assert stalled_due(now=float("inf")) == {("costs.priced", 0): 85, ("costs.priced", 1): 40}


def test_a_batch_cancelled_by_a_stopping_worker_is_read_again_but_not_counted_as_failed() -> None:
    c, handled, error = run(failing_partition=1, error=asyncio.CancelledError())
    assert isinstance(error, asyncio.CancelledError)
    assert acknowledged(c) == {0: [85, 86]}
    assert stalled_due(now=float("inf")) == {("costs.priced", 1): 40}
    assert FAILURES == []
