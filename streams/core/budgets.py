"""Budgets: the YAML file, its validation, calendar periods in a time zone, and which charges a budget covers.

A budget caps the spend of one allocation scope (a team; a project and env; a model; a session; or
everything) over a calendar period (day, week, month, quarter) in a time zone. The file format is in
``docs/budgets.md``; ``burnwatch budgets validate FILE`` checks one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from streams.core.config_errors import describe_validation_error

Period = Literal["day", "week", "month", "quarter"]
PERIODS: tuple[Period, ...] = ("day", "week", "month", "quarter")

# The allocation dimensions a charge carries (the allocation hierarchy's default levels plus the
# identities of an LLM request). A scope key outside these is almost always a typo, which would make
# the budget silently match nothing; ``extra_dimensions`` admits custom hierarchy levels.
DIMENSIONS: tuple[str, ...] = (
    "organization", "business_unit", "product_line", "feature", "team", "project", "env", "cost_center",
    "app", "model", "user", "session", "source", "provider", "region", "cluster", "workload",
)

Pct = Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)]
BudgetId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$")]


class BudgetError(ValueError):
    """A budget file is unreadable or invalid; the message names the file, the key path and the value."""


class Budget(BaseModel):
    """One budget: a USD cap on the spend of ``scope`` over a calendar ``period`` in ``timezone``.

    >>> b = Budget(id="search-monthly", scope={"team": "search"}, period="month", amount_usd=5000)
    >>> b.thresholds_pct, b.forecast_thresholds_pct, b.warning_pct, b.timezone
    ([50.0, 80.0, 100.0], [100.0], 80.0, 'UTC')
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: BudgetId
    scope: dict[str, Annotated[str, Field(min_length=1)]] = Field(default_factory=dict)
    period: Period
    timezone: str = "UTC"
    amount_usd: float = Field(gt=0, allow_inf_nan=False)
    thresholds_pct: list[Pct] = Field(default_factory=lambda: [50.0, 80.0, 100.0])
    forecast_thresholds_pct: list[Pct] = Field(default_factory=lambda: [100.0])
    # Spend at or above this share of the amount makes the status ``warning`` and a threshold alert
    # at or above it a ``warning`` (below it: ``info``; at or above 100: ``critical``).
    warning_pct: float = Field(default=80.0, gt=0, lt=100, allow_inf_nan=False)
    description: str = ""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("is not a known IANA time zone, e.g. UTC or Europe/Berlin") from None
        return value

    @field_validator("thresholds_pct", "forecast_thresholds_pct")
    @classmethod
    def _sorted_unique(cls, value: list[float]) -> list[float]:
        if len(set(value)) != len(value):
            raise ValueError("must not repeat a threshold")
        return sorted(value)


class BudgetsConfig(BaseModel):
    """A budget file: the budgets and how often a moving budget's burn is published."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    budgets: list[Budget]
    burn_interval_s: float = Field(default=10.0, gt=0, le=3600, allow_inf_nan=False)
    extra_dimensions: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]] = Field(default_factory=list)

    def by_id(self) -> dict[str, Budget]:
        """Return the budgets keyed by id."""
        return {b.id: b for b in self.budgets}


def parse_budgets(doc: Any, where: str) -> BudgetsConfig:
    """Validate a parsed budget document; raise ``BudgetError`` naming the file, key path and value.

    >>> parse_budgets({"budgets": [{"id": "b", "period": "month", "amount_usd": -1}]}, "b.yaml")
    Traceback (most recent call last):
    ...
    streams.core.budgets.BudgetError: b.yaml: budgets[0].amount_usd: must be > 0 (got -1)
    """
    if not isinstance(doc, Mapping):
        raise BudgetError(f"{where}: (top level): must be a mapping with a 'budgets' list "
                          f"(got {type(doc).__name__})")
    try:
        config = BudgetsConfig.model_validate(doc)
    except ValidationError as error:
        raise BudgetError(describe_validation_error(error, where)) from None
    problems = find_problems(config, where)
    if problems:
        raise BudgetError("\n".join(problems))
    return config


def find_problems(config: BudgetsConfig, where: str) -> list[str]:
    """Return one message per repeated budget id and per scope key that is no allocation dimension."""
    known = set(DIMENSIONS) | set(config.extra_dimensions)
    problems = []
    seen: dict[str, int] = {}
    for index, budget in enumerate(config.budgets):
        if budget.id in seen:
            problems.append(f"{where}: budgets[{index}].id: repeats budgets[{seen[budget.id]}].id "
                            f"(got {budget.id!r})")
        seen.setdefault(budget.id, index)
        for key in budget.scope:
            if key not in known:
                problems.append(
                    f"{where}: budgets[{index}].scope.{key}: is not an allocation dimension (known: "
                    f"{', '.join(sorted(known))}; add custom ones to extra_dimensions) (got {key!r})"
                )
    return problems


def load_budgets(path: Path) -> BudgetsConfig:
    """Read and validate a budget YAML file; raise ``BudgetError`` naming the file, key path and value."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise BudgetError(f"{where}: (top level): cannot read the file ({error.strerror})") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        doc = yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader, never the full one
    except yaml.YAMLError as error:
        raise BudgetError(f"{where}: (top level): not valid YAML: {error}") from None
    return parse_budgets(doc, where)


def _period_start_date(period: Period, day: date) -> date:
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)


def _next_start_date(period: Period, start: date) -> date:
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    months = 1 if period == "month" else 3
    month0 = start.month - 1 + months
    return date(start.year + month0 // 12, month0 % 12 + 1, 1)


def local_midnight(day: date, tz: str) -> datetime:
    """Return the UTC time of local midnight starting ``day`` in ``tz``.

    >>> local_midnight(date(2026, 3, 1), "Europe/Berlin").isoformat()
    '2026-02-28T23:00:00+00:00'
    """
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz)).astimezone(UTC)


def period_bounds(period: Period, tz: str, at: datetime) -> tuple[datetime, datetime]:
    """Return the calendar period ``[start, end)`` holding ``at``, aligned in ``tz``, as UTC times.

    Days start at local midnight, weeks on Monday, months on the 1st, quarters in January, April,
    July and October. Daylight-saving changes make some local days 23 or 25 hours long.

    >>> at = datetime(2026, 3, 31, 23, 30, tzinfo=UTC)
    >>> [t.isoformat() for t in period_bounds("month", "UTC", at)]
    ['2026-03-01T00:00:00+00:00', '2026-04-01T00:00:00+00:00']
    >>> [t.isoformat() for t in period_bounds("month", "Europe/Berlin", at)]  # 01:30 on 1 April there
    ['2026-03-31T22:00:00+00:00', '2026-04-30T22:00:00+00:00']
    >>> [t.date().isoformat() for t in period_bounds("week", "UTC", at)]  # a Tuesday
    ['2026-03-30', '2026-04-06']
    """
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    local_day = at.astimezone(ZoneInfo(tz)).date()
    start = _period_start_date(period, local_day)
    return local_midnight(start, tz), local_midnight(_next_start_date(period, start), tz)


def budget_matches(budget: Budget, dims: Mapping[str, str | None]) -> bool:
    """Say whether a charge with allocation dimensions ``dims`` counts against ``budget``.

    A budget matches when every key of its scope equals the charge's value for that key; an empty
    scope matches every charge.

    >>> b = Budget(id="x-prod", scope={"project": "x", "env": "prod"}, period="day", amount_usd=10)
    >>> budget_matches(b, {"team": "search", "project": "x", "env": "prod"})
    True
    >>> budget_matches(b, {"project": "x", "env": "dev"}), budget_matches(b, {"project": "x"})
    (False, False)
    """
    return all(dims.get(key) == value for key, value in budget.scope.items())


def matching_budgets(config: BudgetsConfig, dims: Mapping[str, str | None]) -> list[Budget]:
    """Return every budget of ``config`` that a charge with ``dims`` counts against."""
    return [b for b in config.budgets if budget_matches(b, dims)]
