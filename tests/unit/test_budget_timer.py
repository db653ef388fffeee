"""The burn timer's loop over live budgets, while a rebalance rebuilds them between its sends."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from streams.budget_agents import LiveBudgets, publish_live
from streams.core.budget_state import BudgetState, apply_charge
from streams.core.budgets import Budget

WHEN = datetime(2026, 1, 1, 9, tzinfo=UTC)


def state(budget_id: str, usd: float) -> BudgetState:
    budget = Budget(id=budget_id, period="day", amount_usd=100)
    return apply_charge(None, budget, usd, WHEN)[0]


def test_a_budget_rebuilt_away_during_a_send_is_not_published_or_brought_back() -> None:
    live = LiveBudgets(states={"a": state("a", 1.0), "b": state("b", 2.0), "c": state("c", 3.0)})
    rebuilt_c = state("c", 4.0)
    published: list[tuple[str, float]] = []

    async def publish(budget_id: str, budget_state: BudgetState) -> None:
        published.append((budget_id, budget_state.spent_usd))
        live.states[budget_id] = budget_state  # as publish does, before its sends
        await asyncio.sleep(0)
        if budget_id == "a":  # a rebalance's rebuild while "a"'s burn record is being sent
            live.states.clear()
            live.states["c"] = rebuilt_c  # "b" went to another worker; "c" stays, rebuilt

    asyncio.run(publish_live(live, publish))
    assert published == [("a", 1.0), ("c", 4.0)]
    assert live.states == {"c": rebuilt_c}


def test_every_live_budget_is_published_once_when_nothing_changes() -> None:
    live = LiveBudgets(states={"a": state("a", 1.0), "b": state("b", 2.0)})
    published: list[str] = []

    async def publish(budget_id: str, budget_state: BudgetState) -> None:
        published.append(budget_id)

    asyncio.run(publish_live(live, publish))
    assert published == ["a", "b"]
