"""Property tests of ``parse_message``: it never raises, loses nothing, and round-trips valid events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core.events import (
    REASONS,
    Event,
    GpuReading,
    GpuSample,
    LlmRequest,
    ParsedMessage,
    StorageUsage,
    parse_message,
)

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies --------------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)

names = st.text(min_size=1, max_size=40)
short_text = st.text(max_size=30)
labels = st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=4)
non_neg_float = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)
non_neg_int = st.integers(min_value=0, max_value=2**63)
interval = st.floats(min_value=1e-3, max_value=86_400, allow_nan=False, allow_infinity=False)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
# hypothesis takes naive bounds; ``timezones`` makes every drawn value aware.
times = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1),  # noqa: DTZ001
                     timezones=st.just(UTC) | offsets)
common = {"event_id": st.text(min_size=1, max_size=60), "time": times, "labels": labels}

gpu_readings = st.builds(
    GpuReading,
    index=st.integers(min_value=0, max_value=63),
    uuid=st.none() | short_text,
    model=names,
    util_pct=st.floats(min_value=0, max_value=100, allow_nan=False),
    mem_used_mib=non_neg_float,
    power_w=non_neg_float,
    allocated=st.booleans(),
    workload=st.none() | short_text,
    labels=labels,
)
gpu_samples = st.builds(
    GpuSample,
    **common,
    interval_s=interval,
    node=names,
    cluster=short_text,
    provider=names,
    region=short_text,
    instance_type=short_text,
    pricing=st.sampled_from(["on_demand", "spot", "reserved", "on_prem"]),
    gpus=st.lists(gpu_readings, min_size=1, max_size=8),
)


@st.composite
def llm_requests(draw: st.DrawFn) -> LlmRequest:
    input_tokens = draw(st.integers(min_value=0, max_value=10**7))
    cached = draw(st.integers(min_value=0, max_value=input_tokens))
    cache_write = draw(st.integers(min_value=0, max_value=input_tokens - cached))
    output_tokens = draw(st.integers(min_value=0, max_value=10**6))
    return LlmRequest(
        event_id=draw(common["event_id"]),
        time=draw(times),
        labels=draw(labels),
        provider=draw(names),
        model=draw(names),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=cached,
        cache_write_tokens=cache_write,
        reasoning_tokens=draw(st.integers(min_value=0, max_value=output_tokens)),
        batch=draw(st.booleans()),
        app=draw(short_text),
        user=draw(st.none() | short_text),
        session=draw(st.none() | short_text),
        status=draw(short_text),
        latency_ms=draw(st.none() | non_neg_float),
        prompt_hash=draw(st.none() | short_text),
    )


storage_usages = st.builds(
    StorageUsage,
    **common,
    interval_s=interval,
    provider=names,
    region=short_text,
    bucket=names,
    storage_class=short_text,
    stored_bytes=non_neg_int,
    egress_bytes=non_neg_int,
    egress_destination=st.sampled_from(["internet", "inter_region", "same_region"]),
)
events = st.one_of(gpu_samples, llm_requests(), storage_usages)


@st.composite
def mutated_events(draw: st.DrawFn) -> Any:
    """A valid event as JSON with one field dropped, replaced by an arbitrary value, or added."""
    event: dict[str, Any] = json.loads(draw(events).model_dump_json())
    key = draw(st.sampled_from(sorted(event)))
    action = draw(st.sampled_from(["drop", "replace", "add"]))
    if action == "drop":
        del event[key]
    elif action == "replace":
        event[key] = draw(json_values)
    else:
        event[draw(st.text(max_size=8))] = draw(json_values)
    return event


elements = st.one_of(json_values, mutated_events(), events.map(lambda e: json.loads(e.model_dump_json())))

# --- checks ------------------------------------------------------------------------------------------


def assert_well_formed(parsed: ParsedMessage) -> None:
    for rejection in parsed.rejections:
        assert rejection.reason in REASONS
        assert isinstance(rejection.detail, str) and rejection.detail
        assert isinstance(rejection.original, bytes)


def assert_accounts_for(parsed: ParsedMessage, batch: list[Any]) -> None:
    """Each element of ``batch`` became exactly one event or exactly one indexed rejection."""
    indices = [r.index for r in parsed.rejections]
    assert all(i is not None for i in indices)
    assert indices == sorted(set(indices)), "each bad element is rejected once, in order"
    assert all(0 <= i < len(batch) for i in indices)  # type: ignore[operator]
    assert len(parsed.events) + len(indices) == len(batch)
    for rejection in parsed.rejections:
        assert json.loads(rejection.original) == batch[rejection.index]  # type: ignore[index]


# --- properties --------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=2_000))
def test_arbitrary_bytes_never_raise(payload: bytes) -> None:
    parsed = parse_message(payload)
    assert_well_formed(parsed)


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes_in_a_batch_never_raise(junk: bytes) -> None:
    for payload in (b"[" + junk, b"[" + junk + b"]", b'[{"type":"llm.request",' + junk + b"}]"):
        assert_well_formed(parse_message(payload))


@FUZZ
@given(elements)
def test_arbitrary_json_value_gives_one_event_or_one_rejection(value: Any) -> None:
    payload = json.dumps(value).encode()
    parsed = parse_message(payload)
    assert_well_formed(parsed)
    if isinstance(value, list):
        assert_accounts_for(parsed, value)
    else:
        assert len(parsed.events) + len(parsed.rejections) == 1
        assert all(r.index is None and r.original == payload for r in parsed.rejections)


@FUZZ
@given(st.lists(elements, max_size=12))
def test_every_batch_element_is_accounted_for_exactly_once(batch: list[Any]) -> None:
    parsed = parse_message(json.dumps(batch).encode())
    assert_well_formed(parsed)
    assert_accounts_for(parsed, batch)


@FUZZ
@given(events)
def test_valid_event_round_trips(event: Event) -> None:
    parsed = parse_message(event.model_dump_json().encode())
    assert parsed.rejections == []
    assert parsed.events == [event]
    assert parsed.events[0].time.utcoffset() == timedelta(0)


@FUZZ
@given(st.lists(events, max_size=20))
def test_valid_batch_round_trips_in_order(batch: list[Event]) -> None:
    payload = b"[" + b",".join(e.model_dump_json().encode() for e in batch) + b"]"
    parsed = parse_message(payload)
    assert parsed.rejections == []
    assert parsed.events == batch


@FUZZ
@given(st.lists(events, min_size=1, max_size=10), st.data())
def test_good_events_survive_bad_neighbours(good: list[Event], data: st.DataObject) -> None:
    bad = data.draw(st.lists(st.one_of(json_scalars, st.lists(json_scalars, max_size=2)), min_size=1))
    mixed: list[Any] = [json.loads(e.model_dump_json()) for e in good] + bad
    order = data.draw(st.permutations(range(len(mixed))))
    shuffled = [mixed[i] for i in order]
    parsed = parse_message(json.dumps(shuffled).encode())
    kept_in_order = [good[i] for i in order if i < len(good)]
    assert parsed.events == kept_in_order
    assert [r.reason for r in parsed.rejections] == ["not_an_event"] * len(bad)
    assert_accounts_for(parsed, shuffled)


edge_naive_times = (
    st.datetimes(max_value=datetime(1, 1, 2))  # noqa: DTZ001 - naive bound, see ``times``
    | st.datetimes(min_value=datetime(9999, 12, 31))  # noqa: DTZ001
    | st.datetimes()
)


@FUZZ
@given(st.builds(lambda naive, tz: naive.replace(tzinfo=tz), edge_naive_times, st.none() | offsets))
def test_any_timestamp_is_accepted_as_utc_or_rejected(moment: datetime) -> None:
    event = {"type": "llm.request", "event_id": "t", "time": moment.isoformat(), "provider": "p",
             "model": "m", "input_tokens": 1, "output_tokens": 1}
    parsed = parse_message(json.dumps(event).encode())
    if moment.tzinfo is None:
        assert [r.reason for r in parsed.rejections] == ["naive_timestamp"]
    elif parsed.events:
        assert parsed.events[0].time == moment
        assert parsed.events[0].time.tzinfo is UTC
    else:
        assert [r.reason for r in parsed.rejections] == ["schema"], "only years 1 and 9999 can overflow"
        assert moment.year in (1, 9999)
