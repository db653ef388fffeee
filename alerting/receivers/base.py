"""The receiver contract: ``deliver(notification) -> DeliveryResult``, plus an in-memory receiver for tests.

A receiver makes one attempt and says what happened; retrying is the job of ``alerting.delivery``.
Network errors, 5xx and 429 answers are ``retry``; anything a retry cannot fix is ``failed``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from alerting.notification import Notification

DeliveryStatus = Literal["delivered", "retry", "failed"]


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The outcome of one delivery attempt.

    ``ref`` is where the message went (Slack channel and ts) so later messages can thread under it;
    ``retry_after`` is the wait the receiver asked for (HTTP ``Retry-After``), in seconds.
    """

    status: DeliveryStatus
    detail: str = ""
    ref: dict[str, str] | None = None
    retry_after: float | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Return whether the notification was delivered."""
        return self.status == "delivered"

    @classmethod
    def delivered(cls, ref: dict[str, str] | None = None, detail: str = "", **data: Any) -> DeliveryResult:
        """Build a success."""
        return cls("delivered", detail, ref, None, data)

    @classmethod
    def retry(cls, detail: str, retry_after: float | None = None) -> DeliveryResult:
        """Build a transient failure worth retrying."""
        return cls("retry", detail, None, retry_after)

    @classmethod
    def failed(cls, detail: str) -> DeliveryResult:
        """Build a permanent failure (bad credentials, unknown channel, rejected payload)."""
        return cls("failed", detail)


@runtime_checkable
class Receiver(Protocol):
    """Something that can take a notification: Slack, PagerDuty, a webhook, a runbook, the console."""

    name: str

    def deliver(self, notification: Notification) -> DeliveryResult:
        """Make one attempt to deliver ``notification``."""
        ...


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Read a ``Retry-After`` header given in seconds (dates are rare and ignored).

    >>> retry_after_seconds({"Retry-After": "3"}), retry_after_seconds({})
    (3.0, None)
    """
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
    return None


def classify_http(status: int, headers: Mapping[str, str], detail: str = "") -> DeliveryResult:
    """Map an HTTP answer to a result: 2xx delivered, 408/429/5xx (and 0, no answer) retry, else failed.

    >>> classify_http(202, {}).status, classify_http(429, {"Retry-After": "2"}).retry_after
    ('delivered', 2.0)
    >>> classify_http(503, {}).status, classify_http(400, {}).status
    ('retry', 'failed')
    """
    if 200 <= status < 300:
        return DeliveryResult.delivered(detail=detail or f"HTTP {status}")
    text = f"HTTP {status}" + (f": {detail}" if detail else "") if status else (detail or "no answer")
    if status in (0, 408, 429) or status >= 500:
        return DeliveryResult.retry(text, retry_after_seconds(headers) if status == 429 else None)
    return DeliveryResult.failed(text)


class MemoryReceiver:
    """Keeps what it delivers in ``delivered``; optionally answers with scripted results first.

    >>> from datetime import datetime, timezone
    >>> t = datetime(2025, 1, 1, tzinfo=timezone.utc)
    >>> n = Notification(receiver="mem", key="k", epoch=t, sequence=1, transition="firing",
    ...                  severity="info", group_labels={}, created_at=t)
    >>> r = MemoryReceiver("mem", script=[DeliveryResult.retry("down")])
    >>> r.deliver(n).status, r.deliver(n).status, len(r.delivered), r.attempts
    ('retry', 'delivered', 1, 2)
    """

    def __init__(self, name: str, script: Iterable[DeliveryResult] = ()) -> None:
        self.name = name
        self.delivered: list[Notification] = []
        self.attempts = 0
        self._script = list(script)

    def deliver(self, notification: Notification) -> DeliveryResult:
        """Answer with the next scripted result, else keep the notification and succeed."""
        self.attempts += 1
        if self._script:
            result = self._script.pop(0)
            if result.status != "delivered":
                return result
        self.delivered.append(notification)
        ref = notification.thread_ref or {"id": str(len(self.delivered))}
        return DeliveryResult.delivered(ref=ref)
