"""One message's worth of pricing: parse, drop already-counted event ids, price the rest.

Shared by the streaming agent and ``replay`` so both give the same costs for the same events. The
caller supplies ``is_known`` (its dedup memory: a table in the stream, a set in replay) and records the
ids of ``PricedBatch.events`` as known once their records are sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pydantic_core import to_json

from streams.core.costs import CostRecord
from streams.core.events import MAX_MESSAGE_BYTES, Event, Rejection, parse_message
from streams.core.pricing import Pricer

UNALLOCATED = "unallocated"
RECORDS_PER_MESSAGE = 1000


@dataclass(slots=True)
class PricedBatch:
    """The outcome of pricing one message."""

    records: list[CostRecord] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    duplicates: int = 0
    rejections: list[Rejection] = field(default_factory=list)


def new_events(events: Iterable[Event], is_known: Callable[[str], bool]) -> tuple[list[Event], int]:
    """Keep the events whose id is neither known nor repeated earlier in the same batch.

    >>> from types import SimpleNamespace as E
    >>> kept, dups = new_events([E(event_id="a"), E(event_id="b"), E(event_id="a")], {"b"}.__contains__)
    >>> [e.event_id for e in kept], dups
    (['a'], 2)
    """
    kept: list[Event] = []
    seen_here: set[str] = set()
    duplicates = 0
    for event in events:
        eid = event.event_id
        if eid in seen_here or is_known(eid):
            duplicates += 1
            continue
        seen_here.add(eid)
        kept.append(event)
    return kept, duplicates


def price_payload(
    payload: bytes,
    pricer: Pricer,
    is_known: Callable[[str], bool],
    *,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> PricedBatch:
    """Parse one message value and price its new events."""
    parsed = parse_message(payload, max_bytes=max_bytes)
    fresh, duplicates = new_events(parsed.events, is_known)
    return PricedBatch(
        records=pricer.price_many(fresh),
        events=fresh,
        duplicates=duplicates,
        rejections=parsed.rejections,
    )


def owner_of(record: CostRecord) -> str:
    """Return the key a cost record is published under: its team, or ``unallocated``."""
    return record["x_Team"] or UNALLOCATED


def group_by_owner(records: Iterable[CostRecord]) -> dict[str, list[CostRecord]]:
    """Group records by owner key, keeping their order, so each group is one output message."""
    groups: dict[str, list[CostRecord]] = {}
    for record in records:
        groups.setdefault(owner_of(record), []).append(record)
    return groups


def cost_messages(
    records: Iterable[CostRecord], per_message: int = RECORDS_PER_MESSAGE
) -> list[tuple[bytes, bytes]]:
    """Encode records as ``costs.priced`` messages: ``(owner key, JSON array)``, ``per_message`` at most.

    >>> [(k, len(v) > 0) for k, v in cost_messages([{"x_Team": None}, {"x_Team": "a"}])]
    [(b'unallocated', True), (b'a', True)]
    """
    out = []
    for owner, group in group_by_owner(records).items():
        key = owner.encode()
        for start in range(0, len(group), per_message):
            out.append((key, to_json(group[start:start + per_message])))
    return out
