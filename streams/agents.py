"""The pricing agent: validate a batch, drop repeats, price, send costs and dead letters.

Stages that need the priced records as they are made (the detectors' routing) run in this agent, on
the records in memory (of runs of about ``ROUTE_RECORDS`` records), rather than on ``costs.priced``:
they skip reading and decoding the costs again. A message's ids are stored only once the stage sends
of its run were acknowledged too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import faust

from streams.batching import InFlight, PartitionBatch, handle_batches
from streams.core.bounded_groups import bounded_groups
from streams.core.costs import CostRecord
from streams.core.dead_letter import dead_letter_record, encode_dead_letter
from streams.core.price_batch import PricedBatch, cost_messages, price_payload
from streams.core.pricing import Pricer
from streams.metrics import StageTimer, WorkerMetrics
from streams.names import USAGE_GPU, USAGE_LLM, USAGE_STORAGE
from streams.settings import Settings
from streams.tables import BatchLoggedTable
from streams.topics import Topics

log = logging.getLogger("burnwatch.pricing")

SOURCES = {USAGE_GPU: "gpu", USAGE_LLM: "llm", USAGE_STORAGE: "storage"}

# event ids a changelog message of the ids table holds at most (at most about 230 bytes each: ids are up to
# 200 characters): the ids of a backlog's batch of large messages in one message could pass its size limit
MAX_IDS_PER_WRITE = 40_000
# the priced-record stages run once this many records (or the batch's end). A run is a step of each
# detector partition, saved in one changelog message: runs of 1,000 made steps of about 70 events (six
# partitions), each writing again every entity, range and mark it changed. Runs of 10,000 (about a third
# of a second of pricing) write 0.08 table entries per event instead of 0.14, and the in-place path takes
# 9% fewer instructions (docs/detectors.md, nineteenth round); with runs of 30,000 (about a second) the
# detectors' save takes 1.8-2.1 µs per event instead of 2.8-3.1 (twenty-first round). A run's messages are
# acknowledged together, so their ids are stored in one write too, with or without stages.
ROUTE_RECORDS = 30_000

PricedStage = Callable[
    [PartitionBatch, list[CostRecord], list[tuple[int, int]]], Awaitable[list["asyncio.Future[Any]"]]
]
"""A stage on a run of usage messages' priced records: ``acks = await stage(batch, records, messages)``
(``messages``: the offset and record count of each usage message, in order) sends what it makes and
returns its sends' futures (not awaited: the messages' ids are stored once they resolve)."""


def register_price_agent(
    app: faust.App,
    settings: Settings,
    topics: Topics,
    event_ids: BatchLoggedTable,
    pricer: Pricer,
    metrics: WorkerMetrics,
    priced_stages: list[PricedStage] | None = None,
) -> Any:
    """Add the ``price_usage`` agent to ``app`` and return it.

    ``priced_stages`` run over the priced records of runs of messages (about ``ROUTE_RECORDS`` records,
    or the rest of the batch), in order, after their costs are sent; the list is read when a batch is
    priced, so stages may be added after this call.
    """
    stages = priced_stages if priced_stages is not None else []
    source_of = {settings.topic(name): source for name, source in SOURCES.items()}
    price_cpu = StageTimer(metrics.stage_cpu, "price")  # parsing, dedup and pricing of a message
    store_ids_cpu = StageTimer(metrics.stage_cpu, "store_ids")  # storing the ids of acknowledged messages

    async def send_dead_letters(batch: PricedBatch, message: Any, source: str) -> list[asyncio.Future[Any]]:
        now = datetime.now(UTC)
        acks = []
        for rejection in batch.rejections:
            record = dead_letter_record(
                rejection, topic=message.topic, partition=message.partition, offset=message.offset,
                rejected_at=now, message_key=message.key,
            )
            acks.append(await topics.usage_dlq_topic.send(key=message.key, value=encode_dead_letter(record)))
            metrics.events_rejected.labels(source, rejection.reason).inc()
            log.warning(
                "rejected %s from %s[%d]@%d (index %s): %s",
                rejection.reason, message.topic, message.partition, message.offset, rejection.index,
                rejection.detail,
            )
        return acks

    async def send_costs(records: list[CostRecord]) -> list[asyncio.Future[Any]]:
        return [await topics.costs_priced_topic.send(key=key, value=value)
                for key, value in cost_messages(records)]

    def count(batch: PricedBatch, source: str) -> None:
        metrics.events_priced.labels(source).inc(len(batch.events))
        if batch.duplicates:
            metrics.events_duplicate.labels(source).inc(batch.duplicates)
        cost: dict[str, float] = {}
        list_cost: dict[str, float] = {}
        unpriced = 0
        for record in batch.records:
            category = record["ServiceCategory"]
            cost[category] = cost.get(category, 0.0) + record["EffectiveCost"]
            list_cost[category] = list_cost.get(category, 0.0) + record["ListCost"]
            unpriced += record["x_Unpriced"]
        for category, usd in cost.items():
            metrics.cost_usd.labels(category).inc(usd)
            metrics.list_cost_usd.labels(category).inc(list_cost[category])
        if unpriced:
            metrics.charges_unpriced.labels(source).inc(unpriced)
        for sku in pricer.take_new_unpriced():
            log.warning("no price in catalog %s for %s: charged at 0 and marked x_Unpriced",
                        pricer.catalog.version, sku)

    @app.agent(topics.usage_topic, name="price_usage")
    async def price_usage(stream: faust.StreamT[bytes]) -> None:
        await handle_batches(app, stream, price, max_messages=settings.batch_max_messages,
                             within_s=settings.batch_within_s,
                             failed=metrics.batches_failed.labels("price_usage").inc)

    async def price(batch: PartitionBatch) -> None:
        source = source_of.get(batch.topic, "unknown")
        partition = batch.partition
        # ids priced earlier in this batch count as known: they may not be stored yet
        priced_here: set[str] = set()

        def is_known(event_id: str) -> bool:
            return event_id in priced_here or event_ids.contains(event_id, partition)

        def remember(run: list[tuple[Any, PricedBatch]]) -> None:
            """Store the ids of a run of acknowledged messages, then count them.

            One changelog message per ``MAX_IDS_PER_WRITE`` ids at most, each keyed by its messages' offsets.
            """
            for part in bounded_groups(run, lambda item: len(item[1].events), MAX_IDS_PER_WRITE):
                ids = [(e.event_id, int(e.time.timestamp())) for _, priced in part for e in priced.events]
                acknowledged = PartitionBatch(batch.topic, partition, [event for event, _ in part])
                event_ids.put_batch(ids, batch_key=acknowledged.batch_key, partition=partition)
            now = time.time()
            for stream_event, priced in run:
                count(priced, source)
                if sent_at := stream_event.message.timestamp:
                    metrics.processing_lag.labels(source).observe(max(0.0, now - sent_at))

        # An id is remembered only once Kafka has acknowledged its charges: the local store then
        # never runs ahead of the output, so a crash can repeat a message (same x_ChargeId) but
        # never lose one. The ids of each message are stored as soon as its sends and those of
        # the messages before it are acknowledged, so a crash repeats the messages in flight only.
        in_flight: InFlight[tuple[Any, PricedBatch]] = InFlight()
        # The stages run on runs of messages of about ROUTE_RECORDS records: once per tiny message
        # they multiplied the detector inputs' messages (the demo's gateway sends one or two events a
        # message). A message joins in_flight once its run's stage sends are made, and waits for them.
        # Without stages the messages still join in runs: their ids are then stored in one write per
        # run, as with them (one a message cost about 3 µs of CPU an event more).
        unrouted: list[tuple[Any, PricedBatch, list[Any]]] = []
        unrouted_records = 0

        async def run_stages() -> None:
            nonlocal unrouted_records
            stage_acks: list[Any] = []
            if stages:  # without them a run only joins in_flight: its records need not be gathered
                records = [record for _, priced, _ in unrouted for record in priced.records]
                messages = [(event.message.offset, len(priced.records)) for event, priced, _ in unrouted]
                for stage in stages:
                    stage_acks += await stage(batch, records, messages)
            for stream_event, priced, acks in unrouted:
                in_flight.add(acks + stage_acks, (stream_event, priced))
            unrouted.clear()
            unrouted_records = 0

        for stream_event in batch.events:
            message = stream_event.message
            metrics.messages_in.labels(source).inc()
            payload = message.value if isinstance(message.value, bytes) else bytes(message.value or b"")
            with price_cpu:
                priced = price_payload(payload, pricer, is_known, max_bytes=settings.max_message_bytes)
            priced_here.update(event.event_id for event in priced.events)
            metrics.events_in.labels(source).inc(
                len(priced.events) + priced.duplicates + len(priced.rejections))
            acks = await send_dead_letters(priced, message, source) if priced.rejections else []
            acks += await send_costs(priced.records)
            unrouted.append((stream_event, priced, acks))
            unrouted_records += len(priced.records)
            if unrouted_records >= ROUTE_RECORDS:
                await run_stages()
            with store_ids_cpu:
                remember(in_flight.acknowledged())
        if unrouted:
            await run_stages()
        while in_flight:
            acknowledged = await in_flight.wait()
            with store_ids_cpu:
                remember(acknowledged)

    return price_usage
