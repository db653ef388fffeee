"""Which budgets each priced charge counts against: the step between costs.priced and budget state.

A contribution is ``[charge_id, event_id, event_time_ms, cost_usd]``; ``budget_contributions`` groups
them by budget id so each group is one message on the ``budget.charges`` topic, keyed by budget.
``rebuild_state`` replays a budget's stored contributions into its running state, which is how a
worker recovers exact totals after a crash or a rebalance.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from streams.core.allocation import Allocator
from streams.core.budget_state import BudgetState, LateCharge, apply_charge
from streams.core.budgets import Budget, BudgetsConfig, matching_budgets
from streams.core.costs import CostRecord

Contribution = tuple[str, str, int, float]


def _event_ms(record: CostRecord) -> int:
    return int(datetime.fromisoformat(record["ChargePeriodStart"]).timestamp() * 1000)


class BudgetMatcher:
    """Finds the budgets a charge counts against, cached per distinct set of dimensions."""

    def __init__(self, allocator: Allocator, config: BudgetsConfig) -> None:
        self.allocator = allocator
        self.config = config
        self._cache: dict[tuple[tuple[str, str | None], ...], tuple[str, ...]] = {}

    def budget_ids(self, record: CostRecord) -> tuple[str, ...]:
        """Return the ids of the budgets ``record`` counts against."""
        dims = self.allocator.dims(self.allocator.allocate(record), record)
        key = tuple(sorted(dims.items()))
        hit = self._cache.get(key)
        if hit is None:
            if len(self._cache) > 100_000:
                self._cache.clear()
            hit = self._cache[key] = tuple(b.id for b in matching_budgets(self.config, dims))
        return hit

    def contributions(self, records: Iterable[CostRecord]) -> dict[str, list[Contribution]]:
        """Group each record's charge under every budget it counts against."""
        out: dict[str, list[Contribution]] = {}
        for record in records:
            ids = self.budget_ids(record)
            if not ids:
                continue
            item = (record["x_ChargeId"], record["x_EventId"], _event_ms(record), record["EffectiveCost"])
            for budget_id in ids:
                out.setdefault(budget_id, []).append(item)
        return out


def ledger_key(budget_id: str, charge_id: str) -> str:
    """Return the dedup key of one charge counted against one budget.

    >>> ledger_key("team-daily", "e1:input_tokens")
    'team-daily|e1:input_tokens'
    """
    return f"{budget_id}|{charge_id}"


def count_charge(
    state: BudgetState | None,
    budget: Budget,
    contribution: Contribution,
    events_seen: set[str],
) -> tuple[BudgetState, LateCharge | None]:
    """Add one new (never counted) contribution to ``state``; an event counts once however many charges.

    >>> b = Budget(id="b", period="day", amount_usd=10)
    >>> seen: set[str] = set()
    >>> s, _ = count_charge(None, b, ("e1:in", "e1", 1767261600000, 1.5), seen)
    >>> s, _ = count_charge(s, b, ("e1:out", "e1", 1767261600000, 0.5), seen)
    >>> round(s.spent, 6), s.events_counted
    (2.0, 1)
    """
    _, event_id, event_ms, cost = contribution
    when = datetime.fromtimestamp(event_ms / 1000, UTC)
    if state is not None and when >= state.period_end:
        events_seen.clear()  # a new period counts its events afresh
    new_event = event_id not in events_seen
    events_seen.add(event_id)
    return apply_charge(state, budget, cost, when, events=1 if new_event else 0)


def rebuild_state(
    budget: Budget, contributions: Iterable[Contribution]
) -> tuple[BudgetState | None, set[str]]:
    """Replay a budget's stored contributions, in event-time order, into its running state."""
    state: BudgetState | None = None
    events_seen: set[str] = set()
    for contribution in sorted(contributions, key=lambda c: (c[2], c[0])):
        state, _ = count_charge(state, budget, contribution, events_seen)
    return state, events_seen
