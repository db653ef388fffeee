"""The edge producer, ``burnwatch simulate`` and ``burnwatch ingest`` against the real broker."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.admin import AdminClient

from streams.admin import ensure_topics, topic_specs
from streams.core.event_files import to_csv
from streams.core.simulation import Simulation, SimulationConfig, default_incidents
from streams.names import TOPIC_FOR_TYPE, USAGE_TOPICS
from streams.producer import (
    EventProducer,
    ProducerError,
    TopicMissingError,
    entity_key_of,
    partition_for,
    wait_for_partitions,
)
from streams.settings import Settings

PARTITIONS = 3  # the stack fixture's BURNWATCH_TOPIC_PARTITIONS


@pytest.fixture
def topics(stack: Any) -> Iterator[Settings]:
    ensure_topics(stack.settings)
    producer = EventProducer(stack.settings)
    wait_for_partitions(producer, [stack.topic(name) for name in USAGE_TOPICS])
    yield stack.settings
    admin = AdminClient(stack.settings.librdkafka_config())
    for future in admin.delete_topics([spec.topic for spec in topic_specs(stack.settings)]).values():
        future.result()


def simulated(duration_s: float = 300, seed: int = 3) -> list[dict[str, Any]]:
    config = SimulationConfig(start=datetime(2026, 4, 1, tzinfo=UTC), duration_s=duration_s, seed=seed,
                              nodes=4, rate=10, incidents=default_incidents(duration_s))
    return list(Simulation(config).events())


def read_messages(settings: Settings, topic: str, events: int, timeout: float = 60) -> list[Message]:
    """Read raw messages of ``topic`` from the beginning until they hold ``events`` events."""
    consumer = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": f"test-producer-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    messages: list[Message] = []
    seen = 0
    deadline = time.monotonic() + timeout
    try:
        while seen < events and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            messages.append(message)
            seen += len(json.loads(message.value()))
    finally:
        consumer.close()
    return messages


def test_partition_for_matches_librdkafkas_default_keyed_partitioner(topics: Settings) -> None:
    producer = Producer({"bootstrap.servers": topics.kafka_bootstrap_servers})
    keys = [f"key-{i}" for i in range(60)] + ["aws-us-east-1-gpu-00", "support-bot", "inference-logs", "ü"]
    placed: dict[str, int] = {}

    def record(error: Any, message: Message) -> None:
        assert error is None
        placed[message.key().decode()] = message.partition()

    for key in keys:
        producer.produce(topics.topic("usage.llm"), b"[]", key=key.encode(), on_delivery=record)
    assert producer.flush(30) == 0
    assert placed == {key: partition_for(key, PARTITIONS) for key in keys}
    assert len(set(placed.values())) == PARTITIONS


def test_events_arrive_as_envelopes_on_their_topic_and_key_partition(topics: Settings) -> None:
    events = simulated()
    first = EventProducer(topics, batch_size=50)
    first.send(events)
    first.flush()
    assert (first.delivered, first.failed) == (len(events), 0)
    # the same events again, batched differently: every copy must land where the first one did
    again = EventProducer(topics, batch_size=7)
    again.send(reversed(events))
    again.flush()
    assert again.delivered == len(events)

    expected = Counter(e["type"] for e in events)
    placements: dict[str, set[tuple[str, int]]] = defaultdict(set)
    copies: Counter[str] = Counter()
    for kind, topic_name in TOPIC_FOR_TYPE.items():
        topic = topics.topic(topic_name)
        messages = read_messages(topics, topic, 2 * expected[kind])
        for message in messages:
            batch = json.loads(message.value())
            assert 1 <= len(batch) <= 50
            assert message.key().decode() == entity_key_of(batch[0])
            for event in batch:
                assert event["type"] == kind
                assert message.partition() == partition_for(entity_key_of(event), PARTITIONS)
                placements[event["event_id"]].add((topic, message.partition()))
                copies[event["event_id"]] += 1
    assert copies == Counter({e["event_id"]: 2 for e in events})
    assert all(len(where) == 1 for where in placements.values())


def test_model_events_and_dicts_serialize_the_same_way(topics: Settings) -> None:
    from streams.core.events import EVENT_ADAPTER

    events = simulated(60)[:5]
    producer = EventProducer(topics)
    producer.send(EVENT_ADAPTER.validate_python(e) for e in events)
    producer.flush()
    got = []
    for topic_name in USAGE_TOPICS:
        count = sum(1 for e in events if topics.topic(TOPIC_FOR_TYPE[e["type"]]) == topics.topic(topic_name))
        for message in read_messages(topics, topics.topic(topic_name), count) if count else []:
            got.extend(json.loads(message.value()))
    ids = sorted(EVENT_ADAPTER.validate_python(e).event_id for e in got)
    assert ids == sorted(e["event_id"] for e in events)
    assert all(e["time"].endswith("Z") for e in got)


def test_missing_topic_is_a_clear_error_and_is_not_auto_created(kafka_bootstrap: str) -> None:
    prefix = f"absent{uuid.uuid4().hex[:8]}."
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=prefix)
    producer = EventProducer(settings)
    with pytest.raises(TopicMissingError, match="does not exist"):
        producer.send(simulated(60)[:1])
    listed = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics
    assert not any(name.startswith(settings.topic_prefix) for name in listed)


def test_delivery_failures_are_counted_and_raised_from_flush(topics: Settings) -> None:
    noise = random.Random(0).randbytes(6 * 1024 * 1024).hex()  # 12 MiB that lz4 cannot shrink
    event = simulated(60)[0] | {"labels": {"blob": noise}}  # over the broker's 10 MiB message limit
    big = topics.model_copy(update={"max_message_bytes": 16 * 1024 * 1024})
    producer = EventProducer(big)
    producer.send([event])
    with pytest.raises(ProducerError, match="1 event"):
        producer.flush()
    assert (producer.delivered, producer.failed) == (0, 1)
    producer.flush()  # a failure is raised once, not on every later flush


def test_an_event_over_the_message_limit_is_refused_not_sent(topics: Settings) -> None:
    small = topics.model_copy(update={"max_message_bytes": 4096})
    events = simulated(60)
    gpu = next(e for e in events if e["type"] == "gpu.sample")  # about 3 kB with 8 GPUs
    huge = gpu | {"event_id": "huge", "labels": {"blob": "y" * 5000}}
    producer = EventProducer(small, batch_size=1000)
    producer.send([gpu, huge, gpu | {"event_id": "other"}])
    with pytest.raises(ProducerError, match="exceeds max_message_bytes"):
        producer.flush()
    assert (producer.delivered, producer.failed) == (2, 1)
    messages = read_messages(topics, topics.topic("usage.gpu"), 2)
    assert all(len(m.value()) <= 4096 for m in messages)  # two envelopes: both would not fit in one


def test_simulate_command_produces_what_the_dry_run_prints(stack: Any, topics: Settings) -> None:
    args = ["simulate", "--duration", "120", "--rate", "5", "--nodes", "2", "--seed", "4",
            "--start", "2026-04-01T00:00:00Z", "--incidents", "none"]
    dry = stack.cli(*args, "--dry-run")
    assert dry.returncode == 0, dry.stderr.decode()
    printed = [json.loads(line) for line in dry.stdout.decode().splitlines()]
    live = stack.cli(*args, "--speed", "0", "--truth", str(stack.tmp / "truth.json"))
    assert live.returncode == 0, live.stderr.decode()
    assert f"sent {len(printed):,} events" in live.stderr.decode()
    sent: list[dict[str, Any]] = []
    for topic_name in USAGE_TOPICS:
        kind = next(k for k, v in TOPIC_FOR_TYPE.items() if v == topic_name)
        count = sum(1 for e in printed if e["type"] == kind)
        for message in read_messages(topics, topics.topic(topic_name), count):
            sent.extend(json.loads(message.value()))
    assert sorted(json.dumps(e, sort_keys=True) for e in sent) == sorted(
        json.dumps(e, sort_keys=True) for e in printed
    )
    assert json.loads((stack.tmp / "truth.json").read_text())["incidents"] == []


def test_simulate_paces_against_the_wall_clock(stack: Any, topics: Settings) -> None:
    began = time.monotonic()
    run = stack.cli("simulate", "--duration", "60", "--speed", "20", "--rate", "2", "--nodes", "1")
    assert run.returncode == 0, run.stderr.decode()
    assert time.monotonic() - began >= 2.5  # 60 simulated seconds at 20x take about 3 s


def test_ingest_sends_the_valid_events_and_reports_the_rest(stack: Any, topics: Settings) -> None:
    events = simulated(60)
    llm = [e for e in events if e["type"] == "llm.request"]
    bad = [llm[0] | {"event_id": "naive", "time": "2026-04-01T00:00:00"},
           llm[1] | {"event_id": "negative", "input_tokens": -4}]
    path: Path = stack.tmp / "events.csv"
    path.write_text(to_csv(events + bad))
    run = stack.cli("ingest", str(path), "--batch-size", "100")
    out = run.stdout.decode()
    assert run.returncode == 1, out + run.stderr.decode()
    assert "naive_timestamp" in out and "negative_quantity" in out
    assert f"{len(events):,}" in out
    got = []
    for message in read_messages(topics, topics.topic("usage.llm"), len(llm)):
        got.extend(json.loads(message.value()))
    assert sorted(e["event_id"] for e in got) == sorted(e["event_id"] for e in llm)

    clean = stack.tmp / "clean.jsonl"
    clean.write_text("".join(json.dumps(e) + "\n" for e in events[:10]))
    ok = stack.cli("ingest", "-", "--dry-run", input_bytes=clean.read_bytes())
    assert ok.returncode == 0, ok.stdout.decode() + ok.stderr.decode()
    assert "dry run" in ok.stdout.decode()
