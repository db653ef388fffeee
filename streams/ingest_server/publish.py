"""Publishing from the event loop: produce to Kafka, await each acknowledgement as an asyncio future.

``produce`` never blocks; a thread polls the confluent-kafka producer and its delivery callbacks
resolve futures on the loop (``call_soon_threadsafe``), so the server answers only after Kafka
acknowledged every event and dead letter of a request, and the loop stays free meanwhile. Events are
packed into batch envelopes per (topic, partition) exactly as ``streams.producer.EventProducer`` does:
same partition per entity key, same JSON array format, the same idempotent ``acks=all`` producer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streams.core.events import Event, entity_key
from streams.names import TOPIC_FOR_TYPE, USAGE_DLQ, USAGE_TOPICS
from streams.producer import PROTOCOL_HEADROOM_BYTES, envelope, partition_for, serialize
from streams.settings import Settings

log = logging.getLogger(__name__)

METADATA_RETRY_S = 2.0
BUFFER_FULL_WAIT_S = 0.05


class PublishError(RuntimeError):
    """Kafka did not acknowledge everything of a request; the client should retry it."""


class Publisher(Protocol):
    """What the HTTP app needs from Kafka."""

    async def start(self) -> None:
        """Connect (may finish in the background; see ``ready``)."""

    def ready(self) -> bool:
        """Whether requests can be published now."""

    async def publish(self, events: Sequence[Event], dead_letters: Sequence[tuple[bytes, bytes]]) -> None:
        """Publish events and ``(key, value)`` dead letters; return once all are acknowledged."""

    async def close(self) -> None:
        """Deliver what is in flight and stop."""


class KafkaPublisher:
    """The confluent-kafka publisher; ``conf`` overrides or adds librdkafka settings."""

    def __init__(
        self,
        settings: Settings,
        *,
        batch_size: int = 1000,
        ack_timeout_s: float = 30.0,
        conf: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.batch_size = batch_size
        self.ack_timeout_s = ack_timeout_s
        self.max_bytes = settings.max_message_bytes
        self._dlq_topic = settings.topic(USAGE_DLQ)
        self._partitions: dict[str, int] = {}
        self._producer = Producer(
            settings.librdkafka_config()
            | {
                "client.id": f"{settings.app_id}-ingest-server",
                "enable.idempotence": True,
                "acks": "all",
                "compression.type": "lz4",
                "linger.ms": 5,
                "message.max.bytes": self.max_bytes + PROTOCOL_HEADROOM_BYTES,
                "message.timeout.ms": int(ack_timeout_s * 1000),
                "allow.auto.create.topics": False,
            }
            | (conf or {})
        )
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="ingest-kafka-poll", daemon=True)
        self._metadata_task: asyncio.Task[None] | None = None

    # --- lifecycle ---

    async def start(self) -> None:
        """Start polling and look up partition counts until every topic exists (in the background)."""
        self._poller.start()
        self._metadata_task = asyncio.get_running_loop().create_task(self._load_metadata())

    def ready(self) -> bool:
        """Return True once every usage topic and the dead-letter topic are known and the poller runs."""
        return self._poller.is_alive() and len(self._partitions) == len(USAGE_TOPICS) + 1

    async def close(self) -> None:
        """Wait for in-flight messages (up to the ack timeout), then stop the poll thread."""
        if self._metadata_task is not None:
            self._metadata_task.cancel()
        loop = asyncio.get_running_loop()
        remaining = await loop.run_in_executor(None, self._producer.flush, self.ack_timeout_s)
        if remaining:
            log.error("%d message(s) still unacknowledged at shutdown", remaining)
        self._stop.set()
        if self._poller.is_alive():
            await loop.run_in_executor(None, self._poller.join, 5.0)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    async def _load_metadata(self) -> None:
        loop = asyncio.get_running_loop()
        topics = [self.settings.topic(name) for name in USAGE_TOPICS] + [self._dlq_topic]
        warned = False
        while len(self._partitions) < len(topics):
            for topic in topics:
                if topic in self._partitions:
                    continue
                count = await loop.run_in_executor(None, self._partition_count, topic)
                if count:
                    self._partitions[topic] = count
            if len(self._partitions) < len(topics):
                if not warned:
                    missing = sorted(set(topics) - set(self._partitions))
                    log.warning("waiting for topics %s on %s (`burnwatch worker` creates them)",
                                ", ".join(missing), self.settings.kafka_bootstrap_servers)
                    warned = True
                await asyncio.sleep(METADATA_RETRY_S)
        log.info("ingest server connected to %s", self.settings.kafka_bootstrap_servers)

    def _partition_count(self, topic: str) -> int:
        try:
            metadata = self._producer.list_topics(topic, timeout=10)
        except KafkaException:
            return 0
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            return 0
        return len(found.partitions)

    # --- publishing ---

    async def publish(self, events: Sequence[Event], dead_letters: Sequence[tuple[bytes, bytes]]) -> None:
        """Produce events (as envelopes) and dead letters; return when Kafka acknowledged them all."""
        if not self.ready():
            raise PublishError("not connected to Kafka yet")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        for topic, partition, key, value in self._envelopes(events):
            futures.append(await self._produce(loop, topic, value, key, partition))
        for key, value in dead_letters:
            futures.append(await self._produce(loop, self._dlq_topic, value, key, None))
        if not futures:
            return
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*futures, return_exceptions=True), self.ack_timeout_s + 5.0
            )
        except TimeoutError:
            raise PublishError(f"Kafka did not acknowledge within {self.ack_timeout_s:g}s") from None
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise PublishError(f"{len(errors)} of {len(futures)} message(s) failed: {errors[0]}")

    def _envelopes(self, events: Sequence[Event]) -> list[tuple[str, int, bytes, bytes]]:
        buffers: dict[tuple[str, int], tuple[str, list[bytes], int]] = {}
        out: list[tuple[str, int, bytes, bytes]] = []
        for event in events:
            key = entity_key(event)
            topic = self.settings.topic(TOPIC_FOR_TYPE[event.type])
            partition = partition_for(key, self._partitions[topic])
            raw = serialize(event)
            first_key, parts, size = buffers.get((topic, partition), (key, [], 2))
            if parts and (size + len(raw) + 1 > self.max_bytes or len(parts) >= self.batch_size):
                out.append((topic, partition, first_key.encode(), envelope(parts)))
                first_key, parts, size = key, [], 2
            parts.append(raw)
            buffers[(topic, partition)] = (first_key, parts, size + len(raw) + 1)
        for (topic, partition), (first_key, parts, _) in buffers.items():
            out.append((topic, partition, first_key.encode(), envelope(parts)))
        return out

    async def _produce(
        self, loop: asyncio.AbstractEventLoop, topic: str, value: bytes, key: bytes, partition: int | None
    ) -> asyncio.Future[None]:
        future: asyncio.Future[None] = loop.create_future()

        def done(error: KafkaError | None, message: Message) -> None:
            loop.call_soon_threadsafe(_settle, future, error, topic)

        while True:
            try:
                if partition is None:  # the dead-letter topic: librdkafka's keyed partitioner picks
                    self._producer.produce(topic, value, key=key, on_delivery=done)
                else:
                    self._producer.produce(topic, value, key=key, partition=partition, on_delivery=done)
                return future
            except BufferError:
                await asyncio.sleep(BUFFER_FULL_WAIT_S)  # librdkafka's queue is full: let acks drain it
            except KafkaException as error:
                raise PublishError(f"cannot produce to {topic}: {error}") from None


def _settle(future: asyncio.Future[None], error: KafkaError | None, topic: str) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(PublishError(f"{topic}: {error.str()}"))
