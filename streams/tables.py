"""The worker's state tables (RocksDB by default, with a changelog topic each)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from types import SimpleNamespace
from typing import Any

import faust
from faust.types import EventT

from streams.settings import Settings

EVENT_ID_TABLE = "event_time_by_event_id"


class EventIdTable(faust.Table):  # type: ignore[misc]  # faust ships no type information
    """Event ids already priced, with their event time (epoch seconds): the dedup memory.

    Each id is one key in the local store, so a lookup is one RocksDB get. Its changelog, though,
    gets one message per priced batch (``{"ids": [...], "times": [...]}``) instead of one per id:
    faust's per-key changelog path costs tens of microseconds per write, more than pricing the
    event. Recovery and standbys expand those messages back into one key per id.
    """

    def remember(self, event_ids: Sequence[str], times: Sequence[int], batch_key: str) -> None:
        """Store ids in the current message's partition and log them as one changelog message."""
        if not event_ids:
            return
        store = self.data
        for event_id, moment in zip(event_ids, times, strict=True):
            store[event_id] = moment  # the store, not the table: no per-key changelog write
        partition = faust.current_event().message.partition
        self.send_changelog(
            partition,
            key=batch_key,
            value={"ids": list(event_ids), "times": list(times)},
            key_serializer="json",
            value_serializer="json",
        )

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        """Expand batch messages from the changelog into one store entry per id."""
        self.data.apply_changelog_batch(
            list(self._expand(batch)), to_key=self._to_key, to_value=self._to_value
        )

    def _expand(self, batch: Iterable[EventT]) -> Iterable[Any]:
        encode_key = getattr(self.data, "_encode_key", None)
        encode_value = getattr(self.data, "_encode_value", None)
        for event in batch:
            message = event.message
            if message.value is None:
                continue
            doc = json.loads(message.value)
            for event_id, moment in zip(doc["ids"], doc["times"], strict=True):
                entry = SimpleNamespace(
                    tp=message.tp, offset=message.offset, partition=message.partition,
                    key=encode_key(event_id) if encode_key else event_id,
                    value=encode_value(moment) if encode_value else moment,
                )
                yield SimpleNamespace(key=event_id, value=moment, message=entry)


def define_event_id_table(app: faust.App, settings: Settings) -> EventIdTable:
    """Declare the dedup memory: event ids kept ``dedup_horizon_hours``.

    The local store expires ids (RocksDB TTL) and the changelog topic deletes them (``compact,delete``),
    so a producer retry or a re-ingest within the horizon is never counted twice while the state stays
    bounded.
    """
    horizon_s = int(settings.dedup_horizon_hours * 3600)
    options = {"ttl": horizon_s} if settings.store == "rocksdb" else None
    table = EventIdTable(
        app,
        name=EVENT_ID_TABLE,
        default=None,
        beacon=app.tables.beacon,
        # Untyped: changelog values are whole batches ({"ids": [...]}) while store values are ints.
        key_type=None,
        value_type=None,
        partitions=settings.topic_partitions,
        options=options,
        extra_topic_configs={"cleanup.policy": "compact,delete", "retention.ms": str(horizon_s * 1000)},
    )
    added: EventIdTable = app.tables.add(table)
    return added
