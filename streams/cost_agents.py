"""The one agent on ``costs.priced``: decodes each message once and runs every cost stage over it.

The stages are budget allocation (``budget_agents``), the spend tables (``spend_agents``) and the
detector routing (``detector_agents``). They run in one agent, in order, rather than one agent each:
the JSON is decoded once instead of once per stage, and a message is acknowledged (and its offset
committed) only after every stage has handled it and their sends were acknowledged. The agent takes
batches (``streams/batching.py``) and runs the stages over each message of a partition's batch in
offset order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import faust
from pydantic_core import from_json

from streams.batching import PartitionBatch, partition_batches
from streams.core.costs import CostRecord
from streams.settings import Settings
from streams.topics import Topics

CostStage = Callable[[PartitionBatch, list[CostRecord]], Awaitable[None]]
"""A stage: ``await stage(batch, records)`` for each partition's batch of ``costs.priced`` messages."""


def register_cost_agent(app: faust.App, settings: Settings, topics: Topics, stages: list[CostStage]) -> None:
    """Add ``process_costs``, which runs ``stages`` over every batch of ``costs.priced`` messages."""

    @app.agent(topics.costs_priced_topic, name="process_costs")
    async def process_costs(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(settings.batch_max_messages, within=settings.batch_within_s):
            for batch in partition_batches(events, app.consumer_generation_id):
                with batch.current():
                    # Stages run per message, in offset order: routing one concatenated batch lost the
                    # agent loop of the stream test (the router's ticks moved once per batch).
                    for event in batch.events:
                        one = PartitionBatch(batch.topic, batch.partition, [event])
                        records: list[CostRecord] = from_json(event.message.value)
                        for stage in stages:
                            await stage(one, records)
