"""The detector stage: priced records -> detectors by entity group, in place or via detector.inputs.

The ``route_detector_inputs`` stage (run by ``price_usage``, ``agents.py``, on the records it has just
priced: they are not read back from ``costs.priced``) turns each usage message's cost records into
detector inputs by entity group (``core/detector_feed.py`` ``route``, the compiled kernel's when
installed: ``core/detector_kernel.py``), so all the state one group's detectors read lives in one
partition of ``detector.inputs`` (Kafka's keyed partitioner: ``group_partitions.py``). A run's inputs
for one partition go together, as one run item (``route_runs``, ``by_partition`` of ``route``'s: with
its usage partition and offsets, by which the partition knows the run's LLM requests if they come again):
applied in place, with no message, if this worker owns the partition (the kernel's run keeps its LLM
requests as Rust values there), else in one message to the topic (their lists: ``plain``), where
``detect_anomalies`` applies them. The stage also ticks every partition (in place or through the
topic) whenever its ``Watermark`` (the slowest source still reporting; none is let go while a usage
partition has a backlog unread) moves on by 5 s, so buckets close, and silent GPUs and quiet sessions
are noticed while others still report. A 1 s timer makes the same check when no costs arrive, so event
time also moves on once every source has gone quiet; when time has not moved it ticks the same time
again (``Watermark.keepalive``). Ticks name their router: with several workers a partition moves only
as far as the slowest live router (``core/router_ticks.py``).

Either way a ``step`` runs one partition's ``PartitionDetectors`` (one step at a time per partition):
it drops inputs already applied, applies the inputs and ticks in order, sends findings to
``anomalies`` and their alerts to ``alerts``, then saves the changed state, the seen inputs and the
marks in one changelog message (an in-place step's is one of the sends its usage messages wait for
before their ids are stored). After a restart or a rebalance each partition's detectors are rebuilt
from the table, open buckets included, so an open finding is neither lost nor raised again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
from pydantic_core import from_json, to_json

from detectors.config import DetectorConfig
from streams.agents import PricedStage
from streams.batching import PartitionBatch, handle_batches, read_to_end, unread_after
from streams.core.costs import CostRecord
from streams.core.detector_feed import (
    STEP_MAX_CLOSED,
    Backlog,
    PartitionDetectors,
    Watermark,
    finding_alert,
    finding_key,
    plain,
    run_inputs,
    saved_entries,
    steps_of,
    tick,
    widest_bucket_s,
)
from streams.core.detector_kernel import load_feed
from streams.core.router_ticks import RouterTicks
from streams.faust_fixes import refuse_acks
from streams.group_partitions import GroupPartitions
from streams.metrics import StageTimer, WorkerMetrics
from streams.names import DETECTOR_INPUTS
from streams.settings import Settings
from streams.tables import BatchLoggedTable
from streams.timers import quiet_at_stop
from streams.topics import Topics

log = logging.getLogger("burnwatch.detectors")

TICK_KEY = b"tick"
TICK_EVERY_S = 1.0  # wall seconds between the router's checks for event time moving without new costs


@dataclass
class LiveDetectors:
    """The detectors of the ``detector.inputs`` partitions this worker owns.

    With the router's ``Watermark`` and its ``Backlog`` (what holds event time back while catching up),
    ``in_place``: the partitions rebuilt since the last rebalance, whose inputs the router applies
    itself rather than send them through the topic; and ``drained``: those of them whose
    ``detector.inputs`` messages ``detect_anomalies`` has read to the end since, whose ticks the router
    applies in place too (until then a tick goes through the topic, behind the inputs sent before it).
    """

    watermark: Watermark
    backlog: Backlog
    partitions: dict[int, PartitionDetectors] = field(default_factory=dict)
    in_place: set[int] = field(default_factory=set)
    drained: set[int] = field(default_factory=set)
    held: dict[int, int] = field(default_factory=dict)  # partition -> first offset of its failed batch
    router: str = ""  # the name its ticks carry: new at each rebalance (``RouterTicks``)
    locks: dict[int, asyncio.Lock] = field(default_factory=dict)

    async def step_in_place(
        self,
        local: dict[int, list[Any]],
        step: Callable[[int, list[Any]], Awaitable[list[Awaitable[Any]]]],
        send: Callable[[int, list[Any]], Awaitable[Awaitable[Any]]],
        failed: Callable[[], None],
    ) -> list[Awaitable[Any]]:
        """Step each partition of ``local`` with its inputs; return the acknowledgements to wait for.

        A partition whose step raises is no longer stepped in place (until the next rebuild): its
        inputs, these first, go through the topic, whose agent retries and counts a failing batch
        (``failed()`` counts this one). So a detector's bug never holds pricing up, as it could not
        before in-place steps. Whether a partition is still in place is read under its lock, and its
        inputs are sent there too: a step that waited for the lock behind a failing one (the tick
        timer's, say) must not apply its ticks in place before the failed inputs, nor send them ahead
        of those.

        >>> async def demo():
        ...     live = LiveDetectors(Watermark(), Backlog(limit=1, keep_s=1), in_place={0, 1}, drained={0, 1})
        ...     stepped, sent, failures = [], [], []
        ...     async def step(partition, items):
        ...         if partition == 1:
        ...             raise ValueError("a detector's bug")
        ...         stepped.append((partition, items))
        ...         return ["saved"]
        ...     async def send(partition, items):
        ...         sent.append((partition, items))
        ...         return "sent"
        ...     acks = await live.step_in_place({0: ["a"], 1: ["b"]}, step, send, lambda: failures.append(1))
        ...     later = await live.step_in_place({1: ["c"]}, step, send, lambda: failures.append(1))
        ...     return acks, later, stepped, sent, live.in_place, live.drained, len(failures)
        >>> asyncio.run(demo())
        (['saved', 'sent'], ['sent'], [(0, ['a'])], [(1, ['b']), (1, ['c'])], {0}, {0}, 1)
        """
        acks: list[Awaitable[Any]] = []
        for partition, items in local.items():
            async with self.lock(partition):
                if partition not in self.in_place:  # a step before this one failed, or a rebalance began
                    acks.append(await send(partition, items))
                    continue
                try:
                    acks += await step(partition, items)
                except Exception:
                    log.exception("the detectors of partition %d failed in place; its inputs now go through "
                                  "the topic until the next rebalance", partition)
                    failed()
                    self.in_place.discard(partition)
                    self.drained.discard(partition)
                    acks.append(await send(partition, items))
        return acks

    def lock(self, partition: int) -> asyncio.Lock:
        """Return the lock of one partition's steps: a step applies, sends and saves before the next."""
        lock = self.locks.get(partition)
        if lock is None:
            lock = self.locks[partition] = asyncio.Lock()
        return lock


def register_detector_agents(
    app: faust.App,
    settings: Settings,
    topics: Topics,
    table: BatchLoggedTable,
    metrics: WorkerMetrics,
    priced_stages: list[PricedStage],
    config: DetectorConfig | None = None,
) -> LiveDetectors:
    """Add the ``route_detector_inputs`` stage to ``priced_stages``, and ``detect_anomalies`` to ``app``."""
    config = config or DetectorConfig()
    feed = load_feed(settings.detector_kernel)
    log.info("detector feed: the %s code", feed.kind)
    live = LiveDetectors(
        watermark=Watermark(idle_wall_s=settings.detectors_idle_lane_s, lanes=feed.latest_by_lane),
        # more than a batch unread on some usage partition: the router is catching up, no lane is let go
        backlog=Backlog(limit=settings.batch_max_messages, keep_s=2 * settings.detectors_idle_lane_s),
    )
    inputs_name = settings.topic(DETECTOR_INPUTS)
    generations = itertools.count(1)
    partition_of = GroupPartitions(settings.topic_partitions)
    # the changelog keys of in-place steps: unique to this process (a key written twice would be compacted)
    process = uuid.uuid4().hex[:12]
    in_place_keys = (f"in-place:{process}:{n}" for n in itertools.count())
    live.router = f"{process}-0"
    route_cpu, apply_cpu, save_cpu = (StageTimer(metrics.stage_cpu, f"detectors_{stage}")
                                      for stage in ("route", "apply", "save"))

    def router_ticks() -> RouterTicks:
        """Return a rebuilt partition's view of the routers' ticks (wall clock).

        It waits an idle time for every router to tick; a router silent past the session timeout (its
        worker is out of the group by then, and the rebalance rebuilds the partition) and an idle time
        more is let go.
        """
        idle_s = settings.detectors_idle_lane_s
        return RouterTicks(idle_s, settings.kafka_session_timeout_s + idle_s, time.monotonic)

    async def send_ticks(event_time: float | None, local: dict[int, list[Any]]) -> list[Awaitable[Any]]:
        """Tick every partition: through the topic, or (``drained``) after the inputs placed in ``local``.

        ``event_time`` -inf: this router is starting, the partitions wait for it; inf: it has nothing
        to send, they need not (``Watermark.keepalive``, ``RouterTicks``).
        """
        if event_time is None:
            return []
        acks: list[Awaitable[Any]] = []
        item = tick(event_time, live.router)
        payload = to_json([item])
        for partition in range(settings.topic_partitions):
            if partition in live.drained:
                local.setdefault(partition, []).append(item)
            else:
                acks.append(await topics.detector_inputs_topic.send(
                    key=TICK_KEY, value=payload, partition=partition))
        return acks

    async def route_detector_inputs(
        batch: PartitionBatch, records: list[CostRecord], messages: list[tuple[int, int]]
    ) -> list[Any]:
        acks: list[Any] = []
        source = f"{batch.topic}:{batch.partition}"
        local: dict[int, list[Any]] = {}
        lanes: dict[str, float] = {}  # the Watermark's, read in the same pass
        with route_cpu:
            routed = feed.route_runs(records, partition_of, source=source, messages=messages, lanes=lanes)
        for partition, items in routed.items():
            if partition in live.in_place:
                local[partition] = items
            else:  # the run's inputs for a partition in one message: it applies them all or none
                acks.append(await topics.detector_inputs_topic.send(
                    key=source.encode(), value=to_json(items, fallback=plain), partition=partition))
        # observed after the inputs are sent: a tick never overtakes the inputs it closes buckets over
        now = time.monotonic()
        live.backlog.record((batch.topic, batch.partition), unread_after(app, batch), now)
        metrics.detector_inputs_in_place.inc(sum(run_inputs(run) for run, in local.values()))
        acks += await send_ticks(live.watermark.observe(records, now, live.backlog.behind(now), lanes), local)
        # what the steps save is acknowledged before the run's ids are stored
        return acks + await live.step_in_place(local, step_here, send_items, failed_in_place)

    @app.timer(TICK_EVERY_S, on_leader=False)
    @quiet_at_stop(app)
    async def tick_quiet_router() -> None:
        """Move event time when no costs arrive: lanes gone quiet stop holding it back, after start too."""
        now = time.monotonic()
        local: dict[int, list[Any]] = {}
        behind = live.backlog.behind(now)
        event_time = live.watermark.observe((), now, behind)
        if event_time is None:  # unmoved: say this router is still there, so partitions wait for it
            event_time = live.watermark.keepalive(now, behind)
        acks = await send_ticks(event_time, local)
        await asyncio.gather(*acks, *await live.step_in_place(local, step_here, send_items, failed_in_place))

    async def step_here(partition: int, items: list[Any]) -> list[Awaitable[Any]]:
        return await step(partition, items, next(in_place_keys))

    async def send_items(partition: int, items: list[Any]) -> Awaitable[Any]:
        ack: Awaitable[Any] = await topics.detector_inputs_topic.send(
            key=b"not-in-place", value=to_json(items, fallback=plain), partition=partition)
        return ack

    failed_in_place = metrics.batches_failed.labels("detectors_in_place").inc

    priced_stages.append(route_detector_inputs)

    @app.agent(topics.detector_inputs_topic, name="detect_anomalies")
    async def detect_anomalies(stream: faust.StreamT[bytes]) -> None:
        await handle_batches(app, stream, detect, max_messages=settings.batch_max_messages,
                             within_s=settings.batch_within_s,
                             failed=metrics.batches_failed.labels("detect_anomalies").inc)

    async def detect(batch: PartitionBatch) -> None:
        partition, first = batch.partition, batch.events[0].message.offset
        held = live.held.get(partition)
        if held is not None:
            if first > held:  # read before its failed batch is read again: it waits for that (order)
                refuse_acks(batch.messages)
                return
            del live.held[partition]
        try:
            async with live.lock(partition):
                # in steps of bounded size, each saving its changes in one changelog message (a compacted
                # topic: each under a key of its own)
                steps = steps_of(from_json(message.value) for message in batch.messages)
                for number, items in enumerate(steps):
                    await step(partition, items, f"{batch.batch_key}#{number}" if number else batch.batch_key)
        except Exception:
            # Not raised: a crashed agent would drop the messages it had buffered, and deliver the ones
            # after them first. The batch is read again from here (the repair, after 10 s); until then
            # the partition's later batches wait (``held``), and the other partitions go on.
            log.exception("the detectors of partition %d failed on %s; it is read again from there",
                          partition, batch.batch_key)
            metrics.batches_failed.labels("detect_anomalies").inc()
            live.held[partition] = first
            refuse_acks(batch.messages)
            return
        if partition in live.in_place and read_to_end(app, batch):
            live.drained.add(partition)

    async def step(partition: int, items: list[Any], batch_key: str) -> list[Awaitable[Any]]:
        """Apply one partition's inputs; send the findings and their alerts; then save the changed state.

        The caller holds the partition's lock (``LiveDetectors.lock``): one step at a time per partition.
        Return the saves' changelog sends, not awaited: one, or more when a tick closes more buckets than
        one step saves (``STEP_MAX_CLOSED``; each part is a step of its own, ``PartitionDetectors.apply``).
        A step that raises (a detector's bug, a send the broker refused) leaves the partition's detectors
        rebuilt from the table: what it changed in memory was not saved, so the retry applies the inputs
        again from the saved state and sends their findings again, rather than taking them for repeats.
        """
        detectors = live.partitions.get(partition)
        if detectors is None:
            detectors = live.partitions[partition] = PartitionDetectors(
                partition, config, feed.llm_bucketer, feed.idle_gpu_quiet, router_ticks())
        saves: list[Awaitable[Any]] = []
        try:
            def known(keys: Sequence[str]) -> list[bool]:
                return table.contains_many(keys, partition)

            for part in itertools.count():
                with apply_cpu:
                    done = detectors.apply(items, known, STEP_MAX_CLOSED)
                await send_findings(done.findings)  # before the state is saved: a crash repeats, never loses
                key = f"{batch_key}~{part}" if part else batch_key  # each save its own (compacted) key
                with save_cpu:
                    saved = table.put_batch(done.entries, batch_key=key, partition=partition)
                saves += [] if saved is None else [saved]
                metrics.detector_inputs.inc(done.applied)
                metrics.detector_inputs_repeated.inc(done.repeated)
                metrics.detector_late_buckets.inc(done.late_buckets)
                if not done.unfinished:
                    break
                items = done.rest
        except Exception:
            live.partitions[partition] = restored(partition)
            raise
        show_event_time(partition, detectors)
        return saves

    async def send_findings(findings: list[Any]) -> None:
        """Send findings to ``anomalies`` and their alerts to ``alerts``; wait for the acknowledgements."""
        acks: list[Awaitable[Any]] = []
        for finding in findings:
            acks.append(await topics.anomalies_topic.send(
                key=finding_key(finding).encode(), value=to_json(finding.to_dict())))
            metrics.findings_sent.labels(finding.kind, finding.state).inc()
            alert = finding_alert(finding)
            if alert is not None:
                acks.append(await topics.alerts_topic.send(
                    key=alert.fingerprint.encode(), value=alert.model_dump_json().encode()))
                metrics.alerts_sent.labels(alert.kind).inc()
        await asyncio.gather(*acks)

    def restored(partition: int) -> PartitionDetectors:
        """Return the partition's detectors as the table holds them (read by prefix: no ``i|`` entries)."""
        entries = saved_entries(lambda prefix: table.partition_items([partition], prefix), partition,
                                widest_bucket_s(config))
        return PartitionDetectors.restore(
            partition, entries, config, feed.llm_bucketer, feed.idle_gpu_quiet, router_ticks())

    def show_event_time(partition: int, detectors: PartitionDetectors) -> None:
        """Set the partition's ``burnwatch_detector_event_time_seconds`` once its event time has begun."""
        if detectors.runner.watermark > -math.inf:
            metrics.detector_event_time.labels(str(partition)).set(detectors.runner.watermark)

    @app.on_partitions_revoked.connect
    async def stop_in_place(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        """Send every input through the topic until the partitions this worker keeps are rebuilt.

        An in-place step under way (the tick timer's: faust waits for the agents') finishes first, so
        no step saves to a partition after it has been handed over.
        """
        live.in_place.clear()
        live.drained.clear()
        live.held.clear()
        for lock in list(live.locks.values()):
            async with lock:
                pass

    @table.on_recover
    async def rebuild_detectors() -> None:
        actives = app.assignor.assigned_actives() if app.assignor else set()
        owned = sorted({tp.partition for tp in actives if tp.topic == inputs_name})
        for partition in set(live.partitions) - set(owned):  # handed to another worker: its gauge goes
            with contextlib.suppress(KeyError):
                metrics.detector_event_time.remove(str(partition))
        live.partitions.clear()
        for partition in owned:
            detectors = live.partitions[partition] = restored(partition)
            show_event_time(partition, detectors)
        live.drained.clear()
        live.held.clear()
        # its usage partitions changed too: it waits for their lanes, under a new name (the ticks it sent
        # before covered other lanes: a partition takes them for another router's, soon let go)
        live.watermark.restart()
        live.router = f"{process}-{next(generations)}"
        if settings.detectors_in_place:
            live.in_place = set(owned)
        log.info("rebuilt detectors of partitions %s", owned)

    return live
