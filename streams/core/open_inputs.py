"""The inputs of buckets still open, saved once per step and deleted when their buckets close.

A restart rebuilds a partition's open LLM and series buckets from the inputs they hold. Those inputs
are kept as ``o|<kind>|<first input id>`` table entries (``u``: LLM requests, ``s``: series sums), one
per step and kind: ``[until, items]``, where ``until`` is the end of the last bucket any of the items is
in. An entry is deleted by the first save whose ``flushed_to`` reaches ``until`` (its buckets have all
closed and been stepped), and inputs whose buckets closed within their own step are never written. So a
partition's open inputs are its last bucket width of traffic (10 s of LLM requests, an hour of series
sums), not the dedup horizon's: the ``i|<input id>`` entries that remember which inputs were applied
hold no input any more.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from pydantic_core import to_json

OPEN = "o|"


@runtime_checkable
class PackedRequests(Protocol):
    """A run's LLM requests as the compiled kernel keeps them (``burnwatch_kernel.Requests``)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[list[Any]]:
        """Their lists, as ``route`` makes them (made now)."""

    def to_lists(self) -> list[list[Any]]:
        """Their lists in one list (made now)."""

    def open_json(self, since: float) -> tuple[str, float, bytes] | None:
        """Those at or after ``since``: the first's id, the latest time, their lists' JSON, comma-joined."""


def bucket_end(t: float, widths: Iterable[float]) -> float:
    """Return the end of the last-ending bucket that time ``t`` falls in, over bucket ``widths``.

    >>> bucket_end(12.5, (2.0, 10.0))
    20.0
    >>> bucket_end(20.0, (2.0, 10.0))  # a bucket is [start, end): 20 starts the next one
    30.0
    """
    return max((math.floor(t / width) + 1) * width for width in widths)


def open_from(flushed_to: float, widths: Iterable[float]) -> float:
    """Return the earliest time whose bucket of some width in ``widths`` is still open after ``flushed_to``.

    A bucket is ``[start, end)`` and closes once ``flushed_to`` reaches its end, so the input at ``t`` is
    in an open bucket of width ``w`` if ``t`` is at or after the start of ``flushed_to``'s bucket.

    >>> open_from(23.0, (2.0, 10.0)), open_from(20.0, (2.0, 10.0)), open_from(-math.inf, (2.0,))
    (20.0, 20.0, -inf)
    >>> bucket_end(19.9, (2.0, 10.0)) <= 20.0 < bucket_end(20.0, (2.0, 10.0))
    True
    """
    if not math.isfinite(flushed_to):  # nothing closed yet (-inf): every bucket is open
        return flushed_to
    return min(math.floor(flushed_to / width) * width for width in widths)


class OpenInputs:
    """A partition's ``o|`` entries, by the flushed time at which they can go.

    Examples
    --------
    >>> inputs = OpenInputs()
    >>> usages = [["u", "a", 15.0], ["u", "b", 25.0]]
    >>> inputs.save("u|", usages, 2, (10.0,), flushed_to=20.0)  # "a"'s bucket [10, 20) closed: not kept
    [('o|u|b', [30.0, [['u', 'b', 25.0]]])]
    >>> inputs.save("u|", usages[:1], 2, (10.0,), flushed_to=20.0)
    []
    >>> inputs.expired(25.0), inputs.expired(30.0)
    ([], [('o|u|b', None)])
    """

    def __init__(self) -> None:
        self._until: list[tuple[float, str]] = []  # a heap: the entries to delete first come first

    def __len__(self) -> int:
        return len(self._until)

    def save(self, tag: str, items: Sequence[Any], at: int, widths: Sequence[float], flushed_to: float
             ) -> list[tuple[str, Any]]:
        """Return the entry that keeps those of ``items`` whose buckets are open, or none if none is.

        ``items[i][at]`` is an item's time and ``widths`` its buckets' widths; the entry's key is
        ``o|<tag><id of the first item kept>``.
        """
        since = open_from(flushed_to, widths)
        kept = [item for item in items if item[at] >= since]
        if not kept:
            return []
        key = OPEN + tag + kept[0][1]
        until = bucket_end(max([item[at] for item in kept]), widths)
        heapq.heappush(self._until, (until, key))
        return [(key, [until, kept])]

    def save_chunks(self, tag: str, chunks: Sequence[Sequence[Any]], widths: Sequence[float],
                    flushed_to: float) -> list[tuple[str, Any]]:
        """``save`` for LLM requests in chunks (``detector_feed.Chunks``; an item's time at index 2).

        When every chunk is the kernel's ``Requests`` (a run's requests, ``route_runs``), the entry's value
        is its JSON, which they write themselves (``open_json``: the same bytes ``to_json`` writes of
        ``save``'s value), so none of their lists is made; otherwise the items of every chunk are saved.

        >>> OpenInputs().save_chunks("u|", [[["u", "a", 15.0]], [["u", "b", 25.0]]], (10.0,), 20.0)
        [('o|u|b', [30.0, [['u', 'b', 25.0]]])]
        """
        packed = [chunk for chunk in chunks if isinstance(chunk, PackedRequests)]
        if not packed or len(packed) < len(chunks):
            return self.save(tag, [item for chunk in chunks for item in chunk], 2, widths, flushed_to)
        since = open_from(flushed_to, widths)
        parts = [part for chunk in packed if (part := chunk.open_json(since)) is not None]
        if not parts:
            return []
        key = OPEN + tag + parts[0][0]
        until = bucket_end(max(latest for _, latest, _ in parts), widths)
        heapq.heappush(self._until, (until, key))
        return [(key, b"[" + to_json(until) + b",[" + b",".join(json for _, _, json in parts) + b"]]")]

    def expired(self, flushed_to: float) -> list[tuple[str, None]]:
        """Return the deletions of the entries whose buckets have all closed by ``flushed_to``."""
        gone: list[tuple[str, None]] = []
        while self._until and self._until[0][0] <= flushed_to:
            gone.append((heapq.heappop(self._until)[1], None))
        return gone

    def restore(self, key: str, value: Any) -> list[Any]:
        """Take back a saved entry; return its items (none if the value is not ``[until, items]``).

        >>> inputs = OpenInputs()
        >>> inputs.restore("o|a", [30.0, [["u", "a", 25.0]]]), len(inputs)
        ([['u', 'a', 25.0]], 1)
        >>> inputs.restore("o|b", "bad"), len(inputs)
        ([], 1)
        """
        if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (int, float))
                and isinstance(value[1], list)):
            return []
        heapq.heappush(self._until, (float(value[0]), key))
        return [item for item in value[1] if isinstance(item, list)]
