"""The young entities' log: each waiting bucket written once, not their whole documents at every bucket.

A young session or user waits until it could matter (``deferred``), and nearly every LLM request
closes a bucket of one. Saved as its own document, an entity was written again, whole, at each step
that closed one of its buckets, and deleted when it expired: about 0.43 of the detector table's 0.70
entries per event, and half its bytes. Instead each partition keeps a log: one entry per step at most
(``y|<partition>|<seq>``: ``{"t": event time, "r": records}``) that holds, in order, what happened to
its young entities in that step:

- ``["d", entity id, document]``: the entity's whole document (its first bucket, or written again);
- ``["b", entity id, bucket entry]``: one more bucket (``deferred.entry``);
- ``["x", entity id]``: the entity is gone (grown old enough and stepped, expired, or released).

Replayed in order (``replay``), the entries give back every waiting document. An entity is *pinned*
at the entry of its last ``d`` record; an entry is deleted once no live entity is pinned at it or
before it, so the log is always a suffix of the steps and a ``x`` record is kept for as long as an
older entry holds that entity's buckets. An entity pinned at an entry more than ``carry_after_s`` of
event time old (half the time a quiet entity waits before it expires, in the stream) is written again (a
new ``d``), the oldest first and at most ``CARRIED_PER_STEP`` in one step (a step's entry stays small).
So the log holds about that much event time of records however long an entity waits, and an entity is
written whole about twice in its life at most, where its document was written at every step it changed.

A table saved before the log holds a young entity as a document of its own (``s|llm|<id>``, its
``pending`` section). That document stays its base: a restore replays the log over it, the entity is
pinned at the entry of its first record since, and the document is deleted (``take``'s third list) when
the entity is gone or written again whole, never rewritten all at once (a partition's young entities
in one step would make a changelog message larger than a broker takes).

The compiled kernel keeps the same log (``kernel/src/pending_log.rs``), entry for entry and byte for
byte; this is the reference.

>>> log = PendingLog(carry_after_s=1800.0)
>>> doc = {"e": {"app": "bot", "user": "u1"}, "last": 10.0, "n": 1,
...        "b": [[0.0, 10.0, 1, 5, 2, 0.1, [], {}, None]]}
>>> log.opened("app=bot,user=u1", doc)
>>> entry, deleted, dropped = log.take({"app=bot,user=u1": doc}, now=20.0)
>>> entry == (0, {"t": 20.0, "r": [["d", "app=bot,user=u1", doc]]}), deleted, dropped
(True, [], [])
>>> log.gone("app=bot,user=u1")
>>> log.take({}, now=25.0)  # the x record's entry is not written: nothing older than it is left to cancel
(None, [0], [])
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from detectors.buckets import LlmBucket
from detectors.deferred import bucket_of, entry
from detectors.state import State
from detectors.token_runaway import slide

log = logging.getLogger("burnwatch.detectors")

CARRIED_PER_STEP = 256
"""At most this many entities are written again whole in one step."""

OPENED, ADDED, GONE = "d", "b", "x"


class PendingLog:
    """One partition's young entities' log: the records of the current step, and which entries live."""

    def __init__(self, carry_after_s: float) -> None:
        self.carry_after_s = carry_after_s
        self.next_seq = 0
        self._records: list[list[Any]] = []
        self._pinned: dict[str, int] = {}  # entity id -> the entry it is pinned at
        self._by_seq: dict[int, set[str]] = {}  # entry -> the entities pinned at it
        self._written: deque[int] = deque()  # the entries the table holds, oldest first
        self._times: dict[int, float] = {}  # their event times
        self._old: set[str] = set()  # entities whose document saved before the log is still their base
        self._dropped: list[str] = []  # those whose document goes with this step

    def opened(self, key: str, doc: State) -> None:
        """Log ``key``'s whole document (it is new, or written again); it is pinned at this step's entry."""
        self._unpin(key)
        self._records.append([OPENED, key, doc])
        self._pin(key, self.next_seq)
        self._drop_old(key)

    def added(self, key: str, item: list[Any]) -> None:
        """Log one more bucket entry of a waiting entity."""
        self._records.append([ADDED, key, item])
        if key not in self._pinned:  # its first record over a document saved before the log
            self._pin(key, self.next_seq)

    def gone(self, key: str) -> None:
        """Log that ``key`` no longer waits."""
        self._records.append([GONE, key])
        self._unpin(key)
        self._drop_old(key)

    def restore(self, key: str, seq: int | None, old: bool = False) -> None:
        """Take back a waiting entity, pinned at entry ``seq`` (None: at none yet).

        ``old``: a document saved before the log is its base.
        """
        self._unpin(key)
        if seq is not None:
            self._pin(key, seq)
        if old:
            self._old.add(key)

    def restore_entries(self, written: Iterable[tuple[int, float]]) -> None:
        """Take back the entries the table holds: ``(seq, event time)``."""
        self._times = dict(written)
        self._written = deque(sorted(self._times))
        self.next_seq = self._written[-1] + 1 if self._written else 0

    def take(self, docs: Mapping[str, State], now: float
             ) -> tuple[tuple[int, dict[str, Any]] | None, list[int], list[str]]:
        """End a step: its entry ``(seq, records)``, the entries to delete, and the old documents that go.

        The entry is None when there is nothing to write; the old documents are those saved before the log
        of entities gone or written again whole. ``docs`` are the waiting documents by entity id, for those
        written again; ``now`` is the step's event time.
        """
        edge, due = now - self.carry_after_s, list[str]()
        for seq in sorted(self._by_seq):
            if self._times.get(seq, now) >= edge or len(due) == CARRIED_PER_STEP:
                break
            due += sorted(self._by_seq[seq])[:CARRIED_PER_STEP - len(due)]
        for key in due:
            self.opened(key, docs[key])
        written: tuple[int, dict[str, Any]] | None = None
        if self._records:
            written = (self.next_seq, {"t": now if math.isfinite(now) else None, "r": self._records})
            self._written.append(self.next_seq)
            self._times[self.next_seq] = now
            self.next_seq += 1
            self._records = []
        floor = min(self._by_seq) if self._by_seq else self.next_seq
        deleted: list[int] = []
        while self._written and self._written[0] < floor:
            seq = self._written.popleft()
            del self._times[seq]
            if written is not None and seq == written[0]:
                written = None  # every entity it names is gone already: it need not be written
            else:
                deleted.append(seq)
        dropped, self._dropped = self._dropped, []
        return written, deleted, dropped

    def _pin(self, key: str, seq: int) -> None:
        self._pinned[key] = seq
        self._by_seq.setdefault(seq, set()).add(key)

    def _unpin(self, key: str) -> None:
        seq = self._pinned.pop(key, None)
        if seq is not None:
            keys = self._by_seq[seq]
            keys.discard(key)
            if not keys:
                del self._by_seq[seq]

    def _drop_old(self, key: str) -> None:
        if key in self._old:
            self._old.discard(key)
            self._dropped.append(key)


def entry_time(value: Any) -> float:
    """Return a log entry's event time (-inf when it has none).

    >>> entry_time({"t": 60.0, "r": []}), entry_time({"t": None, "r": []}), entry_time("bad")
    (60.0, -inf, -inf)
    """
    t = value.get("t") if isinstance(value, dict) else None
    return float(t) if isinstance(t, (int, float)) else -math.inf


def entry_records(value: Any) -> list[Any]:
    """Return a log entry's records (none, and a warning, if it is not ``{"t": time, "r": [records]}``)."""
    records = value.get("r") if isinstance(value, dict) else None
    if not isinstance(records, list):
        log.warning("skipped an entry of the young entities' log that is not one: %.200r", value)
        return []
    return records


def waited(doc: State | None, bucket: LlmBucket, window_s: float) -> tuple[State, float]:
    """Return the document of an entity that waits with one more bucket, and its runaway window's USD.

    ``doc`` None: the bucket is its first. The USD is 0.0 for a user. A session's document keeps that
    window (``token_runaway.slide``). ``DetectorRunner._wait`` and ``replay`` build every waiting
    document here.
    """
    sent, kept, items = (0, [], []) if doc is None else (doc["n"], doc.get("w", []), doc["b"])
    new = {"e": bucket.entity, "last": bucket.end, "n": sent + bucket.requests, "b": [*items, entry(bucket)]}
    usd = 0.0
    if bucket.scope == "session":
        _, new["w"], usd, _ = slide(kept, bucket, window_s)
    return new, usd


def replay(entries: Iterable[tuple[int, Any]], window_s: float, base: Mapping[str, State] | None = None
           ) -> tuple[dict[str, State], dict[str, int]]:
    """Return the waiting documents a partition's log entries ``(seq, records)`` give, and their pins.

    ``base``: the documents saved before the log, which the log's records continue. A record that cannot
    be read is skipped, and named in a warning.

    >>> e = {"app": "bot", "session": "s1"}
    >>> first = {"e": e, "last": 2.0, "n": 1, "b": [[0.0, 2.0, 1, 5, 2, 0.1, [5], {}, None]],
    ...          "w": [[2.0, 0.1, 1, 0.0]]}
    >>> later = [4.0, 6.0, 2, 5, 2, 0.2, [5], {}, None]
    >>> docs, pinned = replay([(3, {"t": 6.0, "r": [["d", "s1", first], ["b", "s1", later]]}),
    ...                        (4, {"t": 9.0, "r": [["x", "gone"]]})], 60.0)
    >>> docs["s1"]["n"], docs["s1"]["last"], docs["s1"]["w"], pinned
    (3, 6.0, [[2.0, 0.1, 1, 0.0], [6.0, 0.2, 2, 4.0]], {'s1': 3})
    """
    docs: dict[str, State] = dict(base or {})
    pinned: dict[str, int] = {}
    for seq, value in sorted(entries, key=lambda entry: entry[0]):
        for record in entry_records(value):
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
                    docs[key] = waited(doc, bucket_of(scope, entity, record[2]), window_s)[0]
                    pinned.setdefault(key, seq)  # a base document's first record since
                elif tag == GONE:
                    docs.pop(key, None)
                    pinned.pop(key, None)
                else:
                    raise ValueError(f"unknown record {tag!r}")
            except (KeyError, IndexError, TypeError, ValueError) as error:
                log.warning("skipped a record of the young entities' log (entry %d): %r (%s)",
                            seq, record, error)
    return docs, pinned
