"""Replay's budget and spend stage: the stream's budget and spend-table code over replayed costs.

Writes ``burn.jsonl`` (the records ``budget.burn`` would carry, with ``as_of`` in event time),
budget alerts appended to ``alerts.jsonl``, and ``spend.jsonl`` (every spend window and correction,
in the ``spend.windows`` record format, one partition). ``burnwatch spend --file`` reads the latter.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO

from streams.core.allocation import Allocator
from streams.core.budget_charges import BudgetMatcher, count_charge
from streams.core.budget_state import BudgetState, burn_step, mark_emitted
from streams.core.budgets import BudgetsConfig
from streams.core.costs import CostRecord
from streams.core.spend import SpendTracker, event_seconds, window_record


class ReplayBudgets:
    """Feed priced records with ``feed``; files are complete once the context exits."""

    def __init__(
        self, out_dir: Path, allocator: Allocator, budgets: BudgetsConfig | None, *, lateness_s: int
    ) -> None:
        self.out_dir = out_dir
        self.budgets = budgets
        self.by_id = budgets.by_id() if budgets else {}
        self.matcher = BudgetMatcher(allocator, budgets) if budgets else None
        self.spend = SpendTracker(allocator, allocator.config.shared_costs, lateness_s=lateness_s)
        self.states: dict[str, BudgetState] = {}
        self.events_seen: dict[str, set[str]] = {}
        self.latest_s = 0
        self.burn_records = 0
        self.alerts = 0
        self.late_charges = 0
        self._burn: IO[str] | None = None
        self._alerts: list[str] = []

    def __enter__(self) -> ReplayBudgets:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._burn = open(self.out_dir / "burn.jsonl", "w")  # noqa: SIM115 - closed in __exit__
        return self

    def feed(self, records: list[CostRecord]) -> None:
        """Count one chunk of priced records into the spend windows and the budgets."""
        self.spend.add(records)
        for record in records:
            self.latest_s = max(self.latest_s, event_seconds(record))
        if self.matcher is None:
            return
        touched = set()
        for budget_id, items in self.matcher.contributions(records).items():
            budget = self.by_id[budget_id]
            state = self.states.get(budget_id)
            seen = self.events_seen.setdefault(budget_id, set())
            for item in items:
                state, late = count_charge(state, budget, item, seen)
                self.late_charges += late is not None
            if state is not None:
                self.states[budget_id] = state
                touched.add(budget_id)
        now = datetime.fromtimestamp(self.latest_s, UTC)
        for budget_id in sorted(touched):
            self._publish(budget_id, now, force=False)

    def _publish(self, budget_id: str, now: datetime, *, force: bool) -> None:
        assert self.budgets is not None and self._burn is not None  # noqa: S101 - set by feed/enter
        budget = self.by_id[budget_id]
        state, record, alerts, emit = burn_step(
            budget, self.states[budget_id], now, burn_interval_s=self.budgets.burn_interval_s,
            force=force)
        self.states[budget_id] = state
        if not emit:
            return
        self._burn.write(json.dumps(record) + "\n")
        self.burn_records += 1
        self._alerts.extend(alert.model_dump_json() for alert in alerts)
        self.alerts += len(alerts)
        mark_emitted(state, record)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        now = datetime.fromtimestamp(self.latest_s, UTC)
        try:
            if kind is None:
                for budget_id in sorted(self.states):
                    self._publish(budget_id, now, force=True)  # the final state of every budget
                self._write_spend(now)
                if self._alerts:
                    with open(self.out_dir / "alerts.jsonl", "a") as out:
                        out.writelines(line + "\n" for line in self._alerts)
        finally:
            if self._burn is not None:
                self._burn.close()

    def _write_spend(self, now: datetime) -> None:
        self.spend.close_due()
        with open(self.out_dir / "spend.jsonl", "w") as out:
            for key in sorted(self.spend.windows):
                record = window_record(key, self.spend.value(key), partition=0, as_of=now)
                out.write(json.dumps(record) + "\n")
