"""A detector partition's event time from the ticks of every router that feeds it.

Each worker's router (``route_detector_inputs``) ticks every ``detector.inputs`` partition with its own
``Watermark``: the slowest of the lanes *it* reads. With several workers a partition hears from each of
them, and must move only as far as the slowest: a fast router's tick would close buckets over inputs a
slower router has yet to send, and a GPU whose samples come through the slower one would look silent
(a false ``telemetry_gap``, and its idle time cut short).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

STARTING = None  # a tick's time while its router starts: the partition waits for it
QUIET = "quiet"  # a tick's time once every lane of its router went quiet: nothing to wait for


class RouterTicks:
    """The event time a partition may move to: the latest tick of its slowest router.

    A tick is ``["t", time]`` or ``["t", time, router]``; its time may also be ``STARTING`` (the
    router has not ticked yet: it holds the partition where it is) or ``QUIET`` (none of its lanes
    reports: it holds nothing back). A live router ticks every second, moved or not
    (``Watermark.keepalive``). The set of routers is the workers of one consumer-group generation: a
    worker that dies or joins brings a rebalance, which rebuilds the partition (a new ``RouterTicks``),
    so a dead worker's router holds the partition until then, while its usage partitions are read by
    nobody (moving on, the survivors would find its GPUs silent). A router silent for ``gone_s`` is let
    go anyway (a worker stuck in one long step still in the group). For ``wait_s`` after it is made
    nothing moves, so every live router has ticked before time does. Without a clock (replay, the
    benchmarks) no router is let go and nothing waits.

    >>> clock = iter([0.0, 6.0, 7.0, 8.0, 9.0, 10.0, 30.0]).__next__
    >>> ticks = RouterTicks(wait_s=5.0, gone_s=15.0, clock=clock)  # made at 0.0
    >>> ticks.tick(["t", 100.0, "a"])  # at 6.0: past the wait, "a" alone is known
    100.0
    >>> ticks.tick(["t", None, "b"])  # "b" is starting: nothing moves
    >>> ticks.tick(["t", 90.0, "b"])  # at 8.0: "b" is behind "a"
    90.0
    >>> ticks.tick(["t", 120.0, "a"])
    90.0
    >>> ticks.tick(["t", "quiet", "b"])  # at 10.0: "b" has nothing more to send
    120.0
    >>> ticks.tick(["t", 125.0, "a"])  # at 30.0: "b" last ticked at 10.0, it is gone
    125.0
    """

    def __init__(
        self, wait_s: float = 0.0, gone_s: float = math.inf, clock: Callable[[], float] | None = None
    ) -> None:
        self.wait_s, self.gone_s, self.clock = wait_s, gone_s, clock
        self.latest: dict[str, tuple[float, float]] = {}  # router -> (its latest tick time, heard at)
        self.since = clock() if clock is not None else -math.inf

    def tick(self, item: Sequence[Any]) -> float | None:
        """Take one tick; return the event time the partition may move to now, or None."""
        router = item[2] if len(item) > 2 else ""
        at = item[1]
        at = -math.inf if at is STARTING else math.inf if at == QUIET else float(at)
        now = self.clock() if self.clock is not None else 0.0
        latest = self.latest
        before = latest.get(router)
        if before is not None and math.isfinite(before[0]) and before[0] > at:
            at = before[0]  # a router's ticks only move on (a repeat read after a restart comes again)
        latest[router] = (at, now)
        if self.clock is not None:
            if now - self.since < self.wait_s:
                return None
            for gone in [r for r, (_, heard) in latest.items() if now - heard > self.gone_s]:
                del latest[gone]
        event_time = min(t for t, _ in latest.values())
        return event_time if math.isfinite(event_time) else None
