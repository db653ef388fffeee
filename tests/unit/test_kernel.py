"""The compiled kernel (kernel/, Rust) gives exactly what the pure-Python detector feed gives.

The Python ``route`` and ``latest_by_lane`` are the reference: the kernel's must return the same dicts
(keys in the same order, the same items, written as the same JSON) on real priced records and on
generated ones, whatever the message offsets, and parse times as
``datetime.fromisoformat(text).timestamp()`` does. ``make install`` builds the kernel; with
``KERNEL=off`` (``BURNWATCH_DETECTOR_KERNEL=python``) these tests skip, anywhere else a missing kernel
fails them.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import zlib
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache, partial
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic_core import from_json, to_json
from typer.testing import CliRunner

from detectors.buckets import GpuBucket, LlmBucketer, LlmUsage
from detectors.config import BucketConfig, DetectorConfig, IdleGpuConfig, IdleOverride
from detectors.deferred import PENDING
from detectors.idle_gpu import IdleGpuDetector
from detectors.pending_log import CARRIED_PER_STEP, replay
from detectors.runner import DetectorRunner
from streams.commands.eval import scenario
from streams.core import detector_kernel
from streams.core.catalog import load_catalog
from streams.core.detector_feed import (
    LLM_STATES,
    LOG,
    PartitionDetectors,
    by_partition,
    latest_by_lane,
    plain,
    route,
    route_runs,
)
from streams.core.detector_feed import tick as tick_item
from streams.core.detector_kernel import KERNEL_API, PYTHON, KernelMissing, load_feed
from streams.core.events import EVENT_ADAPTER
from streams.core.open_inputs import OpenInputs
from streams.core.pricing import Pricer
from tests.unit.test_deferred import configs as deferred_configs
from tests.unit.test_deferred import outcome as deferred_outcome
from tests.unit.test_deferred import requests as deferred_requests

if os.environ.get("BURNWATCH_DETECTOR_KERNEL") == "python":
    pytest.skip("built without the kernel (make KERNEL=off)", allow_module_level=True)

import burnwatch_kernel  # noqa: E402 - after the skip: a missing kernel fails here, not silently

SOURCE = "usage.llm:3"
GPU_QUIET = burnwatch_kernel.IdleGpuQuiet


def same(records: list[dict[str, Any]], *args: Any, **kwargs: Any) -> None:
    """The kernel's ``route`` returns what the Python ``route`` returns: keys, order, items, bytes."""
    expected, got = route(records, *args, **kwargs), burnwatch_kernel.route(records, *args, **kwargs)
    assert list(got) == list(expected)
    assert to_json(got) == to_json(expected)
    assert got == expected
    lanes, got_lanes = latest_by_lane(records), burnwatch_kernel.latest_by_lane(records)
    assert list(got_lanes.items()) == list(lanes.items())
    # route's lanes: the same, read in the same pass; and the same inputs as without them
    routed_lanes: dict[str, float] = {}
    assert burnwatch_kernel.route(records, *args, lanes=routed_lanes, **kwargs) == expected
    assert list(routed_lanes.items()) == list(lanes.items())
    python_lanes: dict[str, float] = {}
    assert route(iter(records), *args, lanes=python_lanes, **kwargs) == expected
    assert list(python_lanes.items()) == list(lanes.items())
    if isinstance(kwargs.get("source"), str):
        same_runs(records, *args, **kwargs)


def partition_of(key: str) -> int:
    return zlib.crc32(key.encode()) % 3


def same_runs(records: list[dict[str, Any]], *args: Any, **kwargs: Any) -> None:
    """The kernel's ``route_runs`` gives the Python one's run items, its requests a ``Requests`` of the same
    lists; their open ones' JSON is what ``OpenInputs`` writes of the lists."""
    expected = route_runs(records, partition_of, *args, **kwargs)
    assert expected == by_partition(route(records, *args, **kwargs), partition_of, kwargs["source"],
                                    kwargs["messages"])
    routed_lanes: dict[str, float] = {}
    got = burnwatch_kernel.route_runs(records, partition_of, *args, lanes=routed_lanes, **kwargs)
    assert list(got) == list(expected)
    assert to_json(got, fallback=plain) == to_json(expected)
    assert list(routed_lanes.items()) == list(latest_by_lane(records).items())
    for partition, [run] in got.items():
        requests, lists = run[4], expected[partition][0][4]
        assert isinstance(requests, burnwatch_kernel.Requests)
        assert [*run[:4], run[5]] == [*expected[partition][0][:4], expected[partition][0][5]]
        assert len(requests) == len(lists) and bool(requests) == bool(lists)
        assert list(requests) == requests.to_lists() == lists
        assert [requests[i] for i in range(-len(lists), len(lists))] == lists + lists
        with pytest.raises(IndexError):
            requests[len(lists)]
        for flushed_to in [-math.inf, *sorted({item[2] for item in lists}), math.inf]:  # every cut
            packed = OpenInputs().save_chunks("u|", [requests, requests], (1.0, 10.0), flushed_to)
            as_lists = OpenInputs().save("u|", lists + lists, 2, (1.0, 10.0), flushed_to)
            assert packed == [(key, to_json(value)) for key, value in as_lists]  # the same bytes
            mixed = OpenInputs().save_chunks("u|", [requests, lists], (1.0, 10.0), flushed_to)
            assert to_json(mixed) == to_json(as_lists)  # a step with runs of both kinds: their lists


@lru_cache(maxsize=1)
def priced_records() -> list[dict[str, Any]]:
    """Ten simulated minutes with every incident kind (GPU, LLM, egress and storage records), priced."""
    pricer = Pricer(load_catalog(None))
    events = scenario(7, 1.0, duration_s=600, nodes=2, rate=4).events()
    return [record for event in events for record in pricer.price(EVENT_ADAPTER.validate_python(event))]


def messages_of(count: int, size: int, gap_every: int = 5) -> list[tuple[int, int]]:
    """Offsets and record counts of messages holding ``count`` records, ``size`` each, with gaps."""
    out, offset = [], 100
    for first in range(0, count, size):
        out.append((offset, min(size, count - first)))
        offset += 2 if len(out) % gap_every == 0 else 1
    return out


def test_the_kernel_routes_simulated_priced_records_as_python_does() -> None:
    records = priced_records()
    meters = {r["SkuMeter"] for r in records}
    assert {"gpu_hours", "egress_gb", "storage_gb_months", "input_tokens", "output_tokens"} <= meters
    for start in range(0, len(records), 1000):  # runs of 1,000 records (the stream's: up to ROUTE_RECORDS)
        run = records[start:start + 1000]
        same(run)
        same(run, source=SOURCE, messages=messages_of(len(run), 3))
        same(run, 15.0, source=SOURCE, messages=[(7, len(run))])


# Generated records: every meter and source the feed reads, shared names so groups and requests repeat,
# odd text (separators, non-ASCII) in ids and keys, and time texts of every shape.
NAMES = st.sampled_from(["ml", "search", "ä|b:c", "", "x" * 40,
                         # JSON escapes them: in the first eight bytes, past them, and at the end
                         'q"', "a-long-name\\with", "ctrl\x1f", "tab\tand-more-text", "ends-in-quote-\""])
OPTIONAL = st.one_of(st.none(), NAMES)
MONEY = st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from([0.0, -0.0, 1e-12, 0.1]))
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])


@st.composite
def times(draw: st.DrawFn) -> str:
    """A record's time text: what ``Pricer`` writes, other offsets and precisions, and other shapes."""
    # naive bounds, as hypothesis wants them; the times drawn are aware
    moment = draw(st.datetimes(datetime(1969, 12, 1), datetime(2201, 2, 1), timezones=ZONES))  # noqa: DTZ001
    spec = draw(st.sampled_from(["seconds", "milliseconds", "microseconds"]))
    text = moment.isoformat(timespec=spec)
    shape = draw(st.sampled_from(["z", "offset", "space", "tenths"]))
    if shape == "z" and moment.utcoffset() == timedelta(0):
        text = text.replace("+00:00", "Z")
    elif shape == "space":
        text = text.replace("T", " ")
    elif shape == "tenths" and spec == "milliseconds":
        text = text[:21] + text[23:]  # ".1+05:30": one digit, Python's parser reads it
    return text


@st.composite
def record(draw: st.DrawFn) -> dict[str, Any]:
    """One cost record of any source, with the columns ``route`` reads (some of them missing)."""
    kind = draw(st.sampled_from(["gpu", "llm", "storage"]))
    meter = {
        "gpu": st.just("gpu_hours"),
        "llm": st.sampled_from(["input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
                                "reasoning_tokens", "requests"]),
        "storage": st.sampled_from(["egress_gb", "storage_gb_months", "storage_ops"]),
    }[kind]
    source = {"gpu": "gpu.sample", "llm": "llm.request", "storage": "storage.usage"}[kind]
    start = draw(times())
    rec: dict[str, Any] = {
        "ChargePeriodStart": start,
        "ChargePeriodEnd": draw(st.one_of(st.just(start), times())),
        "EffectiveCost": draw(MONEY),
        "ConsumedQuantity": draw(st.floats(0, 1e7, allow_nan=False)),
        "SkuMeter": draw(meter),
        "ResourceId": draw(st.sampled_from(["GPU-1", "GPU-2", "bucket-a", "böcket"])),
        "x_EventId": draw(st.sampled_from(["e1", "e2", "e3", "é4"])),
        "x_ChargeId": draw(st.text(min_size=1, max_size=12)),
        "x_SourceType": source,
        "x_Team": draw(OPTIONAL),
        "x_Project": draw(OPTIONAL),
        "x_Model": draw(OPTIONAL),
        "x_Cluster": draw(OPTIONAL),
        "x_App": draw(OPTIONAL),
        "x_User": draw(OPTIONAL),
        "x_Session": draw(OPTIONAL),
        "x_PromptHash": draw(OPTIONAL),
        "x_GpuUtilPct": draw(st.one_of(st.none(), st.floats(0, 100))),
        "x_GpuAllocated": draw(st.one_of(st.none(), st.booleans())),
    }
    for column in draw(st.sets(st.sampled_from(["x_Team", "x_Project", "x_Model", "x_App", "x_GpuUtilPct"]))):
        del rec[column]  # ``route`` reads these with .get()
    return rec


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
    """Records and the messages that held them: ascending offsets with gaps, empty messages too."""
    records = draw(st.lists(record(), max_size=40))
    messages, left, offset = [], len(records), draw(st.integers(0, 2**40))
    while left > 0 or draw(st.booleans()):
        size = draw(st.integers(0, max(left, 0)))
        messages.append((offset, size))
        left -= size
        offset += draw(st.integers(1, 3))
        if len(messages) > 60:
            break
    return records, messages


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs(), st.sampled_from([60.0, 15.0, 1.0]))
def test_the_kernel_routes_any_records_as_python_does(run: Any, fold_s: float) -> None:
    records, messages = run
    same(records, fold_s)
    same(records, fold_s, source=SOURCE, messages=messages)
    same(records, fold_s, source=None, messages=messages)  # no source: offsets are not read


def outcome(run: Any) -> Any:
    """What ``run()`` returns, or the type and text of what it raises."""
    try:
        return run()
    except Exception as error:  # noqa: BLE001 - the error itself is the outcome compared
        return type(error), str(error)


@pytest.mark.parametrize("cost", [float("inf"), float("-inf"), float("nan"), -0.0, 5e-324, 1e300, 1e16])
def test_floats_of_every_kind_come_out_as_python_writes_them(cost: float) -> None:
    base = {"ChargePeriodStart": "2026-03-01T00:00:00Z", "ChargePeriodEnd": "2026-03-01T00:00:15Z",
            "EffectiveCost": cost, "ConsumedQuantity": cost, "x_Team": "ml", "x_EventId": "e1"}
    gpu = {**base, "SkuMeter": "gpu_hours", "ResourceId": "GPU-1", "x_SourceType": "gpu.sample"}
    egress = {**base, "SkuMeter": "egress_gb", "ResourceId": "b", "x_SourceType": "storage.usage"}
    tokens = {**base, "SkuMeter": "output_tokens", "x_App": "bot", "x_SourceType": "llm.request"}
    runs = ([{**gpu, "x_ChargeId": "g"}, {**egress, "x_ChargeId": "e"}], [{**tokens, "x_ChargeId": "o"}])
    for records in runs:
        messages = [(1, len(records))]
        python = outcome(partial(route, records, source=SOURCE, messages=messages))
        kernel = outcome(partial(burnwatch_kernel.route, records, source=SOURCE, messages=messages))
        if isinstance(python, dict):  # a token count of inf or NaN fails both alike (int() of it)
            python, kernel = to_json(python), to_json(kernel)  # NaN is not equal to itself: compared as JSON
        assert kernel == python
        python = outcome(partial(route_runs, records, partition_of, source=SOURCE, messages=messages))
        kernel = outcome(partial(burnwatch_kernel.route_runs, records, partition_of, source=SOURCE,
                                 messages=messages))
        if isinstance(python, dict):  # the packed requests fail as the lists would be made
            python, kernel = to_json(python), to_json(kernel, fallback=plain)
        assert kernel == python


@pytest.mark.parametrize("missing", ["SkuMeter", "x_EventId", "EffectiveCost", "x_ChargeId"])
def test_a_record_without_a_column_fails_as_python_fails(missing: str) -> None:
    record = {"ChargePeriodStart": "2026-03-01T00:00:00Z", "EffectiveCost": 0.5, "ConsumedQuantity": 10.0,
              "SkuMeter": "input_tokens", "x_EventId": "e1", "x_ChargeId": "e1:i", "x_App": "bot",
              "x_SourceType": "llm.request"}
    del record[missing]
    python = outcome(partial(route, [record]))
    assert python == (KeyError, repr(missing))
    assert outcome(partial(burnwatch_kernel.route, [record])) == python


@settings(max_examples=500, deadline=None)
@given(times())
def test_the_kernel_parses_times_as_python_does(text: str) -> None:
    assert burnwatch_kernel.parse_time(text) == datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize("text", ["2023-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-01-01T24:00:00Z",
                                  "2026-01-01T00:00:60Z", "yesterday"])
def test_a_time_python_rejects_the_kernel_rejects_with_the_same_error(text: str) -> None:
    with pytest.raises(ValueError) as python:
        datetime.fromisoformat(text)
    with pytest.raises(ValueError) as kernel:
        burnwatch_kernel.parse_time(text)
    assert str(kernel.value) == str(python.value)


def test_consecutive_times_parse_apart() -> None:
    texts = ["2026-03-01T00:00:00Z", "2026-03-01T00:00:00.001Z", "2026-03-01T00:00:00.000001Z"]
    parsed = [burnwatch_kernel.parse_time(t) for t in texts]
    assert all(a != b for a, b in pairwise(parsed))


def same_float(a: float, b: float) -> bool:
    """Equal, sign of zero included (or both NaN)."""
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1.0, a) == math.copysign(1.0, b))


def near_ties(digits: int) -> st.SearchStrategy[float]:
    """Floats at and next to the halves between ``digits``-place decimals (where rounding can go wrong)."""
    def nudged(n: int, step: int) -> float:
        x = (2 * n + 1) / (2 * 10**digits)
        for _ in range(abs(step)):
            x = math.nextafter(x, math.inf if step > 0 else -math.inf)
        return x
    return st.builds(nudged, st.integers(-10**12, 10**12), st.integers(-3, 3))


@settings(max_examples=2000, deadline=None)
@given(st.integers(0, 12).flatmap(lambda d: st.tuples(st.one_of(st.floats(), near_ties(d)), st.just(d))))
@example((-1e-09, 7))
@example((2.675, 2))
@example((-0.0, 3))
@example((0.00000005, 7))
@example((1e300, 7))
def test_the_kernel_rounds_as_python_does(case: tuple[float, int]) -> None:
    x, digits = case
    assert same_float(burnwatch_kernel.round_to(x, digits), round(x, digits))


usages = st.lists(
    st.tuples(
        st.one_of(st.floats(0, 120, allow_nan=False), st.floats(1.7e9, 1.7e9 + 120)),  # late ones too
        st.sampled_from(["", "s1", "s2", "s3", "séance"]),  # session ("": none)
        st.sampled_from(["", "u1", "u2"]),  # user
        st.sampled_from(["a1", "a2"]),  # app
        st.sampled_from(["m1", "m2", "m3"]),  # model
        st.integers(0, 10**6),  # input tokens
        st.floats(0, 1, allow_nan=False),  # USD
        st.one_of(st.none(), st.sampled_from([f"p{i}" for i in range(20)])),  # prompt hash
        st.sampled_from([None, "ml"]),  # team
        st.booleans(),  # flush after it
    ),
    max_size=150,
)


@settings(max_examples=300, deadline=None)
@given(usages, st.one_of(st.sampled_from([2.0, 10.0, 60.0]), st.floats(0.5, 30)))
def test_the_kernel_buckets_llm_requests_as_python_does(steps: list[tuple[Any, ...]], width: float) -> None:
    config = BucketConfig(session_s=width, scope_s=10, app_s=60)
    python, compiled = LlmBucketer(config), burnwatch_kernel.LlmBucketer(config)
    watermark = 0.0
    for t, session, user, app, model, tokens, usd, prompt, team, flush in steps:
        usage = LlmUsage(t, app, user, session, model, tokens, tokens // 7, usd, prompt, team)
        python.add(usage)
        compiled.add(usage)
        if flush:
            watermark = t - 5.0
            assert compiled.flush(watermark) == python.flush(watermark)
    assert compiled.flush(float("inf")) == python.flush(float("inf"))
    assert len(compiled) == 0


def test_the_kernel_buckets_packed_requests_as_their_lists() -> None:
    """``add_inputs`` folds a run's ``Requests`` (``route_runs``) as it folds the lists they stand for."""
    records = priced_records()
    config = BucketConfig(session_s=10, scope_s=10, app_s=60)
    packed, listed = burnwatch_kernel.LlmBucketer(config), burnwatch_kernel.LlmBucketer(config)
    python = LlmBucketer(config)
    for start in range(0, len(records), 500):
        run = records[start:start + 500]
        messages = messages_of(len(run), 4)
        runs = burnwatch_kernel.route_runs(run, partition_of, source=SOURCE, messages=messages)
        chunks = [items[0][4] for items in runs.values()]
        chunks.append([])  # an empty chunk, and a list chunk with them: inputs routed outside a run
        chunks.append([chunks[0][0]] if chunks[0] else [])
        packed.add_inputs(chunks)
        lists = [list(chunk) for chunk in chunks]
        listed.add_inputs(lists)
        for item in (item for chunk in lists for item in chunk):
            python.add(LlmUsage(*item[2:12]))
        watermark = burnwatch_kernel.parse_time(run[-1]["ChargePeriodStart"]) - 30.0  # close some, as ticks
        assert packed.flush(watermark) == listed.flush(watermark) == python.flush(watermark)
    closed = packed.flush(math.inf)
    assert closed == listed.flush(math.inf) == python.flush(math.inf) != []
    with pytest.raises(TypeError, match="a list or Requests"):
        packed.add_inputs([("u",)])


def test_a_busy_session_bucket_keeps_as_many_inputs_and_prompts_as_in_python() -> None:
    config = BucketConfig(session_s=60, scope_s=60, app_s=60)
    python, compiled = LlmBucketer(config), burnwatch_kernel.LlmBucketer(config)
    for i in range(80):  # more requests than a bucket keeps inputs of, more prompts than it tracks
        usage = LlmUsage(i / 2, "a1", "u1", "s1", f"m{i % 3}", 100 + i, 5, 0.001 * i, f"p{i % 40}", "ml")
        python.add(usage)
        compiled.add(usage)
    closed = compiled.flush(60.0)
    assert closed == python.flush(60.0)
    assert [len(closed[1].inputs), len(closed[1].prompts), len(closed[0].models)] == [64, 16, 3]


def test_the_stream_detectors_find_the_same_with_the_kernel_bucketer() -> None:
    from tests.unit.test_detector_feed import Table, priced_events, run_feed

    events = priced_events()
    table, compiled_table = Table(), Table()
    found = run_feed(iter(events), PartitionDetectors(0), table)
    det = PartitionDetectors(0, llm_bucketer=burnwatch_kernel.LlmBucketer, idle_gpu_quiet=GPU_QUIET)
    compiled = run_feed(iter(events), det, compiled_table)
    assert det.runner.bucketer_waits and det.runner.llm.pending_count() > 0  # young sessions waited there
    assert [f.to_dict() for f in compiled] == [f.to_dict() for f in found] != []
    assert compiled_table.data == table.data  # pending documents included: the kernel's JSON reads back equal


def test_runs_with_packed_requests_find_and_save_what_runs_of_lists_do() -> None:
    """A partition fed the kernel's ``route_runs`` (requests packed) finds and saves what one fed the
    Python runs finds and saves: with repeats (a run applied again), a run through the topic (JSON), and
    a restart from the saved table."""
    from tests.unit.test_detector_feed import Table, outline, priced_events

    events = [record for records in priced_events() for record in records]
    feeds = {"python": (route_runs, None, None), "packed": (burnwatch_kernel.route_runs,
                                                            burnwatch_kernel.LlmBucketer, GPU_QUIET)}
    results = {}
    for name, (router, bucketer, quiet) in feeds.items():
        det, table, found, offset = PartitionDetectors(0, None, bucketer, quiet), Table(), [], 0
        for number, first in enumerate(range(0, len(events), 300)):
            run = events[first:first + 300]
            messages = [(offset + i, 1) for i in range(len(run))]
            offset += len(run)
            items = router(run, lambda key: 0, source=SOURCE, messages=messages)[0]
            items.append(tick_item(burnwatch_kernel.parse_time(run[-1]["ChargePeriodStart"]) - 20.0))
            if number % 5 == 3:  # through the topic: the lists, read back
                items = from_json(to_json(items, fallback=plain))
            steps = [items, items] if number % 4 == 1 else [items]  # the run again: all repeats
            for step in steps:
                done = det.apply(step, table.known)
                table.put(done.entries)
                found += done.findings
            if number == 7:  # a restart from what was saved
                det = PartitionDetectors.restore(0, list(table.data.items()), None, bucketer, quiet)
        results[name] = (outline(found), table.data)
    assert results["packed"] == results["python"]
    assert results["python"][0] and any(key.startswith("o|u|") for key in results["python"][1])


gpu_samples = st.lists(  # runs of like samples: long enough to be idle or underused for a while
    st.tuples(
        st.sampled_from([15.0, 15.0, 15.0, 60.0, 200.0]),  # since the sample before: on time, or a gap
        st.one_of(st.sampled_from([0.0, 0.5, 4.9, 5.0, 9.99, 10.0, 19.0]), st.floats(0, 100)),  # util
        st.sampled_from([True, True, True, False]),  # allocated
        st.floats(0, 0.05, allow_nan=False),  # USD
        st.integers(1, 60),  # samples in the run
    ),
    max_size=20,
)
idle_configs = st.builds(
    lambda for_s, window, rules: IdleGpuConfig(for_s=for_s, underused_window_s=window, overrides=rules),
    st.sampled_from([60.0, 300.0, 900.0]),
    st.sampled_from([600.0, 3600.0]),
    st.sampled_from([
        (),
        (IdleOverride(team="rs", for_s=120.0),
         IdleOverride(cluster="aws", team="ml", util_below_pct=20.0)),
        (IdleOverride(team="ml", for_s=600.0), IdleOverride(cluster="aws", for_s=120.0)),  # cluster's wins
    ]),
)


@settings(max_examples=200, deadline=None)
@given(idle_configs, gpu_samples, st.sampled_from([None, "", "aws"]), st.sampled_from([None, "ml", "rs"]))
@example(  # the most specific override wins: the cluster's over the team's, whatever their order
    IdleGpuConfig(overrides=(IdleOverride(team="ml", for_s=600.0), IdleOverride(cluster="aws", for_s=120.0))),
    [(15.0, 0.0, True, 0.01, 20)], "aws", "ml",
)
def test_the_idle_gpu_quiet_path_steps_as_python(
    config: IdleGpuConfig, samples: list[Any], cluster: str | None, team: str | None
) -> None:
    """Whenever the kernel takes a sample's quiet path, the Python step finds nothing, to the same state."""
    python, quiet, state, t, taken = IdleGpuDetector(config), GPU_QUIET(config), None, 1.7e9, 0
    for gap, util, allocated, usd in [run[:4] for run in samples for _ in range(run[4])]:
        item = ["g", f"e{t}", t, t + 15.0, util, allocated, usd, cluster, team, "G1"]
        t += gap
        expected, found = python.update(state or {}, GpuBucket("G1", item[2], item[3], util, allocated, usd,
                                                               None, cluster, team))
        got = quiet.step(state, item)
        if got is not None:
            taken += 1
            assert found == [] and got == expected
        state = expected
    assert taken or len(samples) < 5 or "open" in (state or {})


@settings(max_examples=100, deadline=None)
@given(idle_configs, gpu_samples, st.lists(st.integers(0, 40), max_size=6), st.integers(1, 7))
def test_gpu_samples_apply_in_the_kernel_as_in_python(
    config: IdleGpuConfig, samples: list[Any], again: list[int], batch: int
) -> None:
    """Batches of GPU samples, some delivered again (the last one included), with ticks between batches:
    the same applied and repeated counts, states, entries and findings with the kernel's quiet path."""
    items, t = [], 1.7e9
    for gap, util, allocated, usd in [run[:4] for run in samples for _ in range(run[4])]:
        for gpu in ("G1", "G2"):
            items.append(["g", f"e{t}:{gpu}", t, t + 15.0, util, allocated, usd, "aws", "ml", gpu])
        t += gap
    config = DetectorConfig(idle_gpu=config)
    python, kernel = PartitionDetectors(0, config), PartitionDetectors(0, config, idle_gpu_quiet=GPU_QUIET)
    known = lambda keys: [False] * len(keys)  # noqa: E731 - GPU samples need no seen entries
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        chunk = [*chunk, *(chunk[i % len(chunk)] for i in again), ["t", chunk[-1][3]]]
        expected, got = python.apply(chunk, known), kernel.apply(chunk, known)
        assert (got.applied, got.repeated) == (expected.applied, expected.repeated)
        assert got.entries == expected.entries and got.findings == expected.findings


def apply_one_by_one(quiet: Any, states: dict[str, Any], changed: set[Any], items: list[Any], at: int
                     ) -> tuple[int, int, int]:
    """``apply_quiet`` as it was before GPU states were stepped on Rust values: ``step`` on each dict."""
    applied = repeated = 0
    for index in range(at, len(items)):
        key = "gpu=" + items[index][9]
        state = states.get(key)
        if state is not None and items[index][3] <= state.get("last", -math.inf):
            repeated += 1
            continue
        new = quiet.step(state, items[index])
        if new is None:
            return index, applied, repeated
        states[key] = new
        changed.add(("idle_gpu", key))
        applied += 1
    return len(items), applied, repeated


saved_gpu_states = st.dictionaries(  # states as a table restores them: other keys, other orders, odd types
    st.sampled_from(["G1", "G2", "G3"]),
    st.lists(
        st.sampled_from([
            ("last", 1.7e9 - 15.0), ("last", 1.7e9 + 300.0), ("idle", 1.7e9 - 900.0), ("idle", None),
            ("idle", 1_699_999_000), ("waste", 0.25), ("iv", 15.0), ("lab", {"team": "ml"}), ("x", [1, "y"]),
            ("slots", [[1.7e9 - 300.0, 12.5, 3], [1.7e9 - 600.0, 1.0, 1]]),
            ("slots", [[1_699_999_800, 40, 2]]),
            ("slots", [[1.7e9 - 300.0, 1.0, 1.5]]), ("e", {"gpu": "old"}), ("open", {"telemetry_gap": {}}),
        ]),
        max_size=6,
    ).map(dict),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(idle_configs, gpu_samples, saved_gpu_states, st.lists(st.integers(0, 60), max_size=5))
def test_gpu_states_stepped_on_rust_values_are_written_back_as_the_steps_one_by_one_leave_them(
    config: IdleGpuConfig, samples: list[Any], saved: dict[str, Any], again: list[int]
) -> None:
    """The same counts, the same states to the byte (key order and types: their JSON is what is saved), the
    same changed entries, from any saved states, with repeats and stops at samples that are not quiet."""
    items, t = [], 1.7e9
    for n, (gap, util, allocated, usd) in enumerate(run[:4] for run in samples for _ in range(run[4])):
        gpu = ("G1", "G2", "G3")[n % 3]
        items.append(["g", f"e{t}:{gpu}", t, t + 15.0, util, allocated, usd, "aws", "ml", gpu])
        t += gap / 3
    items += [items[i % len(items)] for i in again] if items else []
    quiet = GPU_QUIET(config)
    expected_states = {f"gpu={gpu}": state for gpu, state in saved.items()}
    got_states = from_json(to_json(expected_states))
    expected_changed: set[Any] = set()
    got_changed: set[Any] = set()
    at = 0
    while at < len(items):
        try:
            expected: Any = apply_one_by_one(quiet, expected_states, expected_changed, items, at)
        except TypeError as error:  # a saved value of a type the step cannot read: the same error
            expected = repr(error)
        try:
            got: Any = quiet.apply_quiet(got_states, got_changed, items, at)
        except TypeError as error:
            got = repr(error)
        assert got == expected
        assert to_json(got_states) == to_json(expected_states)
        assert got_changed == expected_changed
        if isinstance(got, str):
            return
        at = got[0] + 1  # past a sample that is not quiet (the Python step's, not taken here)


def kernel_runner(config: DetectorConfig) -> DetectorRunner:
    runner = DetectorRunner(config, track_entities=False)
    runner.llm = burnwatch_kernel.LlmBucketer(config.buckets)
    runner.wait_in_bucketer()
    return runner


@settings(max_examples=200, deadline=None)
@given(deferred_configs, deferred_requests)
def test_young_entities_wait_in_the_kernel_as_in_python(
    config: DetectorConfig, steps: list[tuple[Any, ...]]
) -> None:
    """Same decisions, documents, log entries (to the byte), peers, states and findings under any
    thresholds, expiry included; the log's entries replay to the documents."""
    python, kernel = DetectorRunner(config, track_entities=False), kernel_runner(config)
    for runner in (python, kernel):
        runner.log_pending(carry_after_s=30.0)  # a short log: entities are written again whole often
    logged: dict[int, Any] = {}
    t = 0.0
    for gap, session, user, tokens, prompt, usd, tick in steps:
        t += gap
        usage = LlmUsage(t, "bot", user, session, "m", tokens, 10, usd, prompt, "ml")
        for runner in (python, kernel):
            runner.add_usage(usage)
            if tick:
                runner.advance(t)
        if tick:
            assert kernel.llm.pending_docs() == python.pending
            assert kernel.peers == python.peers
            (expected, expected_gone, dropped), (got, gone, kernel_dropped) = (
                python.pending_log_entry(), kernel.pending_log_entry())
            assert gone == expected_gone and dropped == kernel_dropped == []
            assert (None if got is None else (got[0], got[1])) == (
                None if expected is None else (expected[0], to_json(expected[1])))  # the table entries
            if got is not None:
                logged[got[0]] = from_json(got[1])
            for seq in gone:
                del logged[seq]
            assert replay(logged.items(), config.runaway.window_s)[0] == python.pending
    for runner in (python, kernel):
        runner.advance(t + 4000.0)  # closes everything, resolves quiet findings, expires entities
    assert kernel.llm.pending_count() == len(python.pending) == 0
    assert deferred_outcome(kernel) == deferred_outcome(python)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.0, 120.0), st.sampled_from(["s1", "s2", "s3", "s4", ""]),
                       st.sampled_from(["u1", "u2", ""]), st.sampled_from(["bot", "chat"])), max_size=60),
    st.floats(-5.0, 200.0), st.integers(0, 40), st.floats(0.0, 200.0),
)
def test_closing_bound_is_the_python_bucketers(
    usages: list[tuple[float, str, str, str]], watermark: float, limit: int, flushed: float
) -> None:
    """How far a step may close (``closing_bound``): the Python bucketer's figure, before and after a
    flush, and closing up to it closes at most ``limit`` buckets unless the first end alone holds more."""
    config = BucketConfig(session_s=2, app_s=10, scope_s=10)
    python, kernel = LlmBucketer(config), burnwatch_kernel.LlmBucketer(config)
    for t, session, user, app in usages:
        usage = LlmUsage(t, app, user, session, "m", 10, 1, 0.001, None, "ml")
        python.add(usage)
        kernel.add(usage)
    for bucketer in (python, kernel):
        bucketer.flush(flushed)
    bound = python.closing_bound(watermark, limit)
    assert kernel.closing_bound(watermark, limit) == bound
    closed = python.flush(bound)
    assert len(closed) <= limit or len({bucket.end for bucket in closed}) == 1
    assert bound == watermark or bound < watermark and python.closing_bound(bound, limit) == bound


def test_kernel_closes_a_backlog_over_bounded_steps_as_python_does() -> None:
    """A tick after a backlog (event time held back) closes its buckets over bounded steps with the kernel
    bucketer as with Python's: the same parts, entries (to the byte) and findings."""
    from tests.unit.test_detector_feed import Table, inputs, priced_events

    events = priced_events()
    held = [item for records in events for item in inputs(records) if item[0] != "t"]
    last = max(item[2] for item in held if item[0] == "u")
    batches = [held[first:first + 200] for first in range(0, len(held), 200)]
    batches.append([tick_item(last + 1.0), *inputs(events[-1])[:-1], tick_item(last + 30.0)])
    config = DetectorConfig()
    python = PartitionDetectors(0, config)
    kernel = PartitionDetectors(0, config, burnwatch_kernel.LlmBucketer, GPU_QUIET)
    python_table, kernel_table = Table(), Table()
    parts = 0
    for items in batches:
        kernel_items = items
        while True:
            expected = python.apply(items, python_table.known, 300)
            got = kernel.apply(kernel_items, kernel_table.known, 300)
            python_table.put(expected.entries)
            kernel_table.put(got.entries)
            assert to_json(sorted(kernel_table.data.items())) == to_json(sorted(python_table.data.items()))
            assert got.findings == expected.findings
            assert (got.unfinished, got.rest) == (expected.unfinished, expected.rest)
            parts += 1
            if not expected.unfinished:
                break
            items, kernel_items = expected.rest, got.rest
    assert parts > len(batches) + 10


def saved_peer_state(present: list[str], order: list[int], extra: bool, int_sums: bool) -> dict[str, Any]:
    """An app's peers as a table may hold them: the learning's keys (the sums, and the mean, variance and
    count, each together), in any order, maybe a restored state's ``_v``, maybe whole sums held as ints."""
    values: dict[str, Any] = {"c0": 2.0, "ct": 6.0, "cu": 0.0125, "cq": 3.0,
                              "cw": [[8.0, 0.004, 1], [10.0, 0.5, 2]], "m": 0.35, "v": 0.02, "n": 5}
    if int_sums:
        values |= {"cu": 1, "cq": 3}
    together = {"c0": ("c0", "ct", "cu", "cq"), "m": ("m", "v", "n")}  # written together, read together
    keys = [key for key in values if any(key in together.get(name, (name,)) for name in present)]
    pairs = [(keys[i], values[keys[i]]) for i in order if i < len(keys)]
    return dict(pairs + [("_v", 1)] * extra)


saved_peers = st.dictionaries(
    st.sampled_from(["bot", "chat"]),
    st.builds(saved_peer_state, st.lists(st.sampled_from(["c0", "cw", "m"]), unique=True),
              st.permutations(range(8)), st.booleans(), st.booleans()),
    max_size=2,
)


@settings(max_examples=200, deadline=None)
@given(deferred_configs, deferred_requests, saved_peers, st.lists(st.booleans(), min_size=80, max_size=80))
def test_peers_learned_on_rust_values_are_written_back_as_python_leaves_them(
    config: DetectorConfig, steps: list[tuple[Any, ...]], saved: dict[str, Any], chat: list[bool]
) -> None:
    """From any saved peers of two apps, the kernel's peers are Python's to the byte (keys, order, types)
    after every ``close``, and the runner's session steps in between read the same peers: the same states
    and findings."""
    python, kernel = DetectorRunner(config, track_entities=False), kernel_runner(config)
    python.peers.update(saved)
    kernel.peers.update(from_json(to_json(saved)))
    t = 0.0
    for (gap, session, user, tokens, prompt, usd, tick), other_app in zip(steps, chat, strict=False):
        t += gap
        app = "chat" if other_app else "bot"
        usage = LlmUsage(t, app, user, session, "m", tokens, 10, usd, prompt, "ml")
        for runner in (python, kernel):
            runner.add_usage(usage)
            if tick:
                runner.advance(t)
        if tick:
            assert to_json(kernel.peers) == to_json(python.peers)
            assert kernel.peers_changed == python.peers_changed
    for runner in (python, kernel):
        runner.advance(t + 4000.0)
    assert to_json(kernel.peers) == to_json(python.peers)
    assert deferred_outcome(kernel) == deferred_outcome(python)


def test_a_user_runaway_and_its_quiet_buckets_before_and_after_step_as_in_python() -> None:
    """A user's quiet buckets are stepped in the kernel (the runaway step's quiet path), the rest in Python.

    The user runs away, is flagged (its window's entries are held, never learned) and calms down; the
    held entries then leave the window while its buckets are quiet again: the same states and findings.
    """
    config = DetectorConfig(runaway={"user_min_requests": 3, "min_requests": 2, "warmup": 3, "confirm": 1,
                                     "min_usd_per_hour": 0.5, "window_s": 30.0})
    python, kernel = DetectorRunner(config, track_entities=False), kernel_runner(config)
    t = 0.0
    for i in range(400):
        burst = 150 <= i < 190
        t += 0.4 if burst else 20.0
        usage = LlmUsage(t, "bot", "u1", f"s{i}", "m", 500, 10, 0.05 if burst else 0.004, None, "ml")
        for runner in (python, kernel):
            runner.add_usage(usage)
            runner.advance(t)
    kinds = [(f.kind, f.state, f.entity.get("user")) for f in python.findings]
    assert ("token_runaway", "open", "u1") in kinds and ("token_runaway", "resolved", "u1") in kinds
    assert deferred_outcome(kernel) == deferred_outcome(python)


def test_kernel_waiting_saves_and_restores_what_python_does_with_late_inputs_and_expiry() -> None:
    """The table after every batch is the same, and detectors restored from it find the same.

    Late inputs close buckets at the end of their batch, several of one session in one ``close``; a
    short expiry drops pending sessions and users (logged as gone in both). A restore in either mode
    takes back the documents the young entities' log gives.
    """
    from tests.unit.test_detector_feed import Table, delayed, inputs, outline, priced_events

    config = DetectorConfig(runaway={"expire_after_s": 240.0}, agent_loop={"expire_after_s": 240.0},
                            context_bloat={"expire_after_s": 240.0})
    events = delayed(priced_events(), every=5, by=60)
    batches = [[item for records in events[i:i + 37] for item in inputs(records)]
               for i in range(0, len(events), 37)]
    python = PartitionDetectors(0, config)
    kernel = PartitionDetectors(0, config, burnwatch_kernel.LlmBucketer, GPU_QUIET)
    python_table, kernel_table, expected = Table(), Table(), []
    gone: set[str] = set()  # young entities logged as gone
    stepped: set[str] = set()  # entities with states saved
    for batch in batches:
        done = python.apply(batch, python_table.known)
        python_table.put(done.entries)
        expected += done.findings
        kernel_done = kernel.apply(batch, kernel_table.known)
        kernel_table.put(kernel_done.entries)
        assert kernel_table.data == python_table.data
        assert [f.to_dict() for f in kernel_done.findings] == [f.to_dict() for f in done.findings]
        for key, value in done.entries:
            if key.startswith(LLM_STATES) and value is not None:
                stepped.add(key[len(LLM_STATES):])
            elif key.startswith(LOG) and value is not None:
                gone.update(record[1] for record in value["r"] if record[0] == "x")
    assert any(",session=" in key for key in gone - stepped) and expected  # sessions expired young
    for cut, kernel_after in ((5, True), (len(batches) // 2, True), (len(batches) // 2, False)):
        det = PartitionDetectors(0, config, burnwatch_kernel.LlmBucketer, GPU_QUIET)
        table, found = Table(), []
        for number, batch in enumerate(batches):
            if number == cut:
                feed = (burnwatch_kernel.LlmBucketer, GPU_QUIET) if kernel_after else (None, None)
                det = PartitionDetectors.restore(0, table.data.items(), config, *feed)
                docs = det.runner.llm.pending_docs() if kernel_after else det.runner.pending
                assert docs == python_pending(table, config) and docs
            done = det.apply(batch, table.known)
            table.put(done.entries)
            found += done.findings
        assert outline(found) == outline(expected)


def test_long_waiters_are_written_again_oldest_first_and_a_bounded_number_a_step() -> None:
    """1,200 young entities pinned at the first entry: once it is older than the log keeps, each step
    writes at most ``CARRIED_PER_STEP`` of them again, in order, the same in both modes."""
    config = DetectorConfig()
    python, kernel = DetectorRunner(config, track_entities=False), kernel_runner(config)
    for runner in (python, kernel):
        runner.log_pending(carry_after_s=30.0)
    first = {f"app=bot,{scope}={scope[0]}{i}" for i in range(600) for scope in ("session", "user")}
    carried: list[list[str]] = []
    for step in range(10):
        t = 20.0 * step
        for runner in (python, kernel):
            senders = range(600) if step == 0 else [1000 + step]  # a new session a step: an entry a step
            for i in senders:
                runner.add_usage(LlmUsage(t + 1.0, "bot", f"u{i}", f"s{i}", "m", 10, 10, 0.001, None, "ml"))
            runner.advance(t + 15.0)
        (expected, expected_gone, _), (got, gone, _) = python.pending_log_entry(), kernel.pending_log_entry()
        assert expected is not None and got is not None
        assert (got[0], got[1], gone) == (expected[0], to_json(expected[1]), expected_gone)
        carried.append([record[1] for record in expected[1]["r"] if record[0] == "d" and record[1] in first])
    sizes = [len(keys) for keys in carried]
    assert sizes[0] == 1200 and max(sizes) == 1200 and max(sizes[1:]) == CARRIED_PER_STEP
    again = [key for keys in carried[1:] for key in keys][:1200]
    assert again == sorted(first)  # the oldest pin first, by entity id, each once


def test_the_kernel_continues_a_table_saved_before_the_log_as_python_does() -> None:
    from tests.unit.test_deferred import continue_an_old_table

    python, _ = continue_an_old_table()
    kernel, _ = continue_an_old_table((burnwatch_kernel.LlmBucketer, GPU_QUIET))
    assert kernel.data == python.data


def python_pending(table: Any, config: DetectorConfig) -> dict[str, Any]:
    """The young entities' documents a table's log gives, by entity id."""
    logged = [(int(key.rsplit("|", 1)[1]), value) for key, value in table.data.items()
              if key.startswith(LOG) and value is not None]
    return replay(logged, config.runaway.window_s)[0]


def test_a_pending_entity_expires_when_the_python_runner_would_drop_it() -> None:
    config = DetectorConfig()
    python, kernel = DetectorRunner(config, track_entities=False), kernel_runner(config)
    for runner in (python, kernel):
        runner.add_usage(LlmUsage(1.0, "bot", "u1", "s1", "m", 100, 10, 0.01, "p1", "ml"))
        runner._close(10.0)
    docs = python.pending  # the session's (last 2.0) and the user's (last 10.0)
    assert kernel.llm.pending_docs() == docs and len(docs) == 2
    quiet, gone = config.runaway.expire_after_s, 0
    for last in sorted(doc["last"] for doc in docs.values()):
        for now in (last + quiet, last + quiet + 0.001):  # not yet, then just past it
            expired = sum(python.runaway.expired(doc, now) for doc in docs.values()) - gone
            assert kernel.llm.expire_pending(now) == expired == int(now > last + quiet)
            gone += expired
    assert kernel.llm.pending_count() == 0


def test_a_malformed_pending_document_is_refused_by_name_and_dropped_at_a_restart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = kernel_runner(DetectorConfig())
    bad = {"e": {"app": "bot", "session": "s1"}, "n": 1}  # no "last", no buckets
    with pytest.raises(ValueError, match="pending document of app=bot,session=s1"):
        runner.restore(PENDING, "app=bot,session=s1", bad)
    good = {"e": {"app": "bot", "session": "s2"}, "last": 2.0, "n": 1, "w": [[2.0, 0.01, 1, 0.0]],
            "b": [[0.0, 2.0, 1, 100, 10, 0.01, [100], {"p1": 1}, None]]}
    entries = [(LLM_STATES + "app=bot,session=s1", {"_v": 1, PENDING: bad}),
               (LLM_STATES + "app=bot,session=s2", {"_v": 1, PENDING: good})]
    with caplog.at_level(logging.WARNING, logger="burnwatch.detectors"):
        det = PartitionDetectors.restore(0, entries, None, burnwatch_kernel.LlmBucketer)
    assert det.runner.llm.pending_docs() == {"app=bot,session=s2": good}
    assert "dropped the saved detector state pending of app=bot,session=s1" in caplog.text


def test_auto_takes_the_kernel_and_python_mode_never_does() -> None:
    compiled = load_feed("auto")
    assert (compiled.route, compiled.latest_by_lane, compiled.kind) == (
        burnwatch_kernel.route, burnwatch_kernel.latest_by_lane, "compiled")
    assert load_feed("compiled") == compiled
    assert load_feed("python") == PYTHON
    assert (PYTHON.route, PYTHON.latest_by_lane) == (route, latest_by_lane)
    assert burnwatch_kernel.API == KERNEL_API
    assert (compiled.llm_bucketer, PYTHON.llm_bucketer) == (burnwatch_kernel.LlmBucketer, LlmBucketer)


@pytest.mark.parametrize(("environment", "expected"), [
    ({}, -1), ({"MIMALLOC_PURGE_DELAY": "250"}, 250), ({"MIMALLOC_RESET_DELAY": "40"}, 40)])
def test_the_kernel_keeps_freed_pages_unless_the_environment_sets_a_purge_delay(
    environment: dict[str, str], expected: int
) -> None:
    # a fresh interpreter: the option is set when the module is first imported
    env = {key: value for key, value in os.environ.items() if not key.startswith("MIMALLOC_")}
    shown = subprocess.run(
        [sys.executable, "-c", "import burnwatch_kernel; print(burnwatch_kernel.allocator_purge_delay())"],
        env=env | environment, capture_output=True, text=True, check=True, timeout=60)
    assert int(shown.stdout) == expected


def test_a_missing_or_stale_kernel_falls_back_in_auto_and_fails_when_required(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(burnwatch_kernel, "API", KERNEL_API + 1)
    with caplog.at_level(logging.WARNING, "burnwatch.detectors"):
        assert load_feed("auto") == PYTHON
    assert "a stale build" in caplog.text
    stale = f"kernel API {KERNEL_API + 1}, this burnwatch needs {KERNEL_API}"
    with pytest.raises(KernelMissing, match=stale):
        load_feed("compiled")
    monkeypatch.setattr(detector_kernel, "MODULE", "burnwatch_kernel_not_here")
    assert load_feed("auto") == PYTHON
    with pytest.raises(KernelMissing, match="burnwatch_kernel_not_here is not installed"):
        load_feed("compiled")


def test_a_worker_that_requires_a_missing_kernel_stops_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.cli import app as cli
    from streams.settings import get_settings

    monkeypatch.setattr(detector_kernel, "MODULE", "burnwatch_kernel_not_here")
    monkeypatch.setenv("BURNWATCH_DETECTOR_KERNEL", "compiled")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["worker"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "=compiled, but burnwatch_kernel_not_here is not installed" in result.output
