"""The GPU agent against a private Kafka broker that the test stops and starts again.

Acceptance: with the broker stopped for 60 seconds while the agent runs, then started again, every
interval's sample arrives, a resent sample carries its interval's event id, and a real worker prices
each interval exactly once. ``BURNWATCH_GPU_AGENT_OUTAGE_S`` shortens the outage for a quick local run.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from pytest_httpserver import HTTPServer

from streams.admin import ensure_topics
from streams.gpu_agent.agent import GpuAgent
from streams.gpu_agent.dcgm import DcgmSource
from streams.gpu_agent.sample import sample_event_id
from streams.gpu_agent.settings import GpuAgentSettings
from streams.names import COSTS_PRICED, USAGE_GPU, USAGE_TOPICS
from streams.producer import EventProducer, wait_for_partitions
from streams.settings import Settings
from tests.integration.conftest import Stack

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests/fixtures/dcgm/metrics.txt"
PRIVATE_KAFKA = {
    "KAFKA_DATA_DIR": "/tmp/kafka-gpuagent",  # noqa: S108 - the broker's own scratch dir, as the brief names it
    # below Linux's ephemeral range (32768-60999): during the outage the agent's producers keep connecting
    # to the broker's port, and a connect whose own port the kernel picked equal to it connects to itself
    # and holds the port, so the broker could not start again (seen once: "Address already in use")
    "KAFKA_PORT": "31092",
    "KAFKA_CONTROLLER_PORT": "31093",
}
BOOTSTRAP = f"localhost:{PRIVATE_KAFKA['KAFKA_PORT']}"
OUTAGE_S = float(os.environ.get("BURNWATCH_GPU_AGENT_OUTAGE_S", "60"))
INTERVAL_S = 1


def kafka(command: str) -> None:
    done = subprocess.run(
        [str(REPO / "deploy/kafka/kafka.sh"), command], env={**os.environ, **PRIVATE_KAFKA},
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, f"kafka.sh {command} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def private_broker() -> Iterator[str]:
    kafka("start")
    try:
        yield BOOTSTRAP
    finally:
        kafka("stop")


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def read_all(settings: Settings, topic: str, expected: int, timeout: float = 60) -> list[dict[str, object]]:
    consumer = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": f"t-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    events: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout
    quiet_until = None
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                if len(events) >= expected:
                    quiet_until = quiet_until or time.monotonic() + 3  # let late resends show up too
                    if time.monotonic() > quiet_until:
                        break
                continue
            events.extend(json.loads(message.value()))
    finally:
        consumer.close()
    return events


def test_every_interval_arrives_across_a_broker_outage_with_stable_ids(
    private_broker: str, tmp_path: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/metrics").respond_with_data(FIXTURE.read_text())
    stack = Stack(private_broker, tmp_path)
    kafka_settings = stack.settings
    ensure_topics(kafka_settings)
    wait_for_partitions(EventProducer(kafka_settings), [kafka_settings.topic(n) for n in USAGE_TOPICS])
    agent_settings = GpuAgentSettings(
        node="gpu-node-7", cluster="it", provider="aws", instance_type="p4de.24xlarge", pricing="on_demand",
        interval_s=INTERVAL_S, buffer_dir=tmp_path / "buffer", delivery_timeout_s=5, metrics_port=0,
    )
    agent = GpuAgent(agent_settings, kafka_settings, source=DcgmSource(httpserver.url_for("/metrics")))
    runner = threading.Thread(target=agent.run, name="agent-under-test")
    runner.start()
    try:
        sent = agent.metrics.samples_sent
        wait_until(lambda: sent._value.get() >= 3, 30, "3 samples acknowledged before the outage")

        kafka("stop")
        down_at = time.monotonic()
        time.sleep(OUTAGE_S)
        buffered = agent.queue.pending
        assert buffered >= OUTAGE_S * 0.8 / INTERVAL_S, f"only {buffered} samples buffered during the outage"
        kafka("start")
        outage = time.monotonic() - down_at

        wait_until(lambda: agent.queue.pending == 0, 120, "the buffer to drain after the broker came back")
        after = sent._value.get()
        wait_until(lambda: sent._value.get() >= after + 3, 30, "3 more samples after recovery")
    finally:
        agent.stop()
        runner.join(timeout=60)
    assert not runner.is_alive()

    taken = int(agent.metrics.samples_taken._value.get())
    assert agent.metrics.source_errors.labels("dcgm")._value.get() == 0
    assert agent.queue.dropped == 0 and agent.queue.pending == 0
    assert agent.metrics.send_failures._value.get() > 0, "the outage never reached the agent"

    events = read_all(kafka_settings, kafka_settings.topic(USAGE_GPU), taken)
    times = sorted({datetime.fromisoformat(str(e["time"])) for e in events})
    assert len(times) == taken, f"{taken} samples taken, {len(times)} distinct intervals in Kafka"
    assert times == [times[0] + timedelta(seconds=INTERVAL_S * k) for k in range(len(times))], "a gap"
    assert (times[-1] - times[0]).total_seconds() >= outage, "the samples do not span the outage"
    # Every copy of an interval (first send or resend) carries that interval's id.
    assert {e["event_id"] for e in events} == {sample_event_id(agent.facts, t) for t in times}
    for event in events:
        assert event["event_id"] == sample_event_id(agent.facts, datetime.fromisoformat(str(event["time"])))
        assert event["node"] == "gpu-node-7" and len(event["gpus"]) == 4  # type: ignore[arg-type]
    assert all(t.tzinfo is not None and t.utcoffset() == timedelta(0) for t in times)
    assert times[-1] <= datetime.now(UTC)

    # The priced stream: a worker prices every interval exactly once, resends included.
    interval_ids = {e["event_id"] for e in events}
    try:
        stack.start_worker()
        priced = stack.consume(
            COSTS_PRICED, until=lambda rs: {r["x_EventId"] for r in rs} >= interval_ids, timeout=120
        )
    finally:
        stack.stop_all()
    assert {r["x_EventId"] for r in priced} == interval_ids
    charges = [r["x_ChargeId"] for r in priced]
    assert len(charges) == len(set(charges)) == 4 * len(interval_ids), "an interval was priced twice"
