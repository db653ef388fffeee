"""A non-blocking event emitter: the caller's request path never waits on Kafka.

``emit`` puts the event on a bounded in-memory queue and returns at once. One daemon thread drains the
queue, validates each event, and hands batches to a sink (by default the idempotent ``EventProducer``).
A full queue drops the event: it is counted in ``stats.dropped`` and logged (at most one line per
``DROP_LOG_INTERVAL_S``), never blocks. A slow or unreachable Kafka therefore costs events, counted,
and never latency.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from streams.core.events import EVENT_ADAPTER

log = logging.getLogger(__name__)

DROP_LOG_INTERVAL_S = 10.0
_STOP = object()


class EventSink(Protocol):
    """Where the emitter's thread sends batches (``EventProducer`` is one)."""

    def send(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Accept events; delivery may complete later."""

    def flush(self, timeout: float = 60.0) -> None:
        """Deliver what was sent, raising on failure."""


@dataclass(slots=True)
class EmitterStats:
    """Event counts since the emitter started: queued, dropped (queue full), invalid, sent, failed."""

    queued: int = 0
    dropped: int = 0
    invalid: int = 0
    sent: int = 0
    failed: int = 0


def kafka_sink() -> EventSink:
    """Return an ``EventProducer`` for the process's settings (``BURNWATCH_*`` env or config file)."""
    from streams.producer import EventProducer
    from streams.settings import get_settings

    return EventProducer(get_settings())


class UsageEmitter:
    """Queue events for a background thread that sends them to Kafka in batches.

    ``sink_factory`` is called once, in the background thread, so building a Kafka client never
    delays the caller. ``linger_s`` is the longest an event waits for its batch to fill.
    """

    def __init__(
        self,
        sink_factory: Callable[[], EventSink] = kafka_sink,
        *,
        max_queue: int = 10_000,
        batch_size: int = 500,
        linger_s: float = 0.5,
        flush_timeout_s: float = 30.0,
    ) -> None:
        if max_queue < 1 or batch_size < 1:
            raise ValueError("max_queue and batch_size must be >= 1")
        self.stats = EmitterStats()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._sink_factory = sink_factory
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._flush_timeout_s = flush_timeout_s
        self._lock = threading.Lock()
        self._last_drop_log = float("-inf")
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="burnwatch-emitter", daemon=True)
        self._thread.start()

    def emit(self, event: Mapping[str, Any]) -> bool:
        """Queue one event dict; return ``False`` (and count it) if the queue is full or closed."""
        if self._closed:
            self._count_drop()
            return False
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._count_drop()
            return False
        with self._lock:
            self.stats.queued += 1
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting events, send what is queued and wait up to ``timeout`` seconds."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            try:
                self._queue.put(_STOP, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join(max(0.0, deadline - time.monotonic()))

    def _count_drop(self) -> None:
        now = time.monotonic()
        with self._lock:
            self.stats.dropped += 1
            dropped = self.stats.dropped
            loud = now - self._last_drop_log >= DROP_LOG_INTERVAL_S
            if loud:
                self._last_drop_log = now
        if loud:
            log.warning("burnwatch emitter queue is full or closed: %d usage event(s) dropped so far",
                        dropped)

    # --- the background thread ---

    def _run(self) -> None:
        sink: EventSink | None = None
        stop = False
        while not stop:
            batch, stop = self._take_batch()
            valid = self._validate(batch)
            if not valid:
                continue
            if sink is None:
                try:
                    sink = self._sink_factory()
                except Exception as error:  # noqa: BLE001 - retried with the next batch
                    log.warning("burnwatch emitter cannot create its producer: %s", error)
            self._deliver(sink, valid)

    def _take_batch(self) -> tuple[list[Mapping[str, Any]], bool]:
        batch: list[Mapping[str, Any]] = []
        item = self._queue.get()
        deadline = time.monotonic() + self._linger_s
        while True:
            if item is _STOP:
                return batch, True
            batch.append(item)
            remaining = deadline - time.monotonic()
            if len(batch) >= self._batch_size or remaining <= 0:
                return batch, False
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                return batch, False

    def _validate(self, batch: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        valid = []
        for event in batch:
            try:
                EVENT_ADAPTER.validate_python(event)
            except ValidationError as error:
                with self._lock:
                    self.stats.invalid += 1
                log.warning("burnwatch emitter dropped an invalid event %s: %s", event.get("event_id"),
                            error.errors()[0]["msg"] if error.errors() else error)
                continue
            valid.append(event)
        return valid

    def _deliver(self, sink: EventSink | None, events: list[Mapping[str, Any]]) -> None:
        try:
            if sink is None:
                raise RuntimeError("no producer")
            sink.send(events)
            sink.flush(self._flush_timeout_s)
        except Exception as error:  # noqa: BLE001 - the emitter must outlive any producer failure
            with self._lock:
                self.stats.failed += len(events)
            log.warning("burnwatch emitter could not deliver %d event(s): %s", len(events), error)
            return
        with self._lock:
            self.stats.sent += len(events)


_default: UsageEmitter | None = None
_default_lock = threading.Lock()


def default_emitter() -> UsageEmitter:
    """Return the process-wide emitter (created on first use, closed at interpreter exit)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = UsageEmitter()
            atexit.register(_default.close)
        return _default
