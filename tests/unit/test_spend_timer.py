"""The spend timer's loop over changed windows, while a rebalance rebuilds the trackers between sends.

Also: a revoked partition's windows are never sent by the worker that lost it, and a rebuilt tracker
holds what the table holds, every window marked to send.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import Any

from streams.core.allocation import Allocator, load_allocation
from streams.core.spend import SpendTracker, empty_totals, window_key
from streams.spend_agents import WATERMARK_KEY, SpendState, load_tracker, publish_dirty
from tests.unit.test_spend import simulated_records


def spend_state(partitions: dict[int, list[str]]) -> SpendState:
    state = SpendState(Allocator(load_allocation()), lateness_s=3600)
    for partition, keys in partitions.items():
        tracker = state.tracker(partition)
        for key in keys:
            tracker.windows[key] = empty_totals()
        state.dirty[partition] = set(keys)
    return state


def hour(team: str) -> str:
    return window_key("hour", 1767261600, "team", team)


def test_every_changed_window_is_sent_once_and_the_marks_cleared() -> None:
    a, b, c = hour("a"), hour("b"), hour("c")
    state = spend_state({0: [a], 1: [b, c]})
    sent: list[tuple[int, str]] = []

    async def send(partition: int, key: str, tracker: SpendTracker) -> None:
        sent.append((partition, key))

    asyncio.run(publish_dirty(state, send))
    assert sorted(sent) == [(0, a), (1, b), (1, c)]
    assert state.dirty == {0: set(), 1: set()}


def test_a_partition_rebuilt_during_a_send_is_left_and_one_handed_away_is_not_sent() -> None:
    a, b = hour("a"), hour("b")
    state = spend_state({0: [a, b], 1: [hour("c")]})
    old_trackers = dict(state.trackers)
    sent: list[tuple[int, str, bool]] = []

    async def send(partition: int, key: str, tracker: SpendTracker) -> None:
        sent.append((partition, key, tracker is old_trackers.get(partition)))
        await asyncio.sleep(0)
        if len(sent) == 1:  # a rebalance's rebuild: partition 0 stays (rebuilt), 1 goes to another worker
            state.trackers.clear()
            state.dirty.clear()
            rebuilt = state.tracker(0)
            rebuilt.windows.update({a: empty_totals(), b: empty_totals()})
            state.dirty[0] = set(rebuilt.windows)

    asyncio.run(publish_dirty(state, send))
    assert len(sent) == 1 and sent[0][0] == 0  # nothing more from the old trackers
    assert state.dirty == {0: {a, b}}  # the rebuilt partition publishes all it holds next time
    assert 1 not in state.trackers


def test_a_revoked_partition_is_not_sent_even_when_revoked_during_a_send() -> None:
    a, b, c = hour("a"), hour("b"), hour("c")
    state = spend_state({0: [a, b], 1: [c], 2: [a]})
    state.forget({2})  # revoked before the timer ran
    sent: list[tuple[int, str]] = []

    async def send(partition: int, key: str, tracker: SpendTracker) -> None:
        sent.append((partition, key))
        await asyncio.sleep(0)
        if partition == 0:
            state.forget({0})  # revoked while its first window was being sent

    asyncio.run(publish_dirty(state, send))
    assert [partition for partition, _ in sent].count(0) == 1  # the send under way, nothing after it
    assert (1, c) in sent and len(sent) == 2  # partition 2's window is not sent
    assert sorted(state.trackers) == [1] and sorted(state.dirty) == [1]


class Table:
    """The spend table's entries of each partition, read by prefix as ``BatchLoggedTable`` does."""

    def __init__(self, entries: dict[int, dict[str, Any]]) -> None:
        self.entries = entries

    def partition_items(self, partitions: Iterable[int], prefix: str = "") -> Iterator[tuple[str, Any]]:
        for partition in partitions:
            for key, value in sorted(self.entries.get(partition, {}).items()):
                if key.startswith(prefix):
                    yield key, value


def test_a_rebuilt_tracker_holds_the_tables_windows_and_sends_them_all() -> None:
    records = list(simulated_records())
    counted = SpendTracker(spend_state({}).allocator, lateness_s=3600)
    counted.add(records)
    saved = {key: counted.value(key) for key in counted.windows}
    table = Table({3: {**saved, WATERMARK_KEY: counted.watermark_s, "c|x:0": 1}, 4: {hour("z"): {}}})
    state = spend_state({3: [hour("stale")]})  # what this worker held before the rebalance

    rebuilt = load_tracker(state, table, 3)
    counted.forget_old()
    assert state.trackers == {3: rebuilt} and rebuilt.watermark_s == counted.watermark_s
    assert {key: rebuilt.value(key) for key in rebuilt.windows} == {
        key: counted.value(key) for key in counted.windows}
    assert state.dirty == {3: set(counted.windows)} and counted.windows
