"""The ingest server's limits: request size, events per request, and a per-source rate in events/s.

The rate is a token bucket per source counted in events (not requests), because events are what
costs the pipeline: one request of 5,000 events weighs as much as 5,000 requests of one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from streams.core.events import MAX_EVENTS_PER_MESSAGE


@dataclass(frozen=True, slots=True)
class Limits:
    """Request and rate limits; ``burst`` must hold the largest request (``max_events``)."""

    max_body_bytes: int = 4 * 1024 * 1024
    max_events: int = MAX_EVENTS_PER_MESSAGE
    rate_per_s: float = 5_000.0
    burst: float = 20_000.0

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be at least 1024")
        if not 1 <= self.max_events <= MAX_EVENTS_PER_MESSAGE:
            raise ValueError(f"max_events must be between 1 and {MAX_EVENTS_PER_MESSAGE}")
        if self.rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        if self.burst < self.max_events:
            raise ValueError("burst must be at least max_events, or a full request could never pass")


class TokenBucket:
    """Allows ``rate`` units per second on average and ``burst`` at once.

    >>> now = [0.0]
    >>> bucket = TokenBucket(rate=10, burst=20, clock=lambda: now[0])
    >>> bucket.take(20), bucket.take(5)
    (0.0, 0.5)
    >>> now[0] = 0.5
    >>> bucket.take(5)
    0.0
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._level = burst
        self._at = clock()

    def take(self, amount: float) -> float:
        """Take ``amount`` if available and return 0, else take nothing and return seconds to wait."""
        now = self._clock()
        self._level = min(self.burst, self._level + (now - self._at) * self.rate)
        self._at = now
        if amount <= self._level:
            self._level -= amount
            return 0.0
        return (amount - self._level) / self.rate


class RateLimiter:
    """One token bucket per source.

    >>> limiter = RateLimiter(rate=100, burst=100, clock=lambda: 0.0)
    >>> limiter.retry_after("a", 100), limiter.retry_after("a", 1), limiter.retry_after("b", 1)
    (0, 1, 0)
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def retry_after(self, source: str, events: int) -> int:
        """Charge ``events`` to ``source``; return 0 if allowed, else whole seconds for ``Retry-After``."""
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = self._buckets[source] = TokenBucket(self.rate, self.burst, self._clock)
        wait = bucket.take(events)
        return 0 if wait == 0 else max(1, math.ceil(wait))
