"""The one agent on ``costs.priced``: decodes each message once and runs every cost stage over it.

The stages are budget allocation (``budget_agents``), the spend tables (``spend_agents``) and the
detector routing (``detector_agents``). They run in one agent, in order, rather than one agent each:
the JSON is decoded once instead of once per stage, and a message is acknowledged (and its offset
committed) only after every stage has handled it and their sends were acknowledged. The agent works in
batches (``streams/batching.py``): each stage sees one partition's buffered messages at a time, their
records concatenated in offset order (an event's charges are never split across messages, so a batch
holds whole events).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import faust
from pydantic_core import from_json

from streams.batching import PartitionBatch, handle_batches, still_current
from streams.core.costs import CostRecord
from streams.metrics import WorkerMetrics
from streams.settings import Settings
from streams.topics import Topics

CostStage = Callable[[PartitionBatch, list[CostRecord]], Awaitable[None]]
"""A stage: ``await stage(batch, records)`` for each partition's batch of ``costs.priced`` messages."""


def register_cost_agent(
    app: faust.App, settings: Settings, topics: Topics, stages: list[CostStage], metrics: WorkerMetrics
) -> None:
    """Add ``process_costs``, which runs ``stages`` over every batch of ``costs.priced`` messages."""

    @app.agent(topics.costs_priced_topic, name="process_costs")
    async def process_costs(stream: faust.StreamT[bytes]) -> None:
        await handle_batches(app, stream, run_stages, max_messages=settings.batch_max_messages,
                             within_s=settings.batch_within_s,
                             failed=metrics.batches_failed.labels("process_costs").inc)

    async def run_stages(batch: PartitionBatch) -> None:
        records: list[CostRecord] = []
        for message in batch.messages:
            records += from_json(message.value)
        for stage in stages:
            if not still_current(app, batch):
                return  # a rebalance began during the last stage: the new owner reads the batch again
            await stage(batch, records)
