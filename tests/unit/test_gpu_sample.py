"""Building gpu.sample events: the interval grid, deterministic event ids, validity."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

import streams.gpu_agent.sample as sample_module
from streams.core.events import GpuReading, parse_message
from streams.gpu_agent.sample import MAX_EVENT_ID, NodeFacts, build_sample, grid_tick, sample_event_id
from streams.producer import serialize

READING = GpuReading(index=0, uuid="GPU-1", model="NVIDIA A10G", util_pct=42.5, mem_used_mib=1024.0,
                     power_w=150.0, workload="ml/train-0", labels={"namespace": "ml", "pod": "train-0"})
FACTS = NodeFacts(node="gpu-a", cluster="prod", provider="aws", region="us-east-1",
                  instance_type="g5.xlarge", pricing="spot", labels={"team": "ml"})


def test_the_module_doctests_pass() -> None:
    assert doctest.testmod(sample_module).failed == 0


# hypothesis takes naive bounds and attaches the zone itself
@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),  # noqa: DTZ001
                    timezones=st.just(UTC)),
       st.sampled_from([1, 5, 15, 60, 300]))
def test_grid_tick_is_on_the_grid_at_or_before_the_moment(moment: datetime, interval: int) -> None:
    tick = grid_tick(moment, interval)
    assert tick <= moment < tick + timedelta(seconds=interval)
    assert int(tick.timestamp()) % interval == 0 and tick.tzinfo is UTC


def test_naive_moments_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        grid_tick(datetime(2026, 1, 1), 15)  # noqa: DTZ001 - the point of the test


def test_a_resend_of_the_same_interval_has_the_same_event_id() -> None:
    tick = datetime(2026, 1, 1, 0, 1, 0, tzinfo=UTC)
    first = build_sample([READING], FACTS, tick, 15)
    again = build_sample([READING.model_copy(update={"util_pct": 99.0})], FACTS, tick, 15)
    assert first["event_id"] == again["event_id"] == "gpu/prod/gpu-a/2026-01-01T00:00:45Z"
    following = build_sample([READING], FACTS, tick + timedelta(seconds=15), 15)
    assert following["event_id"] != first["event_id"]


def test_event_ids_differ_by_node_and_cluster() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ids = {sample_event_id(NodeFacts(node=n, cluster=c), start) for n in ("a", "b") for c in ("x", "y")}
    assert len(ids) == 4


def test_long_names_give_a_bounded_stable_id() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    long_a, long_b = NodeFacts(node="n" * 250), NodeFacts(node="n" * 249 + "m")
    assert len(sample_event_id(long_a, start)) <= MAX_EVENT_ID
    assert sample_event_id(long_a, start) == sample_event_id(long_a, start) != sample_event_id(long_b, start)


def test_the_sample_covers_the_interval_before_the_tick_and_is_a_valid_event() -> None:
    doc = build_sample([READING], FACTS, datetime(2026, 1, 1, 0, 0, 15, tzinfo=UTC), 15)
    parsed = parse_message(serialize(doc))
    assert not parsed.rejections
    (event,) = parsed.events
    assert event.time == datetime(2026, 1, 1, tzinfo=UTC) and event.interval_s == 15
    assert (event.node, event.cluster, event.provider, event.region, event.instance_type, event.pricing) == (
        "gpu-a", "prod", "aws", "us-east-1", "g5.xlarge", "spot")
    assert event.labels == {"team": "ml"}
    assert event.gpus == [READING]
    assert doc["time"] == "2026-01-01T00:00:00Z"


def test_a_tick_off_the_grid_is_refused() -> None:
    with pytest.raises(ValueError, match="not on the 15s grid"):
        build_sample([READING], FACTS, datetime(2026, 1, 1, 0, 0, 7, tzinfo=UTC), 15)
