"""The priced stream end to end on the real broker: exact dollars, no double counting, dead letters."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path
from typing import Any

from streams.names import COSTS_PRICED, USAGE_DLQ, USAGE_LLM
from tests.integration.conftest import Stack
from tests.support.oracle import independent_total, varied_events

EVENTS = 1500


def metric(text: str, name: str) -> float:
    """Sum a metric's samples over all label values in Prometheus text format."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            match = re.match(rf"{re.escape(name)}(\{{[^}}]*\}})? ([0-9.e+-]+)$", line)
            if match:
                total += float(match.group(2))
    return total


def wait_for_metric(
    stack: Stack, name: str, at_least: float, timeout: float = 60, worker: str = "w1"
) -> float:
    deadline = time.monotonic() + timeout
    value = 0.0
    while time.monotonic() < deadline:
        value = metric(stack.metrics(worker), name)
        if value >= at_least:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{name} reached {value}, expected >= {at_least}")


def write_events(path: Path, events: list[Any]) -> None:
    path.write_text("".join(event.model_dump_json() + "\n" for event in events))


def test_known_events_are_priced_exactly_once_and_match_replay(stack: Stack, tmp_path: Path) -> None:
    events = varied_events(EVENTS, seed=7)
    expected_total = independent_total(events)
    events_file = tmp_path / "events.jsonl"
    write_events(events_file, events)
    stack.start_worker()
    assert "garbage collector: young-generation threshold 400000" in stack.log("w1")

    result = stack.cli("ingest", str(events_file))
    assert result.returncode == 0, result.stderr.decode()
    event_ids = {event.event_id for event in events}
    records = stack.consume(COSTS_PRICED, until=lambda rs: {r["x_EventId"] for r in rs} >= event_ids)
    assert {r["x_EventId"] for r in records} == event_ids
    charge_ids = [r["x_ChargeId"] for r in records]
    assert len(charge_ids) == len(set(charge_ids)), "a charge was published twice"
    streamed_total = sum(r["EffectiveCost"] for r in records)
    assert abs(streamed_total - expected_total) < 1e-6

    # A second ingest of the same events (a producer retry, a re-run) changes no total, even on a
    # new worker with empty local state: it rebuilds the dedup memory from the changelog.
    stack.stop_all()
    stack.start_worker("w2")
    result = stack.cli("ingest", str(events_file))
    assert result.returncode == 0, result.stderr.decode()
    wait_for_metric(stack, "burnwatch_events_duplicate_total", EVENTS, worker="w2")
    again = stack.consume(COSTS_PRICED, until=lambda rs: len(rs) > len(records), timeout=5)
    assert len(again) == len(records)
    assert abs(sum(r["EffectiveCost"] for r in again) - expected_total) < 1e-6

    # replay prices the same file in-process to the same records.
    out = tmp_path / "replay"
    result = stack.cli("replay", str(events_file), "--out", str(out))
    assert result.returncode == 0, result.stderr.decode()
    replayed = [json.loads(line) for line in (out / "costs.jsonl").read_text().splitlines()]
    by_charge = {r["x_ChargeId"]: r for r in records}
    assert {r["x_ChargeId"]: r for r in replayed} == by_charge


def _llm(event_id: str, **changes: Any) -> dict[str, Any]:
    event = {"type": "llm.request", "event_id": event_id, "time": "2026-11-01T10:00:00Z",
             "provider": "openai", "model": "gpt-4o", "input_tokens": 1200, "output_tokens": 300,
             "app": "chat", "labels": {"team": "search"}}
    event.update(changes)
    return event


def test_bad_input_goes_to_the_dead_letter_topic_and_good_events_survive(stack_factory: Any) -> None:
    stack = stack_factory(max_message_bytes=4096)
    stack.start_worker()
    topic = stack.topic(USAGE_LLM)
    producer = stack.producer()
    batch = [
        _llm("ok-1"),
        _llm("naive", time="2026-11-01T10:00:00"),
        _llm("negative", output_tokens=-5),
        _llm("extra", surprise_field=1),
        _llm("ok-2"),
    ]
    cloud_event = {"specversion": "1.0", "id": "ok-ce", "type": "dev.burnwatch.llm.request",
                   "source": "/gateway", "time": "2026-11-01T10:00:01Z",
                   "data": {k: v for k, v in _llm("x").items() if k not in ("event_id", "time", "type")}}
    messages = [
        b"{not json",
        json.dumps(batch).encode(),
        json.dumps(cloud_event).encode(),
        json.dumps([_llm(f"big-{i}") for i in range(30)]).encode(),  # > 4096 bytes
    ]
    for value in messages:
        producer.produce(topic, value=value, key=b"chat", partition=0)
    producer.flush(30)

    dead = stack.consume(USAGE_DLQ, until=lambda rs: len(rs) >= 5)
    reasons = sorted(d["reason"] for d in dead)
    assert reasons == ["naive_timestamp", "negative_quantity", "oversize", "schema", "unparseable"]
    for record in dead:
        assert record["source_topic"] == topic and record["source_partition"] == 0
        assert isinstance(record["source_offset"], int) and record["detail"]
    by_reason = {d["reason"]: d for d in dead}
    assert base64.b64decode(by_reason["unparseable"]["original_b64"]) == b"{not json"
    assert base64.b64decode(by_reason["oversize"]["original_b64"]) == messages[3]
    assert by_reason["naive_timestamp"]["batch_index"] == 1
    assert json.loads(base64.b64decode(by_reason["schema"]["original_b64"]))["event_id"] == "extra"

    good = {"ok-1", "ok-2", "ok-ce"}
    priced = stack.consume(COSTS_PRICED, until=lambda rs: good <= {r["x_EventId"] for r in rs})
    assert {r["x_EventId"] for r in priced} == good
    body = stack.wait_healthy("w1", timeout=10)
    assert body["status"] == "ok"
    text = stack.metrics()
    assert metric(text, "burnwatch_events_rejected_total") == 5
    assert metric(text, "burnwatch_events_priced_total") == 3


def test_unpriced_usage_is_kept_at_zero_cost(stack: Stack) -> None:
    stack.start_worker()
    producer = stack.producer()
    producer.produce(stack.topic(USAGE_LLM), key=b"chat", partition=0,
                     value=json.dumps([_llm("u-1", model="no-such-model-9000")]).encode())
    producer.flush(30)
    priced = stack.consume(COSTS_PRICED, until=lambda rs: len(rs) >= 2)
    assert {r["x_Unpriced"] for r in priced} == {True}
    assert sum(r["EffectiveCost"] for r in priced) == 0
    wait_for_metric(stack, "burnwatch_charges_unpriced_total", 2)
    assert "no-such-model-9000" in stack.log("w1")
    stack.wait_healthy("w1", timeout=10)
