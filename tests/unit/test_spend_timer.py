"""The spend timer's loop over changed windows, while a rebalance rebuilds the trackers between sends."""

from __future__ import annotations

import asyncio

from streams.core.allocation import Allocator, load_allocation
from streams.core.spend import SpendTracker, empty_totals, window_key
from streams.spend_agents import SpendState, publish_dirty


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
