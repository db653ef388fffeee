"""A catch-up batch's spend is counted and logged in parts: each changelog message under the broker's limit.

The spend stage logs a part's marks, changed windows and watermark as one message (``track_spend``,
``streams/spend_agents.py``). A 2.7 MB message held 45,000 charges, so one message per batch would reach
the broker's 16 MB at about 290,000 charges, and a refused changelog send stops the worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic_core import from_json

from streams.app import MAX_MESSAGE_BYTES_ON_WIRE
from streams.core.allocation import Allocator, load_allocation
from streams.core.bounded_groups import MAX_ITEMS_PER_MESSAGE
from streams.core.costs import CostRecord
from streams.core.spend import SpendTracker, event_parts
from streams.metrics import WorkerMetrics
from streams.spend_agents import MARK, WATERMARK_KEY, SpendState, count_spend, load_tracker
from streams.tables import batch_message, encode_entries
from tests.unit.test_spend import simulated_records

PART = 2_500  # charges per part in the agent-level tests: the simulated batch (48,023) is 20 parts


def tracker() -> SpendTracker:
    allocator = Allocator(load_allocation())
    return SpendTracker(allocator, allocator.config.shared_costs, lateness_s=6 * 3600)


@given(st.lists(st.integers(0, 5), max_size=40), st.integers(1, 8))
def test_parts_keep_every_charge_in_order_and_each_event_whole(sizes: list[int], limit: int) -> None:
    records: list[CostRecord] = [
        {"x_EventId": f"e{event}", "x_ChargeId": f"e{event}:{n}"}  # type: ignore[typeddict-item]
        for event, size in enumerate(sizes) for n in range(size)
    ]
    parts = event_parts(records, limit)
    assert [record for part in parts for record in part] == records
    events_of = [{record["x_EventId"] for record in part} for part in parts]
    assert all(not (a & b) for i, a in enumerate(events_of) for b in events_of[i + 1:])  # none split
    assert all(len(part) <= limit or len(events) == 1 for part, events in zip(parts, events_of, strict=True))


def test_counting_in_parts_gives_the_windows_of_one_count() -> None:
    records = simulated_records()
    whole, in_parts = tracker(), tracker()
    whole.add(records)
    parts = event_parts(records, limit=97)
    assert len(parts) > 10
    for part in parts:
        in_parts.add(part)

    def rounded(value: dict[str, Any]) -> dict[str, Any]:
        return {k: round(v, 9) if isinstance(v, float) else v for k, v in value.items()}

    assert whole.windows.keys() == in_parts.windows.keys()
    assert all(rounded(whole.value(key)) == rounded(in_parts.value(key)) for key in whole.windows)
    assert round(whole.allocated_usd, 9) == round(in_parts.allocated_usd, 9)
    assert round(whole.unallocated_usd, 9) == round(in_parts.unallocated_usd, 9)


def test_a_catch_up_batchs_spend_messages_stay_under_the_brokers_limit() -> None:
    # 300,000 charges, three per event, ids as the simulator writes them
    records: list[CostRecord] = [
        {"x_EventId": f"sim5-1796193515-gpu-aws-us-west-2-gpu-03-{n // 3}",  # type: ignore[typeddict-item]
         "x_ChargeId": f"sim5-1796193515-gpu-aws-us-west-2-gpu-03-{n // 3}:gpu{n % 3}"}
        for n in range(300_000)
    ]
    whole = [(MARK + record["x_ChargeId"], 1) for record in records] + [(WATERMARK_KEY, 1796195930)]
    assert len(batch_message(encode_entries(whole))) > MAX_MESSAGE_BYTES_ON_WIRE  # one message: refused
    parts = event_parts(records)
    assert len(parts) == 16  # 19,998 charges each: events stay whole
    assert all(len(part) <= MAX_ITEMS_PER_MESSAGE for part in parts)
    largest = max(
        len(batch_message(encode_entries([(MARK + r["x_ChargeId"], 1) for r in part]))) for part in parts
    )
    assert largest < MAX_MESSAGE_BYTES_ON_WIRE / 8  # room for the part's changed windows


class ChangelogTable:
    """The spend table as its changelog: one message per ``put_batch``, the store is their replay."""

    def __init__(self, messages: list[tuple[str, list[tuple[str, Any]]]] | None = None) -> None:
        self.messages: list[tuple[str, list[tuple[str, Any]]]] = []
        self.store: dict[str, Any] = {}
        for key, items in messages or []:
            self.put_batch(items, key)

    def contains_many(self, keys: Sequence[str], partition: int | None = None) -> list[bool]:
        return [key in self.store for key in keys]

    def put_batch(
        self, items: Sequence[tuple[str, Any]], batch_key: str, partition: int | None = None
    ) -> None:
        logged = from_json(batch_message(encode_entries(items)))["items"]  # as the changelog carries them
        self.messages.append((batch_key, logged))
        self.store.update({key: value for key, value in logged})

    def partition_items(self, partitions: Iterable[int], prefix: str = "") -> Iterator[tuple[str, Any]]:
        return ((key, value) for key, value in self.store.items() if key.startswith(prefix))


def windows(table: ChangelogTable) -> dict[str, Any]:
    return {key: round(value["usd"], 9) for key, value in table.store.items() if key.startswith("w|")}


def counted(table: ChangelogTable, records: Sequence[CostRecord], limit: int) -> SpendState:
    state = SpendState(Allocator(load_allocation()), lateness_s=6 * 3600)
    load_tracker(state, table, 0)
    count_spend(state, table, WorkerMetrics(), 0, "costs.priced:0:10-99", records, limit)
    return state


def test_a_batch_is_logged_in_parts_that_each_hold_their_marks() -> None:
    records = simulated_records()
    whole, parted = ChangelogTable(), ChangelogTable()
    counted(whole, records, limit=len(records))
    counted(parted, records, limit=PART)
    keys = [key for key, _ in parted.messages]
    assert len(keys) > 10
    assert keys[:3] == ["costs.priced:0:10-99", "costs.priced:0:10-99#1", "costs.priced:0:10-99#2"]
    assert all(sum(k.startswith(MARK) for k, _ in items) <= PART for _, items in parted.messages)
    assert windows(parted) == windows(whole)


def test_a_crash_between_two_parts_counts_each_charge_once() -> None:
    records = simulated_records()
    whole = ChangelogTable()
    counted(whole, records, limit=len(records))
    first = ChangelogTable()
    counted(first, records, limit=PART)
    for crash_after in (1, len(first.messages) // 2, len(first.messages) - 1):
        survivor = ChangelogTable(first.messages[:crash_after])  # the parts logged before the kill
        counted(survivor, records, limit=PART)  # the batch is read again, by a rebuilt tracker
        assert windows(survivor) == windows(whole)
