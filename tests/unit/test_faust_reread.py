"""Reading a partition again: no jump in offsets counts as processed, fences, retention, first commits."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from hypothesis import given, settings
from hypothesis import strategies as st
from intervaltree import IntervalTree

from streams import app as _app  # noqa: F401 - importing the app module installs the fixes
from streams import faust_reread
from streams.faust_fixes import ignore_read_gaps, new_offset
from streams.faust_reread import FENCES, fenced_getmany, read_again, seek_and_mark_starts
from streams.metrics import WorkerMetrics
from tests.unit.test_faust_fixes import TP, consumer

OTHER = ("usage.llm", 0)
CHANGELOG = ("bw-event_time_by_event_id-changelog", 3)


@pytest.fixture(autouse=True)
def no_fences() -> Any:
    FENCES.clear()
    faust_reread.RESEEKS.clear()
    yield
    FENCES.clear()
    faust_reread.RESEEKS.clear()


def test_the_fixes_are_installed_on_faust_consumers() -> None:
    assert Consumer._add_gap is ignore_read_gaps
    assert Consumer.getmany is fenced_getmany
    assert Consumer.perform_seek is seek_and_mark_starts


def test_a_jump_in_the_offsets_read_does_not_count_as_processed() -> None:
    # A restart's seek to committed offset 4 landed while records up to 29 were being delivered: faust
    # read 30 next and took 5-29 for offsets that do not exist, so they were committed unprocessed.
    c = consumer([4, 30, 31], committed=4)
    asyncio.run(Consumer._add_gap(c, TP, 5, 30))
    assert new_offset(c, TP) == 5
    assert c._acked[TP] == [30, 31]  # held until 5-29 are read again and acknowledged


def fetching(records: list[tuple[Any, int]]) -> Any:
    async def getmany(self: Any, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        for tp, offset in records:
            yield tp, SimpleNamespace(offset=offset)
    return getmany


def delivered(
    monkeypatch: pytest.MonkeyPatch, records: list[tuple[Any, int]], c: Any = None
) -> list[tuple[Any, int]]:
    monkeypatch.setattr(faust_reread, "_faust_getmany", fetching(records))
    c = c or Partitions(starts={}, committed={})

    async def read() -> list[tuple[Any, int]]:
        return [(tp, message.offset) async for tp, message in fenced_getmany(c, 1.0)]
    return asyncio.run(read())


def test_a_fence_holds_back_records_fetched_before_the_seek(monkeypatch: pytest.MonkeyPatch) -> None:
    FENCES[TP] = (13, time.monotonic())
    got = delivered(monkeypatch, [(TP, 40), (OTHER, 5), (TP, 41), (TP, 13), (TP, 14), (OTHER, 6)])
    assert got == [(OTHER, 5), (TP, 13), (TP, 14), (OTHER, 6)]
    assert FENCES == {}


def test_a_fence_whose_record_does_not_come_seeks_to_it_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its record was taken off the fetch before the seek: a second on, the fence seeks to it again."""
    c = Partitions(starts={}, committed={}, ends={TP: 20})
    FENCES[TP] = (13, time.monotonic())  # just raised: what was fetched before the seek may still come
    assert delivered(monkeypatch, [(TP, 14), (OTHER, 2)], c) == [(OTHER, 2)]
    assert c.seeks == []
    FENCES[TP] = (13, time.monotonic() - 1.5)
    assert delivered(monkeypatch, [(TP, 13), (TP, 14)], c) == [(TP, 13), (TP, 14)]
    assert c.seeks == [(TP, 13)]  # before this fetch's records
    assert FENCES == {} and faust_reread.RESEEKS == {}


def test_without_fences_every_record_goes_through(monkeypatch: pytest.MonkeyPatch) -> None:
    records = [(TP, 7), (OTHER, 2), (TP, 8)]
    assert delivered(monkeypatch, records) == records


class Partitions:
    """A consumer's side of a re-read: log start offsets, seeks, gaps and committed offsets."""

    def __init__(
        self, starts: dict[Any, int], committed: dict[Any, int | None], ends: dict[Any, int] | None = None
    ) -> None:
        self.starts, self.seeks, self.ends = starts, [], ends or {}
        self._gap: defaultdict[Any, IntervalTree] = defaultdict(IntervalTree)
        self._committed_offset: defaultdict[Any, int | None] = defaultdict(lambda: None, committed)
        self._acked: dict[Any, list[int]] = {}
        self._acked_index: dict[Any, set[int]] = {}
        acking = {TP[0], OTHER[0]}
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: topic in acking))

    async def earliest_offsets(self, *tps: Any) -> dict[Any, int]:
        return {tp: self.starts[tp] for tp in tps}

    async def seek_wait(self, partitions: dict[Any, int]) -> None:
        self.seeks += partitions.items()

    def assignment(self) -> set[Any]:
        return {Topic(*TP), Topic(*OTHER), Topic(*CHANGELOG)}

    def highwater(self, tp: Any) -> int | None:
        return self.ends.get(tp)


class Topic(tuple):
    """A hashable partition with faust's ``topic`` attribute."""

    def __new__(cls, topic: str, partition: int) -> Topic:
        return super().__new__(cls, (topic, partition))

    @property
    def topic(self) -> str:
        return self[0]


def counted(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(f"{name}_total", labels) or 0.0


def test_a_re_read_seeks_behind_a_fence_and_is_counted() -> None:
    tp, metrics = Topic(*TP), WorkerMetrics()
    c = Partitions(starts={tp: 0}, committed={tp: 12})
    asyncio.run(read_again(c, tp, 12, "dropped", metrics))
    assert c.seeks == [(tp, 12)]
    assert FENCES[tp][0] == 12
    assert counted(metrics, "burnwatch_partition_rereads", topic=TP[0], reason="dropped") == 1


def test_messages_deleted_by_retention_become_a_gap_and_the_commit_moves_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tp, metrics = Topic(*TP), WorkerMetrics()
    c = Partitions(starts={tp: 20}, committed={tp: 12})
    c._acked[tp], c._acked_index[tp] = [20, 21], {20, 21}
    asyncio.run(read_again(c, tp, 12, "failed", metrics))
    assert c.seeks == [] and FENCES == {}
    assert "messages 12 to 19 were deleted by the topic's retention" in caplog.text
    assert counted(metrics, "burnwatch_messages_lost_to_retention", topic=TP[0]) == 8
    assert counted(metrics, "burnwatch_partition_rereads", topic=TP[0], reason="failed") == 0
    assert new_offset(c, TP) == 22


def test_a_rebalance_seek_fences_and_marks_partitions_never_committed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def seek(self: Any) -> None:
        pass
    monkeypatch.setattr(faust_reread, "_faust_perform_seek", seek)
    FENCES[TP] = (12, time.monotonic())
    tp, other, changelog = Topic(*TP), Topic(*OTHER), Topic(*CHANGELOG)
    c = Partitions(starts={other: 3, changelog: 0}, committed={tp: 12})
    asyncio.run(seek_and_mark_starts(c))
    # the rebalance's seek replaces every fence by one at each committed offset it found, and the
    # partitions never committed are sought to their log start behind a fence (aiokafka leaves them)
    assert {p: offset for p, (offset, _) in FENCES.items()} == {tp: 12, other: 3}
    assert c.seeks == [(other, 3)]
    assert c._committed_offset[tp] == 12
    assert c._committed_offset[other] == 3
    assert c._committed_offset[changelog] is None  # tables read changelogs without acknowledgements
    # so a dropped first message holds the group's first commit too
    c._acked[other], c._acked_index[other] = [4, 5], {4, 5}
    assert new_offset(c, other) is None


def test_a_partition_never_committed_is_read_again_from_its_log_start_at_each_rebalance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The log start marked as its committed offset at one rebalance is not a committed offset at the next.

    Each seek takes the log start again (retention may have moved it), seeks there and fences there: a
    record fetched before the rebalance and skipped by faust is read again at once, where a fence alone
    waited for a record this worker had read before, and dropped the rest.
    """
    async def seek(self: Any) -> None:  # the group committed nothing: faust changes no committed offset
        pass
    monkeypatch.setattr(faust_reread, "_faust_perform_seek", seek)
    tp, other = Topic(*TP), Topic(*OTHER)
    c = Partitions(starts={tp: 0, other: 0}, committed={})
    asyncio.run(seek_and_mark_starts(c))
    assert c._committed_offset[other] == 0 and FENCES[other][0] == 0
    assert set(c.seeks) == {(other, 0), (tp, 0)}
    c.starts[other] = 5  # retention deleted the first five messages
    asyncio.run(seek_and_mark_starts(c))
    assert c._committed_offset[other] == 5 and FENCES[other][0] == 5
    assert (other, 5) in c.seeks


def test_without_the_first_offsets_a_re_read_seeks_as_before(caplog: pytest.LogCaptureFixture) -> None:
    tp = Topic(*TP)
    c = Partitions(starts={}, committed={tp: 12})  # earliest_offsets raises KeyError
    asyncio.run(read_again(c, tp, 12, "dropped"))
    assert c.seeks == [(tp, 12)]
    assert "could not read the first offsets of 1 partitions" in caplog.text


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(min_value=1, max_value=40),
    committed=st.integers(min_value=0, max_value=10),
    data=st.data(),
)
def test_the_commit_never_passes_an_unacknowledged_message(size: int, committed: int, data: Any) -> None:
    """Whatever is acknowledged, in any order, and whatever jumps faust reads, the commit stops at the
    first unacknowledged offset; offsets below the log start were deleted by retention (a gap)."""
    start = data.draw(st.integers(min_value=0, max_value=committed + 5), label="log start")
    end = max(committed + size, start + 1)
    offsets, readable = range(committed, end), range(max(start, committed), end)
    acked = data.draw(st.lists(st.sampled_from(readable), unique=True), label="acknowledged, in order")
    jumps = data.draw(st.lists(st.tuples(st.sampled_from(offsets), st.sampled_from(offsets))), label="jumps")
    c = consumer([], committed=committed)
    if start > committed:
        c._gap[TP].addi(committed, start)  # what read_again marks
    mark = committed
    for offset in acked:
        for low, high in jumps:
            asyncio.run(Consumer._add_gap(c, TP, low, high))
        c._acked[TP].append(offset)
        c._acked_index[TP].add(offset)
        moved = new_offset(c, TP)
        if moved is not None:
            assert moved > mark
            mark = c._committed_offset[TP] = moved
    first_unacknowledged = min((o for o in readable if o not in acked), default=end)
    assert mark <= first_unacknowledged
    if not c._gap[TP] and start > committed:
        assert mark == first_unacknowledged  # the gap was used up: the commit moved past it
