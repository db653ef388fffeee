"""The corrected commit logic: never commit past a message no stream acknowledged."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.transport.consumer import Consumer
from faust.types.tuples import ConsumerMessage
from intervaltree import IntervalTree

from streams import app as _app  # noqa: F401 - importing the app module installs the fix
from streams.faust_fixes import guarded_ack, new_offset

TP = ("usage.gpu", 3)


def consumer(acked: list[int], committed: int | None, gaps: list[tuple[int, int]] = ()) -> Any:
    tree = IntervalTree()
    for begin, end in gaps:
        tree.addi(begin, end)
    return SimpleNamespace(
        _acked={TP: list(acked)}, _acked_index={TP: set(acked)}, _committed_offset={TP: committed},
        _gap=defaultdict(IntervalTree, {TP: tree}),
    )


def test_the_fix_is_installed_on_faust_consumers() -> None:
    assert Consumer._new_offset is new_offset


def test_a_run_from_the_committed_offset_is_committed() -> None:
    c = consumer([12, 13, 14, 16], committed=12)
    assert new_offset(c, TP) == 15
    assert c._acked[TP] == [16]


def test_nothing_is_committed_past_an_unacknowledged_message_at_the_committed_offset() -> None:
    # faust 0.15.3 returned 15 here and message 12 was never processed
    c = consumer([13, 14], committed=12)
    assert new_offset(c, TP) is None
    assert c._acked[TP] == [13, 14]  # kept until 12 is acknowledged after the re-read
    c._acked[TP].append(12)
    assert new_offset(c, TP) == 15


def test_known_gaps_count_as_acknowledged() -> None:
    c = consumer([14, 15], committed=12, gaps=[(12, 14)])  # 12 and 13 do not exist (markers)
    assert new_offset(c, TP) == 16


def test_without_a_committed_offset_the_first_run_is_committed() -> None:
    assert new_offset(consumer([0, 1, 2], committed=None), TP) == 3
    assert new_offset(consumer([], committed=5), TP) is None


def acking_consumer(generation: int, flow_active: bool) -> Any:
    flow = SimpleNamespace(is_active=lambda: flow_active)
    topics = SimpleNamespace(acks_enabled_for=lambda topic: True)
    app = SimpleNamespace(consumer_generation_id=generation, flow_control=flow, topics=topics)
    return SimpleNamespace(
        app=app, _committed_offset=defaultdict(lambda: None, {TP: 85}), _acked=defaultdict(list),
        _acked_index=defaultdict(set), _unacked_messages=set(), _n_acked=0, _waiting_for_ack=None,
    )


def fetched(offset: int, generation: int) -> ConsumerMessage:
    return ConsumerMessage(TP[0], TP[1], offset, 0.0, 0, [], b"k", b"v", None, generation_id=generation)


def test_the_ack_guard_is_installed_on_faust_consumers() -> None:
    assert Consumer.ack is guarded_ack


def test_a_message_of_the_current_generation_is_acknowledged() -> None:
    c = acking_consumer(generation=7, flow_active=True)
    assert guarded_ack(c, fetched(85, generation=7))
    assert c._acked[TP] == [85]


def test_a_message_fetched_before_the_rebalance_does_not_count_as_processed() -> None:
    # faust skips it as stale and acknowledged it: offsets 85-92 were committed and never processed
    c = acking_consumer(generation=7, flow_active=True)
    stale = [fetched(offset, generation=6) for offset in range(85, 93)]
    c._unacked_messages.update(stale)
    assert not any(guarded_ack(c, message) for message in stale)
    assert c._acked[TP] == []
    assert not c._unacked_messages
    assert new_offset(c, TP) is None


def test_a_message_met_while_the_flow_is_suspended_does_not_count_as_processed() -> None:
    c = acking_consumer(generation=7, flow_active=False)
    assert not guarded_ack(c, fetched(85, generation=7))
    assert c._acked[TP] == []
