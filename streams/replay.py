"""Backtesting: run the streaming pipeline's logic in-process over a file of exported usage.

The same ``price_payload`` the agent runs prices each chunk of events, with an in-memory set as the
dedup memory, so replay and the stream give the same costs for the same events.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from streams.core.costs import CostRecord
from streams.core.dead_letter import dead_letter_record, encode_dead_letter
from streams.core.event_files import Item, ReadError, Record
from streams.core.events import Rejection
from streams.core.price_batch import UNALLOCATED, price_payload
from streams.core.pricing import Pricer

CHUNK_EVENTS = 1000
REPLAY_TOPIC = "replay"


@dataclass
class ReplaySummary:
    """What a replay read, priced and rejected, and the cost totals it found."""

    events_read: int = 0
    events_priced: int = 0
    duplicates: int = 0
    rejected: int = 0
    charges: int = 0
    unpriced_charges: int = 0
    list_cost_usd: float = 0.0
    effective_cost_usd: float = 0.0
    cost_by_service_usd: dict[str, float] = field(default_factory=dict)
    cost_by_team_usd: dict[str, float] = field(default_factory=dict)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    unpriced_skus: list[str] = field(default_factory=list)

    def add_costs(self, records: Iterable[CostRecord]) -> None:
        """Fold priced records into the totals."""
        for record in records:
            self.charges += 1
            self.unpriced_charges += record["x_Unpriced"]
            self.list_cost_usd += record["ListCost"]
            cost = record["EffectiveCost"]
            self.effective_cost_usd += cost
            service = record["ServiceCategory"]
            self.cost_by_service_usd[service] = self.cost_by_service_usd.get(service, 0.0) + cost
            team = record["x_Team"] or UNALLOCATED
            self.cost_by_team_usd[team] = self.cost_by_team_usd.get(team, 0.0) + cost

    def add_rejection(self, reason: str) -> None:
        """Count one rejected event or unreadable part of the input."""
        self.rejected += 1
        self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + 1


def _chunks(items: Iterable[Item], size: int) -> Iterator[tuple[list[Record], list[ReadError]]]:
    records: list[Record] = []
    errors: list[ReadError] = []
    for item in items:
        if isinstance(item, ReadError):
            errors.append(item)
        else:
            records.append(item)
        if len(records) >= size:
            yield records, errors
            records, errors = [], []
    if records or errors:
        yield records, errors


def replay(
    items: Iterable[Item],
    pricer: Pricer,
    out_dir: Path,
    *,
    progress: Callable[[int], None] | None = None,
    on_costs: Callable[[list[CostRecord]], None] | None = None,
) -> ReplaySummary:
    """Price every event read from ``items``; write costs.jsonl and rejects.jsonl into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = ReplaySummary()
    known: set[str] = set()
    now = datetime.now(UTC)
    with open(out_dir / "costs.jsonl", "w") as costs_out, open(out_dir / "rejects.jsonl", "w") as rejects_out:
        for offset, (records, errors) in enumerate(_chunks(items, CHUNK_EVENTS)):
            for error in errors:
                _write_rejection(rejects_out, Rejection("unparseable", f"{error.where}: {error.detail}", b""),
                                 offset, now)
                summary.add_rejection("unparseable")
            if not records:
                continue
            payload = json.dumps([r.event for r in records], default=str).encode()
            batch = price_payload(payload, pricer, known.__contains__, max_bytes=len(payload) + 1)
            summary.events_read += len(records)
            summary.events_priced += len(batch.events)
            summary.duplicates += batch.duplicates
            known.update(event.event_id for event in batch.events)
            for rejection in batch.rejections:
                _write_rejection(rejects_out, rejection, offset, now)
                summary.add_rejection(rejection.reason)
            for record in batch.records:
                costs_out.write(json.dumps(record))
                costs_out.write("\n")
            summary.add_costs(batch.records)
            if on_costs is not None:  # the detectors (streams/replay_detectors.py)
                on_costs(batch.records)
            if progress:
                progress(len(records))
    summary.unpriced_skus = pricer.take_new_unpriced()
    return summary


def _write_rejection(out: IO[str], rejection: Rejection, offset: int, now: datetime) -> None:
    record: dict[str, Any] = dead_letter_record(
        rejection, topic=REPLAY_TOPIC, partition=0, offset=offset, rejected_at=now
    )
    out.write(encode_dead_letter(record).decode())
    out.write("\n")
