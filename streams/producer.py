"""The edge producer: sends usage events to Kafka as batch envelopes, each event once per partition.

Each event goes to its type's topic and to partition ``crc32(entity key) % partitions``, which is what
librdkafka's default keyed partitioner (``consistent_random``) picks for that key. A re-sent event
therefore lands on the same partition however it was batched, which the consumer's dedup relies on.
Events are buffered per (topic, partition) and sent as JSON arrays of up to ``batch_size`` events and
at most ``settings.max_message_bytes`` bytes (the consumer rejects larger messages), keyed by the first
event's entity key. The producer is idempotent (``acks=all``), so librdkafka's own retries never write
an envelope twice; a failure that outlasts them is counted and raised from ``flush``.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from streams.core.events import EVENT_ADAPTER, GPU_SAMPLE, LLM_REQUEST, STORAGE_USAGE, Event, entity_key
from streams.names import TOPIC_FOR_TYPE
from streams.settings import Settings

KEY_FIELD = {GPU_SAMPLE: "node", LLM_REQUEST: "app", STORAGE_USAGE: "bucket"}
KEY_DEFAULT = {LLM_REQUEST: "unknown"}
PROTOCOL_HEADROOM_BYTES = 64 * 1024
METADATA_TIMEOUT_S = 10.0
MAX_KEPT_ERRORS = 20


class ProducerError(RuntimeError):
    """Events could not be delivered; the message says how many and why."""


class TopicMissingError(ProducerError):
    """A usage topic does not exist on the cluster (topics are created by the worker's admin step)."""


def event_type_of(event: Event | Mapping[str, Any]) -> str:
    """Return the event's type (``gpu.sample``, ``llm.request`` or ``storage.usage``)."""
    kind = event.get("type") if isinstance(event, Mapping) else event.type
    if kind not in TOPIC_FOR_TYPE:
        raise ValueError(f"event has unknown type {kind!r}; expected one of {', '.join(TOPIC_FOR_TYPE)}")
    return str(kind)


def entity_key_of(event: Event | Mapping[str, Any]) -> str:
    """Return the partitioning key of an event model or event dict: node, app or bucket.

    >>> entity_key_of({"type": "storage.usage", "bucket": "logs"})
    'logs'
    >>> entity_key_of({"type": "llm.request"})
    'unknown'
    """
    if not isinstance(event, Mapping):
        return entity_key(event)
    kind = event_type_of(event)
    return str(event.get(KEY_FIELD[kind], KEY_DEFAULT.get(kind, "")))


def partition_for(key: str, partitions: int) -> int:
    """Return the partition librdkafka's default partitioner picks for ``key`` (CRC32 modulo count).

    >>> partition_for("node-1", 6), partition_for("node-1", 6) == partition_for("node-1", 6)
    (3, True)
    """
    return zlib.crc32(key.encode()) % partitions


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.isoformat()  # sent as is: the consumer rejects it as naive_timestamp
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    raise TypeError(f"cannot serialize {type(value).__name__} to JSON")


def serialize(event: Event | Mapping[str, Any]) -> bytes:
    """Return one event as compact JSON bytes (datetimes as ISO 8601 ending in ``Z``).

    >>> serialize({"type": "llm.request", "time": datetime(2026, 1, 1, tzinfo=UTC)})
    b'{"type":"llm.request","time":"2026-01-01T00:00:00Z"}'
    """
    if isinstance(event, Mapping):
        return json.dumps(event, separators=(",", ":"), default=_json_default).encode()
    return EVENT_ADAPTER.dump_json(event)


def envelope(events: Iterable[bytes]) -> bytes:
    """Join serialized events into one batch envelope (a JSON array).

    >>> envelope([b'{"a":1}', b'{"b":2}'])
    b'[{"a":1},{"b":2}]'
    """
    return b"[" + b",".join(events) + b"]"


@dataclass(slots=True)
class _Buffer:
    key: str = ""
    events: list[bytes] = field(default_factory=list)
    size: int = 2  # the brackets

    def add(self, key: str, raw: bytes) -> None:
        if not self.events:
            self.key = key
        self.events.append(raw)
        self.size += len(raw) + 1


class EventProducer:
    """Send events to their topics as batch envelopes with an idempotent confluent-kafka producer.

    ``delivered`` and ``failed`` count events (not envelopes) whose delivery was acknowledged or
    failed. ``conf`` overrides or adds librdkafka settings.
    """

    def __init__(
        self, settings: Settings, *, batch_size: int = 1000, conf: dict[str, Any] | None = None
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.settings = settings
        self.batch_size = batch_size
        self.max_bytes = settings.max_message_bytes
        self.delivered = 0
        self.failed = 0
        self.errors: list[str] = []
        self._unreported = 0
        self._partitions: dict[str, int] = {}
        self._buffers: dict[tuple[str, int], _Buffer] = {}
        self._producer = Producer(
            settings.librdkafka_config()
            | {
                "client.id": f"{settings.app_id}-producer",
                "enable.idempotence": True,
                "acks": "all",
                "compression.type": "lz4",
                "linger.ms": 20,
                "message.max.bytes": self.max_bytes + PROTOCOL_HEADROOM_BYTES,
                # The admin step creates topics with the right partition count; never let a metadata
                # request create one with the broker's default instead.
                "allow.auto.create.topics": False,
            }
            | (conf or {})
        )

    # --- sending ---

    def send(self, events: Iterable[Event | Mapping[str, Any]]) -> None:
        """Buffer events; every full envelope (``batch_size`` events or the byte limit) is produced."""
        for event in events:
            kind = event_type_of(event)
            key = entity_key_of(event)
            raw = serialize(event)
            topic = self.settings.topic(TOPIC_FOR_TYPE[kind])
            partition = partition_for(key, self.partitions(topic))
            if len(raw) + 2 > self.max_bytes:
                self._fail(1, f"event of {len(raw)} bytes exceeds max_message_bytes {self.max_bytes}")
                continue
            buffer = self._buffers.setdefault((topic, partition), _Buffer())
            if buffer.events and buffer.size + len(raw) + 1 > self.max_bytes:
                self._emit(topic, partition, buffer)
            buffer.add(key, raw)
            if len(buffer.events) >= self.batch_size:
                self._emit(topic, partition, buffer)
        self._producer.poll(0)

    def emit_pending(self) -> None:
        """Produce every partly filled envelope now, without waiting for acknowledgements."""
        for (topic, partition), buffer in self._buffers.items():
            if buffer.events:
                self._emit(topic, partition, buffer)
        self._producer.poll(0)

    def flush(self, timeout: float = 60.0) -> None:
        """Produce buffered envelopes and wait for their acknowledgements.

        Raises ``ProducerError`` if any event failed since the last flush, or if envelopes are still
        unacknowledged after ``timeout`` seconds.
        """
        self.emit_pending()
        remaining = self._producer.flush(timeout)
        if remaining:
            raise ProducerError(f"{remaining} envelope(s) not acknowledged within {timeout:g}s")
        if self._unreported:
            count, self._unreported = self._unreported, 0
            shown = "; ".join(dict.fromkeys(self.errors[-5:]))
            raise ProducerError(f"{count} event(s) failed to be delivered: {shown}")

    def close(self) -> None:
        """Flush what is buffered (best effort: failures stay counted in ``failed``)."""
        try:
            self.flush()
        except ProducerError:
            pass

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.flush()
        else:
            self.close()

    # --- metadata ---

    def partitions(self, topic: str) -> int:
        """Return the topic's partition count from cluster metadata (cached per topic)."""
        count = self._partitions.get(topic)
        if count is None:
            count = self._fetch_partitions(topic)
            self._partitions[topic] = count
        return count

    def _fetch_partitions(self, topic: str) -> int:
        where = self.settings.kafka_bootstrap_servers
        try:
            metadata = self._producer.list_topics(topic, timeout=METADATA_TIMEOUT_S)
        except KafkaException as error:
            raise ProducerError(f"cannot read metadata of topic {topic!r} from {where}: {error}") from None
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            why = f" ({found.error.str()})" if found is not None and found.error is not None else ""
            raise TopicMissingError(
                f"topic {topic!r} does not exist on {where}{why}; create the burnwatch topics first "
                "(`burnwatch worker` does at start-up, or streams.admin.ensure_topics)"
            )
        return len(found.partitions)

    # --- internals ---

    def _emit(self, topic: str, partition: int, buffer: _Buffer) -> None:
        count = len(buffer.events)
        value = envelope(buffer.events)
        key = buffer.key
        buffer.events = []
        buffer.size = 2
        while True:
            try:
                self._producer.produce(
                    topic, value, key=key.encode(), partition=partition, on_delivery=self._on_delivery(count)
                )
                return
            except BufferError:
                self._producer.poll(0.1)  # librdkafka's queue is full: let deliveries drain it
            except KafkaException as error:
                self._fail(count, str(error))
                return

    def _on_delivery(self, count: int) -> Callable[[KafkaError | None, Message], None]:
        def done(error: KafkaError | None, message: Message) -> None:
            if error is None:
                self.delivered += count
            else:
                self._fail(count, f"{message.topic()}[{message.partition()}]: {error.str()}")

        return done

    def _fail(self, count: int, reason: str) -> None:
        self.failed += count
        self._unreported += count
        self.errors.append(reason)
        del self.errors[:-MAX_KEPT_ERRORS]


def wait_for_partitions(producer: EventProducer, topics: Iterable[str], timeout_s: float = 30.0) -> None:
    """Wait until every topic has metadata (topics just created take a moment to appear)."""
    retrying = Retrying(
        retry=retry_if_exception_type(TopicMissingError),
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(0.2),
        reraise=True,
    )
    for topic in topics:
        retrying(producer.partitions, topic)
