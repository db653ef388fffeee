"""Burn rate and the end-of-period forecast, with the acceptance check on a simulated month.

Acceptance (issue 3): on a simulated month with a trend and a weekly shape, the forecast on day 3 is
within 15 % of the final actual. The generator below makes seeded hourly spend: $20/h base, +15 % a
month trend, weekends at 55 % (Saturday) and 45 % (Sunday), a daily cycle peaking at 14:00 (0.4x to
1.6x), and lognormal noise (sigma 0.25) per hour. Every month of 2025 is checked, so every weekday a
month can start on is covered. Measured (docs/budgets.md): with three months of history the error at
the end of day 3 is at most 4 %; without history at most 14 % (the first days are all weekdays for
most months, so the weekend dip is unknown).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest

from streams.core.budget_state import BudgetState, apply_charge, burn_record
from streams.core.budgets import Budget
from streams.core.forecast import burn_rate, forecast, hour_fraction, weekday_weights

WEEKDAY_FACTOR = (1.0, 1.0, 1.0, 1.0, 1.0, 0.55, 0.45)
ORIGIN = datetime(2024, 9, 1, tzinfo=UTC)
MONTHS = [(datetime(2025, m, 1, tzinfo=UTC), datetime(2025 + (m == 12), m % 12 + 1, 1, tzinfo=UTC))
          for m in range(1, 13)]


def hourly_spend(start: datetime, end: datetime, seed: int) -> Iterator[tuple[datetime, float]]:
    """Seeded hourly spend with a trend, a weekly shape, a daily cycle and noise."""
    rng = random.Random(seed)
    moment = start
    while moment < end:
        months = (moment - ORIGIN).total_seconds() / 86400 / 30
        daily_cycle = 1 + 0.6 * math.sin((moment.hour - 8) / 24 * 2 * math.pi)
        yield moment, 20 * (1 + 0.15 * months) * WEEKDAY_FACTOR[moment.weekday()] * daily_cycle * \
            rng.lognormvariate(0, 0.25)
        moment += timedelta(hours=1)


def month_forecast(month: tuple[datetime, datetime], *, history_months: int, seed: int,
                   days_in: float) -> tuple[float, dict[str, object]]:
    """Feed the history and the first ``days_in`` days through the budget state; return (error, record)."""
    start, end = month
    first = start
    for _ in range(history_months):
        first = (first - timedelta(days=1)).replace(day=1)
    budget = Budget(id="m", period="month", amount_usd=20_000)
    as_of = start + timedelta(days=days_in)
    state: BudgetState | None = None
    actual = 0.0
    for moment, usd in hourly_spend(first, end, seed):
        if moment >= start:
            actual += usd
        if moment < as_of:
            state, late = apply_charge(state, budget, usd, moment + timedelta(minutes=30))
            assert late is None
    assert state is not None
    record = burn_record(budget, state, as_of=as_of)
    record["actual"] = actual
    return float(record["forecast_usd"]) / actual - 1, record  # type: ignore[arg-type]


def test_day_3_forecast_within_15_pct_with_history() -> None:
    errors = []
    for month in MONTHS:
        error, record = month_forecast(month, history_months=3, seed=7, days_in=3)
        errors.append(error)
        assert record["forecast_low_usd"] <= record["actual"] <= record["forecast_high_usd"]  # type: ignore[operator]
    assert max(map(abs, errors)) < 0.15
    assert max(map(abs, errors)) < 0.06  # the measured figure in docs/budgets.md, with a little room


@pytest.mark.parametrize("days_in", [2.5, 3.0])
def test_day_3_forecast_within_15_pct_without_history(days_in: float) -> None:
    errors = [month_forecast(month, history_months=0, seed=seed, days_in=days_in)[0]
              for month in MONTHS for seed in (1, 2)]
    assert max(map(abs, errors)) < 0.15


def test_first_hour_forecast_with_history() -> None:
    errors = [month_forecast(month, history_months=2, seed=3, days_in=1 / 24)[0] for month in MONTHS[:6]]
    assert max(map(abs, errors)) < 0.15


def test_first_hour_without_history_has_a_wide_band_holding_the_actual() -> None:
    _, record = month_forecast(MONTHS[0], history_months=0, seed=4, days_in=1 / 24)
    assert record["forecast_low_usd"] <= record["actual"] <= record["forecast_high_usd"]  # type: ignore[operator]


def test_burn_rate_window_and_start() -> None:
    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    minute = int(now.timestamp()) // 60
    buckets = {minute: 1.0, minute - 59: 1.0, minute - 60: 100.0, minute + 1: 100.0}
    assert burn_rate(buckets, as_of=now) == pytest.approx(2.0)
    assert burn_rate(buckets, as_of=now, window_s=300) == pytest.approx(12.0)  # 1 USD in 5 min
    assert burn_rate({}, as_of=now) == 0.0
    # tracking began 10 minutes ago: 1 USD over 10 minutes, not over the hour
    assert burn_rate({minute: 1.0}, as_of=now, since=now - timedelta(minutes=10)) == pytest.approx(6.0)


def test_hour_fraction_profiles() -> None:
    assert hour_fraction([0.0] * 24, datetime(2026, 1, 1, 12, 0, tzinfo=UTC)) == 0.5
    night_and_day = [0.0] * 8 + [1.0] * 8 + [0.0] * 8
    assert hour_fraction(night_and_day, datetime(2026, 1, 1, 7, 0, tzinfo=UTC)) == 0.0
    assert hour_fraction(night_and_day, datetime(2026, 1, 1, 12, 0, tzinfo=UTC)) == 0.5
    assert hour_fraction(night_and_day, datetime(2026, 1, 1, 20, 0, tzinfo=UTC)) == 1.0


def test_weekday_weights_methods() -> None:
    monday = date(2026, 3, 2)
    days = [(monday + timedelta(days=i), 10.0 * (1.02**i) * WEEKDAY_FACTOR[i % 7]) for i in range(28)]
    weights, method = weekday_weights(days)
    assert method == "weekly_shape_trend"
    assert sum(weights) == pytest.approx(7)
    assert weights[5] / weights[0] == pytest.approx(0.55, rel=0.03)
    assert weekday_weights(days[:9])[1] == "weekly_shape"
    assert weekday_weights(days[:3])[1] == "run_rate"  # Monday to Wednesday: nothing about weekends
    assert weekday_weights(days[:3])[0] == [1.0] * 7
    assert weekday_weights(days[4:7])[1] == "weekday_run_rate"
    assert weekday_weights([])[1] == "run_rate"


def test_forecast_of_a_closed_period_is_the_spend() -> None:
    end = datetime(2026, 4, 1, tzinfo=UTC)
    result = forecast(123.0, now=end, period_start=datetime(2026, 3, 1, tzinfo=UTC), period_end=end,
                      tz="UTC", daily={}, first_full_day=None, amount=100.0)
    assert (result.value, result.low, result.high, result.exhaustion_at) == (123.0, 123.0, 123.0, None)


def test_flat_history_gives_exact_forecast_and_exhaustion() -> None:
    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
    daily = {date(2026, 2, 1) + timedelta(days=i): 24.0 for i in range(28 + 10)}  # to 10 March, flat
    daily[date(2026, 3, 10)] = 12.0  # half of today, at noon
    result = forecast(9 * 24 + 12, now=datetime(2026, 3, 10, 12, tzinfo=UTC), period_start=start,
                      period_end=end, tz="UTC", daily=daily, first_full_day=date(2026, 2, 1), amount=500.0)
    assert result.value == pytest.approx(31 * 24)
    assert result.low == pytest.approx(result.value, rel=0.1) and result.low <= result.value <= result.high
    # 500 USD at 1 USD an hour: 500 hours after the period start
    assert result.exhaustion_at == start + timedelta(hours=500)
    never = forecast(9 * 24 + 12, now=datetime(2026, 3, 10, 12, tzinfo=UTC), period_start=start,
                     period_end=end, tz="UTC", daily=daily, first_full_day=date(2026, 2, 1), amount=10_000.0)
    assert never.exhaustion_at is None


def test_a_day_running_hot_moves_the_forecast_the_same_day() -> None:
    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
    daily = {date(2026, 2, 1) + timedelta(days=i): 24.0 for i in range(37)}
    calm = forecast(9 * 24 + 12, now=datetime(2026, 3, 10, 12, tzinfo=UTC), period_start=start,
                    period_end=end, tz="UTC", daily={**daily, date(2026, 3, 10): 12.0},
                    first_full_day=date(2026, 2, 1))
    hot = forecast(9 * 24 + 120, now=datetime(2026, 3, 10, 12, tzinfo=UTC), period_start=start,
                   period_end=end, tz="UTC", daily={**daily, date(2026, 3, 10): 120.0},
                   first_full_day=date(2026, 2, 1))
    # half a day at ten times the usual pace: the rest of today runs at the blend of both paces
    assert hot.value - calm.value == pytest.approx((120 - 12) + 0.5 * 0.5 * (240 - 24))


def test_forecast_in_a_time_zone_uses_local_days() -> None:
    tz = "America/New_York"
    start, end = datetime(2026, 3, 1, 5, tzinfo=UTC), datetime(2026, 4, 1, 4, tzinfo=UTC)
    daily = {date(2026, 2, 1) + timedelta(days=i): 24.0 for i in range(28)}  # all of February, local
    result = forecast(0.0, now=start, period_start=start, period_end=end, tz=tz, daily=daily,
                      first_full_day=date(2026, 2, 1))
    assert result.value == pytest.approx(31 * 24)
