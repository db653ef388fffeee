"""Replay writes burn.jsonl, budget alerts and spend.jsonl with the stream's budget and spend code."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.core.allocation import Allocator, load_allocation
from streams.core.simulation import Simulation, SimulationConfig
from streams.core.spend_report import spend_rows

BUDGETS = """
burn_interval_s: 60
budgets:
  - id: everything-daily
    scope: {}
    period: day
    amount_usd: 50
  - id: gpt-4o-monthly
    scope: {model: gpt-4o}
    period: month
    amount_usd: 100000
"""
runner = CliRunner()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("replay")
    start = datetime(2026, 3, 2, 22, 30, tzinfo=UTC)
    config = SimulationConfig(start=start, duration_s=3 * 3600, seed=4, nodes=1, rate=0.5)
    events = Simulation(config).events()
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e, default=str) + "\n" for e in events))
    (tmp_path / "budgets.yaml").write_text(BUDGETS)
    out = tmp_path / "out"
    result = runner.invoke(app, ["replay", str(tmp_path / "events.jsonl"), "--out", str(out),
                                 "--budgets", str(tmp_path / "budgets.yaml")])
    assert result.exit_code == 0, result.output
    return out


def test_replay_writes_exact_burn_records_alerts_and_spend_tables(replayed: Path) -> None:
    out = replayed
    costs = read_jsonl(out / "costs.jsonl")
    burn = read_jsonl(out / "burn.jsonl")
    latest = {}
    for record in burn:
        latest[record["budget_id"]] = record
    # the run crosses midnight: the daily budget's last period is 2026-03-03
    day2 = [c for c in costs if c["ChargePeriodStart"].startswith("2026-03-03")]
    assert abs(latest["everything-daily"]["spent_usd"] - math.fsum(c["EffectiveCost"] for c in day2)) < 1e-6
    assert latest["everything-daily"]["events_counted"] == len({c["x_EventId"] for c in day2})
    gpt = [c for c in costs if c["x_Model"] == "gpt-4o"]
    assert abs(latest["gpt-4o-monthly"]["spent_usd"] - math.fsum(c["EffectiveCost"] for c in gpt)) < 1e-6
    assert all(r["as_of"] <= "2026-03-03T01:31" for r in burn)  # event time, not the wall clock

    alerts = [a for a in read_jsonl(out / "alerts.jsonl") if a["kind"].startswith("budget_")]
    firing = [(a["fingerprint"], a["labels"]["threshold_pct"], a["evidence"]["period_start"])
              for a in alerts if a["status"] == "firing"]
    assert len(firing) == len(set(firing)), "an alert was raised twice"
    assert any(a["kind"] == "budget_threshold" for a in alerts)

    spend = read_jsonl(out / "spend.jsonl")
    total = math.fsum(c["EffectiveCost"] for c in costs)
    by_total = spend_rows(spend, by="total", period="day")
    assert abs(math.fsum(r["usd"] for r in by_total) - total) < 1e-6
    by_team = spend_rows(spend, by="team", period="day")
    assert abs(math.fsum(r["usd"] for r in by_team) - total) < 1e-6
    allocator = Allocator(load_allocation())
    unallocated = math.fsum(c["EffectiveCost"] for c in costs if allocator.allocate(c).missing_required)
    assert abs(math.fsum(r["unallocated_usd"] for r in by_total) - unallocated) < 1e-6


def test_spend_command_reads_a_replay_file(replayed: Path) -> None:
    out = replayed
    result = runner.invoke(app, ["spend", "--file", str(out / "spend.jsonl"), "--by", "model", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    costs = read_jsonl(out / "costs.jsonl")
    assert {r["value"] for r in rows} == {c["x_Model"] for c in costs if c["x_Model"]}
    text = runner.invoke(app, ["spend", "--file", str(out / "spend.jsonl"), "--by", "team", "--units"])
    assert text.exit_code == 0 and "USD/1K tokens" in text.output
