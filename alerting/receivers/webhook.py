"""A generic JSON webhook, signed with HMAC-SHA256 so the receiver can trust it.

Headers: ``X-Burnwatch-Timestamp`` (unix seconds), ``X-Burnwatch-Signature: sha256=<hex>`` over
``<timestamp>.<body>``, and ``Idempotency-Key`` (the notification id: the same for a retried message).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable

from pydantic import SecretStr

from alerting.notification import Notification
from alerting.receivers.base import DeliveryResult, classify_http
from alerting.receivers.http import request
from alerting.receivers.jsonl import notification_json


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """Return the signature header value for ``body`` sent at ``timestamp``.

    >>> sign(b"s3cret", "1700000000", b"{}")[:15]
    'sha256=97926816'
    """
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(
    secret: bytes, timestamp: str, body: bytes, signature: str, *, now: float, tolerance_s: float = 300.0
) -> bool:
    """Check a signature (constant time) and that the timestamp is recent, as a receiving server would.

    >>> sig = sign(b"k", "100", b"x")
    >>> verify(b"k", "100", b"x", sig, now=150), verify(b"k", "100", b"y", sig, now=150)
    (True, False)
    """
    try:
        fresh = abs(now - float(timestamp)) <= tolerance_s
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookReceiver:
    """POST each notification as JSON; retried on 5xx, 429 and timeouts."""

    def __init__(
        self,
        name: str,
        *,
        url: str,
        secret: SecretStr | None = None,
        signature_header: str = "X-Burnwatch-Signature",
        headers: dict[str, str] | None = None,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.url = url
        self.signature_header = signature_header
        self.headers = dict(headers or {})
        self.timeout_s = timeout_s
        self._secret = secret
        self._clock = clock

    def __repr__(self) -> str:
        secret = "'**********'" if self._secret else "None"
        return f"WebhookReceiver(name={self.name!r}, url={self.url!r}, secret={secret})"

    def body(self, notification: Notification) -> bytes:
        """Return the exact bytes that are sent (and signed)."""
        return json.dumps(
            {"version": 1, **notification_json(notification)}, sort_keys=True, separators=(",", ":")
        ).encode()

    def deliver(self, notification: Notification) -> DeliveryResult:
        """POST the notification once."""
        body = self.body(notification)
        timestamp = str(int(self._clock()))
        headers = {
            **self.headers,
            "Content-Type": "application/json",
            "X-Burnwatch-Timestamp": timestamp,
            "Idempotency-Key": notification.id,
        }
        if self._secret is not None:
            headers[self.signature_header] = sign(self._secret.get_secret_value().encode(), timestamp, body)
        resp = request("POST", self.url, body, headers, self.timeout_s)
        return classify_http(resp.status, resp.headers, resp.error)
