"""Delivery: each receiver gets its own queue and retry loop; ``SentLog`` makes delivery idempotent.

A receiver that is down, answers 5xx or 429, or times out is retried with exponential backoff and
jitter (honouring ``Retry-After``) for ``max_retry`` (default 24 h) while the other receivers carry
on. Past that the notification goes to the fallback receiver and the failure is counted. Each
delivered message is recorded in the ``SentLog`` before the next one is taken, so after a restart a
replayed notification that was already sent is skipped: at-least-once becomes effectively once
(PagerDuty and webhooks also get a stable ``dedup_key`` / ``Idempotency-Key`` for the crash window).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_result,
    stop_before_delay,
    wait_exponential_jitter,
)

from alerting.config import DeliveryConfig
from alerting.notification import Notification, Transition
from alerting.receivers.base import DeliveryResult, Receiver

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


class SentRecord(BaseModel):
    """What one receiver was sent about one group key: the incident epoch, transitions and thread ref."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    receiver: str
    key: str
    epoch: AwareDatetime
    last_sequence: int
    transitions: tuple[Transition, ...]
    ref: dict[str, str] | None = None
    sent_at: AwareDatetime

    def covers(self, notification: Notification) -> bool:
        """Return whether ``notification`` was already delivered (or belongs to an older incident)."""
        if notification.epoch != self.epoch:
            return notification.epoch < self.epoch
        if notification.transition == "updated":
            return notification.sequence <= self.last_sequence
        return notification.transition in self.transitions


class SentLog(BaseModel):
    """Every ``SentRecord`` by ``receiver|key``: a pure, JSON-safe value (or one table entry per record).

    >>> from datetime import datetime, timezone
    >>> t = datetime(2025, 1, 1, tzinfo=timezone.utc)
    >>> n = Notification(receiver="slack", key="k", epoch=t, sequence=1, transition="firing",
    ...                  severity="info", group_labels={}, created_at=t)
    >>> log = SentLog().record(n, DeliveryResult.delivered(ref={"channel": "C1", "ts": "1.2"}), at=t)
    >>> log.was_sent(n), log.thread_ref(n.model_copy(update={"sequence": 2, "transition": "updated"}))
    (True, {'channel': 'C1', 'ts': '1.2'})
    >>> log.was_sent(n.model_copy(update={"sequence": 2, "transition": "resolved"}))
    False
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    records: dict[str, SentRecord] = Field(default_factory=dict)

    @staticmethod
    def slot(receiver: str, key: str) -> str:
        """Return the record key for a receiver and a group key."""
        return f"{receiver}|{key}"

    def get(self, receiver: str, key: str) -> SentRecord | None:
        """Return the record for a receiver and a group key."""
        return self.records.get(self.slot(receiver, key))

    def was_sent(self, notification: Notification) -> bool:
        """Return whether ``notification`` was already delivered."""
        record = self.get(notification.receiver, notification.key)
        return record is not None and record.covers(notification)

    def thread_ref(self, notification: Notification) -> dict[str, str] | None:
        """Return where this incident's first message went (same epoch only)."""
        record = self.get(notification.receiver, notification.key)
        return record.ref if record is not None and record.epoch == notification.epoch else None

    def record(self, notification: Notification, result: DeliveryResult, at: datetime) -> SentLog:
        """Return the log with ``notification`` recorded as delivered."""
        return self.model_copy(
            update={
                "records": {
                    **self.records,
                    self.slot(notification.receiver, notification.key): next_record(
                        self.get(notification.receiver, notification.key), notification, result, at
                    ),
                }
            }
        )

    def prune(self, before: datetime) -> SentLog:
        """Drop records last written before ``before`` (resolved incidents age out)."""
        return self.model_copy(
            update={"records": {k: r for k, r in self.records.items() if r.sent_at >= before}}
        )


def next_record(
    previous: SentRecord | None, notification: Notification, result: DeliveryResult, at: datetime
) -> SentRecord:
    """Return the record after delivering ``notification`` (a new epoch starts a new record)."""
    same = previous is not None and previous.epoch == notification.epoch
    transitions = (
        (*previous.transitions, notification.transition) if same and previous else (notification.transition,)
    )
    ref = (previous.ref if same and previous else None) or result.ref
    sequence = max(previous.last_sequence if same and previous else 0, notification.sequence)
    return SentRecord(
        receiver=notification.receiver,
        key=notification.key,
        epoch=notification.epoch,
        last_sequence=sequence,
        transitions=tuple(dict.fromkeys(transitions)),
        ref=ref,
        sent_at=at,
    )


class SentLogStore(Protocol):
    """Where the dispatcher keeps ``SentRecord`` values (a faust table in the worker)."""

    def get(self, receiver: str, key: str) -> SentRecord | None:
        """Return the record for a receiver and a group key."""
        ...

    def put(self, record: SentRecord) -> None:
        """Store a record (durably, before the next message of the same receiver is sent)."""
        ...


class MemorySentLog:
    """A ``SentLogStore`` holding a ``SentLog`` value (tests, single-process use)."""

    def __init__(self, log: SentLog | None = None) -> None:
        self.log = log or SentLog()

    def get(self, receiver: str, key: str) -> SentRecord | None:
        """Return the record for a receiver and a group key."""
        return self.log.get(receiver, key)

    def put(self, record: SentRecord) -> None:
        """Store a record."""
        self.log = self.log.model_copy(
            update={"records": {**self.log.records, SentLog.slot(record.receiver, record.key): record}}
        )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long and how fast to retry one notification on one receiver."""

    max_retry: timedelta = timedelta(hours=24)
    initial_backoff: timedelta = timedelta(seconds=1)
    max_backoff: timedelta = timedelta(minutes=5)
    jitter: timedelta = timedelta(seconds=1)

    @classmethod
    def from_config(cls, config: DeliveryConfig) -> RetryPolicy:
        """Build from the ``delivery`` config section."""
        return cls(config.max_retry, config.initial_backoff, config.max_backoff, config.jitter)


@dataclass
class ReceiverStats:
    """Counters per receiver, for the shell's metrics (``*_total`` counters)."""

    delivered: int = 0
    retries: int = 0
    failed: int = 0
    skipped_duplicates: int = 0
    fallback: int = 0


# Called once per notification taken from a queue: delivered, skipped as already sent, or given up.
ResultHook = Callable[[Notification, DeliveryResult], None]


class Dispatcher:
    """Deliver notifications: one asyncio worker per receiver, blocking receiver calls in threads."""

    def __init__(
        self,
        receivers: Mapping[str, Receiver],
        *,
        sent_log: SentLogStore | None = None,
        retry: RetryPolicy | None = None,
        fallback: str | None = None,
        clock: Callable[[], datetime] = utc_now,
        on_result: ResultHook | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if fallback is not None and fallback not in receivers:
            raise ValueError(f"fallback receiver {fallback!r} is not configured")
        self.receivers = dict(receivers)
        self.sent_log: SentLogStore = sent_log if sent_log is not None else MemorySentLog()
        self.retry = retry or RetryPolicy()
        self.fallback = fallback
        self.stats = {name: ReceiverStats() for name in self.receivers}
        self._clock = clock
        self._on_result = on_result
        self._sleep = sleep
        self._queues: dict[str, asyncio.Queue[Notification]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def submit(self, notification: Notification) -> None:
        """Queue a notification for its receiver; returns at once."""
        name = notification.receiver
        if name not in self.receivers:
            log.error("notification for unknown receiver %s dropped", name)
            return
        if name not in self._queues:
            self._queues[name] = asyncio.Queue()
            self._tasks[name] = asyncio.create_task(self._work(name), name=f"deliver-{name}")
        await self._queues[name].put(notification)

    async def join(self) -> None:
        """Wait until every queued notification was delivered or given up."""
        for queue in list(self._queues.values()):
            await queue.join()

    async def close(self) -> None:
        """Stop the workers (queued notifications stay undelivered: the policy state still has them)."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        self._queues.clear()

    def pending(self) -> dict[str, int]:
        """Return how many notifications wait per receiver."""
        return {name: q.qsize() for name, q in self._queues.items()}

    async def _work(self, name: str) -> None:
        queue = self._queues[name]
        while True:
            notification = await queue.get()
            try:
                await self.deliver(notification)
            except Exception:  # noqa: BLE001 - one bad message must not stop the receiver's worker
                log.error("delivery to %s failed unexpectedly", name, exc_info=True)
            finally:
                queue.task_done()

    async def deliver(self, notification: Notification) -> DeliveryResult:
        """Deliver one notification now: skip it if already sent, else retry, record, or fall back."""
        name = notification.receiver
        stats = self.stats[name]
        record = self.sent_log.get(name, notification.key)
        if record is not None and record.covers(notification):
            stats.skipped_duplicates += 1
            skipped = DeliveryResult.delivered(ref=record.ref, detail="already sent")
            if self._on_result is not None:
                self._on_result(notification, skipped)
            return skipped
        if record is not None and record.epoch == notification.epoch and record.ref:
            notification = notification.model_copy(update={"thread_ref": record.ref})
        result = await self._with_retry(self.receivers[name], notification)
        if result.ok:
            self.sent_log.put(next_record(record, notification, result, self._clock()))
            stats.delivered += 1
            log.info(
                "delivered %s %s #%d to %s",
                notification.transition,
                notification.key,
                notification.sequence,
                name,
            )
        else:
            stats.failed += 1
            log.warning(
                "gave up on %s %s #%d to %s: %s",
                notification.transition,
                notification.key,
                notification.sequence,
                name,
                result.detail,
            )
            await self._fall_back(notification)
        if self._on_result is not None:
            self._on_result(notification, result)
        return result

    async def _fall_back(self, notification: Notification) -> None:
        if self.fallback is None or self.fallback == notification.receiver:
            return
        result = await asyncio.to_thread(_attempt, self.receivers[self.fallback], notification)
        if result.ok:
            self.stats[notification.receiver].fallback += 1
        else:
            log.error("fallback %s also failed for %s: %s", self.fallback, notification.key, result.detail)

    async def _with_retry(self, receiver: Receiver, notification: Notification) -> DeliveryResult:
        backoff = wait_exponential_jitter(
            initial=self.retry.initial_backoff.total_seconds(),
            max=self.retry.max_backoff.total_seconds(),
            jitter=self.retry.jitter.total_seconds(),
        )
        stats = self.stats[notification.receiver]

        def wait(state: RetryCallState) -> float:
            asked = None
            if state.outcome is not None and not state.outcome.failed:
                asked = state.outcome.result().retry_after
            return max(backoff(state), min(asked or 0.0, self.retry.max_backoff.total_seconds()))

        def counted(state: RetryCallState) -> None:
            stats.retries += 1
            if state.outcome is not None and not state.outcome.failed:
                log.info(
                    "retrying %s on %s: %s", notification.key, receiver.name, state.outcome.result().detail
                )

        retrying = AsyncRetrying(
            stop=stop_before_delay(self.retry.max_retry.total_seconds()),
            wait=wait,
            retry=retry_if_result(lambda r: r.status == "retry"),
            retry_error_callback=lambda state: (
                state.outcome.result() if state.outcome else DeliveryResult.failed("no attempt")
            ),
            before_sleep=counted,
            sleep=self._sleep,
        )
        result: DeliveryResult = await retrying(asyncio.to_thread, _attempt, receiver, notification)
        return result


def _attempt(receiver: Receiver, notification: Notification) -> DeliveryResult:
    try:
        return receiver.deliver(notification)
    except Exception as error:  # noqa: BLE001 - a receiver bug is a failed delivery, not a dead worker
        log.error("receiver %s raised %s", receiver.name, type(error).__name__)
        return DeliveryResult.failed(f"receiver raised {type(error).__name__}")
