"""Budgets on the real broker: exact totals on budget.burn, once per charge, across a SIGKILL."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from streams.core.simulation import Simulation, SimulationConfig
from streams.names import ALERTS, BUDGET_BURN, COSTS_PRICED
from tests.integration.conftest import Stack

BUDGETS = """
burn_interval_s: 1
budgets:
  - id: everything-monthly
    scope: {}
    period: month
    amount_usd: 100000000
  - id: gpt-4o-monthly
    scope: {model: gpt-4o}
    period: month
    amount_usd: 100000000
  - id: tiny-daily
    scope: {}
    period: day
    amount_usd: 0.01
"""


def simulated_events(tmp: Path, seed: int = 11, name: str = "events.jsonl") -> tuple[Path, set[str]]:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=12)
    if start.date() != (start + timedelta(minutes=11)).date():  # keep one day period for tiny-daily
        start = start.replace(hour=0, minute=1)
    config = SimulationConfig(start=start, duration_s=600, nodes=2, rate=3, seed=seed)
    events = list(Simulation(config).events())
    path = tmp / name
    path.write_text("".join(json.dumps(e, default=str) + "\n" for e in events))
    return path, {e["event_id"] for e in events}


def latest_burn(stack: Stack, until: Any, timeout: float = 90) -> dict[str, dict[str, Any]]:
    """Read budget.burn from the start; return the latest record per budget once ``until(latest)``."""
    latest: dict[str, dict[str, Any]] = {}
    read = [0]

    def done(records: list[dict[str, Any]]) -> bool:
        for record in records[read[0]:]:
            latest[record["budget_id"]] = record
        read[0] = len(records)
        return bool(until(latest))

    stack.consume(BUDGET_BURN, until=done, timeout=timeout)
    return latest


def expected_totals(records: list[dict[str, Any]]) -> dict[str, tuple[float, int]]:
    unique = {r["x_ChargeId"]: r for r in records}.values()
    everything = (sum(r["EffectiveCost"] for r in unique), len({r["x_EventId"] for r in unique}))
    gpt = [r for r in unique if r["x_Model"] == "gpt-4o"]
    return {
        "everything-monthly": everything,
        "tiny-daily": everything,
        "gpt-4o-monthly": (sum(r["EffectiveCost"] for r in gpt), len({r["x_EventId"] for r in gpt})),
    }


def matches(latest: dict[str, dict[str, Any]], expected: dict[str, tuple[float, int]]) -> bool:
    return all(
        budget in latest
        and abs(latest[budget]["spent_usd"] - usd) < 1e-6
        and latest[budget]["events_counted"] == events
        for budget, (usd, events) in expected.items()
    )


def test_budget_totals_are_exact_and_survive_sigkill(stack_factory: Any, tmp_path: Path) -> None:
    budgets_file = tmp_path / "budgets.yaml"
    budgets_file.write_text(BUDGETS)
    stack = stack_factory(budgets_path=budgets_file)
    events_file, event_ids = simulated_events(tmp_path)
    stack.start_worker("w1")
    assert stack.cli("ingest", str(events_file)).returncode == 0

    records = stack.consume(COSTS_PRICED, until=lambda rs: {r["x_EventId"] for r in rs} >= event_ids)
    expected = expected_totals(records)
    assert expected["gpt-4o-monthly"][0] > 0
    latest = latest_burn(stack, until=lambda got: matches(got, expected))
    # with the worker's log: a CI run once saw the totals stop at 10 events of 803 here, on a loaded machine
    assert matches(latest, expected), (
        {b: (r["spent_usd"], r["events_counted"]) for b, r in latest.items()}, stack.log("w1")[-6000:])
    assert latest["tiny-daily"]["status"] == "exceeded"
    listed = stack.cli("budgets", "--json", "--timeout", "3")
    assert listed.returncode == 0, listed.stderr.decode()
    shown = {r["budget_id"]: r for r in json.loads(listed.stdout)}
    assert matches(shown, expected)

    def tiny_thresholds(alerts: list[dict[str, Any]]) -> set[str]:
        return {a["labels"]["threshold_pct"] for a in alerts
                if a["entity"] == {"budget": "tiny-daily"} and a["kind"] == "budget_threshold"}

    alerts = stack.consume(ALERTS, until=lambda rs: tiny_thresholds(rs) >= {"50", "80", "100"})
    assert tiny_thresholds(alerts) >= {"50", "80", "100"}

    # SIGKILL, restart on the same state, and deliver every event again: totals do not move.
    stack.kill_worker("w1")
    stack.start_worker("w1")
    assert stack.cli("ingest", str(events_file)).returncode == 0
    time.sleep(5)
    after = latest_burn(stack, until=lambda got: False, timeout=15)
    assert matches(after, expected), {b: (r["spent_usd"], r["events_counted"]) for b, r in after.items()}

    # New events after the restart land on the state rebuilt from the ledger: old plus new, exactly.
    more_file, more_ids = simulated_events(tmp_path, seed=12, name="more.jsonl")
    assert stack.cli("ingest", str(more_file)).returncode == 0
    everything = event_ids | more_ids
    records = stack.consume(COSTS_PRICED, until=lambda rs: {r["x_EventId"] for r in rs} >= everything)
    expected = expected_totals(records)
    after = latest_burn(stack, until=lambda got: matches(got, expected))
    assert matches(after, expected), {b: (r["spent_usd"], r["events_counted"]) for b, r in after.items()}
    again = stack.consume(ALERTS, until=lambda rs: False, timeout=5)
    transitions = [(a["fingerprint"], a["labels"].get("threshold_pct"), a["status"]) for a in again]
    assert len(transitions) == len(set(transitions)), "an alert was sent twice across the restart"
