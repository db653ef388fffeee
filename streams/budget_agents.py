"""The budget stage: costs.priced -> budget.charges (by budget) -> exact running totals -> budget.burn.

The ``allocate_costs`` stage (run by ``process_costs``, ``cost_agents.py``) allocates each charge and
sends it, grouped by budget, to ``budget.charges`` keyed by budget id. ``track_budgets`` counts each
(budget, charge) once through the ledger table and keeps each budget's running state in memory; the
state is rebuilt from the ledger after every rebalance, so it is always exactly the sum of the ledger. A
timer publishes burn records and threshold alerts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import faust
from pydantic_core import from_json, to_json

from streams.batching import PartitionBatch, handle_batches
from streams.core.allocation import Allocator
from streams.core.bounded_groups import in_parts, part_key
from streams.core.budget_charges import BudgetMatcher, Contribution, count_charge, ledger_key, rebuild_state
from streams.core.budget_state import (
    BudgetState,
    alerts_due,
    burn_step,
    mark_emitted,
)
from streams.core.budgets import Budget, BudgetsConfig
from streams.core.costs import CostRecord
from streams.core.repeats import seen_before
from streams.cost_agents import CostStage
from streams.metrics import WorkerMetrics
from streams.names import BUDGET_CHARGES
from streams.settings import Settings
from streams.tables import BatchLoggedTable
from streams.timers import quiet_at_stop
from streams.topics import Topics

log = logging.getLogger("burnwatch.budgets")

TICK_S = 1.0
# Bookkeeping kept across restarts; totals are rebuilt from the ledger instead.
ALERT_FIELDS = ("fired", "closed", "last_emitted_at", "last_emitted_status", "last_emitted_spent",
                "last_emitted_events", "last_emitted_period")


@dataclass
class LiveBudgets:
    """The running state of the budgets whose ``budget.charges`` partitions this worker owns."""

    states: dict[str, BudgetState] = field(default_factory=dict)
    events_seen: dict[str, set[str]] = field(default_factory=dict)
    # budgets the timer asked track_budgets to look at (an empty budget.charges message in flight)
    ticks_pending: set[str] = field(default_factory=set)


async def publish_live(live: LiveBudgets, publish: Callable[[str, BudgetState], Awaitable[None]]) -> None:
    """``await publish(budget_id, state)`` for each budget ``live`` holds, its state read when its turn comes.

    A rebalance rebuilds ``live`` from the ledger while a send is awaited. A loop over states read
    before it would publish a budget the rebuild handed to another worker, from a state that stops
    there: written back into ``live``, that budget would stay on this worker with frozen totals, and
    its burn record could land after the new owner's last one (a total short on ``budget.burn``).
    """
    for budget_id in list(live.states):
        state = live.states.get(budget_id)
        if state is not None:  # gone: handed to another worker since the loop began
            await publish(budget_id, state)


def register_budget_agents(
    app: faust.App,
    settings: Settings,
    topics: Topics,
    ledger: BatchLoggedTable,
    alert_state: faust.Table,
    allocator: Allocator,
    config: BudgetsConfig,
    metrics: WorkerMetrics,
    cost_stages: list[CostStage],
) -> LiveBudgets:
    """Add the ``allocate_costs`` stage to ``cost_stages``, and ``track_budgets`` and the burn timer."""
    matcher = BudgetMatcher(allocator, config)
    budgets: dict[str, Budget] = config.by_id()
    live = LiveBudgets()
    charges_topic_name = settings.topic(BUDGET_CHARGES)

    async def allocate_costs(batch: PartitionBatch, records: list[CostRecord]) -> None:
        acks: list[Awaitable[Any]] = []
        for budget_id, items in matcher.contributions(records).items():
            key = budget_id.encode()
            for part in in_parts(items):  # a catch-up batch's contributions in messages the broker takes
                acks.append(await topics.budget_charges_topic.send(key=key, value=to_json(part)))
        await asyncio.gather(*acks)

    cost_stages.append(allocate_costs)

    @app.agent(topics.budget_charges_topic, name="track_budgets")
    async def track_budgets(stream: faust.StreamT[bytes]) -> None:
        await handle_batches(app, stream, count_batch, max_messages=settings.batch_max_messages,
                             within_s=settings.batch_within_s,
                             failed=metrics.batches_failed.labels("track_budgets").inc)

    async def count_batch(batch: PartitionBatch) -> None:
        by_budget: dict[str, list[Contribution]] = {}
        for message in batch.messages:
            budget_id = (message.key or b"").decode()
            by_budget.setdefault(budget_id, []).extend(tuple(item) for item in from_json(message.value))
        entries: list[tuple[str, Any]] = []
        for budget_id, items in by_budget.items():
            live.ticks_pending.discard(budget_id)
            budget = budgets.get(budget_id)
            if budget is None:
                log.warning("charges for unknown budget %r skipped (budgets file changed?)", budget_id)
                continue
            keys = [ledger_key(budget_id, item[0]) for item in items]
            known = seen_before(keys, ledger.contains_many(keys, batch.partition))  # repeats count once
            # Every item is logged again, new or not: the changelog stays complete even when a crash
            # left the local store ahead of it.
            entries += [(key, list(item)) for key, item in zip(keys, items, strict=True)]
            state = live.states.get(budget_id)
            seen = live.events_seen.setdefault(budget_id, set())
            fresh = 0
            for item, repeated in zip(items, known, strict=True):
                if repeated:
                    continue
                fresh += 1
                state, late = count_charge(state, budget, item, seen)
                if late is not None:
                    metrics.budget_late_usd.inc(item[3])
                    log.info("late charge %s for closed period of %s: %.6f USD", item[0], budget_id, item[3])
            if state is not None:
                live.states[budget_id] = state
                await publish(budget, state, datetime.now(UTC), with_alerts=True)
            metrics.budget_charges_counted.inc(fresh)
            metrics.budget_charges_repeated.inc(len(items) - fresh)
        # entries are per charge, each written whole: a crash between the parts loses none (the batch is
        # read again and every entry logged again)
        for number, part in enumerate(in_parts(entries)):
            ledger.put_batch(part, batch_key=part_key(batch.batch_key, number), partition=batch.partition)

    async def publish(budget: Budget, state: BudgetState, now: datetime, *, with_alerts: bool) -> None:
        """Send the budget's burn record when due, and (in the agent only) its threshold alerts.

        Alerts change bookkeeping that is saved in a table, and faust writes tables only while
        processing a message, so the timer publishes burn records alone; when it sees an alert due
        (a forecast crossing with no new charge, a period that rolled over) it sends the budget an
        empty ``budget.charges`` message, and ``track_budgets`` fires the alert within a tick.
        """
        state, record, alerts, emit = burn_step(
            budget, state, now, burn_interval_s=config.burn_interval_s, with_alerts=with_alerts)
        live.states[budget.id] = state  # before any await: a rebuild during it must not be overwritten
        if not with_alerts and budget.id not in live.ticks_pending and alerts_due(budget, state, record):
            live.ticks_pending.add(budget.id)
            await topics.budget_charges_topic.send(key=budget.id.encode(), value=b"[]")
            if live.states.get(budget.id) is not state:
                return  # rebuilt by a rebalance meanwhile (maybe handed to another worker): nothing to say
        if not emit:
            return
        acks = [await topics.budget_burn_topic.send(key=budget.id.encode(), value=to_json(record))]
        for alert in alerts:
            acks.append(await topics.alerts_topic.send(
                key=alert.fingerprint.encode(), value=alert.model_dump_json().encode()))
            metrics.alerts_sent.labels(alert.kind).inc()
        await asyncio.gather(*acks)
        mark_emitted(state, record)
        metrics.budget_spent_pct.labels(budget.id).set(record["spent_pct"])
        if with_alerts:
            doc = state.to_dict()
            alert_state[budget.id] = {name: doc[name] for name in ALERT_FIELDS}

    @ledger.on_recover
    async def rebuild_live_budgets() -> None:
        actives = app.assignor.assigned_actives() if app.assignor else set()
        partitions = {tp.partition for tp in actives if tp.topic == charges_topic_name}
        by_budget: dict[str, list[Contribution]] = {}
        for key, value in ledger.partition_items(partitions):
            by_budget.setdefault(str(key).split("|", 1)[0], []).append(tuple(value))  # type: ignore[arg-type]
        live.states.clear()
        live.events_seen.clear()
        for budget_id, items in by_budget.items():
            budget = budgets.get(budget_id)
            if budget is None:
                continue
            state, seen = rebuild_state(budget, items)
            if state is None:
                continue
            saved = alert_state.get(budget_id)
            if saved:
                restored = BudgetState.from_dict({**state.to_dict(), **saved})
                state.fired, state.closed = restored.fired, restored.closed
                for name in ALERT_FIELDS[2:]:
                    setattr(state, name, getattr(restored, name))
            live.states[budget_id] = state
            live.events_seen[budget_id] = seen
        log.info("rebuilt %d budgets from the ledger (partitions %s)", len(live.states), sorted(partitions))

    @app.timer(TICK_S, on_leader=False)
    @quiet_at_stop(app)
    async def publish_burn() -> None:
        now = datetime.now(UTC)
        await publish_live(live, lambda budget_id, state: publish(budgets[budget_id], state, now,
                                                                  with_alerts=False))

    return live
