"""The young entities' log: each waiting bucket written once, not their whole documents at every bucket.

A young session or user waits until it could matter (``deferred``), and nearly every LLM request
closes a bucket of one. Saved as its own document, an entity was written again, whole, at each of its
buckets, and deleted when it expired: about 0.43 of the detector table's 0.70 entries per event, and
half its bytes. Instead each partition keeps a log: one entry per step (``y|<partition>|<seq>``) that
holds, in order, what happened to its young entities in that step:

- ``["d", entity id, document]``: the entity's whole document (its first bucket, or written again);
- ``["b", entity id, bucket entry]``: one more bucket (``deferred.entry``);
- ``["x", entity id]``: the entity is gone (grown old enough and stepped, expired, or released).

Replayed in order (``replay``), the entries give back every waiting document. An entity is *pinned*
at the entry of its last ``d`` record; an entry is deleted once no live entity is pinned at it or
before it, so the log is always a suffix of the steps and a ``x`` record is kept for as long as an
older entry holds that entity's buckets. An entity pinned more than ``kept`` entries back is written
again (a new ``d``), so the log keeps at most about ``kept`` entries however long an entity waits.

The compiled kernel keeps the same log (``kernel/src/pending.rs``), entry for entry and byte for byte;
this is the reference.

>>> log = PendingLog(kept=4)
>>> doc = {"e": {"app": "bot", "user": "u1"}, "last": 10.0, "n": 1,
...        "b": [[0.0, 10.0, 1, 5, 2, 0.1, [], {}, None]]}
>>> log.opened("app=bot,user=u1", doc)
>>> entry, deleted = log.take({"app=bot,user=u1": doc})
>>> entry == (0, [["d", "app=bot,user=u1", doc]]), deleted
(True, [])
>>> log.gone("app=bot,user=u1")
>>> log.take({})  # the x record's entry is not written: nothing older than it is left to cancel
(None, [0])
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from detectors.deferred import bucket_of
from detectors.state import State
from detectors.token_runaway import slide

log = logging.getLogger("burnwatch.detectors")

LOG_KEPT = 256
"""Entries a partition's log holds before the entities pinned at the oldest are written again."""

OPENED, ADDED, GONE = "d", "b", "x"


class PendingLog:
    """One partition's young entities' log: the records of the current step, and which entries live."""

    def __init__(self, kept: int = LOG_KEPT) -> None:
        self.kept = max(2, kept)
        self.next_seq = 0
        self._records: list[list[Any]] = []
        self._pinned: dict[str, int] = {}  # entity id -> the entry of its last ``d`` record
        self._pins: dict[int, int] = {}  # entry -> how many entities are pinned at it
        self._written: deque[int] = deque()  # the entries the table holds, oldest first

    def opened(self, key: str, doc: State) -> None:
        """Log ``key``'s whole document (it is new, or written again); it is pinned at this step's entry."""
        self._unpin(key)
        self._records.append([OPENED, key, doc])
        self._pin(key, self.next_seq)

    def added(self, key: str, item: list[Any]) -> None:
        """Log one more bucket entry of a waiting entity."""
        self._records.append([ADDED, key, item])

    def gone(self, key: str) -> None:
        """Log that ``key`` no longer waits."""
        self._records.append([GONE, key])
        self._unpin(key)

    def restore(self, key: str, doc: State, seq: int | None) -> None:
        """Take back a waiting entity, pinned at entry ``seq`` of the log.

        ``seq`` None: it was saved as a document of its own, before the log, and is logged again whole.
        """
        if seq is None:
            self.opened(key, doc)
        else:
            self._unpin(key)
            self._pin(key, seq)

    def restore_entries(self, written: Iterable[int]) -> None:
        """Take back the entries the table holds (their sequence numbers)."""
        self._written = deque(sorted(written))
        self.next_seq = self._written[-1] + 1 if self._written else 0

    def take(self, docs: Mapping[str, State]) -> tuple[tuple[int, list[list[Any]]] | None, list[int]]:
        """End a step: return its entry ``(seq, records)`` (None: nothing to write) and the entries to delete.

        ``docs`` are the waiting documents by entity id, for those written again.
        """
        if self._pins and min(self._pins) < self.next_seq - self.kept:
            edge = self.next_seq - self.kept // 2
            for key in sorted(key for key, seq in self._pinned.items() if seq < edge):
                self.opened(key, docs[key])
        written: tuple[int, list[list[Any]]] | None = None
        if self._records:
            written = (self.next_seq, self._records)
            self._written.append(self.next_seq)
            self.next_seq += 1
            self._records = []
        floor = min(self._pins) if self._pins else self.next_seq
        deleted: list[int] = []
        while self._written and self._written[0] < floor:
            seq = self._written.popleft()
            if written is not None and seq == written[0]:
                written = None  # every entity it names is gone already: it need not be written
            else:
                deleted.append(seq)
        return written, deleted

    def _pin(self, key: str, seq: int) -> None:
        self._pinned[key] = seq
        self._pins[seq] = self._pins.get(seq, 0) + 1

    def _unpin(self, key: str) -> None:
        seq = self._pinned.pop(key, None)
        if seq is not None:
            left = self._pins[seq] - 1
            if left:
                self._pins[seq] = left
            else:
                del self._pins[seq]


def waited(doc: State | None, bucket_item: list[Any], entity: dict[str, str], scope: str,
           window_s: float) -> State:
    """Return the document of an entity that waits with one more bucket entry (``doc`` None: its first).

    A session's keeps its runaway window (``token_runaway.slide``), as ``DetectorRunner._wait`` does.
    """
    sent, kept, items = (0, [], []) if doc is None else (doc["n"], doc.get("w", []), doc["b"])
    new = {"e": entity, "last": bucket_item[1], "n": sent + bucket_item[2], "b": [*items, bucket_item]}
    if scope == "session":
        new["w"] = slide(kept, bucket_of(scope, entity, bucket_item), window_s)[1]
    return new


def replay(entries: Iterable[tuple[int, Any]], window_s: float) -> tuple[dict[str, State], dict[str, int]]:
    """Return the waiting documents a partition's log entries ``(seq, records)`` give, and their pins.

    A record that cannot be read is skipped, and named in a warning.

    >>> e = {"app": "bot", "session": "s1"}
    >>> first = {"e": e, "last": 2.0, "n": 1, "b": [[0.0, 2.0, 1, 5, 2, 0.1, [5], {}, None]],
    ...          "w": [[2.0, 0.1, 1, 0.0]]}
    >>> later = [4.0, 6.0, 2, 5, 2, 0.2, [5], {}, None]
    >>> docs, pinned = replay([(3, [["d", "s1", first], ["b", "s1", later]]), (4, [["x", "gone"]])], 60.0)
    >>> docs["s1"]["n"], docs["s1"]["last"], docs["s1"]["w"], pinned
    (3, 6.0, [[2.0, 0.1, 1, 0.0], [6.0, 0.2, 2, 4.0]], {'s1': 3})
    """
    docs: dict[str, State] = {}
    pinned: dict[str, int] = {}
    for seq, records in sorted(entries, key=lambda entry: entry[0]):
        for record in records if isinstance(records, list) else [records]:
            try:
                tag, key = record[0], record[1]
                if tag == OPENED:
                    docs[key], pinned[key] = record[2], seq
                elif tag == ADDED:
                    doc = docs.get(key)
                    if doc is None:  # its ``d`` record's entry is deleted: it is gone (an ``x`` follows)
                        continue
                    entity = doc["e"]
                    scope = "session" if "session" in entity else "user"
                    docs[key] = waited(doc, record[2], entity, scope, window_s)
                elif tag == GONE:
                    docs.pop(key, None)
                    pinned.pop(key, None)
                else:
                    raise ValueError(f"unknown record {tag!r}")
            except (KeyError, IndexError, TypeError, ValueError) as error:
                log.warning("skipped a record of the young entities' log (entry %d): %r (%s)",
                            seq, record, error)
    return docs, pinned
