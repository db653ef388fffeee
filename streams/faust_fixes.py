"""A fix for faust-streaming's offset commit: never commit past a message no stream acknowledged.

faust keeps, per partition, the offsets its streams acknowledged and commits up to the first gap.
Its head-gap test (``Consumer._new_offset``, faust-streaming 0.15.3) compares the lowest acknowledged
offset with the committed offset as if the committed offset were the last message processed; Kafka's
committed offset is the *next* message to read. So when exactly the message at the committed offset
was never acknowledged and the ones after it were, faust committed past it and the message was never
processed. That happens across a rebalance: a stream drops a message fetched under the old
generation (without acknowledging it), then acknowledges the next ones of a partition it kept. Our
two-worker SIGKILL test lost one message this way, once on ``costs.priced`` and once on
``usage.gpu``, each time a single message of a partition the worker kept through the rebalance.

The replacement below is faust's method with the head-gap test corrected: with a committed offset
``c``, nothing is committed until offset ``c`` itself is acknowledged (or known to be a gap). The
dropped message is then read again after the rebalance's seek to the committed offsets, and
processed: at-least-once, as the rest of burnwatch assumes.
"""

from __future__ import annotations

from typing import Any

from faust.transport.consumer import Consumer
from faust.utils.functional import consecutive_numbers


def new_offset(self: Any, tp: Any) -> int | None:
    """Return the offset to commit for ``tp``: one past the acknowledged run from the committed offset."""
    acked: list[int] = self._acked[tp]
    if not acked:
        return None
    max_offset = max(acked)
    gaps = self._gap[tp]
    if gaps:
        # offsets known not to exist (compaction, transaction markers) count as acknowledged
        candidates = sorted(gaps.overlap(0, max_offset), key=lambda interval: interval.begin)
        if candidates:
            filled: list[int] = []
            for interval in candidates:
                filled.extend(range(interval.begin, interval.end))
            acked.extend(filled)
            gaps.chop(0, max(filled[-1], max_offset + 1))
    acked.sort()
    committed = self._committed_offset[tp]
    if committed is not None and acked[0] > committed:
        return None  # the message at the committed offset has not been acknowledged yet
    batch = next(consecutive_numbers(acked))
    acked[: len(batch)] = []
    self._acked_index[tp].difference_update(batch)
    return int(batch[-1]) + 1


def apply() -> None:
    """Install the corrected commit logic on faust's consumer (idempotent)."""
    Consumer._new_offset = new_offset
