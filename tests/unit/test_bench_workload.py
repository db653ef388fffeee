"""The benchmark's pure parts: the workload it produces and the figures it computes from receive times."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, datetime

import pytest

from bench.baseline import encode_costs, price_in_process
from bench.workload import (
    EVENT_ID_PREFIX,
    Mix,
    build_workload,
    event_indices,
    event_pool,
    percentile,
    summarize_latencies,
)
from streams.core.catalog import load_catalog
from streams.core.detector_feed import latest_by_lane
from streams.core.events import parse_message
from streams.core.pricing import Pricer
from streams.names import TOPIC_FOR_TYPE
from streams.producer import entity_key_of, partition_for

START = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def workload():
    return build_workload(3000, envelope_size=100, partitions=4, start=START)


def decoded(workload):
    for number, item in enumerate(workload.envelopes):
        yield number, item, json.loads(item.value)


def test_every_event_is_valid_and_carried_once(workload):
    ids = []
    for _, item, _ in decoded(workload):
        parsed = parse_message(item.value)
        assert parsed.rejections == []
        assert len(parsed.events) == item.events
        ids.extend(event.event_id for event in parsed.events)
    assert len(ids) == 3000
    assert sorted(ids) == sorted(f"{EVENT_ID_PREFIX}{i}" for i in range(3000))


def test_envelopes_are_partitioned_like_the_edge_producer(workload):
    for _, item, events in decoded(workload):
        assert 1 <= item.events <= 100
        assert item.key == entity_key_of(events[0]).encode()
        for event in events:
            assert TOPIC_FOR_TYPE[event["type"]] == item.topic
            assert partition_for(entity_key_of(event), 4) == item.partition


def test_envelope_of_maps_each_event_to_its_envelope(workload):
    for number, _, events in decoded(workload):
        for event in events:
            index = int(event["event_id"].removeprefix(EVENT_ID_PREFIX))
            assert workload.envelope_of[index] == number


def test_event_times_are_unique_utc_milliseconds_from_the_start(workload):
    times = {}
    for _, _, events in decoded(workload):
        for event in events:
            index = int(event["event_id"].removeprefix(EVENT_ID_PREFIX))
            times[index] = datetime.fromisoformat(event["time"])
    assert times[0] == START
    assert times[1999] == datetime(2026, 3, 1, 0, 0, 1, 999000, tzinfo=UTC)
    assert len(set(times.values())) == 3000


def test_mix_follows_the_shares_and_gpu_samples_have_eight_gpus(workload):
    kinds = Counter()
    for _, _, events in decoded(workload):
        for event in events:
            kinds[event["type"]] += 1
            if event["type"] == "gpu.sample":
                assert len(event["gpus"]) == 8
    assert kinds == Counter(workload.counts)
    assert 0.82 < kinds["llm.request"] / 3000 < 0.88
    assert 0.08 < kinds["gpu.sample"] / 3000 < 0.12
    assert 0.03 < kinds["storage.usage"] / 3000 < 0.07


def test_same_seed_same_bytes_other_seed_other_bytes():
    def values(seed):
        return [e.value for e in build_workload(300, envelope_size=50, seed=seed, start=START).envelopes]

    assert values(3) == values(3)
    assert values(3) != values(4)


def test_byte_limit_splits_envelopes_before_the_event_count_does():
    small = build_workload(400, envelope_size=1000, partitions=1, start=START, max_bytes=20_000)
    assert all(len(item.value) <= 20_000 for item in small.envelopes)
    assert sum(item.events for item in small.envelopes) == 400


def test_mix_can_be_a_single_type():
    only_llm = build_workload(200, mix=Mix(llm=1, gpu=0, storage=0), start=START)
    assert only_llm.counts == {"llm.request": 200, "gpu.sample": 0, "storage.usage": 0}
    assert {item.topic for item in only_llm.envelopes} == {"usage.llm"}


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="must be >= 1"):
        build_workload(0)
    with pytest.raises(ValueError, match="shares"):
        Mix(llm=0, gpu=0, storage=0).weights()


def test_event_indices_find_every_charge_in_agent_output(workload):
    pricer = Pricer(load_catalog(None))
    first = workload.envelopes[0]
    records = pricer.price_many(parse_message(first.value).events)
    found = []
    for _, value in encode_costs(records):
        found.extend(event_indices(value))
    expected = [int(r["x_EventId"].removeprefix(EVENT_ID_PREFIX)) for r in records]
    assert sorted(found) == sorted(expected)
    assert set(found) == {i for i in range(3000) if workload.envelope_of[i] == 0}


def test_in_process_pricing_prices_every_event_once(workload):
    values = [item.value for item in workload.envelopes[:5]]
    result = price_in_process(values + values[:1])  # a repeated envelope adds no events
    assert result.events == sum(item.events for item in workload.envelopes[:5])
    assert result.records >= result.events
    assert result.to_dict()["events_per_s"] > 0


def test_percentiles_use_nearest_rank():
    ordered = [float(i) for i in range(1, 1001)]
    assert percentile(ordered, 50) == 500.0
    assert percentile(ordered, 99) == 990.0
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)
    assert summarize_latencies([0.2, 0.1, 0.3]) == {"p50_ms": 200.0, "p99_ms": 300.0, "max_ms": 300.0}


def test_final_event_time_is_the_last_report_of_the_lane_that_stops_first(workload):
    # the Watermark's lanes, from the priced records of the whole workload (latest_by_lane)
    pricer = Pricer(load_catalog(None))
    last: dict[str, float] = {}
    for item in workload.envelopes:
        for lane, t in latest_by_lane(pricer.price_many(parse_message(item.value).events)).items():
            last[lane] = max(last.get(lane, t), t)
    assert workload.final_event_time == min(last.values())
    assert len(workload.last_by_lane) <= len(last)  # a node's GPUs are one lane of the workload's


def test_kept_sessions_come_in_the_pool_order_and_each_pass_renames_them() -> None:
    def sessions(mode: str) -> dict[str, list[int]]:
        w = build_workload(30_000, mix=Mix(llm=1, gpu=0, storage=0), start=START, sessions=mode)
        out: dict[str, list[int]] = defaultdict(list)
        for envelope in w.envelopes:
            for event in json.loads(envelope.value):
                out[event["session"]].append(int(event["event_id"].removeprefix("bench-")))
        return out

    kept, drawn = sessions("kept"), sessions("drawn")
    pool = len(event_pool(7, START)["llm.request"])
    passes = {name.partition("~")[2] for name in kept}
    assert passes == {"", *(str(n) for n in range(1, 30_000 // pool + 1))}
    # a session is one pass's: its requests are no further apart than the pool is long
    assert all(max(ids) - min(ids) < pool for ids in kept.values())
    assert len(kept) > len(drawn)  # drawn, pool sessions come back again and again
    assert max(max(ids) - min(ids) for ids in drawn.values()) > pool
