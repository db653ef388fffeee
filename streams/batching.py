"""Agents work in batches: the messages a stream buffered, split by partition, stale ones left out.

An agent that handles one message at a time waits for the broker's acknowledgement of its sends once
per message, so its rate is bounded by round trips, not by CPU. The hot agents instead take what the
stream has buffered (``stream.take_events``: up to ``batch_max_messages``, waiting at most
``batch_within_s`` for more), handle each partition's share as one batch (one store read, one gather
of sends, one changelog message) and faust acknowledges the whole batch after it.

A message fetched before the last rebalance (an older consumer generation) is left out: its partition
may belong to another worker now, and it is read again after the rebalance's seek (its acknowledgement
is refused, ``faust_fixes.guarded_ack``). The same holds for a batch a rebalance overtakes while the
agent works through a take (faust does not wait for agents at a revocation: ``stream_wait_empty`` is
off): ``still_current`` is false from the revocation on, so the batches not begun are left out, and a
multi-stage handler stops before its next stage (``cost_agents.run_stages``). A state write made for a
partition after its revocation could reach the changelog after the new owner read it, and, being the
last write of its keys there, undo the new owner's counts at the next recovery.

An agent that remembers what it has sent (the pricing agent's event ids) may remember a message only
once the broker has acknowledged its sends, and should remember it as soon as it has: a catch-up batch
holds thousands of events, and its first messages' sends are acknowledged while the agent still
handles the later ones. ``InFlight`` hands back the acknowledged messages as they come, so a crash
repeats only the messages whose sends were in flight, not the whole batch.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from faust.streams import _current_event
from faust.types import TP

from streams.faust_fixes import ack_counts, refuse_acks

T = TypeVar("T")


@dataclass
class PartitionBatch:
    """The buffered events of one partition, in offset order."""

    topic: str
    partition: int
    events: list[Any] = field(default_factory=list)

    @property
    def messages(self) -> list[Any]:
        """The events' Kafka messages, in offset order."""
        return [event.message for event in self.events]

    @contextmanager
    def current(self) -> Iterator[None]:
        """Make the batch's last event faust's current event: table writes go to the batch's partition."""
        token = _current_event.set(weakref.ref(self.events[-1]))
        try:
            yield
        finally:
            _current_event.reset(token)

    @property
    def generation_id(self) -> int:
        """The consumer generation the batch's messages were fetched under."""
        generation: int = self.events[0].message.generation_id
        return generation

    @property
    def batch_key(self) -> str:
        """The changelog key of the batch's state writes: topic, partition and offset range."""
        first, last = self.events[0].message.offset, self.events[-1].message.offset
        return f"{self.topic}:{self.partition}:{first}" + (f"-{last}" if last != first else "")


def still_current(app: Any, batch: PartitionBatch) -> bool:
    """Whether no rebalance began since the batch was fetched: its partition is still this worker's.

    It holds exactly when its messages' acknowledgements would count (``faust_fixes.ack_counts``): the
    flow is running (a revocation suspends it first) and the consumer generation is the batch's.

    >>> from types import SimpleNamespace as M
    >>> batch = PartitionBatch("costs.priced", 0, [M(message=M(offset=4, generation_id=3))])
    >>> def app(generation, active=True):
    ...     return M(consumer_generation_id=generation, flow_control=M(is_active=lambda: active))
    >>> [still_current(app(3), batch), still_current(app(4), batch), still_current(app(3, False), batch)]
    [True, False, False]
    """
    return ack_counts(batch.generation_id, app.consumer_generation_id, app.flow_control.is_active())


def known_end(app: Any, batch: PartitionBatch) -> int | None:
    """Return the partition's last known end offset (None before a fetch answered, or once revoked)."""
    try:
        end: int | None = app.consumer.highwater(TP(batch.topic, batch.partition))
    except AssertionError:  # aiokafka asserts the partition is assigned: revoked since the batch was read
        return None
    return end


def unread_after(app: Any, batch: PartitionBatch) -> int:
    """How many messages of the batch's partition are not read yet: its last known end offset, less the next.

    0 when faust does not know the end (no fetch answered yet) or no longer owns the partition.

    >>> from types import SimpleNamespace as M
    >>> batch = PartitionBatch("usage.gpu", 0, [M(message=M(offset=41))])
    >>> unread_after(M(consumer=M(highwater=lambda tp: 100)), batch)
    58
    """
    end = known_end(app, batch)
    return max(0, end - batch.events[-1].message.offset - 1) if end is not None else 0


def read_to_end(app: Any, batch: PartitionBatch) -> bool:
    """Whether the batch's last message was its partition's last one known (False when the end is not known).

    >>> from types import SimpleNamespace as M
    >>> batch = PartitionBatch("detector.inputs", 0, [M(message=M(offset=41))])
    >>> [read_to_end(M(consumer=M(highwater=lambda tp: end)), batch) for end in (42, 50, None)]
    [True, False, False]
    """
    end = known_end(app, batch)
    return end is not None and batch.events[-1].message.offset + 1 >= end


def partition_batches(events: Iterable[Any], generation_id: int) -> Iterator[PartitionBatch]:
    """Split buffered events into per-partition batches, leaving out those of an older generation.

    >>> from types import SimpleNamespace as M
    >>> def ev(p, o, g=3):
    ...     return M(message=M(topic="costs.priced", partition=p, offset=o, generation_id=g))
    >>> batches = list(partition_batches([ev(1, 7), ev(0, 4), ev(1, 8), ev(0, 5, g=2)], generation_id=3))
    >>> [(b.partition, b.batch_key) for b in batches]
    [(1, 'costs.priced:1:7-8'), (0, 'costs.priced:0:4')]
    """
    batches: dict[tuple[str, int], PartitionBatch] = {}
    for event in events:
        message = event.message
        if message.generation_id != generation_id:
            continue
        where = (message.topic, message.partition)
        batch = batches.get(where)
        if batch is None:
            batch = batches[where] = PartitionBatch(*where)
        batch.events.append(event)
    for batch in batches.values():
        batch.events.sort(key=lambda e: e.message.offset)
        yield batch


async def handle_batches(
    app: Any,
    stream: Any,
    handle: Callable[[PartitionBatch], Awaitable[None]],
    *,
    max_messages: int,
    within_s: float,
    failed: Callable[[], None] | None = None,
) -> None:
    """Run an agent's loop: ``await handle(batch)`` for each partition's batch of what ``stream`` buffered.

    A batch is handled only while ``still_current``: once a rebalance begins, the take's other batches
    are left to be read again.

    While ``handle`` runs, the batch's last event is faust's current event (``PartitionBatch.current``).
    If it raises, that batch and the ones after it are not acknowledged (``faust_fixes.refuse_acks``;
    faust would acknowledge the whole take) but read again, ``failed()`` is called (not for a
    cancellation: the worker stopping), and the agent crashes as faust's would.
    """
    async for events in stream.take_events(max_messages, within=within_s):
        batches = list(partition_batches(events, app.consumer_generation_id))
        for index, batch in enumerate(batches):
            if not still_current(app, batch):
                continue  # a rebalance began: read again by the partition's owner after its seek
            with batch.current():
                try:
                    await handle(batch)
                except BaseException as error:
                    refuse_acks(message for unhandled in batches[index:] for message in unhandled.messages)
                    if failed is not None and not isinstance(error, asyncio.CancelledError):
                        failed()
                    raise


class InFlight(Generic[T]):
    """Items (one message's outcome each) with the futures of their sends, in the order they were sent.

    faust's ``send`` returns a ``FutureMessage``, an ``asyncio.Future`` the broker's acknowledgement
    resolves.

    >>> async def demo():
    ...     loop = asyncio.get_running_loop()
    ...     a, b, c = loop.create_future(), loop.create_future(), loop.create_future()
    ...     sent = InFlight()
    ...     sent.add([a], "m1"); sent.add([], "m2"); sent.add([b], "m3"); sent.add([c], "m4")
    ...     a.set_result(0); c.set_result(2)  # b is still in flight: m4 waits for it
    ...     first = sent.acknowledged()
    ...     loop.call_later(0.01, b.set_result, 1)
    ...     return first, await sent.wait(), bool(sent)
    >>> asyncio.run(demo())
    (['m1', 'm2'], ['m3', 'm4'], False)
    >>> async def failed():
    ...     loop = asyncio.get_running_loop()
    ...     lost = loop.create_future()
    ...     lost.set_exception(OSError("not acknowledged"))
    ...     sent = InFlight()
    ...     sent.add([lost], "m1")
    ...     assert sent.acknowledged() == []
    ...     await sent.wait()
    >>> asyncio.run(failed())
    Traceback (most recent call last):
    OSError: not acknowledged
    """

    def __init__(self) -> None:
        self._items: deque[tuple[Sequence[asyncio.Future[Any]], T]] = deque()

    def __bool__(self) -> bool:
        """Whether an item is still waiting for acknowledgements."""
        return bool(self._items)

    def add(self, acks: Sequence[asyncio.Future[Any]], item: T) -> None:
        """Append ``item``, whose sends are ``acks``."""
        self._items.append((acks, item))

    def acknowledged(self) -> list[T]:
        """Remove and return, without waiting, the leading items whose sends have all succeeded."""
        done: list[T] = []
        while self._items and all(map(_succeeded, self._items[0][0])):
            done.append(self._items.popleft()[1])
        return done

    async def wait(self) -> list[T]:
        """Wait for the first item's sends (raising if one failed), then return ``acknowledged()``."""
        await asyncio.gather(*self._items[0][0])
        return self.acknowledged()


def _succeeded(ack: asyncio.Future[Any]) -> bool:
    return ack.done() and not ack.cancelled() and ack.exception() is None
