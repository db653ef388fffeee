"""Silences on the compacted ``alert.silences`` topic: publish one, read them all, follow them live.

Every notifier process follows the whole topic with its own consumer (no consumer group, every
partition from the start), so each worker sees every silence whatever partitions it owns. The key is
the silence id and the value ``alerting.silences.encode(silence)``; expiring writes the silence again.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import datetime

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from pydantic import ValidationError

from alerting.silences import Silence, decode, encode
from streams.names import ALERT_SILENCES
from streams.settings import Settings

log = logging.getLogger("burnwatch.silences")
POLL_S = 0.25


class SilenceTopicMissing(RuntimeError):
    """The silences topic does not exist yet (a worker or notifier creates it at start-up)."""


def _consumer(settings: Settings) -> tuple[Consumer, list[TopicPartition]]:
    topic = settings.topic(ALERT_SILENCES)
    consumer = Consumer(settings.librdkafka_config() | {
        "group.id": f"burnwatch-silences-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    metadata = consumer.list_topics(topic, timeout=15).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        consumer.close()
        raise SilenceTopicMissing(f"topic {topic} does not exist; start `burnwatch notifier` first")
    partitions = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(metadata.partitions)]
    consumer.assign(partitions)
    return consumer, partitions


def _apply(latest: dict[str, Silence], message: Message) -> None:
    key = (message.key() or b"").decode(errors="replace")
    if message.value() is None:
        latest.pop(key, None)  # a tombstone: compaction will drop the id
        return
    try:
        silence = decode(message.value())
    except ValidationError:
        log.warning("skipped a record on %s that is not a silence (key %r)", message.topic(), key)
        return
    latest[silence.id] = silence


def read_silences(settings: Settings, timeout_s: float = 30.0) -> list[Silence]:
    """Return every silence on the topic (the latest version of each id), reading up to its end."""
    consumer, partitions = _consumer(settings)
    latest: dict[str, Silence] = {}
    pending = {tp.partition for tp in partitions}
    try:
        for tp in partitions:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            if high <= low:
                pending.discard(tp.partition)
        while pending:
            message = consumer.poll(timeout_s)
            if message is None:
                raise TimeoutError(f"silences topic not read to its end within {timeout_s} s")
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
                    continue
                raise KafkaException(message.error())
            _apply(latest, message)
    finally:
        consumer.close()
    return list(latest.values())


def publish_silence(settings: Settings, silence: Silence, timeout_s: float = 30.0) -> None:
    """Write ``silence`` to the topic (keyed by its id) and wait until the broker has it."""
    topic = settings.topic(ALERT_SILENCES)
    producer = Producer(settings.librdkafka_config() | {
        "enable.idempotence": True, "allow.auto.create.topics": False,
    })
    errors: list[str] = []
    producer.produce(topic, key=silence.id.encode(), value=encode(silence),
                     on_delivery=lambda err, _msg: errors.append(str(err)) if err else None)
    left = producer.flush(timeout_s)
    if left or errors:
        raise SilenceTopicMissing(f"silence not written to {topic}: {errors[0] if errors else 'timeout'}")


class SilenceFeed:
    """Follow the silences topic in a background thread; ``current()`` is the latest set."""

    def __init__(self, settings: Settings, on_change: Callable[[list[Silence]], None] | None = None) -> None:
        self._settings = settings
        self._on_change = on_change
        self._latest: dict[str, Silence] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start following (the topic must exist)."""
        consumer, _ = _consumer(self._settings)
        self._thread = threading.Thread(target=self._run, args=(consumer,), name="silence-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def current(self) -> list[Silence]:
        """Return every known silence (active, future or ended; the policy checks the time)."""
        with self._lock:
            return list(self._latest.values())

    def active(self, now: datetime) -> int:
        """Return how many silences are active at ``now``."""
        return sum(1 for s in self.current() if s.is_active(now))

    def _run(self, consumer: Consumer) -> None:
        try:
            while not self._stop.is_set():
                message = consumer.poll(POLL_S)
                if message is None:
                    continue
                if message.error():
                    if message.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("silences consumer: %s", message.error())
                    continue
                with self._lock:
                    _apply(self._latest, message)
                    snapshot = list(self._latest.values())
                log.info("silence %s updated (%d known)", (message.key() or b"").decode(errors="replace"),
                         len(snapshot))
                if self._on_change is not None:
                    self._on_change(snapshot)
        finally:
            consumer.close()
