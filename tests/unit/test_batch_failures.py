"""A batch whose handler raises is not acknowledged, and its partition is read again from it.

A batch a rebalance overtakes is not handled (nor acknowledged): the partition's owner reads it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types.tuples import ConsumerMessage

from streams import faust_fixes
from streams.batching import PartitionBatch, handle_batches
from streams.cost_agents import register_cost_agent
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
    app = c.app
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


def rebalanced_during_first_batch(rebalance: Callable[[Any], None]) -> tuple[Any, list[int]]:
    """Handle a take of two partitions' batches; ``rebalance(app)`` runs while the first is handled."""
    c = acking_consumer(GENERATION, flow_active=True)
    handled: list[int] = []

    async def handle(batch: PartitionBatch) -> None:
        handled.append(batch.partition)
        if len(handled) == 1:
            rebalance(c.app)

    stream = TakingStream(c, [event(0, 85), event(1, 40), event(0, 86)])
    asyncio.run(handle_batches(c.app, stream, handle, max_messages=100, within_s=0.1))
    return c, handled


def test_a_batch_overtaken_by_a_revocation_is_not_handled() -> None:
    # faust suspends the flow at a revocation and does not wait for the agent (stream_wait_empty off)
    def revoke(app: Any) -> None:
        app.flow_control = SimpleNamespace(is_active=lambda: False)

    c, handled = rebalanced_during_first_batch(revoke)
    assert handled == [0]
    assert acknowledged(c) == {}  # not even the handled one counts: all of it is read again
    assert stalled_due(now=float("inf")) == {}  # no failure: the seek after the rebalance reads it again


def test_a_batch_of_an_older_generation_is_not_handled() -> None:
    def assign(app: Any) -> None:
        app.consumer_generation_id = GENERATION + 1

    c, handled = rebalanced_during_first_batch(assign)
    assert handled == [0]
    assert acknowledged(c) == {}


def test_a_cost_stage_is_not_run_once_a_rebalance_began() -> None:
    # the stages of run_stages: budgets awaits its sends, then spend would write its tables
    c = acking_consumer(GENERATION, flow_active=True)
    ran: list[str] = []
    agents: dict[str, Any] = {}

    async def budgets(batch: PartitionBatch, records: list[Any]) -> None:
        ran.append("budgets")
        c.app.consumer_generation_id = GENERATION + 1  # the rebalance, while budgets awaited its acks

    async def spend(batch: PartitionBatch, records: list[Any]) -> None:
        ran.append("spend")

    def agent(topic: Any, name: str) -> Any:
        return lambda fun: agents.setdefault(name, fun)

    app = SimpleNamespace(**vars(c.app), agent=agent)
    c.app = app
    settings = SimpleNamespace(batch_max_messages=100, batch_within_s=0.1)
    counter = SimpleNamespace(inc=lambda: None)
    metrics = SimpleNamespace(batches_failed=SimpleNamespace(labels=lambda name: counter))
    register_cost_agent(app, settings, SimpleNamespace(costs_priced_topic=None), [budgets, spend], metrics)
    priced = [Event(ConsumerMessage("costs.priced", 0, 85, 0.0, 0, [], b"k", b"[]", None,
                                    generation_id=GENERATION))]
    asyncio.run(agents["process_costs"](TakingStream(c, priced)))
    assert ran == ["budgets"]
    assert acknowledged(c) == {}
