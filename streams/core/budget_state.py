"""One budget's running state and the pure steps over it: charge, burn record, threshold alerts.

The budget agent keeps one ``BudgetState`` per budget and calls, per priced event that the budget
covers, ``apply_charge``; on its burn tick, ``advance`` (period roll-over without new spend), then
``burn_record``, ``threshold_alerts`` and ``should_emit`` / ``mark_emitted``. The state round-trips
through ``to_dict`` / ``from_dict`` (plain JSON, never pickle), so a table changelog can carry it.

Steps update the state they are given and return it (``(state, input) -> (state, output)``): copying
three small dicts per charge would cost more than the pricing of the charge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, NamedTuple
from zoneinfo import ZoneInfo

from alerting.model import Alert, Severity
from streams.core.budgets import Budget, period_bounds
from streams.core.costs import iso_utc
from streams.core.forecast import HISTORY_DAYS, burn_rate, forecast

BudgetStatus = Literal["ok", "warning", "critical", "exceeded"]
STATUS_ORDER: tuple[BudgetStatus, ...] = ("ok", "warning", "critical", "exceeded")
THRESHOLD = "budget_threshold"
FORECAST = "budget_forecast"
BURN_WINDOW_S = 3600.0
HOUR_MEMORY = 7 * 24  # a week of hours: the hour-of-day profile of a usual day
BURN_FIELDS = (
    "budget_id", "scope", "period", "period_start", "period_end", "amount_usd", "spent_usd", "spent_pct",
    "burn_rate_usd_per_hour", "forecast_usd", "forecast_pct", "forecast_low_usd", "forecast_high_usd",
    "exhaustion_at", "status", "events_counted", "as_of",
)


@dataclass
class BudgetState:
    """The running state of one budget in its current period.

    ``minutes`` (minute -> USD, the burn window), ``hours`` (hour -> USD, one week) and ``days``
    (local date -> USD, eight weeks) are bounded and span periods: earlier periods are the forecast's
    history. ``fired`` holds, per alert kind, the thresholds alerted this period; ``closed`` the ones
    of a period that rolled over, until ``threshold_alerts`` resolves them.
    """

    budget_id: str
    period_start: datetime
    period_end: datetime
    spent_usd: float = 0.0
    spent_err: float = 0.0  # Neumaier compensation: 200,000 small additions stay exact to 1e-9
    events_counted: int = 0
    minutes: dict[int, float] = field(default_factory=dict)
    hours: dict[int, float] = field(default_factory=dict)
    days: dict[date, float] = field(default_factory=dict)
    tracking_since: datetime | None = None
    first_full_day: date | None = None
    latest_event_at: datetime | None = None
    crossings: dict[float, datetime] = field(default_factory=dict)
    exhausted_at: datetime | None = None
    fired: dict[str, dict[float, dict[str, Any]]] = field(default_factory=dict)
    closed: list[dict[str, Any]] = field(default_factory=list)
    last_emitted_at: datetime | None = None
    last_emitted_status: str | None = None
    last_emitted_spent: float | None = None
    last_emitted_events: int | None = None
    last_emitted_period: datetime | None = None

    @property
    def spent(self) -> float:
        """Spend in the current period, USD (compensated sum)."""
        return self.spent_usd + self.spent_err

    def to_dict(self) -> dict[str, Any]:
        """Return the state as JSON-ready values."""
        return {
            "budget_id": self.budget_id,
            "period_start": iso_utc(self.period_start),
            "period_end": iso_utc(self.period_end),
            "spent_usd": self.spent_usd,
            "spent_err": self.spent_err,
            "events_counted": self.events_counted,
            "minutes": {str(k): v for k, v in self.minutes.items()},
            "hours": {str(k): v for k, v in self.hours.items()},
            "days": {k.isoformat(): v for k, v in self.days.items()},
            "tracking_since": _iso(self.tracking_since),
            "first_full_day": self.first_full_day.isoformat() if self.first_full_day else None,
            "latest_event_at": _iso(self.latest_event_at),
            "crossings": {repr(k): iso_utc(v) for k, v in self.crossings.items()},
            "exhausted_at": _iso(self.exhausted_at),
            "fired": {kind: {repr(t): info for t, info in by_t.items()} for kind, by_t in self.fired.items()},
            "closed": list(self.closed),
            "last_emitted_at": _iso(self.last_emitted_at),
            "last_emitted_status": self.last_emitted_status,
            "last_emitted_spent": self.last_emitted_spent,
            "last_emitted_events": self.last_emitted_events,
            "last_emitted_period": _iso(self.last_emitted_period),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> BudgetState:
        """Rebuild a state from ``to_dict`` output.

        >>> s = new_state(Budget(id="b", period="day", amount_usd=1), datetime(2026, 1, 1, tzinfo=UTC))
        >>> s, _ = apply_charge(s, Budget(id="b", period="day", amount_usd=1), 0.6,
        ...                     datetime(2026, 1, 1, 5, tzinfo=UTC))
        >>> BudgetState.from_dict(s.to_dict()) == s
        True
        """
        return cls(
            budget_id=doc["budget_id"],
            period_start=_time(doc["period_start"]),
            period_end=_time(doc["period_end"]),
            spent_usd=float(doc["spent_usd"]),
            spent_err=float(doc.get("spent_err", 0.0)),
            events_counted=int(doc["events_counted"]),
            minutes={int(k): float(v) for k, v in doc.get("minutes", {}).items()},
            hours={int(k): float(v) for k, v in doc.get("hours", {}).items()},
            days={date.fromisoformat(k): float(v) for k, v in doc.get("days", {}).items()},
            tracking_since=_opt_time(doc.get("tracking_since")),
            first_full_day=date.fromisoformat(doc["first_full_day"]) if doc.get("first_full_day") else None,
            latest_event_at=_opt_time(doc.get("latest_event_at")),
            crossings={float(k): _time(v) for k, v in doc.get("crossings", {}).items()},
            exhausted_at=_opt_time(doc.get("exhausted_at")),
            fired={kind: {float(t): dict(info) for t, info in by_t.items()}
                   for kind, by_t in doc.get("fired", {}).items()},
            closed=[dict(c) for c in doc.get("closed", [])],
            last_emitted_at=_opt_time(doc.get("last_emitted_at")),
            last_emitted_status=doc.get("last_emitted_status"),
            last_emitted_spent=doc.get("last_emitted_spent"),
            last_emitted_events=doc.get("last_emitted_events"),
            last_emitted_period=_opt_time(doc.get("last_emitted_period")),
        )


@dataclass(frozen=True)
class LateCharge:
    """Spend whose event time falls in a period before the budget's current one.

    The current period's totals do not change; the agent reports the correction (the closed period's
    spend grows by ``cost_usd``) instead of dropping it.
    """

    budget_id: str
    cost_usd: float
    events: int
    event_time: datetime
    period_start: datetime
    period_end: datetime

    def to_dict(self) -> dict[str, Any]:
        """Return the correction as JSON-ready values."""
        return {"budget_id": self.budget_id, "cost_usd": self.cost_usd, "events": self.events,
                "event_time": iso_utc(self.event_time), "period_start": iso_utc(self.period_start),
                "period_end": iso_utc(self.period_end)}


def _iso(moment: datetime | None) -> str | None:
    return iso_utc(moment) if moment else None


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _opt_time(text: str | None) -> datetime | None:
    return _time(text) if text else None


def new_state(budget: Budget, at: datetime) -> BudgetState:
    """Return the empty state of ``budget`` for the period holding ``at``."""
    start, end = period_bounds(budget.period, budget.timezone, at)
    return BudgetState(budget_id=budget.id, period_start=start, period_end=end)


def advance(state: BudgetState, budget: Budget, at: datetime) -> BudgetState:
    """Roll the state over to the period holding ``at`` if that period is later than the state's.

    The spend history (minutes, hours, days) stays; the period's totals restart at zero and the
    period's alerts move to ``closed`` for ``threshold_alerts`` to resolve.
    """
    start, end = period_bounds(budget.period, budget.timezone, at)
    if start <= state.period_start:
        return state
    for kind, by_threshold in state.fired.items():
        for threshold, info in by_threshold.items():
            state.closed.append({**info, "kind": kind, "threshold_pct": threshold,
                                 "resolved_at": iso_utc(state.period_end)})
    state.period_start, state.period_end = start, end
    state.spent_usd = state.spent_err = 0.0
    state.events_counted = 0
    state.crossings = {}
    state.exhausted_at = None
    state.fired = {}
    return state


def apply_charge(
    state: BudgetState | None, budget: Budget, cost_usd: float, event_time: datetime, *, events: int = 1
) -> tuple[BudgetState, LateCharge | None]:
    """Count ``cost_usd`` of ``events`` usage events at ``event_time`` against ``budget``.

    Pass an event's charges summed, with ``events=1``, so ``events_counted`` counts events, not
    charges. A charge in a later period rolls the state over first. A charge in an earlier period
    (late, for a closed period) leaves the totals alone and comes back as a ``LateCharge``; it still
    feeds the forecast's daily history.

    >>> b = Budget(id="b", period="day", amount_usd=10)
    >>> s, late = apply_charge(None, b, 6.0, datetime(2026, 1, 1, 9, tzinfo=UTC))
    >>> s, late = apply_charge(s, b, 2.5, datetime(2026, 1, 1, 10, tzinfo=UTC))
    >>> s.spent, s.events_counted, sorted(s.crossings), late
    (8.5, 2, [50.0, 80.0], None)
    >>> s, late = apply_charge(s, b, 1.0, datetime(2026, 1, 2, 1, tzinfo=UTC))  # next day: new period
    >>> s.spent, s.period_start.day
    (1.0, 2)
    >>> s, late = apply_charge(s, b, 4.0, datetime(2026, 1, 1, 23, tzinfo=UTC))  # late for 1 January
    >>> s.spent, late.cost_usd, late.period_start.day
    (1.0, 4.0, 1)
    """
    if state is None:
        state = new_state(budget, event_time)
    _remember(state, budget, cost_usd, event_time)
    if event_time < state.period_start:
        start, end = period_bounds(budget.period, budget.timezone, event_time)
        return state, LateCharge(budget.id, cost_usd, events, event_time, start, end)
    if event_time >= state.period_end:
        advance(state, budget, event_time)
    total = state.spent_usd + cost_usd
    if abs(state.spent_usd) >= abs(cost_usd):
        state.spent_err += (state.spent_usd - total) + cost_usd
    else:
        state.spent_err += (cost_usd - total) + state.spent_usd
    state.spent_usd = total
    state.events_counted += events
    _note_crossings(state, budget, event_time)
    return state, None


def _remember(state: BudgetState, budget: Budget, cost_usd: float, event_time: datetime) -> None:
    """Add the charge to the bounded minute, hour and day histories (any period)."""
    if state.tracking_since is None:
        state.tracking_since = event_time
        local = event_time.astimezone(ZoneInfo(budget.timezone))
        # a day whose first hour was missed is partial: the forecast must not read it as a whole day
        state.first_full_day = local.date() if local.hour == 0 else local.date() + timedelta(days=1)
    newest = state.latest_event_at
    if newest is None or event_time > newest:
        state.latest_event_at = newest = event_time
    seconds = int(event_time.timestamp())
    newest_s = int(newest.timestamp())
    _add_bucket(state.minutes, seconds // 60, cost_usd, newest_s // 60 - int(BURN_WINDOW_S // 60))
    _add_bucket(state.hours, seconds // 3600, cost_usd, newest_s // 3600 - HOUR_MEMORY)
    zone = ZoneInfo(budget.timezone)
    day = event_time.astimezone(zone).date()
    oldest_day = newest.astimezone(zone).date() - timedelta(days=HISTORY_DAYS + 1)
    if day >= oldest_day:
        if day not in state.days:
            for old in [d for d in state.days if d < oldest_day]:
                del state.days[old]
        state.days[day] = state.days.get(day, 0.0) + cost_usd


def _add_bucket(buckets: dict[int, float], key: int, value: float, oldest: int) -> None:
    if key <= oldest:
        return
    if key not in buckets:
        # prune only when a bucket opens, so a busy minute costs one dict update per charge
        for old in [k for k in buckets if k <= oldest]:
            del buckets[old]
    buckets[key] = buckets.get(key, 0.0) + value


def _note_crossings(state: BudgetState, budget: Budget, event_time: datetime) -> None:
    spent = state.spent
    for threshold in budget.thresholds_pct:
        if threshold not in state.crossings and spent >= budget.amount_usd * threshold / 100:
            state.crossings[threshold] = event_time
    if state.exhausted_at is None and spent >= budget.amount_usd:
        state.exhausted_at = event_time


def budget_status(
    budget: Budget, spent_pct: float, forecast_pct: float, forecast_low_pct: float
) -> BudgetStatus:
    """Classify a budget by actual and forecast spend (percentages of its amount).

    ``exceeded``: spent >= 100 %. ``critical``: an overrun is near certain (the low end of the forecast
    band >= 100 %), or forecast (>= 100 %) with ``warning_pct`` already spent. ``warning``: spent >=
    ``warning_pct`` or forecast >= 100 %. ``ok`` otherwise.

    >>> b = Budget(id="b", period="month", amount_usd=100)
    >>> cases = [(10, 60, 40), (81, 95, 90), (30, 120, 80), (85, 110, 95), (40, 130, 101), (100, 100, 100)]
    >>> [budget_status(b, *case) for case in cases]
    ['ok', 'warning', 'warning', 'critical', 'critical', 'exceeded']
    """
    if spent_pct >= 100:
        return "exceeded"
    if forecast_low_pct >= 100 or (forecast_pct >= 100 and spent_pct >= budget.warning_pct):
        return "critical"
    if spent_pct >= budget.warning_pct or forecast_pct >= 100:
        return "warning"
    return "ok"


def _hour_profile(state: BudgetState, tz: str, as_of: datetime) -> list[float]:
    """Return spend per local hour of day over the full days before ``as_of``'s day.

    Today's hours are left out: they would say that all of today's spend happens before now.
    """
    zone = ZoneInfo(tz)
    today = as_of.astimezone(zone).date()
    profile = [0.0] * 24
    for hour, value in state.hours.items():
        local = datetime.fromtimestamp(hour * 3600, UTC).astimezone(zone)
        if local.date() < today:
            profile[local.hour] += value
    return profile


def burn_record(
    budget: Budget, state: BudgetState, *, as_of: datetime, history: Mapping[date, float] | None = None
) -> dict[str, Any]:
    """Return the ``budget.burn`` record of ``budget`` as of ``as_of`` (JSON-ready, ``BURN_FIELDS``).

    ``history`` adds daily spend (local dates) from before the state's own memory, e.g. from the
    spend tables for a budget created today; the state's days win where both have a day.

    >>> b = Budget(id="b", scope={"team": "search"}, period="day", amount_usd=100)
    >>> s, _ = apply_charge(None, b, 30.0, datetime(2026, 1, 1, 0, 30, tzinfo=UTC))
    >>> r = burn_record(b, s, as_of=datetime(2026, 1, 1, 1, tzinfo=UTC))
    >>> r["spent_pct"], r["burn_rate_usd_per_hour"], r["status"], r["period_end"]
    (30.0, 60.0, 'warning', '2026-01-02T00:00:00Z')
    >>> r["forecast_usd"] > 100 and r["exhaustion_at"] is not None
    True
    """
    history = history or {}
    daily = {**history, **state.days}
    first_full = state.first_full_day
    if history:
        first_full = min(history) if first_full is None else min(min(history), first_full)
    spent = state.spent
    rate = burn_rate(state.minutes, as_of=as_of, window_s=BURN_WINDOW_S, since=state.tracking_since)
    outlook = forecast(
        spent, now=as_of, period_start=state.period_start, period_end=state.period_end, tz=budget.timezone,
        daily=daily, first_full_day=first_full, hour_profile=_hour_profile(state, budget.timezone, as_of),
        amount=budget.amount_usd,
    )
    amount = budget.amount_usd
    spent_pct, forecast_pct = 100 * spent / amount, 100 * outlook.value / amount
    exhaustion = state.exhausted_at if spent >= amount else outlook.exhaustion_at
    return {
        "budget_id": budget.id,
        "scope": dict(budget.scope),
        "period": budget.period,
        "period_start": iso_utc(state.period_start),
        "period_end": iso_utc(state.period_end),
        "amount_usd": amount,
        "spent_usd": spent,
        "spent_pct": round(spent_pct, 4),
        "burn_rate_usd_per_hour": round(rate, 6),
        "forecast_usd": round(outlook.value, 6),
        "forecast_pct": round(forecast_pct, 4),
        "forecast_low_usd": round(outlook.low, 6),
        "forecast_high_usd": round(outlook.high, 6),
        "exhaustion_at": _iso(exhaustion),
        "status": budget_status(budget, spent_pct, forecast_pct, 100 * outlook.low / amount),
        "events_counted": state.events_counted,
        "as_of": iso_utc(as_of),
    }


def severity_for(budget: Budget, threshold_pct: float, kind: str = THRESHOLD) -> Severity:
    """Map a threshold to an alert severity.

    Actual spend: >= 100 critical, >= ``warning_pct`` warning, else info. Forecast: one step lower
    (>= 100 warning, else info), because a forecast can still turn; the actual crossing pages.

    >>> b = Budget(id="b", period="day", amount_usd=1)
    >>> [severity_for(b, t) for t in (50, 80, 100, 120)], severity_for(b, 100, FORECAST)
    (['info', 'warning', 'critical', 'critical'], 'warning')
    """
    if kind == FORECAST:
        return "warning" if threshold_pct >= 100 else "info"
    if threshold_pct >= 100:
        return "critical"
    return "warning" if threshold_pct >= budget.warning_pct else "info"


def _alert(budget: Budget, kind: str, threshold: float, record: Mapping[str, Any], started_at: datetime,
           as_of: datetime) -> Alert:
    amount = budget.amount_usd
    money = f"${amount:,.2f} {'daily' if budget.period == 'day' else budget.period + 'ly'} budget"
    if kind == THRESHOLD:
        summary = (f"Budget {budget.id}: {record['spent_pct']:.1f}% of the {money} spent "
                   f"(${record['spent_usd']:,.2f}; threshold {threshold:g}%)")
        impact = max(0.0, record["spent_usd"] - amount)
    else:
        summary = (f"Budget {budget.id}: forecast ${record['forecast_usd']:,.2f} is "
                   f"{record['forecast_pct']:.0f}% of the {money} "
                   f"(threshold {threshold:g}%; period ends {record['period_end']})")
        impact = max(0.0, record["forecast_usd"] - amount)
    evidence = {k: record[k] for k in (
        "spent_usd", "spent_pct", "amount_usd", "forecast_usd", "forecast_pct", "forecast_low_usd",
        "forecast_high_usd", "burn_rate_usd_per_hour", "exhaustion_at", "period_start", "period_end",
        "events_counted")}
    labels = {**budget.scope, "budget": budget.id, "period": budget.period, "threshold_pct": f"{threshold:g}"}
    return Alert.firing(
        kind, {"budget": budget.id}, severity=severity_for(budget, threshold, kind), summary=summary,
        started_at=started_at, detected_at=as_of, labels=labels, cost_impact_usd=round(impact, 6),
        evidence={**evidence, "threshold_pct": threshold},
    )


def threshold_alerts(
    budget: Budget, state: BudgetState, record: Mapping[str, Any]
) -> tuple[BudgetState, list[Alert]]:
    """Return the updated state and the alert records due for ``record`` (this state's burn record).

    Each threshold fires once per period: ``budget_threshold`` on actual spend (``started_at`` = event
    time of the charge that crossed it), ``budget_forecast`` on the forecast. Alerts of one kind share
    a fingerprint (entity ``{"budget": id}``), so a crossing of a higher threshold escalates the same
    alert. Both resolve when the period rolls over, or when the amount is raised so that no threshold of
    that kind holds any more (raised so only lower ones hold: the alert is restated at the highest).

    >>> b = Budget(id="b", period="day", amount_usd=10)
    >>> s, _ = apply_charge(None, b, 8.5, datetime(2026, 1, 1, 9, tzinfo=UTC))
    >>> s, alerts = threshold_alerts(b, s, burn_record(b, s, as_of=datetime(2026, 1, 1, 9, 1, tzinfo=UTC)))
    >>> [(a.kind, a.severity, a.labels["threshold_pct"]) for a in alerts]  # doctest: +NORMALIZE_WHITESPACE
    [('budget_threshold', 'info', '50'), ('budget_threshold', 'warning', '80'),
     ('budget_forecast', 'warning', '100')]
    >>> threshold_alerts(b, s, burn_record(b, s, as_of=datetime(2026, 1, 1, 9, 2, tzinfo=UTC)))[1]
    []
    """
    as_of = _time(record["as_of"])
    alerts: list[Alert] = []
    for info in state.closed:
        alerts.append(_resolved(budget, info, as_of))
    state.closed = []
    checks = ((THRESHOLD, budget.thresholds_pct, float(record["spent_pct"])),
              (FORECAST, budget.forecast_thresholds_pct, float(record["forecast_pct"])))
    for kind, thresholds, pct in checks:
        fired = state.fired.setdefault(kind, {})
        # a raised amount can un-cross thresholds; a forecast dipping back does not (it would flap)
        dropped = [t for t, info in fired.items() if pct < t and budget.amount_usd > info["amount_usd"]]
        for threshold in dropped:
            last = fired.pop(threshold)
            state.crossings.pop(threshold, None)
            if not fired:
                alerts.append(_resolved(budget, {**last, "kind": kind, "threshold_pct": threshold,
                                                 "resolved_at": record["as_of"]}, as_of))
        if dropped and fired:
            top = max(fired)
            alerts.append(_alert(budget, kind, top, record, _time(fired[top]["started_at"]), as_of))
        for threshold in thresholds:
            if pct >= threshold and threshold not in fired:
                started = state.crossings.get(threshold, as_of) if kind == THRESHOLD else as_of
                alert = _alert(budget, kind, threshold, record, started, as_of)
                fired[threshold] = {"started_at": iso_utc(started), "amount_usd": budget.amount_usd,
                                    "severity": alert.severity, "summary": alert.summary}
                alerts.append(alert)
    if state.exhausted_at is not None and state.spent < budget.amount_usd:
        state.exhausted_at = None
    return state, alerts


def alerts_due(budget: Budget, state: BudgetState, record: Mapping[str, Any]) -> bool:
    """Say whether ``threshold_alerts`` has a new crossing or a resolve for ``record``; changes nothing.

    >>> b = Budget(id="b", period="day", amount_usd=10)
    >>> s, _ = apply_charge(None, b, 6.0, datetime(2026, 1, 1, 9, tzinfo=UTC))
    >>> record = burn_record(b, s, as_of=datetime(2026, 1, 1, 9, 1, tzinfo=UTC))
    >>> alerts_due(b, s, record)
    True
    >>> s, _ = threshold_alerts(b, s, record)
    >>> alerts_due(b, s, record)
    False
    """
    if state.closed:
        return True
    checks = ((THRESHOLD, budget.thresholds_pct, float(record["spent_pct"])),
              (FORECAST, budget.forecast_thresholds_pct, float(record["forecast_pct"])))
    for kind, thresholds, pct in checks:
        fired = state.fired.get(kind, {})
        if any(pct >= threshold and threshold not in fired for threshold in thresholds):
            return True
    return False


def _resolved(budget: Budget, info: Mapping[str, Any], as_of: datetime) -> Alert:
    kind, threshold = str(info["kind"]), float(info["threshold_pct"])
    labels = {**budget.scope, "budget": budget.id, "period": budget.period, "threshold_pct": f"{threshold:g}"}
    alert = Alert.firing(
        kind, {"budget": budget.id}, severity=info["severity"], summary=str(info["summary"]),
        started_at=_time(info["started_at"]), detected_at=as_of, labels=labels,
        evidence={"threshold_pct": threshold},
    )
    return alert.resolve(_time(info["resolved_at"]))


def should_emit(
    state: BudgetState, record: Mapping[str, Any], *, burn_interval_s: float, force: bool = False
) -> bool:
    """Say whether ``record`` goes to ``budget.burn``.

    Yes on the first record, a status or period change, or ``force`` (e.g. an alert fired); otherwise
    when the spend moved and ``burn_interval_s`` passed since the last record (as_of times).
    """
    if force or state.last_emitted_at is None:
        return True
    if record["status"] != state.last_emitted_status or state.period_start != state.last_emitted_period:
        return True
    moved = (record["spent_usd"] != state.last_emitted_spent
             or record["events_counted"] != state.last_emitted_events)
    return moved and (_time(record["as_of"]) - state.last_emitted_at).total_seconds() >= burn_interval_s


class BurnStep(NamedTuple):
    """One publishing step of a budget: its state, its burn record, the alerts due, and whether to emit."""

    state: BudgetState
    record: dict[str, Any]
    alerts: list[Alert]
    emit: bool


def burn_step(
    budget: Budget, state: BudgetState, now: datetime, *, burn_interval_s: float, with_alerts: bool = True,
    force: bool = False,
) -> BurnStep:
    """Advance ``state`` to ``now``, build its burn record and (``with_alerts``) its threshold alerts.

    ``emit`` says whether the record is due on ``budget.burn`` (see ``should_emit``); a caller that
    sends it calls ``mark_emitted`` afterwards. The stream and replay publish through this one step.

    >>> b = Budget(id="b", period="day", amount_usd=10)
    >>> s, _ = apply_charge(None, b, 6.0, datetime(2026, 1, 1, 9, tzinfo=UTC))
    >>> step = burn_step(b, s, datetime(2026, 1, 1, 9, 1, tzinfo=UTC), burn_interval_s=10)
    >>> step.emit, [a.labels["threshold_pct"] for a in step.alerts]
    (True, ['50', '100'])
    """
    state = advance(state, budget, now)
    record = burn_record(budget, state, as_of=now)
    alerts: list[Alert] = []
    if with_alerts:
        state, alerts = threshold_alerts(budget, state, record)
    emit = should_emit(state, record, burn_interval_s=burn_interval_s, force=force or bool(alerts))
    return BurnStep(state, record, alerts, emit)


def mark_emitted(state: BudgetState, record: Mapping[str, Any]) -> BudgetState:
    """Remember that ``record`` was published."""
    state.last_emitted_at = _time(record["as_of"])
    state.last_emitted_status = record["status"]
    state.last_emitted_spent = record["spent_usd"]
    state.last_emitted_events = record["events_counted"]
    state.last_emitted_period = state.period_start
    return state
