"""The GPU agent's bounded disk buffer: order, durability across restarts, the full-buffer policy."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import generate_latest

from streams.core.events import GpuReading
from streams.gpu_agent.agent import GpuAgent
from streams.gpu_agent.disk_queue import DiskQueue
from streams.gpu_agent.settings import GpuAgentSettings
from streams.settings import Settings


def rec(i: int, pad: int = 0) -> dict[str, object]:
    return {"event_id": f"e{i}", "pad": "x" * pad}


def ids(records: list[dict[str, object]]) -> list[object]:
    return [r["event_id"] for r in records]


def test_records_come_out_in_order_and_leave_only_when_acked(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path)
    for i in range(5):
        assert q.append(rec(i))
    first = q.peek(3)
    assert ids(first.records) == ["e0", "e1", "e2"]
    assert ids(q.peek(3).records) == ["e0", "e1", "e2"]  # peeking twice removes nothing
    q.ack(first)
    assert q.pending == 2
    assert ids(q.peek(10).records) == ["e3", "e4"]
    q.ack(first)  # a repeated ack changes nothing
    assert q.pending == 2


def test_unacked_records_survive_a_restart(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path)
    for i in range(4):
        q.append(rec(i))
    q.ack(q.peek(1))
    q.close()
    again = DiskQueue(tmp_path)
    assert again.pending == 3
    assert ids(again.peek(10).records) == ["e1", "e2", "e3"]
    again.append(rec(4))
    assert ids(again.peek(10).records) == ["e1", "e2", "e3", "e4"]


def test_a_torn_last_line_is_cut_off_on_open(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path)
    q.append(rec(0))
    q.close()
    (segment,) = tmp_path.glob("seg-*.jsonl")
    with open(segment, "ab") as handle:
        handle.write(b'{"event_id":"e1","pa')  # the agent died mid-write
    again = DiskQueue(tmp_path)
    assert again.pending == 1 and again.corrupt == 1
    again.append(rec(2))
    assert ids(again.peek(10).records) == ["e0", "e2"]


def test_segments_rotate_and_acked_ones_are_deleted(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path, max_bytes=64 * 1024, segment_bytes=1024)
    for i in range(40):
        q.append(rec(i, pad=100))
    assert len(list(tmp_path.glob("seg-*.jsonl"))) > 3
    while q.pending:
        q.ack(q.peek(7))
    assert len(list(tmp_path.glob("seg-*.jsonl"))) == 1
    assert q.peek(10).records == []


def test_a_full_buffer_drops_the_oldest_records_and_counts_them(tmp_path: Path) -> None:
    drops: list[tuple[int, str]] = []
    q = DiskQueue(tmp_path, max_bytes=8192, segment_bytes=2048, on_drop=lambda n, why: drops.append((n, why)))
    for i in range(200):
        q.append(rec(i, pad=200))
    assert q.size_bytes <= 8192
    kept = ids(q.peek(1000).records)
    assert kept == [f"e{i}" for i in range(200 - len(kept), 200)]  # the newest, still in order
    assert sum(n for n, _ in drops) == q.dropped == 200 - len(kept) == 200 - q.pending
    assert {why for _, why in drops} == {"buffer_full"}


def test_an_ack_of_a_batch_whose_segment_was_dropped_meanwhile_keeps_counts_right(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path, max_bytes=8192, segment_bytes=2048)
    for i in range(10):
        q.append(rec(i, pad=200))
    in_flight = q.peek(20)
    for i in range(10, 40):
        q.append(rec(i, pad=200))
    q.ack(in_flight)
    assert q.pending == len(q.peek(1000).records)
    assert ids(q.peek(1).records) != ["e0"]


def test_a_record_larger_than_the_buffer_is_refused_and_counted(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path, max_bytes=4096)
    assert not q.append(rec(0, pad=5000))
    assert q.dropped == 1 and q.pending == 0


def test_an_unreadable_record_is_skipped_and_counted(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path)
    q.append(rec(0))
    q.close()
    (segment,) = tmp_path.glob("seg-*.jsonl")
    with open(segment, "ab") as handle:
        handle.write(b"not json\n")
    again = DiskQueue(tmp_path)
    again.append(rec(1))
    batch = again.peek(10)
    assert ids(batch.records) == ["e0", "e1"] and batch.lines == 3 and again.corrupt == 1
    again.ack(batch)
    assert again.pending == 0


class ListSource:
    """An in-memory GPU source for tests."""

    name = "list"

    def __init__(self, readings: list[GpuReading]) -> None:
        self.readings = readings

    def read(self) -> list[GpuReading]:
        return self.readings


def test_a_full_agent_buffer_is_a_loud_metric_and_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from datetime import UTC, datetime, timedelta

    settings = GpuAgentSettings(node="n1", buffer_dir=tmp_path, buffer_max_bytes=64 * 1024,
                                buffer_segment_bytes=4096, interval_s=15, metrics_port=0)
    readings = [GpuReading(index=i, model="NVIDIA H100 80GB HBM3", util_pct=50.0) for i in range(8)]
    agent = GpuAgent(settings, Settings(), source=ListSource(readings))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for k in range(200):  # Kafka is never reached: nothing ships
        agent.sample(start + timedelta(seconds=15 * k))
    exposed = generate_latest(agent.metrics.registry).decode()
    dropped = agent.queue.dropped
    assert dropped > 0
    assert f'burnwatch_gpu_agent_samples_dropped_total{{reason="buffer_full"}} {float(dropped)}' in exposed
    assert f"burnwatch_gpu_agent_buffer_samples {float(agent.queue.pending)}" in exposed
    assert "burnwatch_gpu_agent_samples_total 200.0" in exposed
    assert any("buffer full" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    agent.queue.close()
