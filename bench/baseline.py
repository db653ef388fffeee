"""The two comparison points: a bare confluent-kafka consume-decode-price loop, and pricing with no Kafka.

Both run the same per-message work as the ``price_usage`` agent: ``price_payload`` (parse, drop repeated
ids, price), ``cost_messages`` (the agent's own grouping and encoding). The bare loop keeps
its dedup memory in a set and lets the consumer auto-commit: it is what the pricing costs without faust,
aiokafka, the RocksDB table and its changelog.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as EventFlag
from typing import Any

from streams.core.catalog import load_catalog
from streams.core.costs import CostRecord
from streams.core.events import parse_message
from streams.core.price_batch import cost_messages, new_events, price_payload
from streams.core.pricing import Pricer
from streams.names import COSTS_PRICED, USAGE_TOPICS
from streams.settings import Settings

CONSUME_BATCH = 100
MAX_FETCH_BYTES = 16 * 1024 * 1024  # as the faust app's consumer_max_fetch_size


def encode_costs(records: list[CostRecord]) -> list[tuple[bytes, bytes]]:
    """Return ``(key, value)`` output messages for priced records, grouped and chunked like the agent."""
    return cost_messages(records)


@dataclass(slots=True)
class InProcessResult:
    """Pricing with no Kafka: events per second overall and the seconds spent in each step."""

    events: int = 0
    records: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0
    parse_s: float = 0.0
    price_s: float = 0.0
    encode_s: float = 0.0
    output_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict with the rate."""
        return {
            "events": self.events, "records": self.records, "seconds": round(self.seconds, 3),
            "events_per_s": round(self.events / self.seconds, 1) if self.seconds else None,
            "cpu_s": round(self.cpu_s, 3),
            "events_per_cpu_s": round(self.events / self.cpu_s, 1) if self.cpu_s else None,
            "parse_s": round(self.parse_s, 3), "price_s": round(self.price_s, 3),
            "encode_s": round(self.encode_s, 3), "output_bytes": self.output_bytes,
        }


def price_in_process(values: Sequence[bytes], catalog_path: Any = None) -> InProcessResult:
    """Parse, dedup, price and encode every envelope value in this process, timing each step."""
    pricer = Pricer(load_catalog(catalog_path))
    seen: set[str] = set()
    result = InProcessResult()
    clock = time.perf_counter
    began, cpu_began = clock(), time.process_time()
    for value in values:
        t0 = clock()
        parsed = parse_message(value)
        fresh, _ = new_events(parsed.events, seen.__contains__)
        t1 = clock()
        records = pricer.price_many(fresh)
        t2 = clock()
        messages = encode_costs(records)
        t3 = clock()
        seen.update(event.event_id for event in fresh)
        result.parse_s += t1 - t0
        result.price_s += t2 - t1
        result.encode_s += t3 - t2
        result.events += len(fresh)
        result.records += len(records)
        result.output_bytes += sum(len(v) for _, v in messages)
    result.seconds = clock() - began
    result.cpu_s = time.process_time() - cpu_began
    return result


@dataclass(slots=True)
class LoopStats:
    """What the bare loop did, sent back to the parent when it stops."""

    messages: int = 0
    events: int = 0
    records: int = 0
    busy_s: float = 0.0
    errors: list[str] = field(default_factory=list)


def _produce(producer: Any, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value, key=key)
            return
        except BufferError:
            producer.poll(0.1)  # librdkafka's queue is full: let deliveries drain it


def run_loop(settings: Settings, ready: EventFlag, stop: EventFlag, report: Connection) -> None:
    """Consume the usage topics, price each message and produce costs until ``stop`` is set.

    Runs in its own process (like the worker); sends its ``LoopStats`` through ``report`` at the end.
    """
    from confluent_kafka import Consumer, Producer

    pricer = Pricer(load_catalog(settings.catalog_path))
    kafka = settings.librdkafka_config()
    consumer = Consumer(kafka | {
        "group.id": f"{settings.app_id}-baseline",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "max.partition.fetch.bytes": MAX_FETCH_BYTES,
        "fetch.max.bytes": 4 * MAX_FETCH_BYTES,
    })
    producer = Producer(kafka | {
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 5,
        "message.max.bytes": MAX_FETCH_BYTES + 64 * 1024,
    })
    out_topic = settings.topic(COSTS_PRICED)
    consumer.subscribe([settings.topic(name) for name in USAGE_TOPICS], on_assign=lambda *_: ready.set())
    stats = LoopStats()
    seen: set[str] = set()
    try:
        while not stop.is_set():
            messages = consumer.consume(CONSUME_BATCH, timeout=0.2)
            began = time.perf_counter()
            for message in messages:
                if message.error():
                    stats.errors.append(str(message.error()))
                    continue
                batch = price_payload(message.value(), pricer, seen.__contains__,
                                      max_bytes=settings.max_message_bytes)
                for key, value in encode_costs(batch.records):
                    _produce(producer, out_topic, key, value)
                seen.update(event.event_id for event in batch.events)
                stats.messages += 1
                stats.events += len(batch.events)
                stats.records += len(batch.records)
            producer.poll(0)
            stats.busy_s += time.perf_counter() - began
        producer.flush(30)
    finally:
        consumer.close()
        del stats.errors[20:]
        report.send(stats)
