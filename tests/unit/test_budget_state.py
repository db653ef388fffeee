"""The budget step: exact running totals, periods, late charges, burn records, alerts and emission."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from alerting.model import fingerprint
from streams.core.budget_state import (
    BURN_FIELDS,
    FORECAST,
    THRESHOLD,
    BudgetState,
    advance,
    apply_charge,
    burn_record,
    mark_emitted,
    should_emit,
    threshold_alerts,
)
from streams.core.budgets import Budget

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
DAILY = Budget(id="team-day", scope={"team": "search"}, period="day", amount_usd=100)


def charge(state: BudgetState | None, budget: Budget, usd: float, at: datetime) -> BudgetState:
    state, late = apply_charge(state, budget, usd, at)
    assert late is None
    return state


def test_running_total_is_exact_over_many_small_charges() -> None:
    rng = random.Random(5)
    budget = Budget(id="m", period="month", amount_usd=1e9)
    costs = [rng.uniform(0, 0.02) * rng.choice([1, 1, 1, 1000]) for _ in range(200_000)]
    state = None
    for i, usd in enumerate(costs):
        state = charge(state, budget, usd, T0 + timedelta(seconds=i))
    assert state is not None
    assert abs(state.spent - math.fsum(costs)) < 1e-9
    assert state.events_counted == 200_000
    assert burn_record(budget, state, as_of=T0 + timedelta(days=3))["spent_usd"] == state.spent


def test_events_count_events_not_charges() -> None:
    state, _ = apply_charge(None, DAILY, 0.3 + 0.7, T0, events=1)  # an event's input and output charges
    state, _ = apply_charge(state, DAILY, 2.0, T0, events=3)
    assert state.events_counted == 4 and state.spent == pytest.approx(3.0)


def test_a_later_period_rolls_over_and_keeps_history() -> None:
    state = charge(None, DAILY, 90.0, T0)
    state, alerts = threshold_alerts(DAILY, state, burn_record(DAILY, state, as_of=T0))
    assert {a.labels["threshold_pct"] for a in alerts if a.kind == THRESHOLD} == {"50", "80"}
    state = charge(state, DAILY, 5.0, T0 + timedelta(days=1))
    assert state.period_start == datetime(2026, 3, 3, tzinfo=UTC)
    assert (state.spent, state.events_counted, state.crossings, state.fired) == (5.0, 1, {}, {})
    assert sum(state.days.values()) == 95.0  # yesterday stays as the forecast's history
    record = burn_record(DAILY, state, as_of=T0 + timedelta(days=1, minutes=1))
    state, alerts = threshold_alerts(DAILY, state, record)
    resolved = [a for a in alerts if a.status == "resolved"]
    assert {(a.kind, a.labels["threshold_pct"]) for a in resolved} >= {(THRESHOLD, "50"), (THRESHOLD, "80")}
    assert all(a.resolved_at == datetime(2026, 3, 3, tzinfo=UTC) for a in resolved)
    assert all(a.started_at == T0 for a in resolved if a.kind == THRESHOLD)
    assert threshold_alerts(DAILY, state, record)[1] == []


def test_advance_rolls_a_quiet_budget_into_the_new_period() -> None:
    state = charge(None, DAILY, 60.0, T0)
    state = advance(state, DAILY, T0 + timedelta(days=2))
    assert state.period_start == datetime(2026, 3, 4, tzinfo=UTC) and state.spent == 0.0
    assert advance(state, DAILY, T0).period_start == datetime(2026, 3, 4, tzinfo=UTC)  # never backwards


def test_a_late_charge_is_returned_as_a_correction_not_dropped() -> None:
    state = charge(None, DAILY, 10.0, T0 + timedelta(days=1))
    state, late = apply_charge(state, DAILY, 4.0, T0, events=2)
    assert late is not None
    assert (late.cost_usd, late.events, late.event_time) == (4.0, 2, T0)
    assert late.period_start == datetime(2026, 3, 2, tzinfo=UTC)
    assert late.period_end == datetime(2026, 3, 3, tzinfo=UTC)
    assert state.spent == 10.0 and state.events_counted == 1
    assert json.loads(json.dumps(late.to_dict()))["period_start"] == "2026-03-02T00:00:00Z"


def test_periods_follow_the_budget_time_zone() -> None:
    berlin = Budget(id="b", period="month", timezone="Europe/Berlin", amount_usd=10)
    state = charge(None, berlin, 1.0, datetime(2026, 3, 31, 22, 30, tzinfo=UTC))  # 00:30 on 1 April there
    assert state.period_start == datetime(2026, 3, 31, 22, 0, tzinfo=UTC)
    assert list(state.days) == [datetime(2026, 4, 1, tzinfo=UTC).date()]


def test_state_round_trips_through_json() -> None:
    state = None
    for i in range(500):
        state = charge(state, DAILY, 0.25, T0 - timedelta(days=10) + timedelta(minutes=37 * i))
    assert state is not None
    state, _ = threshold_alerts(DAILY, state, burn_record(DAILY, state, as_of=state.latest_event_at))  # type: ignore[arg-type]
    state = mark_emitted(state, burn_record(DAILY, state, as_of=state.latest_event_at))  # type: ignore[arg-type]
    doc = json.loads(json.dumps(state.to_dict()))
    assert BudgetState.from_dict(doc) == state
    assert len(state.minutes) <= 61 and len(state.hours) <= 7 * 24 + 1


def test_burn_record_fields_and_values() -> None:
    state = charge(None, DAILY, 30.0, T0)
    state = charge(state, DAILY, 30.0, T0 + timedelta(minutes=30))
    record = burn_record(DAILY, state, as_of=T0 + timedelta(minutes=30))
    assert tuple(record) == BURN_FIELDS
    assert record["scope"] == {"team": "search"} and record["period"] == "day"
    assert (record["period_start"], record["period_end"]) == ("2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z")
    assert (record["spent_usd"], record["spent_pct"], record["events_counted"]) == (60.0, 60.0, 2)
    assert record["burn_rate_usd_per_hour"] == pytest.approx(120.0)  # 60 USD in the 30 minutes tracked
    assert record["forecast_low_usd"] <= record["forecast_usd"] <= record["forecast_high_usd"]
    assert record["status"] in ("warning", "critical")  # on pace for far more than 100 USD today
    assert record["exhaustion_at"] is not None and record["as_of"] == "2026-03-02T09:30:00Z"
    json.dumps(record)


def test_exceeded_status_and_exhaustion_time_is_the_crossing() -> None:
    state = charge(None, DAILY, 60.0, T0)
    state = charge(state, DAILY, 50.0, T0 + timedelta(hours=2))
    record = burn_record(DAILY, state, as_of=T0 + timedelta(hours=3))
    assert record["status"] == "exceeded" and record["exhaustion_at"] == "2026-03-02T11:00:00Z"


def test_threshold_alerts_fire_once_with_crossing_time_severity_and_impact() -> None:
    state = charge(None, DAILY, 45.0, T0)
    state = charge(state, DAILY, 10.0, T0 + timedelta(hours=1))  # crosses 50
    state = charge(state, DAILY, 50.0, T0 + timedelta(hours=2))  # crosses 80 and 100
    as_of = T0 + timedelta(hours=2, seconds=5)
    state, alerts = threshold_alerts(DAILY, state, burn_record(DAILY, state, as_of=as_of))
    actual = [a for a in alerts if a.kind == THRESHOLD]
    assert [(a.labels["threshold_pct"], a.severity) for a in actual] == [
        ("50", "info"), ("80", "warning"), ("100", "critical")]
    assert [a.started_at for a in actual] == [T0 + timedelta(hours=1), T0 + timedelta(hours=2),
                                              T0 + timedelta(hours=2)]
    assert all(a.detected_at == as_of and a.entity == {"budget": "team-day"} for a in actual)
    assert all(a.fingerprint == fingerprint(THRESHOLD, {"budget": "team-day"}) for a in actual)
    assert all(a.cost_impact_usd == pytest.approx(5.0) for a in actual)  # the overrun when detected
    assert actual[-1].evidence["spent_usd"] == pytest.approx(105.0)
    assert actual[-1].labels["team"] == "search"
    forecast = [a for a in alerts if a.kind == FORECAST]
    assert len(forecast) == 1 and forecast[0].severity == "warning"
    state = charge(state, DAILY, 1.0, T0 + timedelta(hours=3))
    assert threshold_alerts(DAILY, state, burn_record(DAILY, state, as_of=T0 + timedelta(hours=3)))[1] == []


def test_raising_the_amount_resolves_or_restates() -> None:
    state = charge(None, DAILY, 85.0, T0)
    state, _ = threshold_alerts(DAILY, state, burn_record(DAILY, state, as_of=T0))
    raised = DAILY.model_copy(update={"amount_usd": 150.0})  # 85 is 57 %: 80 no longer holds, 50 does
    record = burn_record(raised, state, as_of=T0 + timedelta(minutes=1))
    state, alerts = threshold_alerts(raised, state, record)
    restated = [a for a in alerts if a.kind == THRESHOLD]
    assert [(a.status, a.labels["threshold_pct"]) for a in restated] == [("firing", "50")]
    much_more = DAILY.model_copy(update={"amount_usd": 1000.0})
    state, alerts = threshold_alerts(much_more, state, burn_record(much_more, state,
                                                                   as_of=T0 + timedelta(minutes=2)))
    assert [(a.kind, a.status) for a in alerts] == [(THRESHOLD, "resolved"), (FORECAST, "resolved")]
    # crossing again after the raise fires again: the budget changed
    state = charge(state, much_more, 500.0, T0 + timedelta(minutes=3))
    state, alerts = threshold_alerts(much_more, state, burn_record(much_more, state,
                                                                   as_of=T0 + timedelta(minutes=3)))
    assert ("firing", "50") in [(a.status, a.labels["threshold_pct"]) for a in alerts if a.kind == THRESHOLD]


def test_a_forecast_dipping_back_does_not_resolve_its_alert() -> None:
    month = Budget(id="m", period="month", amount_usd=1000)
    state = charge(None, month, 100.0, T0)
    state, alerts = threshold_alerts(month, state, burn_record(month, state, as_of=T0 + timedelta(minutes=1)))
    assert [a.kind for a in alerts] == [FORECAST]
    record = burn_record(month, state, as_of=T0 + timedelta(days=5))  # quiet since: the forecast drops
    assert record["forecast_pct"] < 100
    assert threshold_alerts(month, state, record)[1] == []


def test_should_emit_on_change_and_at_most_every_interval() -> None:
    state = charge(None, DAILY, 1.0, T0)
    first = burn_record(DAILY, state, as_of=T0)
    assert should_emit(state, first, burn_interval_s=10)
    state = mark_emitted(state, first)
    assert not should_emit(state, burn_record(DAILY, state, as_of=T0 + timedelta(seconds=30)),
                           burn_interval_s=10)
    state = charge(state, DAILY, 1.0, T0 + timedelta(seconds=2))
    assert not should_emit(state, burn_record(DAILY, state, as_of=T0 + timedelta(seconds=5)),
                           burn_interval_s=10)
    assert should_emit(state, burn_record(DAILY, state, as_of=T0 + timedelta(seconds=5)), burn_interval_s=10,
                       force=True)
    assert should_emit(state, burn_record(DAILY, state, as_of=T0 + timedelta(seconds=10)), burn_interval_s=10)
    state = charge(state, DAILY, 90.0, T0 + timedelta(seconds=3))  # status changes: at once
    assert should_emit(state, burn_record(DAILY, state, as_of=T0 + timedelta(seconds=4)), burn_interval_s=10)
