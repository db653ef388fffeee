"""The priced cost record: one charge per SKU of one usage event, in FinOps FOCUS 1.x column names.

Records are plain dicts (cheap to build and to serialize on the hot path); ``CostRecord`` names every
column and its type. FOCUS columns come first; burnwatch's own columns carry the ``x_`` prefix, as the
FOCUS spec asks of custom columns.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypedDict

BILLING_CURRENCY = "USD"
CHARGE_CATEGORY_USAGE = "Usage"


class CostRecord(TypedDict):
    """One priced charge. Money is USD; quantities carry their unit in ``ConsumedUnit``."""

    ChargePeriodStart: str
    ChargePeriodEnd: str
    ListCost: float
    EffectiveCost: float
    BilledCost: float
    ListUnitPrice: float
    ConsumedQuantity: float
    ConsumedUnit: str
    PricingQuantity: float
    PricingUnit: str
    ServiceCategory: str
    ServiceName: str
    ProviderName: str
    RegionId: str
    ResourceId: str
    SkuMeter: str
    ChargeCategory: str
    BillingCurrency: str
    Tags: dict[str, str]
    x_EventId: str
    x_ChargeId: str
    x_SourceType: str
    x_Team: str | None
    x_Project: str | None
    x_Env: str | None
    x_App: str | None
    x_User: str | None
    x_Session: str | None
    x_PromptHash: str | None
    x_Model: str | None
    x_Cluster: str | None
    x_Workload: str | None
    x_GpuUtilPct: float | None
    x_GpuAllocated: bool | None
    x_PriceVersion: str
    x_Unpriced: bool


FOCUS_COLUMNS: tuple[str, ...] = tuple(
    name for name in CostRecord.__annotations__ if not name.startswith("x_")
)
BURNWATCH_COLUMNS: tuple[str, ...] = tuple(
    name for name in CostRecord.__annotations__ if name.startswith("x_")
)


def iso_utc(moment: datetime) -> str:
    """Format a timezone-aware time as RFC 3339 UTC with a ``Z`` suffix.

    >>> iso_utc(datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC))
    '2026-01-02T03:04:05.600Z'
    >>> iso_utc(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    '2026-01-02T03:04:05Z'
    """
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
