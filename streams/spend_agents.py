"""The spend stage: costs.priced -> hourly and daily spend per scope (spend tables) -> spend.windows.

The ``track_spend`` stage (run by ``process_costs``, ``cost_agents.py``) keeps one ``SpendTracker`` per
``costs.priced`` partition it owns. Per batch it drops charges it has counted before (``c|<charge
id>`` marks in the spend table), adds the rest to their windows, and logs the marks, the changed windows
and the watermark as one changelog message, so the marks and the sums can never disagree after a crash
(a catch-up batch too big for one message is counted and logged in parts, ``event_parts``, one message
each).
A timer publishes changed windows to the compacted ``spend.windows`` topic, one key per (window,
partition); readers add partitions up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import faust
from pydantic_core import to_json

from streams.batching import PartitionBatch
from streams.core.allocation import Allocator
from streams.core.bounded_groups import MAX_ITEMS_PER_MESSAGE, part_key
from streams.core.costs import CostRecord
from streams.core.repeats import seen_before
from streams.core.spend import SpendTracker, event_parts, window_key, window_record
from streams.cost_agents import CostStage
from streams.metrics import WorkerMetrics
from streams.names import COSTS_PRICED
from streams.settings import Settings
from streams.tables import BatchLoggedTable
from streams.timers import quiet_at_stop
from streams.topics import Topics

log = logging.getLogger("burnwatch.spend")

MARK = "c|"
WATERMARK_KEY = "wm"


class SpendState:
    """The trackers of the partitions this worker owns, and which of their keys are still to publish."""

    def __init__(self, allocator: Allocator, lateness_s: int) -> None:
        self.allocator = allocator
        self.lateness_s = lateness_s
        self.trackers: dict[int, SpendTracker] = {}
        self.dirty: dict[int, set[str]] = {}

    def tracker(self, partition: int) -> SpendTracker:
        """Return the partition's tracker, made empty if it has none yet."""
        tracker = self.trackers.get(partition)
        if tracker is None:
            tracker = self.trackers[partition] = SpendTracker(
                self.allocator, self.allocator.config.shared_costs, lateness_s=self.lateness_s)
        return tracker

    def forget(self, partitions: set[int]) -> None:
        """Drop the trackers of ``partitions`` (revoked) and what they had still to publish.

        Their next owner republishes every window it holds once it has rebuilt them; a window this worker
        sent after that, from a tracker the new owner has since moved past, would be the key's last record
        and stand until the window changed again.
        """
        for partition in partitions:
            self.trackers.pop(partition, None)
            self.dirty.pop(partition, None)


async def publish_dirty(state: SpendState, send: Callable[[int, str, SpendTracker], Awaitable[None]]) -> None:
    """``await send(partition, key, tracker)`` for each changed window of the partitions this worker owns.

    A rebalance rebuilds the trackers while a send is awaited. A partition whose tracker was replaced
    is left at once: the rebuild marked every window it holds to publish, and a window sent from the old
    tracker (of a partition maybe handed to another worker) could land after its new owner's.
    """
    for partition in list(state.dirty):
        tracker, keys = state.trackers.get(partition), state.dirty.get(partition)
        if keys is None:  # rebuilt meanwhile, and no longer this worker's
            continue
        if tracker is None:
            del state.dirty[partition]
            continue
        state.dirty[partition] = set()
        for key in keys:
            if state.trackers.get(partition) is not tracker:
                break
            if key in tracker.windows:
                await send(partition, key, tracker)
        else:
            tracker.forget_old()


class PartitionItems(Protocol):
    """What ``load_tracker`` reads of the spend table (``BatchLoggedTable.partition_items``)."""

    def partition_items(self, partitions: Iterable[int], prefix: str = "") -> Iterator[tuple[str, Any]]:
        """Yield the ``(key, value)`` entries of ``partitions`` whose keys start with ``prefix``."""


def load_tracker(state: SpendState, table: PartitionItems, partition: int) -> SpendTracker:
    """Rebuild the partition's tracker from the table, every window it holds marked to publish."""
    state.forget({partition})
    tracker = state.tracker(partition)
    for prefix in ("w|", "late|"):
        for key, value in table.partition_items([partition], prefix=prefix):
            tracker.load(key, value)
    mark = next(iter(table.partition_items([partition], prefix=WATERMARK_KEY)), None)
    tracker.watermark_s = int(mark[1]) if mark else 0
    tracker.forget_old()
    state.dirty[partition] = set(tracker.windows)  # the new owner republishes what it holds
    return tracker


class SpendTable(PartitionItems, Protocol):
    """What the spend stage reads and writes of its table (``BatchLoggedTable``)."""

    def contains_many(self, keys: Sequence[str], partition: int | None = None) -> list[bool]:
        """Which of ``keys`` are stored in ``partition``."""

    def put_batch(
        self, items: Sequence[tuple[str, Any]], batch_key: str, partition: int | None = None
    ) -> Any:
        """Store ``items`` in ``partition`` and log them as one changelog message keyed ``batch_key``."""


def count_spend(
    state: SpendState,
    table: SpendTable,
    metrics: WorkerMetrics,
    partition: int,
    batch_key: str,
    records: Sequence[CostRecord],
    limit: int = MAX_ITEMS_PER_MESSAGE,
) -> None:
    """Count a batch of ``partition``'s priced charges into its windows and log them, in parts.

    A part (``event_parts``: at most ``limit`` charges, events whole) is one changelog message, keyed
    ``part_key(batch_key, n)``: its charges' marks, the windows it changed and the watermark, so no
    message outgrows the broker's limit and the marks and the sums agree after a crash between two parts
    (the batch is read again; the parts counted already are skipped by their marks).
    """
    tracker = state.trackers.get(partition)
    if tracker is None:  # never after a rebuild; an empty tracker would overwrite the table's windows
        log.warning("spend windows of partition %d were not rebuilt; rebuilding them", partition)
        tracker = load_tracker(state, table, partition)
    for number, part in enumerate(event_parts(records, limit)):
        marks = [MARK + record["x_ChargeId"] for record in part]
        known = seen_before(marks, table.contains_many(marks, partition))  # repeats count once
        fresh = [record for record, seen in zip(part, known, strict=True) if not seen]
        before = (tracker.allocated_usd, tracker.unallocated_usd, tracker.late_usd)
        changed = tracker.add(fresh)
        # Windows the repeated charges fall in are logged again too: the changelog stays whole
        # even when a crash left the local store ahead of it.
        if len(fresh) < len(part):
            changed |= tracker.window_keys([r for r, seen in zip(part, known, strict=True) if seen])
        changed.update(tracker.close_due())
        items: list[tuple[str, Any]] = [(mark, 1) for mark in marks]
        items += [(key, tracker.value(key)) for key in changed]
        items.append((WATERMARK_KEY, tracker.watermark_s))
        table.put_batch(items, batch_key=part_key(batch_key, number), partition=partition)
        state.dirty.setdefault(partition, set()).update(changed)
        _count(metrics, tracker, before)


def register_spend_agents(
    app: faust.App,
    settings: Settings,
    topics: Topics,
    table: BatchLoggedTable,
    allocator: Allocator,
    metrics: WorkerMetrics,
    cost_stages: list[CostStage],
) -> SpendState:
    """Add the ``track_spend`` stage to ``cost_stages``, and the spend publishing timer to ``app``."""
    state = SpendState(allocator, int(settings.spend_lateness_hours * 3600))
    priced_topic_name = settings.topic(COSTS_PRICED)

    async def track_spend(batch: PartitionBatch, records: list[CostRecord]) -> None:
        count_spend(state, table, metrics, batch.partition, batch.batch_key, records)

    cost_stages.append(track_spend)

    @table.on_recover
    async def rebuild_spend() -> None:
        actives = app.assignor.assigned_actives() if app.assignor else set()
        partitions = {tp.partition for tp in actives if tp.topic == priced_topic_name}
        state.trackers.clear()
        state.dirty.clear()
        for partition in partitions:
            load_tracker(state, table, partition)
        log.info("rebuilt spend windows of partitions %s", sorted(partitions))

    @app.on_partitions_revoked.connect
    async def stop_publishing(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        """Publish nothing of a revoked partition: its windows are its next owner's to send."""
        state.forget({tp.partition for tp in revoked if tp.topic == priced_topic_name})

    @app.timer(settings.spend_publish_interval_s, on_leader=False)
    @quiet_at_stop(app)
    async def publish_spend() -> None:
        now = datetime.now(UTC)
        acks: list[Awaitable[Any]] = []

        async def send(partition: int, key: str, tracker: SpendTracker) -> None:
            record = window_record(key, tracker.value(key), partition=partition, as_of=now)
            acks.append(await topics.spend_windows_topic.send(
                key=f"{key}#{partition}".encode(), value=to_json(record)))

        await publish_dirty(state, send)
        await asyncio.gather(*acks)
        _set_compliance(metrics, state, now)

    return state


def _count(metrics: WorkerMetrics, tracker: SpendTracker, before: tuple[float, float, float]) -> None:
    """Add what the tracker counted since ``before`` to the spend metrics."""
    allocated, unallocated, late = (tracker.allocated_usd - before[0], tracker.unallocated_usd - before[1],
                                     tracker.late_usd - before[2])
    if allocated:
        metrics.spend_usd.labels("true").inc(allocated)
    if unallocated:
        metrics.spend_usd.labels("false").inc(unallocated)
    if late:
        metrics.spend_late_usd.inc(late)


def _set_compliance(metrics: WorkerMetrics, state: SpendState, now: datetime) -> None:
    today = int(now.timestamp()) // 86_400 * 86_400
    total = unallocated = 0.0
    for tracker in state.trackers.values():
        totals = tracker.windows.get(window_key("day", today, "total", "all"))
        if totals:
            total += totals["usd"]
            unallocated += totals["unallocated_usd"]
    if total > 0:
        metrics.tag_compliance.set((total - unallocated) / total)

