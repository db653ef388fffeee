"""Consecutive items grouped so that each group's weight stays under a limit: one table write each.

A ``BatchLoggedTable`` logs each write as one changelog message, which the broker refuses above its
message size (16 MB here, ``streams/app.py``), and a refused changelog send stops the worker. Writers
whose batches grow with a backlog (a detector step over many ``detector.inputs`` messages, the event ids
of many acknowledged usage messages, a batch's budget contributions and ledger entries, its spend charges)
write in such groups.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def bounded_groups(items: Iterable[T], weight: Callable[[T], int], limit: int) -> Iterator[list[T]]:
    """Yield ``items`` in order, in groups of total ``weight`` at most ``limit``.

    Items stay whole: one heavier than ``limit`` is a group of its own.

    >>> list(bounded_groups([3, 2, 1, 9, 1], weight=lambda n: n, limit=6))
    [[3, 2, 1], [9], [1]]
    >>> list(bounded_groups([], weight=len, limit=1))
    []
    """
    group: list[T] = []
    held = 0
    for item in items:
        heft = weight(item)
        if group and held + heft > limit:
            yield group
            group, held = [], 0
        group.append(item)
        held += heft
    if group:
        yield group


MAX_ITEMS_PER_MESSAGE = 20_000
"""Items in one message that grows with a batch, at most: contributions in a ``budget.charges`` message,
budget ledger entries or spend charges in one changelog message.

Each grows with a batch (a catch-up after a restart reads up to ``BURNWATCH_BATCH_MAX_MESSAGES`` messages
at once), and the broker refuses a message over 16 MB (``streams/app.py``): a refused send stops the
worker, and the next owner of the partition meets the same batch. The 200,000-event SIGKILL test
stopped both workers on a 25 MB ledger message this way. 20,000 contributions are about 3 MB, and as
many ledger entries about 4 MB.
"""


def in_parts(items: Sequence[T], limit: int = MAX_ITEMS_PER_MESSAGE) -> list[Sequence[T]]:
    """Return ``items`` in order, in parts of at most ``limit`` (one part, ``items`` itself, if they fit).

    >>> in_parts([1, 2, 3, 4, 5], limit=2)
    [[1, 2], [3, 4], [5]]
    >>> in_parts([1, 2], limit=2), in_parts([], limit=2)
    ([[1, 2]], [[]])
    """
    if len(items) <= limit:
        return [items]
    return list(bounded_groups(items, lambda _: 1, limit))


def part_key(batch_key: str, number: int) -> str:
    """Return the changelog key of part ``number`` of a batch's write: each part is its own compacted key.

    >>> [part_key("budget.charges:0:143-166", n) for n in range(3)]
    ['budget.charges:0:143-166', 'budget.charges:0:143-166#1', 'budget.charges:0:143-166#2']
    """
    return f"{batch_key}#{number}" if number else batch_key
