"""Burn rate and end-of-period spend forecast, useful from the first hour of a period.

The forecast models daily spend as ``level(day) * weight[weekday]`` in the budget's time zone and adds
the expected spend of the rest of the period to what is already spent:

- **weekday weights** (mean 1 over a week): from the ratio of each day to its centred 7-day mean once
  14 full days are known (of any period: the days before this one are its history); from the days
  seen when 7 to 13 are known; from the weekday/weekend split when fewer days cover both kinds;
  flat otherwise.
- **level**: a least-squares line through the last 28 deseasonalized days once 14 are known (so an
  upward trend carries on), else the mean of the last 7; before the first full day, the run rate.
- **today**: the model's day blended with today's own run rate, weighted by how much of a usual day
  (the hour-of-day profile) has passed, so a day running hot moves the forecast within hours.
- **band**: about 90 % (1.645 standard deviations) from the day-to-day scatter around the model, the
  uncertainty of the level, and a model-risk term that is larger while the weekly shape is unknown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from streams.core.budgets import local_midnight

HOUR_S = 3600.0
HISTORY_DAYS = 56  # eight weeks: two of each weekday at least, short enough to follow a changed workload
TREND_DAYS = 28
MIN_DAYS_FOR_TREND = 14
Z_90 = 1.645
PARTIAL_DAY_USABLE = 0.25  # share of a usual day's spend after which today counts while history is short
PRIOR_CV = 0.5  # day-to-day scatter assumed before three full days are known


@dataclass(frozen=True)
class Forecast:
    """End-of-period spend forecast in USD with a band, and when the amount is expected to run out.

    ``method`` names how much the model knew: ``run_rate`` (no full day yet, or one kind of day only),
    ``weekday_run_rate`` (weekday and weekend days seen), ``weekly_shape`` (7+ full days) or
    ``weekly_shape_trend`` (14+ full days: weekly shape and a linear trend).
    """

    value: float
    low: float
    high: float
    exhaustion_at: datetime | None
    method: str


def burn_rate(
    buckets: Mapping[int, float], *, as_of: datetime, window_s: float = HOUR_S, since: datetime | None = None
) -> float:
    """Return the spend rate in USD per hour over the ``window_s`` seconds up to ``as_of``.

    ``buckets`` maps a minute (epoch seconds // 60) to the USD spent in it. When tracking began less
    than a window ago (``since``), the rate is over the time since then, so the first minutes of a
    budget do not read low.

    >>> t = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    >>> minute = int(t.timestamp()) // 60
    >>> burn_rate({minute - 1: 1.0, minute - 30: 2.0, minute - 90: 50.0}, as_of=t)
    3.0
    >>> burn_rate({minute - 1: 1.0}, as_of=t, since=t - timedelta(minutes=15))
    4.0
    """
    now_min = int(as_of.timestamp()) // 60
    window_min = max(1, int(window_s // 60))
    total = sum(v for m, v in buckets.items() if now_min - window_min < m <= now_min)
    span_s = window_min * 60.0
    if since is not None:
        span_s = min(span_s, max(60.0, (as_of - since).total_seconds()))
    return total / (span_s / HOUR_S)


def hour_fraction(profile: Sequence[float] | None, local_now: datetime) -> float:
    """Return the share of a usual day's spend that falls before ``local_now``'s time of day.

    ``profile`` is spend per local hour of day (24 values); without one, time of day is the share.

    >>> hour_fraction([1.0] * 12 + [3.0] * 12, datetime(2026, 1, 1, 12, 30))
    0.28125
    >>> hour_fraction(None, datetime(2026, 1, 1, 6, 0))
    0.25
    """
    hour, minute_part = local_now.hour, (local_now.minute * 60 + local_now.second) / HOUR_S
    total = sum(profile) if profile else 0.0
    if not profile or total <= 0:
        return (hour + minute_part) / 24.0
    return (sum(profile[:hour]) + profile[hour] * minute_part) / total


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)] if last >= first else []


def _line(ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``a + b*i`` through ``ys`` at i = 0, 1, ..."""
    n = len(ys)
    mean_i, mean_y = (n - 1) / 2.0, sum(ys) / n
    var = sum((i - mean_i) ** 2 for i in range(n))
    slope = sum((i - mean_i) * (y - mean_y) for i, y in enumerate(ys)) / var if var else 0.0
    return mean_y - slope * mean_i, slope


def weekday_weights(days: Sequence[tuple[date, float]]) -> tuple[list[float], str]:
    """Return the relative spend of each weekday (Monday first, mean 1) and the method used.

    >>> week = [(date(2026, 3, 2) + timedelta(days=i), 10.0 if i % 7 < 5 else 3.0) for i in range(14)]
    >>> w, how = weekday_weights(week)
    >>> [round(x, 2) for x in w], how
    ([1.25, 1.25, 1.25, 1.25, 1.25, 0.38, 0.38], 'weekly_shape_trend')
    >>> weekday_weights(week[5:8])[1], [round(x, 2) for x in weekday_weights(week[5:8])[0]]
    ('weekday_run_rate', [1.25, 1.25, 1.25, 1.25, 1.25, 0.38, 0.38])
    """
    n = len(days)
    if n >= MIN_DAYS_FOR_TREND:
        # ratio to the centred 7-day mean: a trend cancels out, each weekday is seen at least once
        values = [v for _, v in days]
        ratios: list[list[float]] = [[] for _ in range(7)]
        for i in range(3, n - 3):
            centred = sum(values[i - 3:i + 4]) / 7.0
            if centred > 0:
                ratios[days[i][0].weekday()].append(values[i] / centred)
        if all(ratios):
            return _normalized([sum(r) / len(r) for r in ratios]), "weekly_shape_trend"
    by_weekday: list[list[float]] = [[] for _ in range(7)]
    for day, value in days:
        by_weekday[day.weekday()].append(value)
    if n >= 7 and all(by_weekday):
        return _normalized([sum(v) / len(v) for v in by_weekday]), "weekly_shape"
    weekday = [v for day, v in days if day.weekday() < 5]
    weekend = [v for day, v in days if day.weekday() >= 5]
    if weekday and weekend:
        mean_wd, mean_we = sum(weekday) / len(weekday), sum(weekend) / len(weekend)
        if mean_wd + mean_we > 0:
            return _normalized([mean_wd] * 5 + [mean_we] * 2), "weekday_run_rate"
    return [1.0] * 7, "run_rate"


def _normalized(values: list[float]) -> list[float]:
    mean = sum(values) / 7.0
    return [v / mean for v in values] if mean > 0 else [1.0] * 7


def forecast(
    spent: float,
    *,
    now: datetime,
    period_start: datetime,
    period_end: datetime,
    tz: str,
    daily: Mapping[date, float],
    first_full_day: date | None,
    hour_profile: Sequence[float] | None = None,
    amount: float | None = None,
) -> Forecast:
    """Forecast the period's total spend from ``spent`` so far and the daily history.

    ``daily`` maps local dates (in ``tz``) to spend, today's partial day included; days from
    ``first_full_day`` up to yesterday count as complete (a missing one spent nothing). ``amount``
    asks for ``exhaustion_at``: when the expected spend path reaches it this period (``None`` if it
    does not, or if it already has).

    >>> start = datetime(2026, 3, 1, tzinfo=UTC)
    >>> history = {date(2026, 2, 1) + timedelta(days=i): 100.0 for i in range(31)}
    >>> f = forecast(300.0, now=start + timedelta(days=3), period_start=start,
    ...              period_end=datetime(2026, 4, 1, tzinfo=UTC), tz="UTC", daily=history,
    ...              first_full_day=date(2026, 2, 1), amount=2500.0)
    >>> round(f.value), f.method, f.low <= f.value <= f.high, f.exhaustion_at
    (3100, 'weekly_shape_trend', True, datetime.datetime(2026, 3, 26, 0, 0, tzinfo=datetime.timezone.utc))
    """
    if now >= period_end:
        return Forecast(spent, spent, spent, None, "closed")
    zone = ZoneInfo(tz)
    local_now = now.astimezone(zone)
    today = local_now.date()
    last_day = (period_end.astimezone(zone) - timedelta(seconds=1)).date()
    first = max(first_full_day or today, today - timedelta(days=HISTORY_DAYS))
    full = [(d, max(0.0, daily.get(d, 0.0))) for d in _days(first, today - timedelta(days=1))]
    today_spent = max(0.0, daily.get(today, 0.0))
    done = min(max(hour_fraction(hour_profile, local_now), 0.0), 1.0)
    if 0 < len(full) < 7 and done >= PARTIAL_DAY_USABLE:
        # few days known: most of today, extrapolated, is worth a day (it may be the first weekday)
        full.append((today, today_spent / done))
    weights, method = weekday_weights(full)

    # deseasonalized days feed the level; a zero weight means that weekday tells nothing about it
    desea = [(d, v / weights[d.weekday()]) for d, v in full if weights[d.weekday()] > 0]
    if len(full) >= MIN_DAYS_FOR_TREND and desea:
        recent = desea[-TREND_DAYS:]
        a, b = _line([v for _, v in recent])
        origin = recent[0][0]

        def level(day: date) -> float:
            return max(0.0, a + b * (day - origin).days)

        fitted = [a + b * i for i in range(len(recent))]
        level_days = len(recent)
    elif desea:
        recent = desea[-7:]
        mean = sum(v for _, v in recent) / len(recent)

        def level(day: date) -> float:
            return mean

        fitted = [mean] * len(recent)
        level_days = len(recent)
    else:
        # no full day yet: the run rate since the period (or tracking) began, per day
        elapsed_days = max((now - period_start).total_seconds() / 86400.0, 1 / 1440)
        day_rate = today_spent / done if done > 0.02 else spent / elapsed_days
        recent, fitted, level_days = [], [], 0

        def level(day: date) -> float:
            return day_rate

        method = "run_rate"

    cv = PRIOR_CV
    if len(recent) >= 3 and sum(fitted) > 0:
        resid = [v - f for (_, v), f in zip(recent, fitted, strict=True)]
        cv = math.sqrt(sum(r * r for r in resid) / (len(resid) - 1)) / (sum(fitted) / len(fitted))

    model_today = level(today) * weights[today.weekday()]
    observed_today = today_spent / done if level_days and done > 0.02 else model_today
    # the rest of today runs at the model's pace blended with today's own, trusted as the day goes on
    rest_today = (1 - done) * ((1 - done) * model_today + done * observed_today)
    future = [(d, level(d) * weights[d.weekday()]) for d in _days(today + timedelta(days=1), last_day)]
    remaining = rest_today + sum(v for _, v in future)
    value = spent + remaining

    days_left = (1 - done) + len(future)
    mean_day = remaining / days_left if days_left > 0 else 0.0
    sd_noise = mean_day * cv * math.sqrt(days_left)
    # before the first full day the level rests on the part of a day seen so far
    sd_level = mean_day * days_left * cv / math.sqrt(level_days or max(done, 1 / 24))
    # an unseen weekly shape can move the total by its whole weekend dip
    model_risk = {"weekly_shape_trend": 0.05, "weekly_shape": 0.08, "weekday_run_rate": 0.15}.get(method, 0.3)
    sd = math.sqrt(sd_noise**2 + sd_level**2 + (model_risk * remaining) ** 2)
    low, high = spent + max(0.0, remaining - Z_90 * sd), value + Z_90 * sd

    exhaustion = None
    if amount is not None and spent < amount <= value:
        exhaustion = _exhaustion(spent, amount, now, tz, rest_today, today, future)
    return Forecast(value, low, high, exhaustion, method)


def _exhaustion(
    spent: float, amount: float, now: datetime, tz: str, rest_today: float, today: date,
    future: Sequence[tuple[date, float]],
) -> datetime:
    """Walk the expected spend path (linear within a day) to the moment it reaches ``amount``."""
    midnight = local_midnight(today + timedelta(days=1), tz)
    if spent + rest_today >= amount:
        return now + (midnight - now) * ((amount - spent) / rest_today)
    total = spent + rest_today
    for day, value in future:
        if total + value >= amount:
            start = local_midnight(day, tz)
            length = local_midnight(day + timedelta(days=1), tz) - start
            return (start + length * ((amount - total) / value)).astimezone(UTC)
        total += value
    # only rounding can leave the walk short of an amount the forecast reaches: it is the period's end
    last = future[-1][0] if future else today
    return local_midnight(last + timedelta(days=1), tz)
