"""Budget files, calendar periods in time zones, scope matching and ``burnwatch budgets validate``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from streams.commands.budgets import register
from streams.core.budgets import (
    PERIODS,
    Budget,
    BudgetError,
    budget_matches,
    load_budgets,
    matching_budgets,
    parse_budgets,
    period_bounds,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "streams/data/budgets.example.yaml"
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "Pacific/Apia"]


def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def main() -> None:
        """Root."""

    return app


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "budgets.yaml"
    path.write_text(text)
    return path


def test_example_file_is_valid_and_covers_every_period_and_scope_kind() -> None:
    config = load_budgets(EXAMPLE)
    assert {b.period for b in config.budgets} == set(PERIODS)
    keys = {k for b in config.budgets for k in b.scope}
    assert {"team", "project", "env", "business_unit", "model", "app", "user", "session"} <= keys
    assert any(b.scope == {} for b in config.budgets)
    assert config.burn_interval_s == 10


def test_defaults() -> None:
    config = parse_budgets({"budgets": [{"id": "a", "period": "month", "amount_usd": 10}]}, "f.yaml")
    budget = config.budgets[0]
    assert (budget.timezone, budget.thresholds_pct) == ("UTC", [50, 80, 100])
    assert budget.forecast_thresholds_pct == [100]
    assert budget.scope == {} and config.burn_interval_s == 10


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"amount_usd": -5}, "f.yaml: budgets[1].amount_usd: must be > 0 (got -5)"),
        ({"amount_usd": 0}, "budgets[1].amount_usd"),
        ({"timezone": "Mars/Olympus"}, "budgets[1].timezone: is not a known IANA time zone"),
        ({"period": "fortnight"}, "budgets[1].period"),
        ({"thresholds_pct": [50, 50]}, "budgets[1].thresholds_pct: must not repeat a threshold"),
        ({"thresholds_pct": [0]}, "budgets[1].thresholds_pct[0]"),
        ({"scope": {"teem": "search"}}, "budgets[1].scope.teem: is not an allocation dimension"),
        ({"id": "a"}, "budgets[1].id: repeats budgets[0].id (got 'a')"),
        ({"id": "has space"}, "budgets[1].id"),
        ({"colour": "red"}, "budgets[1].colour: is not a known key"),
        ({"warning_pct": 100}, "budgets[1].warning_pct"),
    ],
)
def test_errors_name_file_key_path_and_value(entry: dict[str, object], expected: str) -> None:
    good = {"id": "a", "period": "month", "amount_usd": 10}
    doc = {"budgets": [good, {"id": "b", "period": "week", "amount_usd": 5, **entry}]}
    with pytest.raises(BudgetError) as error:
        parse_budgets(doc, "f.yaml")
    assert expected in str(error.value)
    assert str(error.value).startswith("f.yaml: ")


def test_extra_dimensions_admit_custom_scope_keys() -> None:
    doc = {"extra_dimensions": ["division"], "budgets": [
        {"id": "a", "period": "day", "amount_usd": 1, "scope": {"division": "emea"}}]}
    assert parse_budgets(doc, "f").budgets[0].scope == {"division": "emea"}


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(BudgetError, match="cannot read the file"):
        load_budgets(tmp_path / "missing.yaml")
    with pytest.raises(BudgetError, match="not valid YAML"):
        load_budgets(write(tmp_path, "budgets: [\n"))
    with pytest.raises(BudgetError, match=r"\(top level\): must be a mapping"):
        load_budgets(write(tmp_path, "- 1\n"))


@pytest.mark.parametrize(
    ("period", "tz", "at", "start", "end"),
    [
        ("day", "UTC", "2026-03-05T12:00:00Z", "2026-03-05T00:00:00Z", "2026-03-06T00:00:00Z"),
        # New York springs forward on 8 March 2026: a 23-hour local day
        ("day", "America/New_York", "2026-03-08T12:00:00Z", "2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z"),
        ("week", "UTC", "2026-03-08T23:59:59Z", "2026-03-02T00:00:00Z", "2026-03-09T00:00:00Z"),  # a Sunday
        ("week", "UTC", "2026-03-09T00:00:00Z", "2026-03-09T00:00:00Z", "2026-03-16T00:00:00Z"),  # Monday
        ("month", "Europe/Berlin", "2026-03-31T22:30:00Z", "2026-03-31T22:00:00Z", "2026-04-30T22:00:00Z"),
        ("month", "UTC", "2026-12-31T23:00:00Z", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"),
        ("quarter", "UTC", "2026-05-15T00:00:00Z", "2026-04-01T00:00:00Z", "2026-07-01T00:00:00Z"),
        ("quarter", "Asia/Kolkata", "2026-12-31T19:00:00Z", "2026-12-31T18:30:00Z", "2027-03-31T18:30:00Z"),
    ],
)
def test_period_bounds(period: str, tz: str, at: str, start: str, end: str) -> None:
    got = period_bounds(period, tz, datetime.fromisoformat(at))  # type: ignore[arg-type]
    assert got == (datetime.fromisoformat(start), datetime.fromisoformat(end))
    assert all(t.tzinfo is UTC for t in got)


@given(
    period=st.sampled_from(PERIODS),
    tz=st.sampled_from(ZONES),
    at=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1),  # noqa: DTZ001 - bounds
                    timezones=st.just(UTC)),
)
def test_periods_tile_time(period: str, tz: str, at: datetime) -> None:
    start, end = period_bounds(period, tz, at)  # type: ignore[arg-type]
    assert start <= at < end
    assert period_bounds(period, tz, start) == (start, end)  # type: ignore[arg-type]
    assert period_bounds(period, tz, end)[0] == end  # type: ignore[arg-type]
    assert period_bounds(period, tz, start - timedelta(microseconds=1))[1] == start  # type: ignore[arg-type]


def test_period_bounds_rejects_naive_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        period_bounds("day", "UTC", datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test


def test_budget_matches_on_every_scope_key() -> None:
    dims = {"team": "search", "project": "x", "env": "prod", "model": "gpt-4o", "app": "chat", "user": "u1",
            "session": "s1", "business_unit": "retail"}

    def budget(scope: dict[str, str]) -> Budget:
        return Budget(id="b", scope=scope, period="day", amount_usd=1)

    assert budget_matches(budget({}), dims)
    assert budget_matches(budget({"team": "search"}), dims)
    assert budget_matches(budget({"project": "x", "env": "prod"}), dims)
    assert not budget_matches(budget({"project": "x", "env": "dev"}), dims)
    assert not budget_matches(budget({"session": "s2"}), dims)
    assert not budget_matches(budget({"cost_center": "cc1"}), dims)  # the charge lacks the key
    assert not budget_matches(budget({"team": "search"}), {"team": None})
    config = load_budgets(EXAMPLE)
    ids = [b.id for b in matching_budgets(config, {**dims, "user": "u1", "session": "s1"})]
    assert ids == ["search-monthly", "retail-quarterly", "gpt-4o-daily", "chat-app-daily",
                   "chat-user-u1-daily", "session-s1", "org-monthly"]


def test_cli_validate_good_file() -> None:
    result = CliRunner().invoke(cli(), ["budgets", "validate", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "8 budgets" in result.output and "valid" in result.output


def test_cli_validate_json() -> None:
    result = CliRunner().invoke(cli(), ["budgets", "validate", str(EXAMPLE), "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["budgets"][0]["id"] == "search-monthly"
    assert doc["budgets"][0]["thresholds_pct"] == [50, 80, 100]


def test_cli_validate_bad_file_lists_every_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "budgets:\n  - {id: a, period: month, amount_usd: -1}\n"
                           "  - {id: b, period: month, amount_usd: 5, timezone: Nowhere/City}\n")
    result = CliRunner().invoke(cli(), ["budgets", "validate", str(path)])
    assert result.exit_code == 1
    assert f"{path}: budgets[0].amount_usd: must be > 0 (got -1)" in result.output
    assert "budgets[1].timezone" in result.output
