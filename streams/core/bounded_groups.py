"""Consecutive items grouped so that each group's weight stays under a limit: one table write each.

A ``BatchLoggedTable`` logs each write as one changelog message, which the broker refuses above its
message size (16 MB here, ``streams/app.py``), and a refused changelog send stops the worker. Writers
whose batches grow with a backlog (a detector step over many ``detector.inputs`` messages, the event ids
of many acknowledged usage messages) write in such groups.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
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
