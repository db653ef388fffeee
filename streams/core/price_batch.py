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
    """Group records by owner key, keeping their order, so each group is one output message.

    An event's charges stay together under the owner of its first charge, even when its GPUs belong
    to different teams: every event is then whole in one message and one partition, so a consumer
    counts distinct events per partition and adds partitions up without counting an event twice.

    >>> recs = [{"x_EventId": "e1", "x_Team": "a"}, {"x_EventId": "e1", "x_Team": "b"},
    ...         {"x_EventId": "e2", "x_Team": "b"}]
    >>> {k: [r["x_Team"] for r in v] for k, v in group_by_owner(recs).items()}
    {'a': ['a', 'b'], 'b': ['b']}
    """
    groups: dict[str, list[CostRecord]] = {}
    event_id: object = object()
    owner = UNALLOCATED
    for record in records:
        if record.get("x_EventId") != event_id:  # an event's charges are contiguous
            event_id = record.get("x_EventId")
            owner = owner_of(record)
        groups.setdefault(owner, []).append(record)
    return groups


def cost_messages(
    records: Iterable[CostRecord], per_message: int = RECORDS_PER_MESSAGE
) -> list[tuple[bytes, bytes]]:
    """Encode records as ``costs.priced`` messages: ``(owner key, JSON array)``, about ``per_message`` each.

    An event's charges never straddle two messages (a message may run over ``per_message`` to keep
    them together), so a consumer sees every event whole and can count events per message.

    >>> [(k, len(v) > 0) for k, v in cost_messages([{"x_EventId": "e1", "x_Team": None},
    ...                                             {"x_EventId": "e2", "x_Team": "a"}])]
    [(b'unallocated', True), (b'a', True)]
    >>> recs = [{"x_Team": "a", "x_EventId": e} for e in ("e1", "e1", "e2", "e2", "e3")]
    >>> import json
    >>> [len(json.loads(v)) for _, v in cost_messages(recs, per_message=3)]
    [4, 1]
    """
    out = []
    for owner, group in group_by_owner(records).items():
        key = owner.encode()
        start = 0
        while start < len(group):
            end = min(start + per_message, len(group))
            while end < len(group) and group[end].get("x_EventId") == group[end - 1].get("x_EventId"):
                end += 1
            out.append((key, to_json(group[start:end])))
            start = end
    return out
