"""A fix for faust-streaming's offset commit: never commit past a message no stream acknowledged.

faust keeps, per partition, the offsets its streams acknowledged and commits up to the first gap.
Its head-gap test (``Consumer._new_offset``, faust-streaming 0.15.3) compares the lowest acknowledged
offset with the committed offset as if the committed offset were the last message processed; Kafka's
committed offset is the *next* message to read. So when exactly the message at the committed offset
was never acknowledged and the ones after it were, faust committed past it and the message was never
processed. That happens across a rebalance: a stream drops a message fetched under the old
generation (without acknowledging it), then acknowledges the next ones of a partition it kept. Our
two-worker SIGKILL test lost one message this way, once on ``costs.priced`` and once on
``usage.gpu``, each time a single message of a partition the worker kept through the rebalance.

The replacement below is faust's method with the head-gap test corrected: with a committed offset
``c``, nothing is committed until offset ``c`` itself is acknowledged (or known to be a gap). A
dropped message is read again after the next seek to the committed offsets. Because that seek may
come much later (the 200k test showed a partition whose commit waited on a dropped message with no
rebalance after it), ``streams.faust_reread`` re-reads a partition from its committed offset when its
commit has waited on the same unacknowledged message for ``GAP_REPAIR_AFTER_S``: the messages after it
are read again too, and every stage of burnwatch drops what it has already counted (at-least-once).

Gaps: faust takes a jump in the offsets it reads from a partition as offsets that do not exist
(compaction, transaction markers) and counts them as acknowledged. But a jump also happens when its
read offset is reset by a seek while records fetched before it are still being delivered (a restart's
seek to the committed offsets lands between them): the skipped offsets were real, unprocessed messages,
and the commit moved past them. The SIGKILL test lost 61 events in one failed run and 725 in another
this way. burnwatch's input topics are neither compacted nor transactional, so ``ignore_read_gaps``
records no such gap; a message the streams never see holds the commit until it is read again. The only
gaps left are the offsets retention deleted, which ``faust_reread.read_again`` marks.

A second loss path: a stream *skips* a message fetched under an earlier consumer generation, or one it
meets while a rebalance has suspended the flow, and faust 0.15.3 acknowledges the skipped message
(``Stream._py_aiter``: "we want to ack the filtered out message"). The consumer's bookkeeping for the
partition was reset at the revocation, so after the new assignment those offsets count as processed:
a run of messages blocked in a full stream buffer during the rebalance, delivered and skipped after
it, let the commit move past them before their re-read copies were processed, and the next SIGKILL
or rebalance lost them (eight consecutive ``costs.priced`` messages in one 20k run). ``guarded_ack``
refuses those acknowledgements: a message counts as processed only if it was fetched under the
current generation and the flow is running. A refused message is read again after the seek to the
committed offsets, and repeats are dropped downstream.

A third: faust's ``Stream.take_events`` acknowledges every event of a take when the loop over it ends,
also when the agent's handler raised and left them unhandled (a crashed batch was committed and lost).
``refuse_acks`` marks such messages: their acknowledgement is refused, and the repair timer reads their
partition again from the first of them after ``GAP_REPAIR_AFTER_S`` (a bug that fails every time is
retried at that pace, loudly, rather than dropped).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable
from typing import Any

from faust.transport.consumer import Consumer
from faust.utils.functional import consecutive_numbers

GAP_REPAIR_AFTER_S = 10.0
UNHANDLED: weakref.WeakSet[Any] = weakref.WeakSet()  # messages a handler failed on (``refuse_acks``)
STALLED: dict[Any, tuple[int, float]] = {}  # partition -> (first offset a handler failed on, when)


def new_offset(self: Any, tp: Any) -> int | None:
    """Return the offset to commit for ``tp``: one past the acknowledged run from the committed offset."""
    acked: list[int] = self._acked[tp]
    if not acked:
        return None
    max_offset = max(acked)
    gaps = self._gap[tp]
    if gaps:
        # offsets known not to exist (deleted by retention, faust_reread.read_again) count as acknowledged
        candidates = sorted(gaps.overlap(0, max_offset), key=lambda interval: interval.begin)
        if candidates:
            filled: list[int] = []
            for interval in candidates:
                filled.extend(range(interval.begin, interval.end))
            acked.extend(filled)
            gaps.chop(0, max(filled[-1], max_offset + 1))
    acked.sort()
    committed = self._committed_offset[tp]
    if committed is not None and acked[0] > committed:
        return None  # the message at the committed offset has not been acknowledged yet
    batch = next(consecutive_numbers(acked))
    acked[: len(batch)] = []
    self._acked_index[tp].difference_update(batch)
    return int(batch[-1]) + 1


_faust_ack = Consumer.ack


def ack_counts(message_generation: int | None, current_generation: int, flow_active: bool) -> bool:
    """Return whether an acknowledgement may mark a message processed (see the module docstring).

    >>> ack_counts(7, 7, flow_active=True)
    True
    >>> ack_counts(6, 7, flow_active=True)   # fetched before the last rebalance
    False
    >>> ack_counts(7, 7, flow_active=False)  # met while a rebalance suspends the flow
    False
    """
    return flow_active and message_generation == current_generation


def guarded_ack(self: Any, message: Any) -> bool:
    """Acknowledge like faust's ``Consumer.ack``, but refuse what would mark an unprocessed message done."""
    app = self.app
    if message in UNHANDLED or not ack_counts(
        message.generation_id, app.consumer_generation_id, app.flow_control.is_active()
    ):
        self._unacked_messages.discard(message)  # it is read again after the seek; do not keep it
        return False
    return bool(_faust_ack(self, message))


def refuse_acks(messages: Iterable[Any], now: float | None = None) -> None:
    """Mark ``messages`` as not handled (the handler raised): never acknowledged, read again later."""
    now = time.monotonic() if now is None else now
    for message in messages:
        UNHANDLED.add(message)
        first = STALLED.get(message.tp)
        if first is None or message.offset < first[0]:
            STALLED[message.tp] = (message.offset, first[1] if first else now)


def stalled_due(now: float, after_s: float = GAP_REPAIR_AFTER_S) -> dict[Any, int]:
    """Remove and return ``{partition: offset}`` of the refused messages waiting ``after_s`` or more.

    >>> class M:  # a fetched message: its partition and offset
    ...     def __init__(self, tp, offset):
    ...         self.tp, self.offset = tp, offset
    >>> refuse_acks([M("t-0", 8), M("t-0", 7), M("t-1", 3)], now=100.0)
    >>> stalled_due(now=105.0, after_s=10.0)
    {}
    >>> stalled_due(now=110.0, after_s=10.0)
    {'t-0': 7, 't-1': 3}
    >>> stalled_due(now=200.0, after_s=10.0)
    {}
    """
    due = {tp: offset for tp, (offset, since) in STALLED.items() if now - since >= after_s}
    for tp in due:
        del STALLED[tp]
    return due


async def ignore_read_gaps(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
    """Record nothing: faust's ``Consumer._add_gap`` took real, unread messages for missing offsets.

    See the module docstring.
    """


def apply() -> None:
    """Install the corrected commit logic on faust's consumer (idempotent)."""
    Consumer._new_offset = new_offset
    Consumer.ack = guarded_ack
    Consumer._add_gap = ignore_read_gaps
