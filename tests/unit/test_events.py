"""The usage event models and ``parse_message``: what is accepted, what is rejected and why."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from streams.core.costs import CostRecord
from streams.core.dead_letter import DEAD_LETTER_FIELDS, decode_original
from streams.core.events import (
    EVENT_TYPES,
    MAX_EVENTS_PER_MESSAGE,
    REASONS,
    GpuSample,
    LlmRequest,
    StorageUsage,
    entity_key,
    event_json_schema,
    from_cloudevent,
    parse_message,
)
from streams.core.spend import empty_totals, window_key, window_record

T0 = "2026-03-01T12:00:00Z"
T0_DT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def gpu_min(**over: Any) -> dict[str, Any]:
    event = {
        "type": "gpu.sample", "event_id": "g1", "time": T0, "interval_s": 60, "node": "node-a",
        "provider": "aws", "gpus": [{"index": 0, "model": "H100", "util_pct": 55.5}],
    }
    return {**event, **over}


def gpu_full(**over: Any) -> dict[str, Any]:
    event = {
        "type": "gpu.sample", "event_id": "g2", "time": T0, "labels": {"team": "ml", "env": "prod"},
        "interval_s": 15.5, "node": "node-b", "cluster": "train", "provider": "gcp", "region": "us-central1",
        "instance_type": "a3-highgpu-8g", "pricing": "spot",
        "gpus": [
            {"index": 0, "uuid": "GPU-1", "model": "H100", "util_pct": 0, "mem_used_mib": 1024.5,
             "power_w": 300, "allocated": True, "workload": "job-7", "labels": {"project": "llama"}},
            {"index": 1, "uuid": "GPU-2", "model": "H100", "util_pct": 100, "mem_used_mib": 0,
             "power_w": 0, "allocated": False, "workload": None, "labels": {}},
        ],
    }
    return {**event, **over}


def llm_min(**over: Any) -> dict[str, Any]:
    event = {
        "type": "llm.request", "event_id": "l1", "time": T0, "provider": "openai", "model": "gpt-4o",
        "input_tokens": 100, "output_tokens": 20,
    }
    return {**event, **over}


def llm_full(**over: Any) -> dict[str, Any]:
    event = {
        "type": "llm.request", "event_id": "l2", "time": T0, "labels": {"team": "search"},
        "provider": "anthropic", "model": "claude-sonnet-4", "input_tokens": 1000, "output_tokens": 300,
        "cached_input_tokens": 600, "cache_write_tokens": 400, "reasoning_tokens": 300, "batch": True,
        "app": "chat", "user": "u-1", "session": "s-1", "status": "error", "latency_ms": 812.5,
        "prompt_hash": "sha256:abc",
    }
    return {**event, **over}


def storage_min(**over: Any) -> dict[str, Any]:
    event = {
        "type": "storage.usage", "event_id": "s1", "time": T0, "interval_s": 3600, "provider": "aws",
        "bucket": "datasets", "stored_bytes": 10**12,
    }
    return {**event, **over}


def storage_full(**over: Any) -> dict[str, Any]:
    event = {
        "type": "storage.usage", "event_id": "s2", "time": T0, "labels": {"team": "data"},
        "interval_s": 86_400, "provider": "azure", "region": "westeurope", "bucket": "ckpt",
        "storage_class": "cool", "stored_bytes": 0, "egress_bytes": 5 * 10**9,
        "egress_destination": "inter_region",
    }
    return {**event, **over}


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def parse_one(obj: Any) -> Any:
    parsed = parse_message(dumps(obj))
    assert parsed.rejections == [], parsed.rejections
    assert len(parsed.events) == 1
    return parsed.events[0]


def reject_one(obj: Any, **kwargs: Any) -> Any:
    payload = obj if isinstance(obj, bytes) else dumps(obj)
    parsed = parse_message(payload, **kwargs)
    assert parsed.events == []
    assert len(parsed.rejections) == 1, parsed.rejections
    rejection = parsed.rejections[0]
    assert rejection.reason in REASONS
    assert rejection.index is None
    assert rejection.original == payload, "a whole-message rejection keeps the exact bytes"
    return rejection


# --- valid events ----------------------------------------------------------------------------------


def test_minimal_gpu_sample_gets_defaults() -> None:
    event = parse_one(gpu_min())
    assert isinstance(event, GpuSample)
    defaults = (event.cluster, event.region, event.instance_type, event.pricing)
    assert defaults == ("default", "global", "", "on_demand")
    assert event.labels == {}
    gpu = event.gpus[0]
    assert (gpu.uuid, gpu.mem_used_mib, gpu.power_w, gpu.allocated, gpu.workload, gpu.labels) == (
        None, 0.0, 0.0, True, None, {})
    assert event.time == T0_DT


def test_full_gpu_sample_keeps_every_field() -> None:
    event = parse_one(gpu_full())
    assert event.model_dump(mode="json") == gpu_full()


def test_minimal_llm_request_gets_defaults() -> None:
    event = parse_one(llm_min())
    assert isinstance(event, LlmRequest)
    assert (event.cached_input_tokens, event.cache_write_tokens, event.reasoning_tokens) == (0, 0, 0)
    defaults = (event.batch, event.app, event.user, event.session, event.status)
    assert defaults == (False, "unknown", None, None, "ok")
    assert event.latency_ms is None and event.prompt_hash is None


def test_full_llm_request_keeps_every_field() -> None:
    event = parse_one(llm_full())
    assert event.model_dump(mode="json") == llm_full()


def test_minimal_storage_usage_gets_defaults() -> None:
    event = parse_one(storage_min())
    assert isinstance(event, StorageUsage)
    assert (event.region, event.storage_class, event.egress_bytes, event.egress_destination) == (
        "global", "standard", 0, "internet")


def test_full_storage_usage_keeps_every_field() -> None:
    event = parse_one(storage_full())
    assert event.model_dump(mode="json") == storage_full()


def test_token_parts_may_equal_their_totals() -> None:
    event = parse_one(llm_min(input_tokens=10, cached_input_tokens=4, cache_write_tokens=6,
                              output_tokens=3, reasoning_tokens=3))
    assert event.input_tokens == 10 and event.reasoning_tokens == 3


def test_event_types_constant_names_the_three_types() -> None:
    assert set(EVENT_TYPES) == {"gpu.sample", "llm.request", "storage.usage"}


# --- time -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T17:30:00+05:30", T0_DT),
        ("2026-03-01T04:00:00-08:00", T0_DT),
        ("2026-03-01T12:00:00+00:00", T0_DT),
        ("2026-03-02T00:00:00+12:00", T0_DT),
        ("2026-03-01T12:00:00.250Z", T0_DT + timedelta(milliseconds=250)),
    ],
)
def test_time_is_normalised_to_utc(text: str, expected: datetime) -> None:
    event = parse_one(llm_min(time=text))
    assert event.time == expected
    assert event.time.utcoffset() == timedelta(0)
    assert event.time.tzinfo is UTC


def test_time_from_a_python_offset_is_normalised_too() -> None:
    event = LlmRequest(event_id="x", time=datetime(2026, 3, 1, 7, tzinfo=timezone(timedelta(hours=-5))),
                       provider="p", model="m", input_tokens=1, output_tokens=1)
    assert event.time == T0_DT and event.time.tzinfo is UTC


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_time_outside_the_utc_range_is_a_schema_rejection(text: str) -> None:
    rejection = reject_one(llm_min(time=text))
    assert rejection.reason == "schema"
    assert "time" in rejection.detail


# --- rejections of a whole message --------------------------------------------------------------------


def test_oversize_message_is_rejected_before_parsing() -> None:
    payload = dumps([llm_min()])
    rejection = reject_one(payload, max_bytes=len(payload) - 1)
    assert rejection.reason == "oversize"
    assert str(len(payload)) in rejection.detail
    assert parse_message(payload, max_bytes=len(payload)).rejections == []


@pytest.mark.parametrize("payload", [b"", b"{not json", b"\xff\xfe\x00garbage", b"[1, 2", b"nul", b"   "])
def test_unparseable_message(payload: bytes) -> None:
    assert reject_one(payload).reason == "unparseable"


def test_absurdly_nested_json_is_unparseable_not_a_crash() -> None:
    assert reject_one(b"[" * 100_000 + b"]" * 100_000).reason == "unparseable"
    assert reject_one(b'{"a":' * 5_000 + b"1" + b"}" * 5_000).reason in {"unparseable", "schema"}


@pytest.mark.parametrize("payload", [b"42", b'"llm.request"', b"null", b"true", b"3.5"])
def test_json_that_is_not_an_object_is_not_an_event(payload: bytes) -> None:
    assert reject_one(payload).reason == "not_an_event"


@pytest.mark.parametrize("valid", [True, False])
def test_too_many_events(valid: bool) -> None:
    element = llm_min() if valid else {"nope": 1}
    payload = dumps([element] * 3)
    rejection = reject_one(payload, max_events=2)
    assert rejection.reason == "too_many_events"
    assert "3" in rejection.detail and "2" in rejection.detail
    assert len(parse_message(payload, max_events=3).events) == (3 if valid else 0)


def test_default_event_limit_is_ten_thousand() -> None:
    assert MAX_EVENTS_PER_MESSAGE == 10_000
    assert reject_one(b"[" + b",".join([b"{}"] * 10_001) + b"]").reason == "too_many_events"
    assert len(parse_message(b"[" + b",".join([b"{}"] * 10_000) + b"]").rejections) == 10_000


@pytest.mark.parametrize(
    "event",
    [
        llm_min(time="2026-03-01T12:00:00"),
        gpu_min(time="2026-03-01 12:00:00"),
        storage_min(time="2026-03-01T12:00"),
        llm_min(time="2026-03-01T12:00:00.123456"),
    ],
)
def test_naive_timestamp(event: dict[str, Any]) -> None:
    rejection = reject_one(event)
    assert rejection.reason == "naive_timestamp"
    assert "time" in rejection.detail


@pytest.mark.parametrize(
    "event",
    [
        llm_min(input_tokens=-1),
        llm_min(output_tokens=-5),
        llm_min(cached_input_tokens=-1),
        storage_min(stored_bytes=-1),
        storage_min(egress_bytes=-10),
        gpu_min(interval_s=-60),
        gpu_min(interval_s=0),
        gpu_min(gpus=[{"index": 0, "model": "H100", "util_pct": -3}]),
        gpu_min(gpus=[{"index": 0, "model": "H100", "util_pct": 3, "power_w": -1}]),
        llm_min(latency_ms=-1.0),
    ],
)
def test_negative_quantity(event: dict[str, Any]) -> None:
    assert reject_one(event).reason == "negative_quantity"


@pytest.mark.parametrize(
    ("event", "needle"),
    [
        ({**llm_min(), "type": "llm.response"}, "type"),
        ({k: v for k, v in llm_min().items() if k != "type"}, "type"),
        ({k: v for k, v in llm_min().items() if k != "model"}, "model"),
        ({k: v for k, v in gpu_min().items() if k != "gpus"}, "gpus"),
        ({k: v for k, v in storage_min().items() if k != "stored_bytes"}, "stored_bytes"),
        ({k: v for k, v in llm_min().items() if k != "event_id"}, "event_id"),
        (llm_min(cost_usd=1.5), "cost_usd"),
        (gpu_min(gpus=[{"index": 0, "model": "H100", "util_pct": 5, "temp_c": 70}]), "temp_c"),
        (llm_min(input_tokens=10, cached_input_tokens=8, cache_write_tokens=3), "cached_input_tokens"),
        (llm_min(output_tokens=10, reasoning_tokens=11), "reasoning_tokens"),
        (gpu_min(gpus=[{"index": 0, "model": "H100", "util_pct": 100.5}]), "util_pct"),
        (gpu_min(gpus=[]), "gpus"),
        (gpu_min(pricing="free"), "pricing"),
        (storage_min(interval_s=86_401), "interval_s"),
        (llm_min(event_id=""), "event_id"),
        (llm_min(input_tokens=1.5), "input_tokens"),
        (llm_min(input_tokens=10**12 + 1), "input_tokens"),
        (llm_min(output_tokens=10**20), "output_tokens"),
        (llm_min(labels={"team": 3}), "labels"),
        (llm_min(latency_ms=float("nan")), "latency_ms"),
    ],
)
def test_schema_rejections_name_the_field(event: dict[str, Any], needle: str) -> None:
    rejection = reject_one(event)
    assert rejection.reason == "schema"
    assert needle in rejection.detail


# --- batches -----------------------------------------------------------------------------------------


def test_valid_batch_keeps_order() -> None:
    batch = [gpu_min(), llm_full(), storage_min(), llm_min()]
    parsed = parse_message(dumps(batch))
    assert parsed.rejections == []
    assert [e.event_id for e in parsed.events] == ["g1", "l2", "s1", "l1"]


def test_empty_batch_is_nothing_at_all() -> None:
    parsed = parse_message(b" [ ] ")
    assert parsed.events == [] and parsed.rejections == []


def test_mixed_batch_keeps_good_events_and_rejects_each_bad_one_with_its_index() -> None:
    batch: list[Any] = [
        llm_min(event_id="a"),
        llm_min(event_id="b", time="2026-03-01T12:00:00"),
        gpu_min(event_id="c"),
        7,
        storage_min(event_id="d", stored_bytes=-1),
        {"type": "nope", "event_id": "e"},
        storage_min(event_id="f"),
        ["nested"],
        llm_min(event_id="g", time="2026-03-01T13:00:00+01:00"),
    ]
    parsed = parse_message(json.dumps(batch, indent=2).encode())
    assert [e.event_id for e in parsed.events] == ["a", "c", "f", "g"]
    assert parsed.events[3].time == T0_DT
    got = [(r.index, r.reason) for r in parsed.rejections]
    assert got == [(1, "naive_timestamp"), (3, "not_an_event"), (4, "negative_quantity"), (5, "schema"),
                   (7, "not_an_event")]
    for rejection in parsed.rejections:
        assert rejection.index is not None
        assert json.loads(rejection.original) == batch[rejection.index]


def test_rejected_cloudevent_element_keeps_the_cloudevent_not_the_mapped_event() -> None:
    bad = cloudevent(llm_min(input_tokens=-1))
    parsed = parse_message(dumps([llm_min(), bad]))
    assert [e.event_id for e in parsed.events] == ["l1"]
    (rejection,) = parsed.rejections
    assert (rejection.index, rejection.reason) == (1, "negative_quantity")
    assert json.loads(rejection.original) == bad


def test_deeply_nested_element_is_rejected_without_crashing() -> None:
    for depth in range(900, 1_000, 7):
        payload = b'[{"a":' + b"[" * depth + b"]" * depth + b"}]"
        parsed = parse_message(payload)
        assert parsed.events == []
        assert len(parsed.rejections) == 1
        assert parsed.rejections[0].reason in {"schema", "unparseable"}


# --- CloudEvents -------------------------------------------------------------------------------------


def cloudevent(event: dict[str, Any], *, prefix: str = "dev.burnwatch.",
               strip: bool = False) -> dict[str, Any]:
    data = dict(event)
    ce_type = prefix + data.pop("type")
    ce = {"specversion": "1.0", "id": data["event_id"], "source": "/gateway", "type": ce_type,
          "time": data["time"], "datacontenttype": "application/json", "data": data}
    if strip:
        del data["event_id"], data["time"]
    return ce


@pytest.mark.parametrize("prefix", ["", "dev.burnwatch.", "io.burnwatch.", "burnwatch."])
@pytest.mark.parametrize("make", [gpu_full, llm_full, storage_full])
def test_structured_cloudevent_single(prefix: str, make: Any) -> None:
    plain = parse_one(make())
    assert parse_one(cloudevent(make(), prefix=prefix)) == plain


def test_cloudevent_id_and_time_fill_missing_event_fields() -> None:
    event = parse_one(cloudevent(llm_min(event_id="ce-1", time="2026-03-01T13:00:00+01:00"), strip=True))
    assert event.event_id == "ce-1"
    assert event.time == T0_DT


def test_event_fields_win_over_cloudevent_attributes() -> None:
    ce = cloudevent(llm_min())
    ce["id"], ce["time"] = "other-id", "2000-01-01T00:00:00Z"
    event = parse_one(ce)
    assert event.event_id == "l1" and event.time == T0_DT


def test_cloudevents_batch_mode_array() -> None:
    batch = [cloudevent(gpu_min()), cloudevent(llm_min(), prefix=""), storage_min(),
             cloudevent(storage_full())]
    parsed = parse_message(dumps(batch))
    assert parsed.rejections == []
    assert [e.event_id for e in parsed.events] == ["g1", "l1", "s1", "s2"]


@pytest.mark.parametrize("version", ["0.3", "2.0", None, "1"])
def test_unsupported_specversion_is_a_schema_rejection(version: Any) -> None:
    ce = cloudevent(llm_min())
    ce["specversion"] = version
    rejection = reject_one(ce)
    assert rejection.reason == "schema"
    assert "specversion" in rejection.detail


def test_cloudevent_without_object_data_is_rejected() -> None:
    ce = cloudevent(llm_min())
    ce["data"] = "eyJ0eXBlIjoi"
    parsed = parse_message(dumps([llm_min(), ce]))
    assert [e.event_id for e in parsed.events] == ["l1"]
    assert [(r.index, r.reason) for r in parsed.rejections] == [(1, "schema")]
    assert "data" in parsed.rejections[0].detail


def test_cloudevent_with_unknown_type_is_rejected() -> None:
    ce = cloudevent(llm_min(), prefix="com.example.")
    assert reject_one(ce).reason == "schema"


def test_from_cloudevent_maps_fields() -> None:
    mapped = from_cloudevent({"specversion": "1.0", "id": "c9", "type": "io.burnwatch.storage.usage",
                              "time": T0, "data": {"bucket": "b"}})
    assert mapped == {"bucket": "b", "type": "storage.usage", "event_id": "c9", "time": T0}
    with pytest.raises(ValueError, match="specversion"):
        from_cloudevent({"specversion": "0.3", "data": {}})


# --- keys and schema --------------------------------------------------------------------------------


def test_entity_key_per_type() -> None:
    assert entity_key(parse_one(gpu_full())) == "node-b"
    assert entity_key(parse_one(llm_full())) == "chat"
    assert entity_key(parse_one(llm_min())) == "unknown"
    assert entity_key(parse_one(storage_full())) == "ckpt"


def _definitions(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: d for name, d in schema["$defs"].items()}


def test_event_json_schema_structure_matches_the_models() -> None:
    schema = event_json_schema()
    json.dumps(schema)  # must be plain JSON
    assert schema["title"] == "burnwatch usage event"
    assert schema["discriminator"]["propertyName"] == "type"
    assert set(schema["discriminator"]["mapping"]) == set(EVENT_TYPES)
    assert len(schema["oneOf"]) == 3
    defs = _definitions(schema)
    for model in (GpuSample, LlmRequest, StorageUsage):
        definition = defs[model.__name__]
        assert definition["additionalProperties"] is False
        assert set(definition["properties"]) == set(model.model_fields)
        required = {name for name, f in model.model_fields.items() if f.is_required()}
        assert set(definition["required"]) == required
        assert definition["properties"]["time"]["format"] == "date-time"
    llm = defs["LlmRequest"]["properties"]
    assert llm["input_tokens"]["minimum"] == 0
    assert llm["type"]["const"] == "llm.request"
    assert defs["GpuSample"]["properties"]["gpus"]["maxItems"] == 64
    assert defs["GpuReading"]["properties"]["util_pct"]["maximum"] == 100



# --- docs/events.md stays true -----------------------------------------------------------------------

EVENTS_DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def test_every_json_example_in_the_events_reference_is_accepted() -> None:
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", EVENTS_DOC.read_text(), re.S)]
    kinds = {"event": 0, "dead_letter": 0, "cost": 0, "spend_window": 0}
    for block in blocks:
        if isinstance(block, dict) and "schema_version" in block:
            kinds["dead_letter"] += 1
            assert tuple(block) == DEAD_LETTER_FIELDS
            original = decode_original(block)
            assert original.decode() == block["original_text"]
            assert [r.reason for r in parse_message(original).rejections] == [block["reason"]]
        elif isinstance(block, dict) and "ChargePeriodStart" in block:
            kinds["cost"] += 1
            assert list(block) == list(CostRecord.__annotations__)
        elif isinstance(block, dict) and "window_start" in block:
            kinds["spend_window"] += 1
            key = window_key("day", 1767225600, "team", "search")
            made = window_record(key, {**empty_totals(), "closed": True, "unit_economics": {}},
                                 partition=0, as_of=datetime.now(UTC))
            assert list(block) == list(made)
        else:
            kinds["event"] += 1
            parsed = parse_message(json.dumps(block).encode())
            assert parsed.rejections == []
            assert len(parsed.events) == (len(block) if isinstance(block, list) else 1)
    assert kinds == {"event": 5, "dead_letter": 1, "cost": 1, "spend_window": 1}
