"""Reading a partition again from an offset, safely: the repair timer, read fences and retention gaps.

``streams.faust_fixes`` never lets the commit pass a message no stream processed; this module gets such
a message read again. Its timer, ``repair_commit_gaps``, seeks a partition back to the offset its
commit has waited on for ``GAP_REPAIR_AFTER_S`` (a message dropped without acknowledgement), or to the
first message of a batch whose handler failed (``faust_fixes.refuse_acks``). Every stage of burnwatch
drops what it has already counted, so reading the messages after it again is harmless.

A seek alone is not enough. Records fetched before it may still be on their way to the streams: faust
delivers them, its read offset jumps past the seek offset, and it then drops the re-read messages as
already read, so the commit keeps waiting and the next repair meets the same race. So a seek here
raises a *read fence*: ``fenced_getmany`` holds back a partition's records until the one at the seek
offset arrives, then lets them through. A fence whose record exists (the partition's end is past it)
but has not arrived within ``GAP_REPAIR_AFTER_S`` is lifted (if its message is still unprocessed, the
commit waits on it and the next repair seeks again). A rebalance's seek to the committed offsets (faust's
``perform_seek``, also at start) meets the same race, so ``seek_and_mark_starts`` replaces every fence
by one at each committed offset it found. aiokafka's seek to the committed offsets leaves a partition
the group never committed (or committed at 0) where its fetch stood, past any record fetched before the
rebalance that faust then skipped (its generation was over, or flow was stopped): that record waited for
the repair, 10 to 25 s, and the partition's commit with it (a worker read nothing there after the
rebalance in the two-worker test). So such a partition is sought to its log start, behind a fence.

A fence can also wait for a record already taken off the fetch: a fetch answered before a seek, a
rebalance cutting faust's delivery short. Then the records after it keep coming (the fetch position is
past it) and the fence drops them all, until it is lifted and the commit waits again: a partition read
by nobody for 10 to 25 s after a rebalance (seen in the two-worker test). So a fence still waiting
``RESEEK_AFTER_S`` after it was raised (or last sought), its record existing, seeks to its offset again
(``reseeks_due``). Seeks run in faust's consumer thread (``seek_wait``): aiokafka's ``seek`` from the
event loop's thread raced the thread's fetch (``KeyError`` in ``fetched_records``: the fetcher crashed).

Only retention really deletes messages from burnwatch's input topics (none is compacted or written in
transactions). When the commit waits on an offset older than the partition's first offset, the
messages there are gone: the repair logs an error with their count and marks them as a gap, which
``faust_fixes.new_offset`` counts as acknowledged.

A group's first commit has nothing to wait on: faust keeps no committed offset for a partition whose
group never committed one, and would commit its first run of acknowledged offsets even with a dropped
message below it. ``seek_and_mark_starts`` sets the partition's log start offset as its committed
offset after every rebalance's seek, so the same rule holds from the first message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import faust
from faust.transport.consumer import Consumer

from streams.faust_fixes import GAP_REPAIR_AFTER_S, stalled_due
from streams.metrics import WorkerMetrics

log = logging.getLogger("burnwatch.faust_fixes")

FENCES: dict[Any, tuple[int, float]] = {}  # partition -> (offset of the seek, when it was raised)
RESEEKS: dict[Any, float] = {}  # fenced partition -> when it was last sought to its fence again
MARKS: dict[Any, int] = {}  # never-committed partition -> the log start set as its committed offset
RESEEK_AFTER_S = 1.0  # what a fetch answered before a seek can still deliver comes within this

_faust_getmany = Consumer.getmany
_faust_perform_seek = Consumer.perform_seek


def passes_fence(tp: Any, offset: int, fences: dict[Any, tuple[int, float]] = FENCES) -> bool:
    """Return whether a fetched record of ``tp`` at ``offset`` may go to the streams.

    A partition's fence holds back its records until the one at the seek offset, which lifts it.

    >>> fences = {"t-0": (12, 0.0)}
    >>> [passes_fence("t-0", offset, fences) for offset in (40, 41, 12, 13)]  # 40, 41: fetched before
    [False, False, True, True]
    >>> passes_fence("t-1", 7, fences)
    True
    """
    fence = fences.get(tp)
    if fence is None:
        return True
    if offset != fence[0]:
        return False
    del fences[tp]
    RESEEKS.pop(tp, None)
    return True


def reseeks_due(
    now: float, end_of: Callable[[Any], int | None], after_s: float = RESEEK_AFTER_S,
    fences: dict[Any, tuple[int, float]] = FENCES, reseeks: dict[Any, float] = RESEEKS,
) -> dict[Any, int]:
    """Return ``{partition: fence offset}`` to seek to again: their record exists but has not come.

    A fence is looked at ``after_s`` after its seek, then once every ``after_s``: records fetched before
    a seek come first, and the one at the fence right after them. ``end_of`` as for
    ``lift_stale_fences``, asked only about the fences looked at.

    >>> fences, reseeks, ends = {"t-0": (12, 100.0), "t-1": (40, 100.0)}, {}, {"t-0": 50, "t-1": 40}
    >>> [reseeks_due(now, ends.get, 1.0, fences, reseeks) for now in (100.5, 101.0, 101.5, 102.0)]
    [{}, {'t-0': 12}, {}, {'t-0': 12}]
    """
    looked = [tp for tp, (_, since) in fences.items() if now - reseeks.get(tp, since) >= after_s]
    reseeks.update(dict.fromkeys(looked, now))
    return {tp: fences[tp][0] for tp in looked if _record_exists(end_of, tp, fences[tp][0])}


def _record_exists(end_of: Callable[[Any], int | None], tp: Any, offset: int) -> bool:
    """Whether ``tp``'s last known end is past ``offset``: a fence there waits for a record that exists."""
    end = end_of(tp)
    return end is not None and end > offset


def ends_of(consumer: Any, assigned: set[Any] | None = None) -> Callable[[Any], int | None]:
    """Return ``end_of`` for the fences: an assigned partition's last known end, else None.

    The consumer's assignment (unless given) is read at the first call, not before.
    """
    def end_of(tp: Any) -> int | None:
        nonlocal assigned
        if assigned is None:
            assigned = consumer.assignment()
        return consumer.highwater(tp) if tp in assigned else None
    return end_of


def lift_stale_fences(now: float, end_of: Callable[[Any], int | None], after_s: float = GAP_REPAIR_AFTER_S,
                      fences: dict[Any, tuple[int, float]] = FENCES) -> list[Any]:
    """Remove and return the partitions whose fence has waited ``after_s`` or more for a record that exists.

    ``end_of(tp)`` is the partition's last known end offset (``None``: not known). A fence at or past
    the end waits for the next message, which will be the one at its offset: it stays.

    >>> fences = {"t-0": (12, 100.0), "t-1": (3, 95.0), "t-2": (8, 90.0)}
    >>> ends = {"t-0": 40, "t-1": 40, "t-2": 8}
    >>> lift_stale_fences(now=106.0, end_of=ends.get, after_s=10.0, fences=fences), sorted(fences)
    (['t-1'], ['t-0', 't-2'])
    """
    stale = [tp for tp, (offset, since) in fences.items()
             if now - since >= after_s and _record_exists(end_of, tp, offset)]
    for tp in stale:
        del fences[tp]
        RESEEKS.pop(tp, None)
    return stale


async def fenced_getmany(self: Any, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
    """Yield what faust's ``Consumer.getmany`` yields, less the records fetched before a repair's seek.

    A fence still waiting for its record a second on is sought to again first (``reseeks_due``).
    """
    if FENCES:
        due = reseeks_due(time.monotonic(), ends_of(self))
        if due:
            log.info("seeking again to the fenced offsets %s: their records did not come", due)
            await self.seek_wait(due)
    async for tp, message in _faust_getmany(self, timeout):
        if not FENCES or passes_fence(tp, message.offset):
            yield tp, message


async def log_starts(consumer: Any, partitions: list[Any]) -> dict[Any, int]:
    """Return the partitions' first offsets, or ``{}`` (with a warning) if the broker did not answer.

    Without them a seek goes ahead as faust's would: nothing is marked as deleted, and partitions the
    group never committed keep no committed offset.
    """
    try:
        return dict(await consumer.earliest_offsets(*partitions))
    except Exception as error:  # a broker hiccup must not crash a rebalance or the repair timer
        log.warning("could not read the first offsets of %d partitions: %r", len(partitions), error)
        return {}


async def seek_and_mark_starts(self: Any) -> None:
    """Seek to the committed offsets as faust does, behind fences, and mark never-committed partitions.

    Every fence of an earlier seek is replaced by one at each partition's committed offset, before
    anything else can run. A partition the group never committed is sought to its log start, behind a
    fence there, and gets that offset as committed offset (``MARKS``). That mark is not a committed
    offset at the next seek (faust leaves a partition the group never committed as it was): the
    partition is sought to its log start again, which may have moved.
    """
    for tp, mark in MARKS.items():
        if self._committed_offset[tp] == mark:
            self._committed_offset[tp] = None
    MARKS.clear()
    await _faust_perform_seek(self)
    now = time.monotonic()
    acks_enabled_for = self.app.topics.acks_enabled_for
    partitions = [tp for tp in self.assignment() if acks_enabled_for(tp.topic)]
    FENCES.clear()
    RESEEKS.clear()
    FENCES.update({tp: (offset, now) for tp in partitions
                   if (offset := self._committed_offset[tp]) is not None})
    unmarked = [tp for tp in partitions if self._committed_offset[tp] is None]
    if unmarked:
        starts = {tp: start for tp, start in (await log_starts(self, unmarked)).items()
                  if self._committed_offset[tp] is None}  # none committed while the broker answered
        for tp, start in starts.items():
            self._committed_offset[tp] = MARKS[tp] = start
        FENCES.update({tp: (start, now) for tp, start in starts.items()})
        if starts:  # aiokafka seeks only to a committed offset above 0
            await self.seek_wait(starts)


REASONS = {
    "dropped": "a stream dropped the message there without acknowledging it",
    "failed": "an agent failed on the messages from there",
}


async def read_again(
    consumer: Any, tp: Any, offset: int, reason: str, metrics: WorkerMetrics | None = None
) -> None:
    """Seek ``tp`` back to ``offset`` behind a fence, or mark the messages retention deleted as a gap.

    ``reason`` is a key of ``REASONS``. Gap offsets count as acknowledged (``faust_fixes.new_offset``);
    the deletion is logged as an error and counted.
    """
    start = (await log_starts(consumer, [tp])).get(tp)
    if start is not None and start > offset:
        log.error("%s: messages %d to %d were deleted by the topic's retention before they were "
                  "processed; they are skipped", tp, offset, start - 1)
        consumer._gap[tp].addi(offset, start)
        if metrics is not None:
            metrics.messages_lost_to_retention.labels(tp.topic).inc(start - offset)
        return
    log.warning("re-reading %s from offset %d: %s (repeats are dropped downstream)",
                tp, offset, REASONS[reason])
    FENCES[tp] = (offset, time.monotonic())
    RESEEKS.pop(tp, None)
    await consumer.seek_wait({tp: offset})  # in the consumer's thread, as the fetch
    if metrics is not None:
        metrics.partition_rereads.labels(tp.topic, reason).inc()


def apply() -> None:
    """Install the fenced fetch and the marking seek on faust's consumer (idempotent)."""
    Consumer.getmany = fenced_getmany
    Consumer.perform_seek = seek_and_mark_starts


class GapRepair:
    """Finds partitions whose commit has waited on the same unacknowledged message for ``after_s``.

    >>> repair = GapRepair(after_s=10)
    >>> state = {"acked": {"t-0": [13, 14]}, "committed": {"t-0": 12}}
    >>> repair.due(state["acked"], state["committed"], now=100.0)  # first seen: wait
    {}
    >>> repair.due(state["acked"], state["committed"], now=111.0)  # still waiting on 12: re-read
    {'t-0': 12}
    >>> repair.due({"t-0": [12, 13, 14]}, {"t-0": 12}, now=130.0)  # 12 acknowledged: nothing to do
    {}
    """

    def __init__(self, after_s: float = GAP_REPAIR_AFTER_S) -> None:
        self.after_s = after_s
        self._since: dict[Any, tuple[int, float]] = {}

    def due(self, acked: dict[Any, list[int]], committed: Any, now: float) -> dict[Any, int]:
        """Return ``{partition: committed offset}`` for the partitions to read again from that offset."""
        out: dict[Any, int] = {}
        for tp, offsets in list(acked.items()):
            mark = committed[tp] if tp in committed else None
            if not offsets or mark is None or min(offsets) <= mark:
                self._since.pop(tp, None)
                continue
            seen = self._since.get(tp)
            if seen is None or seen[0] != mark:
                self._since[tp] = (mark, now)
            elif now - seen[1] >= self.after_s:
                out[tp] = mark
                del self._since[tp]
        return out


def install_gap_repair(
    app: faust.App, metrics: WorkerMetrics | None = None, after_s: float = GAP_REPAIR_AFTER_S
) -> None:
    """Add a timer to ``app`` that re-reads partitions whose commit waits on a dropped message."""
    repair = GapRepair(after_s)

    @app.timer(after_s / 2, on_leader=False)
    async def repair_commit_gaps() -> None:
        consumer = app.consumer
        if app.rebalancing or not consumer.flow_active:
            return  # the rebalance's own seek reads them again
        assigned, now = consumer.assignment(), time.monotonic()
        for tp in lift_stale_fences(now, ends_of(consumer, assigned), after_s):
            log.warning("%s: the message at the fenced offset did not arrive; the fence is lifted", tp)
        for tp, offset in repair.due(consumer._acked, consumer._committed_offset, now).items():
            if tp in assigned:
                await read_again(consumer, tp, offset, "dropped", metrics)
        for tp, offset in stalled_due(now, after_s).items():
            if tp in assigned:  # otherwise its new owner reads it from the committed offset
                await read_again(consumer, tp, offset, "failed", metrics)
