"""Spend tables: spend per allocation scope in hourly and daily event-time windows, with allowed lateness.

A ``SpendTracker`` keeps the spend of one ``costs.priced`` partition (the stream runs one per partition;
replay runs one for everything). Every charge adds to one window per granularity (``hour``, ``day``,
UTC) for each of its scopes: every allocation dimension (the hierarchy's levels are the rollups),
``project/env``, ``total``, and the record's ``model``, ``app`` and ``workload``. User and session
scopes are left to budgets: they are too many to keep a window each.

Lateness is measured against the partition's watermark, the latest event time it has counted. A
window stays open until the watermark passes its end plus the allowed lateness (default 6 h); a charge
for a closed window is not added to it but to the correction bucket of the hour or day (by watermark)
it arrived in, which is reported beside the windows and never dropped. Windows plus corrections add up
to every charge counted, at each granularity.

Each window's value is a small dict (``usd``, ``list_usd``, ``charges``, ``events``,
``unallocated_usd``); day windows of ``total`` and ``team`` also carry the unit economics state and
day windows of ``total`` the shared-cost pools. Values are whole partial sums, never deltas, so the
latest value of a key is its truth and partitions merge by adding (``merge_window_values``). Key
syntax: ``w|<granularity>|<start epoch s>|<dimension>|<value>``; a correction bucket is
``late|<granularity>|<start of the hour or day it arrived in>|<dimension>|<value>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from typing import Any, cast

from streams.core.allocation import Allocation, Allocator
from streams.core.bounded_groups import MAX_ITEMS_PER_MESSAGE, bounded_groups
from streams.core.costs import CostRecord
from streams.core.shared_costs import SharedCostLedger, SharedCostsConfig
from streams.core.unit_economics import UnitEconomics

GRANULARITIES: dict[str, int] = {"hour": 3600, "day": 86_400}
DEFAULT_LATENESS_S = 6 * 3600
# Scopes that come from the record (besides the allocation's dimensions); user and session are left out.
RECORD_SCOPES = (("model", "x_Model"), ("app", "x_App"), ("workload", "x_Workload"))
UNIT_SCOPES = frozenset({"total", "team"})
WINDOW = "w"
LATE = "late"
TOTALS = ("usd", "list_usd", "charges", "events", "unallocated_usd")
# A window leaves memory this long after it closed (it stays in the table until the table's TTL).
MEMORY_AFTER_CLOSE_S = 86_400
MAX_OFFENDERS = 100  # resources missing required tags, listed per day (the costliest)


def window_key(granularity: str, start_s: int, dimension: str, value: str, kind: str = WINDOW) -> str:
    """Return the table key of one scope's window.

    >>> window_key("hour", 1767261600, "team", "search")
    'w|hour|1767261600|team|search'
    """
    return f"{kind}|{granularity}|{start_s}|{dimension}|{value}"


@dataclass(frozen=True, slots=True)
class WindowId:
    """The parts of a window key: kind, granularity, start, dimension and value."""

    kind: str
    granularity: str
    start_s: int
    dimension: str
    value: str

    @classmethod
    def parse(cls, key: str) -> WindowId:
        """Split a key made by ``window_key`` (the value may itself contain ``|``).

        >>> WindowId.parse("w|day|1767225600|app|a|b").value
        'a|b'
        """
        kind, granularity, start, dimension, value = key.split("|", 4)
        return cls(kind, granularity, int(start), dimension, value)

    @property
    def end_s(self) -> int:
        """The window's end (exclusive), epoch seconds."""
        return self.start_s + GRANULARITIES[self.granularity]


def empty_totals() -> dict[str, Any]:
    """Return a window value with nothing counted."""
    return {"usd": 0.0, "list_usd": 0.0, "charges": 0, "events": 0, "unallocated_usd": 0.0}


def event_seconds(record: CostRecord) -> int:
    """Return a charge's event time (its ``ChargePeriodStart``) in whole epoch seconds."""
    return int(datetime.fromisoformat(record["ChargePeriodStart"]).timestamp())


@dataclass(slots=True)
class _Group:
    """Records of one message that share an allocation, record scopes and hour: added to windows at once."""

    usd: float = 0.0
    list_usd: float = 0.0
    charges: int = 0
    events: set[str] = field(default_factory=set)


@dataclass
class SpendTracker:
    """The spend windows of one partition; ``add`` counts fresh charges and says which keys changed.

    >>> from streams.core.allocation import AllocationConfig
    >>> tracker = SpendTracker(Allocator(AllocationConfig()))
    >>> def charge(cid, hour, usd, team="search"):
    ...     return {"x_ChargeId": cid, "x_EventId": cid, "EffectiveCost": usd, "ListCost": usd,
    ...             "ChargePeriodStart": f"2026-01-01T{hour:02d}:10:00+00:00",
    ...             "x_SourceType": "llm_request", "Tags": {"team": team},
    ...             "x_Model": "gpt-4o", "x_App": None, "x_Workload": None, "x_User": None,
    ...             "SkuMeter": "input_tokens", "ConsumedQuantity": 1000, "x_Unpriced": False}
    >>> _ = tracker.add([charge("a", 9, 1.5), charge("b", 9, 0.5), charge("c", 20, 1.0)])
    >>> tracker.windows[window_key("hour", 1767258000, "team", "search")]["usd"]
    2.0
    >>> _ = tracker.add([charge("d", 9, 4.0)])  # 10 h late for the 09:00 hour: an hourly correction
    >>> tracker.windows["late|hour|1767297600|team|search"]["usd"]
    4.0
    >>> tracker.windows[window_key("day", 1767225600, "team", "search")]["usd"]  # the day is still open
    7.0
    """

    allocator: Allocator
    shared_costs: SharedCostsConfig | None = None
    lateness_s: int = DEFAULT_LATENESS_S
    watermark_s: int = 0
    windows: dict[str, dict[str, Any]] = field(default_factory=dict)
    # running totals of what ``add`` counted (for metrics): spend with and without its required tags,
    # and spend that came after its day window closed
    allocated_usd: float = 0.0
    unallocated_usd: float = 0.0
    late_usd: float = 0.0
    _scope_cache: dict[Allocation, tuple[tuple[str, str], ...]] = field(default_factory=dict, repr=False)

    def _base_scopes(self, allocation: Allocation) -> tuple[tuple[str, str], ...]:
        hit = self._scope_cache.get(allocation)
        if hit is None:
            if len(self._scope_cache) > 10_000:
                self._scope_cache.clear()
            # an empty record: only the allocation's scopes, the record's own are added per group
            empty = cast(CostRecord, {})
            hit = self._scope_cache[allocation] = tuple(self.allocator.scopes(allocation, empty))
        return hit

    def is_open(self, granularity: str, start_s: int, watermark_s: int | None = None) -> bool:
        """Whether a window still takes charges: the watermark has not passed its end plus lateness."""
        mark = self.watermark_s if watermark_s is None else watermark_s
        return mark < start_s + GRANULARITIES[granularity] + self.lateness_s

    def add(self, records: Sequence[CostRecord]) -> set[str]:
        """Count ``records`` (charges never counted before); return the keys whose values changed.

        Lateness is judged against the watermark from before this call, so a message's charges are
        classified the same way whenever it is processed.
        """
        mark = self.watermark_s
        groups: dict[tuple[Any, ...], _Group] = {}
        changed: set[str] = set()
        newest = mark
        for record in records:
            seconds = event_seconds(record)
            if seconds > newest:
                newest = seconds
            allocation = self.allocator.allocate(record)
            hour = seconds - seconds % 3600
            key = (allocation, _record_scopes(record), hour)
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group()
            cost = record["EffectiveCost"]
            group.usd += cost
            group.list_usd += record["ListCost"]
            group.charges += 1
            group.events.add(record["x_EventId"])
            day = seconds - seconds % 86_400
            if self.is_open("day", day, mark):
                changed |= self._add_units(record, allocation, day)
        # an event's charges can fall in several groups (a node's GPUs run different workloads):
        # a window counts each event once
        events_by_key: dict[str, set[str]] = {}
        for (allocation, extra, hour), group in groups.items():
            scopes = (*self._base_scopes(allocation), *extra)
            unallocated = bool(allocation.missing_required)
            if unallocated:
                self.unallocated_usd += group.usd
            else:
                self.allocated_usd += group.usd
            for granularity, size in GRANULARITIES.items():
                start = hour - hour % size
                if self.is_open(granularity, start, mark):
                    keys = [window_key(granularity, start, d, v) for d, v in scopes]
                else:
                    arrived = mark - mark % size
                    keys = [window_key(granularity, arrived, d, v, kind=LATE) for d, v in scopes]
                    if granularity == "day":
                        self.late_usd += group.usd
                for wkey in keys:
                    self._bump(wkey, group, unallocated)
                    events_by_key.setdefault(wkey, set()).update(group.events)
                changed.update(keys)
        for wkey, events in events_by_key.items():
            self.windows[wkey]["events"] += len(events)
        self.watermark_s = newest
        return changed

    def window_keys(self, records: Iterable[CostRecord]) -> set[str]:
        """Return the keys of the open or held windows (not corrections) that ``records`` fall in."""
        out: set[str] = set()
        for record in records:
            seconds = event_seconds(record)
            scopes = (*self._base_scopes(self.allocator.allocate(record)), *_record_scopes(record))
            for granularity, size in GRANULARITIES.items():
                start = seconds - seconds % size
                out.update(key for key in (window_key(granularity, start, d, v) for d, v in scopes)
                           if key in self.windows)
        return out

    def _bump(self, key: str, group: _Group, unallocated: bool) -> None:
        totals = self.windows.get(key)
        if totals is None:
            totals = self.windows[key] = empty_totals()
        totals["usd"] += group.usd
        totals["list_usd"] += group.list_usd
        totals["charges"] += group.charges
        if unallocated:
            totals["unallocated_usd"] += group.usd

    def _add_units(self, record: CostRecord, allocation: Allocation, day: int) -> set[str]:
        changed = set()
        for dimension, value in (("total", "all"), ("team", allocation.team)):
            key = window_key("day", day, dimension, value)
            totals = self.windows.get(key)
            if totals is None:
                totals = self.windows[key] = empty_totals()
            units = totals.get("_units")
            if units is None:
                units = totals["_units"] = UnitEconomics()
            units.add(record)
            changed.add(key)
        if allocation.missing_required:  # the required-tag policy: list who is missing tags
            offenders = self.windows[window_key("day", day, "total", "all")].setdefault("_offenders", {})
            _add_offender(offenders, record, allocation.missing_required)
        if self.shared_costs is not None and self.shared_costs.rules:
            key = window_key("day", day, "total", "all")
            totals = self.windows[key]
            shared = totals.get("_shared")
            if shared is None:
                shared = totals["_shared"] = SharedCostLedger(self.shared_costs)
            shared.add(record, allocation)
        return changed

    def close_due(self) -> list[str]:
        """Return the keys of windows the watermark has closed since the last call (marked ``closed``)."""
        out = []
        for key, totals in self.windows.items():
            if totals.get("closed") or not key.startswith(WINDOW + "|"):
                continue
            wid = WindowId.parse(key)
            if not self.is_open(wid.granularity, wid.start_s):
                totals["closed"] = True
                out.append(key)
        return out

    def forget_old(self) -> int:
        """Drop windows that closed more than a day ago from memory; return how many."""
        horizon = self.watermark_s - self.lateness_s - MEMORY_AFTER_CLOSE_S
        old = [k for k in self.windows if WindowId.parse(k).end_s + (86_400 if k.startswith(LATE) else 0)
               < horizon]
        for key in old:
            del self.windows[key]
        return len(old)

    def value(self, key: str) -> dict[str, Any]:
        """Return a window's value as JSON-ready data (unit economics and shared pools as state)."""
        totals = self.windows[key]
        out = {name: totals[name] for name in TOTALS}
        if totals.get("closed"):
            out["closed"] = True
        units = totals.get("_units")
        if units is not None:
            out["unit_economics"] = units.to_state()
        offenders = totals.get("_offenders")
        if offenders:
            out["unallocated_resources"] = {k: list(v) for k, v in offenders.items()}
        shared = totals.get("_shared")
        if shared is not None:
            out["shared"] = {"pooled_usd": dict(shared.pooled_usd),
                             "usage_usd": {k: dict(v) for k, v in shared.usage_usd.items()}}
        return out

    def load(self, key: str, value: Mapping[str, Any]) -> None:
        """Restore one window from ``value()`` (after a restart or a rebalance)."""
        totals: dict[str, Any] = {name: value[name] for name in TOTALS}
        if value.get("closed"):
            totals["closed"] = True
        if "unit_economics" in value:
            totals["_units"] = UnitEconomics.from_state(value["unit_economics"])
        if "unallocated_resources" in value:
            totals["_offenders"] = {k: list(v) for k, v in value["unallocated_resources"].items()}
        if "shared" in value and self.shared_costs is not None:
            ledger = SharedCostLedger(self.shared_costs)
            ledger.pooled_usd.update(value["shared"]["pooled_usd"])
            for rule, usage in value["shared"]["usage_usd"].items():
                ledger.usage_usd[rule] = dict(usage)
            totals["_shared"] = ledger
        self.windows[key] = totals


def event_parts(
    records: Sequence[CostRecord], limit: int = MAX_ITEMS_PER_MESSAGE
) -> list[Sequence[CostRecord]]:
    """Return ``records`` in order, in parts of at most ``limit`` charges that keep each event whole.

    The spend stage counts and logs a batch part by part, so that no changelog message outgrows the
    broker's limit (``MAX_ITEMS_PER_MESSAGE``). ``SpendTracker.add`` counts an event once per window in
    one call, so an event's charges (consecutive: one usage message prices them together) stay in one
    part; an event of more than ``limit`` charges is a part of its own. Counting in parts is counting
    smaller batches: the same windows, lateness judged at each part's start.

    >>> records = [{"x_EventId": e} for e in "aabbbc"]
    >>> ["".join(r["x_EventId"] for r in part) for part in event_parts(records, limit=3)]
    ['aa', 'bbb', 'c']
    >>> event_parts(records, limit=6) == [records]
    True
    """
    if len(records) <= limit:
        return [records]
    events = [list(charges) for _, charges in groupby(records, key=lambda record: record["x_EventId"])]
    return [[record for event in part for record in event] for part in bounded_groups(events, len, limit)]


def _record_scopes(record: CostRecord) -> tuple[tuple[str, str], ...]:
    """Return the scopes a charge takes from its own columns (model, app, workload) when set."""
    return tuple((name, str(record.get(column))) for name, column in RECORD_SCOPES if record.get(column))


def _add_offender(offenders: dict[str, list[Any]], record: CostRecord, missing: tuple[str, ...]) -> None:
    """Add a charge missing required tags to its resource's entry; keep the costliest resources only."""
    resource = str(record.get("ResourceId") or "unknown")
    entry = offenders.get(resource)
    if entry is None:
        if len(offenders) >= 2 * MAX_OFFENDERS:  # fold the cheaper half away: bounded state
            for key, _ in sorted(offenders.items(), key=lambda kv: kv[1][0])[:MAX_OFFENDERS]:
                del offenders[key]
        entry = offenders[resource] = [0.0, record["x_SourceType"], sorted(missing)]
    entry[0] += record["EffectiveCost"]


def top_offenders(offenders: Mapping[str, list[Any]], n: int = 10) -> list[dict[str, Any]]:
    """Return the ``n`` resources with the most spend missing required tags, costliest first.

    >>> top_offenders({"GPU-1": [2.0, "gpu.sample", ["team"]], "GPU-2": [5.0, "gpu.sample", ["team"]]}, 1)
    [{'resource_id': 'GPU-2', 'unallocated_usd': 5.0, 'source_type': 'gpu.sample', 'missing': ['team']}]
    """
    ranked = sorted(offenders.items(), key=lambda kv: (-kv[1][0], kv[0]))[:n]
    return [{"resource_id": r, "unallocated_usd": e[0], "source_type": e[1], "missing": list(e[2])}
            for r, e in ranked]


def window_record(key: str, value: Mapping[str, Any], *, partition: int, as_of: datetime) -> dict[str, Any]:
    """Return the public ``spend.windows`` record of one partition's window (``docs/events.md``)."""
    wid = WindowId.parse(key)
    return {
        "kind": "correction" if wid.kind == LATE else "window",
        "granularity": wid.granularity,
        "window_start": datetime.fromtimestamp(wid.start_s, UTC).isoformat(),
        "window_end": datetime.fromtimestamp(wid.end_s, UTC).isoformat(),
        "dimension": wid.dimension,
        "value": wid.value,
        "partition": partition,
        **value,
        "as_of": as_of.isoformat(),
    }


def merge_window_values(values: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Add one window's values from several partitions (or several trackers) into one.

    >>> merge_window_values([{"usd": 1.0, "list_usd": 1.0, "charges": 1, "events": 1, "unallocated_usd": 0.0},
    ...                      {"usd": 2.0, "list_usd": 3.0, "charges": 2, "events": 1, "unallocated_usd": 2.0,
    ...                       "closed": True}])["usd"]
    3.0
    """
    out = empty_totals()
    units: UnitEconomics | None = None
    pooled: dict[str, float] = {}
    usage: dict[str, dict[str, float]] = {}
    offenders: dict[str, list[Any]] = {}
    closed = True
    for value in values:
        for name in TOTALS:
            out[name] += value[name]
        closed = closed and bool(value.get("closed"))
        if "unit_economics" in value:
            part = UnitEconomics.from_state(value["unit_economics"])
            if units is None:
                units = part
            else:
                units.merge(part)
        for resource, (usd, source, missing) in value.get("unallocated_resources", {}).items():
            entry = offenders.setdefault(resource, [0.0, source, missing])
            entry[0] += usd
        for rule, usd in value.get("shared", {}).get("pooled_usd", {}).items():
            pooled[rule] = pooled.get(rule, 0.0) + usd
        for rule, table in value.get("shared", {}).get("usage_usd", {}).items():
            mine = usage.setdefault(rule, {})
            for who, usd in table.items():
                mine[who] = mine.get(who, 0.0) + usd
    out["closed"] = closed
    if units is not None:
        out["unit_economics"] = units.snapshot()
    if pooled:
        out["shared"] = {"pooled_usd": pooled, "usage_usd": usage}
    if offenders:
        out["unallocated_resources"] = top_offenders(offenders, MAX_OFFENDERS)
    return out


def partition_values(records: Iterable[Mapping[str, Any]]) -> Iterator[tuple[tuple[Any, ...], list[Any]]]:
    """Group ``spend.windows`` records (latest per partition already chosen) by window across partitions."""
    grouped: dict[tuple[Any, ...], list[Any]] = {}
    for record in records:
        ident = (record["kind"], record["granularity"], record["window_start"], record["dimension"],
                 record["value"])
        grouped.setdefault(ident, []).append(record)
    yield from grouped.items()
