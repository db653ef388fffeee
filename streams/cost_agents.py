"""The one agent on ``costs.priced``: decodes each message once and runs every cost stage over it.

The stages are budget allocation (``budget_agents``), the spend tables (``spend_agents``) and the
detector routing (``detector_agents``). They run in one agent, in order, rather than one agent each:
the JSON is decoded once instead of once per stage, and a message is acknowledged (and its offset
committed) only after every stage has handled it and their sends were acknowledged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import faust
from pydantic_core import from_json

from streams.core.costs import CostRecord
from streams.topics import Topics

CostStage = Callable[[Any, list[CostRecord]], Awaitable[None]]
"""A stage: ``await stage(message, records)`` for each ``costs.priced`` message, in the agent's context."""


def register_cost_agent(app: faust.App, topics: Topics, stages: list[CostStage]) -> None:
    """Add ``process_costs``, which runs ``stages`` over every ``costs.priced`` message."""

    @app.agent(topics.costs_priced_topic, name="process_costs")
    async def process_costs(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            records: list[CostRecord] = from_json(event.value)
            for stage in stages:
                await stage(event.message, records)
