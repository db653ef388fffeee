"""Spend tables: exact windows by event time, lateness and corrections, partitions that add up."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.allocation import AllocationConfig, Allocator, load_allocation
from streams.core.catalog import default_catalog
from streams.core.costs import CostRecord
from streams.core.events import EVENT_ADAPTER
from streams.core.pricing import Pricer
from streams.core.shared_costs import SharedCostsConfig
from streams.core.simulation import IncidentSpec, Simulation, SimulationConfig
from streams.core.spend import LATE, WINDOW, SpendTracker, WindowId, window_key, window_record
from streams.core.spend_report import latest_records, spend_rows

START = datetime(2026, 3, 2, 21, 0, tzinfo=UTC)
T0 = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp())


@lru_cache(maxsize=1)
def simulated_records() -> tuple[CostRecord, ...]:
    """Priced records of 4 simulated hours across midnight, with an untagged node for a while."""
    untagged = IncidentSpec("untagged", 1800, 3600, entity=None)
    sim = Simulation(SimulationConfig(start=START, duration_s=4 * 3600, seed=3, nodes=2, rate=1.0,
                                      incidents=(untagged,)))
    pricer = Pricer(default_catalog())
    out: list[CostRecord] = []
    for raw in sim.events():
        out.extend(pricer.price(EVENT_ADAPTER.validate_python(raw)))
    return tuple(out)


def charge(cid: str, at: datetime, usd: float, team: str | None = "search", **columns: Any) -> CostRecord:
    record: dict[str, Any] = {
        "x_ChargeId": cid, "x_EventId": cid.split(":")[0], "ChargePeriodStart": at.isoformat(),
        "EffectiveCost": usd, "ListCost": usd * 2, "x_SourceType": "llm.request",
        "Tags": {"team": team} if team else {}, "x_Model": "gpt-4o", "x_App": "bot", "x_Workload": None,
        "x_User": "u1", "x_Session": None, "SkuMeter": "input_tokens", "ConsumedQuantity": 1000.0,
        "x_Unpriced": False, "ResourceId": "r", "x_Cluster": None, "x_GpuAllocated": None,
    }
    record.update(columns)
    return record  # type: ignore[return-value]


def totals(tracker: SpendTracker, kind: str, granularity: str, dimension: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in tracker.windows.items():
        wid = WindowId.parse(key)
        if wid.kind == kind and wid.granularity == granularity and wid.dimension == dimension:
            out[wid.value] = out.get(wid.value, 0.0) + value["usd"]
    return out


def tracker() -> SpendTracker:
    return SpendTracker(Allocator(load_allocation()), lateness_s=6 * 3600)


def test_simulated_spend_adds_up_in_every_dimension_and_granularity() -> None:
    records = simulated_records()
    t = tracker()
    for start in range(0, len(records), 500):
        t.add(list(records[start:start + 500]))
    expected = math.fsum(r["EffectiveCost"] for r in records)
    for granularity in ("hour", "day"):
        for dimension in ("total", "team", "business_unit", "organization", "project/env", "model"):
            got = math.fsum(totals(t, WINDOW, granularity, dimension).values())
            if dimension == "model":  # only records with a model have a model scope
                expected_dim = math.fsum(r["EffectiveCost"] for r in records if r["x_Model"])
                assert abs(got - expected_dim) < 1e-6
            else:
                assert abs(got - expected) < 1e-6, (granularity, dimension)
    day_totals = totals(t, WINDOW, "day", "total")
    assert len(day_totals) == 1 and len(totals(t, WINDOW, "hour", "total")) == 1  # one value: "all"
    assert len([k for k in t.windows if k.startswith("w|day|") and k.endswith("|total|all")]) == 2


def test_allocated_plus_unallocated_is_the_total_in_every_window() -> None:
    records = simulated_records()
    t = tracker()
    t.add(list(records))
    untagged = math.fsum(r["EffectiveCost"] for r in records
                         if t.allocator.allocate(r).missing_required)
    assert untagged > 0, "the simulation's untagged incident left no untagged spend"
    unallocated = math.fsum(v["unallocated_usd"] for k, v in t.windows.items()
                            if k.startswith("w|day|") and k.endswith("|total|all"))
    assert abs(unallocated - untagged) < 1e-6
    team_unallocated = math.fsum(v["usd"] for k, v in t.windows.items()
                                 if k.startswith("w|day|") and k.endswith("|team|unallocated"))
    assert abs(team_unallocated - untagged) < 1e-6


def test_window_boundaries_are_by_event_time_in_utc() -> None:
    t = tracker()
    t.add([charge("a", START.replace(hour=23, minute=59, second=59), 1.0),
           charge("b", START.replace(hour=23) + timedelta(hours=1), 2.0)])
    day1, day2 = T0, T0 + 86_400
    assert t.windows[window_key("day", day1, "team", "search")]["usd"] == 1.0
    assert t.windows[window_key("day", day2, "team", "search")]["usd"] == 2.0
    assert t.windows[window_key("hour", day1 + 23 * 3600, "team", "search")]["usd"] == 1.0


def test_a_late_charge_within_the_lateness_updates_its_own_window() -> None:
    t = tracker()
    t.add([charge("now", START.replace(hour=22), 1.0)])
    t.add([charge("late", START.replace(hour=16, minute=30), 5.0)])  # 5.5 h late: the 16:00 hour is open
    assert t.windows[window_key("hour", T0 + 16 * 3600, "team", "search")]["usd"] == 5.0
    assert not [k for k in t.windows if k.startswith(LATE)]


def test_a_charge_beyond_the_lateness_goes_to_a_correction_bucket_never_dropped() -> None:
    t = tracker()
    t.add([charge("now", START.replace(hour=22, minute=30), 1.0)])
    changed = t.add([charge("late", START.replace(hour=15, minute=10), 5.0)])  # 16:00 + 6 h < 22:30
    hour_late = window_key("hour", T0 + 22 * 3600, "team", "search", kind=LATE)
    assert hour_late in changed and t.windows[hour_late]["usd"] == 5.0
    assert window_key("hour", T0 + 15 * 3600, "team", "search") not in t.windows
    # the day is still open: the charge is in it
    assert t.windows[window_key("day", T0, "team", "search")]["usd"] == 6.0
    # two days later the old day is closed too: a charge for it is a day correction
    t.add([charge("next", START + timedelta(days=2), 1.0)])
    t.add([charge("very-late", START.replace(hour=10), 7.0)])
    day_late = window_key("day", T0 + 2 * 86_400, "team", "search", kind=LATE)
    assert t.windows[day_late]["usd"] == 7.0
    assert t.late_usd == 7.0
    record = window_record(day_late, t.value(day_late), partition=3, as_of=START)
    assert record["kind"] == "correction" and record["partition"] == 3


def test_windows_close_when_the_watermark_passes_end_plus_lateness() -> None:
    t = tracker()
    t.add([charge("a", START.replace(hour=9), 1.0)])
    assert t.close_due() == []
    t.add([charge("b", START.replace(hour=16, minute=1), 1.0)])  # 09:00 hour ends 10:00, +6 h = 16:00
    closed = t.close_due()
    assert window_key("hour", T0 + 9 * 3600, "team", "search") in closed
    assert all(WindowId.parse(k).granularity == "hour" for k in closed)
    assert t.close_due() == []  # once
    assert t.value(closed[0])["closed"] is True


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3 * 86_400), st.integers(1, 10_000)), min_size=1, max_size=60),
       st.integers(1, 8), st.integers(0, 12))
def test_windows_plus_corrections_add_up_to_every_charge_counted(
    charges: list[tuple[int, int]], chunk: int, lateness_h: int
) -> None:
    t = SpendTracker(Allocator(AllocationConfig()), lateness_s=lateness_h * 3600)
    records = [charge(f"c{i}", datetime.fromtimestamp(T0 + s, UTC), cents / 100)
               for i, (s, cents) in enumerate(charges)]
    for start in range(0, len(records), chunk):
        t.add(records[start:start + chunk])
    expected = math.fsum(r["EffectiveCost"] for r in records)
    for granularity in ("hour", "day"):
        got = math.fsum([*totals(t, WINDOW, granularity, "total").values(),
                         *totals(t, LATE, granularity, "total").values()])
        assert abs(got - expected) < 1e-6
        events = sum(v["events"] for k, v in t.windows.items()
                     if WindowId.parse(k).granularity == granularity and k.endswith("|total|all"))
        assert events == len(records)


def test_values_round_trip_through_the_table_format() -> None:
    records = simulated_records()
    t = tracker()
    t.add(list(records[:2000]))
    restored = tracker()
    for key in t.windows:
        restored.load(key, t.value(key))
    restored.watermark_s = t.watermark_s
    t.add(list(records[2000:]))
    restored.add(list(records[2000:]))
    assert {k: t.value(k) for k in t.windows} == {k: restored.value(k) for k in restored.windows}


def test_partitions_merge_into_the_single_tracker_totals_with_unit_economics() -> None:
    records = list(simulated_records())
    whole = tracker()
    whole.add(records)
    parts = [tracker(), tracker(), tracker()]
    by_event: dict[str, list[CostRecord]] = {}
    for record in records:
        by_event.setdefault(record["x_EventId"], []).append(record)
    for event_id, charges in by_event.items():  # as on costs.priced: an event whole, in one partition
        parts[random.Random(event_id).randrange(3)].add(charges)
    published = [window_record(k, part.value(k), partition=i, as_of=START)
                 for i, part in enumerate(parts) for k in part.windows]
    expected = [window_record(k, whole.value(k), partition=0, as_of=START) for k in whole.windows]
    for by in ("team", "total", "model"):
        got = {(r["window_start"], r["value"]): r for r in spend_rows(published, by=by, period="day")}
        want = {(r["window_start"], r["value"]): r for r in spend_rows(expected, by=by, period="day")}
        assert got.keys() == want.keys()
        for ident, row in want.items():
            assert abs(got[ident]["usd"] - row["usd"]) < 1e-6
            assert got[ident]["events"] == row["events"]
            if "unit_economics" in row:
                mine, theirs = got[ident]["unit_economics"], row["unit_economics"]
                assert mine["users"]["active"] == theirs["users"]["active"]
                assert abs(mine["tokens"]["tokens"] - theirs["tokens"]["tokens"]) < 1e-6


def test_latest_record_per_partition_wins_and_last_keeps_the_newest_windows() -> None:
    t = tracker()
    t.add([charge("a", START, 1.0), charge("b", START + timedelta(days=1), 2.0)])
    early = [window_record(k, t.value(k), partition=0, as_of=START) for k in t.windows]
    t.add([charge("c", START + timedelta(days=1), 3.0)])
    late = [window_record(k, t.value(k), partition=0, as_of=START) for k in t.windows]
    assert len(latest_records(early + late)) == len(late)
    rows = spend_rows(early + late, by="team", period="day", last=1)
    assert [(r["value"], r["usd"]) for r in rows] == [("search", 5.0)]


def test_shared_costs_are_pooled_per_day_and_settled_by_usage() -> None:
    config = SharedCostsConfig(rules=[{"name": "gateway", "match": {"x_App": "gateway"}}])
    allocation = load_allocation().model_copy(update={"shared_costs": config})
    t = SpendTracker(Allocator(allocation), config)
    t.add([charge("s", START, 3.0, None, x_App="gateway"),  # the shared gateway, no team
           charge("a", START, 6.0, "search"), charge("b", START, 2.0, "cx")])
    records = [window_record(k, t.value(k), partition=0, as_of=START) for k in t.windows]
    rows = spend_rows(records, by="total", period="day", shared_costs=config)
    assert rows[0]["shared"][0]["shares_usd"] == {"search": 2.25, "cx": 0.75}


def test_an_event_split_across_workloads_counts_once_per_window() -> None:
    t = tracker()
    t.add([charge("e1:gpu0", START, 1.0, x_Workload="train-a"),
           charge("e1:gpu1", START, 2.0, x_Workload="eval-b")])
    team = t.windows[window_key("day", T0, "team", "search")]
    assert (team["usd"], team["charges"], team["events"]) == (3.0, 2, 1)
    assert t.windows[window_key("day", T0, "workload", "eval-b")]["events"] == 1


def test_window_keys_are_the_windows_a_charge_was_counted_in() -> None:
    t = tracker()
    record = charge("e1:gpu0", START, 1.0, x_Workload="train-a")
    changed = t.add([record])
    assert t.window_keys([record]) == {k for k in changed if k.startswith(WINDOW + "|")}
    assert window_key("day", T0, "workload", "train-a") in t.window_keys([record])


def test_running_totals_split_allocated_unallocated_and_late_spend() -> None:
    t = tracker()
    t.add([charge("a", START, 1.0), charge("b", START, 2.0, team=None)])
    t.add([charge("c", START + timedelta(days=2), 4.0)])
    t.add([charge("d", START, 8.0)])  # its day closed: counted, and late
    assert (t.allocated_usd, t.unallocated_usd, t.late_usd) == (13.0, 2.0, 8.0)
