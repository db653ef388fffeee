"""The background emitter: never blocks the caller, drops and counts on a full queue, survives failures."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from streams.hooks.emitter import UsageEmitter
from streams.hooks.usage import llm_request_event


class ListSink:
    """An in-memory sink: keeps what it is sent; can be made to block or to fail."""

    def __init__(self) -> None:
        self.events: list[Mapping[str, Any]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False
        self.flushes = 0

    def send(self, events: Sequence[Mapping[str, Any]]) -> None:
        self.gate.wait()
        if self.fail:
            raise RuntimeError("broker unreachable")
        self.events.extend(events)

    def flush(self, timeout: float = 60.0) -> None:
        self.flushes += 1


def event(i: int) -> dict[str, Any]:
    return llm_request_event({"prompt_tokens": 10 + i, "completion_tokens": 2}, provider="openai",
                             model="gpt-4o", response_id=f"chatcmpl-{i}", app="chat")


def test_every_emitted_event_is_sent_once_in_order() -> None:
    sink = ListSink()
    emitter = UsageEmitter(lambda: sink, batch_size=64, linger_s=0.05)
    for i in range(1_000):
        assert emitter.emit(event(i))
    emitter.close(timeout=10)
    assert [e["event_id"] for e in sink.events] == [f"chatcmpl-{i}" for i in range(1_000)]
    assert (emitter.stats.queued, emitter.stats.sent, emitter.stats.dropped) == (1_000, 1_000, 0)
    assert sink.flushes >= 1_000 // 64


def test_a_stuck_producer_never_blocks_the_caller_and_drops_are_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = ListSink()
    sink.gate.clear()  # Kafka hangs
    emitter = UsageEmitter(lambda: sink, max_queue=100, batch_size=10, linger_s=0.01)
    slowest = 0.0
    results = []
    with caplog.at_level(logging.WARNING, logger="streams.hooks.emitter"):
        for i in range(1_000):
            started = time.perf_counter()
            results.append(emitter.emit(event(i)))
            slowest = max(slowest, time.perf_counter() - started)
    assert slowest < 0.05  # the request path never waits for the producer
    dropped = results.count(False)
    assert dropped >= 1_000 - 100 - 10  # queue plus the batch the thread holds
    assert emitter.stats.dropped == dropped
    drop_lines = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drop_lines) == 1  # loud, but one line per interval, not one per event
    sink.gate.set()
    emitter.close(timeout=10)
    assert len(sink.events) == 1_000 - dropped == emitter.stats.sent


def test_invalid_events_are_counted_and_not_sent() -> None:
    sink = ListSink()
    emitter = UsageEmitter(lambda: sink, linger_s=0.01)
    bad = {**event(1), "time": "2026-01-01T00:00:00"}  # naive
    emitter.emit(bad)
    emitter.emit(event(2))
    emitter.close(timeout=10)
    assert [e["event_id"] for e in sink.events] == ["chatcmpl-2"]
    assert emitter.stats.invalid == 1


def test_a_failing_producer_is_counted_and_the_emitter_recovers() -> None:
    sink = ListSink()
    sink.fail = True
    emitter = UsageEmitter(lambda: sink, batch_size=5, linger_s=0.01)
    for i in range(5):
        emitter.emit(event(i))
    deadline = time.monotonic() + 5
    while emitter.stats.failed < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert emitter.stats.failed == 5
    sink.fail = False
    for i in range(5, 8):
        emitter.emit(event(i))
    emitter.close(timeout=10)
    assert [e["event_id"] for e in sink.events] == ["chatcmpl-5", "chatcmpl-6", "chatcmpl-7"]


def test_a_producer_that_cannot_be_built_is_retried_with_the_next_batch() -> None:
    sink = ListSink()
    attempts = []

    def factory() -> ListSink:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("no config")
        return sink

    emitter = UsageEmitter(factory, batch_size=1, linger_s=0.01)
    emitter.emit(event(1))
    deadline = time.monotonic() + 5
    while emitter.stats.failed < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    emitter.emit(event(2))
    emitter.close(timeout=10)
    assert emitter.stats.failed == 1
    assert [e["event_id"] for e in sink.events] == ["chatcmpl-2"]


def test_after_close_emit_returns_false_and_counts_a_drop() -> None:
    emitter = UsageEmitter(ListSink)
    emitter.close()
    assert emitter.emit(event(1)) is False
    assert emitter.stats.dropped == 1
