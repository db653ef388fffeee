"""The GPU agent's two loops: sample on the interval grid into the disk buffer, ship the buffer to Kafka.

Every sample goes to the local buffer first (write-ahead), and a separate thread ships the buffer in
order; sampling therefore never waits on Kafka, and an outage only makes the buffer grow. A batch leaves
the buffer only once Kafka has acknowledged it (idempotent producer, ``acks=all``). A batch that is not
acknowledged within ``delivery_timeout_s`` is retried, whole, with a fresh producer: records that did
arrive are sent again with the same ``event_id``, which the worker's dedup counts once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.gpu_agent.disk_queue import DiskQueue
from streams.gpu_agent.metrics import GpuAgentMetrics
from streams.gpu_agent.sample import NodeFacts, build_sample, grid_tick
from streams.gpu_agent.settings import GpuAgentSettings
from streams.gpu_agent.sources import GpuSource, SourceError, build_source
from streams.settings import Settings

log = logging.getLogger("burnwatch.gpu_agent")

MAX_BACKOFF_S = 5.0
FINAL_DRAIN_S = 5.0


def facts_from(settings: GpuAgentSettings) -> NodeFacts:
    """Return the node facts configured in ``settings``."""
    return NodeFacts(
        node=settings.node, cluster=settings.cluster, provider=settings.provider, region=settings.region,
        instance_type=settings.instance_type, pricing=settings.pricing, labels=dict(settings.labels),
    )


def read_sample(source: GpuSource, facts: NodeFacts, tick: datetime, interval_s: int) -> dict[str, Any]:
    """Read ``source`` now and return the ``gpu.sample`` for the interval ending at ``tick``."""
    return build_sample(source.read(), facts, tick, interval_s)


def utc_now() -> datetime:
    """Return the current time, timezone-aware UTC."""
    return datetime.now(UTC)


class GpuAgent:
    """Samples a node's GPUs every ``interval_s`` and ships the samples to Kafka through a disk buffer."""

    def __init__(
        self,
        settings: GpuAgentSettings,
        kafka: Settings,
        *,
        source: GpuSource | None = None,
        metrics: GpuAgentMetrics | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.kafka = kafka
        self.source = source or build_source(settings)
        self.metrics = metrics or GpuAgentMetrics()
        self.facts = facts_from(settings)
        self.clock = clock
        self.queue = DiskQueue(
            settings.buffer_dir, max_bytes=settings.buffer_max_bytes,
            segment_bytes=settings.buffer_segment_bytes, fsync=settings.buffer_fsync, on_drop=self._on_drop,
        )
        self.metrics.buffer_max_bytes.set(settings.buffer_max_bytes)
        self._update_buffer_gauges()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._producer: Any = None
        self._kafka_up = True

    # --- sampling ---

    def sample(self, tick: datetime) -> dict[str, Any] | None:
        """Read the source for the interval ending at ``tick`` and buffer the sample; None if unreadable."""
        try:
            doc = read_sample(self.source, self.facts, tick, self.settings.interval_s)
        except SourceError as error:
            self.metrics.source_errors.labels(self.source.name).inc()
            log.error("no sample for the interval ending %s: %s", tick.isoformat(), error)
            return None
        self.metrics.gpus.set(len(doc["gpus"]))
        if self.queue.append(doc):
            self.metrics.samples_taken.inc()
        self._update_buffer_gauges()
        self._wake.set()
        return doc

    def run_sampler(self) -> None:
        """Sample at every grid tick until ``stop()``."""
        interval = self.settings.interval_s
        tick = grid_tick(self.clock(), interval) + timedelta(seconds=interval)
        while not self._stop.is_set():
            delay = (tick - self.clock()).total_seconds()
            if delay > 0 and self._stop.wait(delay):
                break
            self.sample(tick)
            following = tick + timedelta(seconds=interval)
            late = grid_tick(self.clock(), interval)
            if late >= following:
                missed = int((late - tick).total_seconds() // interval)
                log.warning("sampling fell %d interval(s) behind; those intervals have no sample", missed)
                following = late + timedelta(seconds=interval)
            tick = following

    # --- shipping ---

    def ship_once(self, timeout_s: float | None = None) -> int:
        """Send the oldest buffered samples and ack them once Kafka has; return how many were sent.

        Raises ``ProducerError`` when Kafka did not acknowledge them (they stay buffered).
        """
        from streams.producer import ProducerError

        batch = self.queue.peek(self.settings.send_batch)
        if not batch.lines:
            return 0
        timeout = self.settings.delivery_timeout_s + 5.0 if timeout_s is None else timeout_s
        try:
            if batch.records:
                producer = self._get_producer()
                producer.send(batch.records)
                producer.flush(timeout)
        except ProducerError:
            self._producer = None  # a fresh producer (and fresh idempotence state) for the next try
            self._kafka_up = False
            raise
        self._kafka_up = True
        self.queue.ack(batch)
        self.metrics.samples_sent.inc(len(batch.records))
        self.metrics.last_sent.set(time.time())
        self._update_buffer_gauges()
        return len(batch.records)

    def run_shipper(self) -> None:
        """Ship the buffer until ``stop()``, backing off while Kafka is unreachable."""
        from streams.producer import ProducerError

        failures = 0
        while not self._stop.is_set():
            try:
                sent = self.ship_once()
            except ProducerError as error:
                failures += 1
                self.metrics.send_failures.inc()
                backoff = min(MAX_BACKOFF_S, 0.5 * 2 ** min(failures, 4))
                log.warning("Kafka did not take %d buffered sample(s) (%s); retrying in %.1fs",
                            self.queue.pending, error, backoff)
                self._stop.wait(backoff)
                continue
            if failures and sent:
                log.info("Kafka is back: shipped %d sample(s), %d still buffered", sent, self.queue.pending)
            if sent:
                failures = 0
            if not sent or not self.queue.pending:
                self._wake.wait(1.0)
                self._wake.clear()

    def drain(self, timeout_s: float = FINAL_DRAIN_S) -> None:
        """Try once more to ship what is buffered (at shutdown); what fails stays on disk.

        Skipped when the last attempt failed: shutdown should not wait on a Kafka known to be down.
        """
        from streams.producer import ProducerError

        if not self._kafka_up:
            if self.queue.pending:
                log.warning("%d sample(s) stay buffered for the next start", self.queue.pending)
            return
        try:
            while self.queue.pending and self.ship_once(timeout_s):
                pass
        except ProducerError as error:
            log.warning("%d sample(s) stay buffered for the next start: %s", self.queue.pending, error)

    # --- lifecycle ---

    def run(self) -> None:
        """Run both loops until ``stop()`` (the sampler on this thread), then drain and close."""
        shipper = threading.Thread(target=self.run_shipper, name="gpu-agent-shipper", daemon=True)
        shipper.start()
        try:
            self.run_sampler()
        finally:
            self._stop.set()
            self._wake.set()
            shipper.join()
            self.drain()
            self.queue.close()

    def stop(self) -> None:
        """Ask both loops to finish (safe from a signal handler or another thread)."""
        self._stop.set()
        self._wake.set()

    # --- internals ---

    def _get_producer(self) -> Any:
        if self._producer is None:
            from streams.producer import EventProducer

            self._producer = EventProducer(
                self.kafka,
                batch_size=self.settings.send_batch,
                conf={
                    "client.id": f"{self.kafka.app_id}-gpu-agent-{self.facts.node}",
                    # Bounds how long a batch can stay in flight, so a retried batch never doubles up
                    # inside librdkafka's queue during a long outage.
                    "message.timeout.ms": int(self.settings.delivery_timeout_s * 1000),
                },
            )
        return self._producer

    def _on_drop(self, count: int, reason: str) -> None:
        self.metrics.samples_dropped.labels(reason).inc(count)
        log.error(
            "gpu-agent buffer %s: dropped %d sample(s) (limit %d bytes in %s); they will never be priced",
            "full" if reason == "buffer_full" else reason, count, self.settings.buffer_max_bytes,
            self.settings.buffer_dir,
        )

    def _update_buffer_gauges(self) -> None:
        self.metrics.buffer_samples.set(self.queue.pending)
        self.metrics.buffer_bytes.set(self.queue.size_bytes)
