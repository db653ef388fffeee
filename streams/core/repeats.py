"""Repeats within a batch: a key stored already, or met earlier in the same batch, counts once.

The stages that keep a dedup memory (budgets, spend tables, detectors) read it once per batch, before
they store the batch's keys; a key repeated inside the batch is therefore not in the store yet.
"""

from __future__ import annotations

from collections.abc import Sequence


def seen_before(keys: Sequence[str], stored: Sequence[bool]) -> list[bool]:
    """Return, per key, whether it was ``stored`` already or appears earlier in ``keys``.

    >>> seen_before(["a", "b", "a", "c"], [False, True, False, False])
    [False, True, True, False]
    """
    earlier: set[str] = set()
    out: list[bool] = []
    for key, old in zip(keys, stored, strict=True):
        out.append(old or key in earlier)
        earlier.add(key)
    return out
