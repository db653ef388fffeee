"""The worker's state tables (RocksDB by default, with a changelog topic each)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import faust
import rocksdict
from faust.types import EventT
from pydantic_core import from_json, to_json

from streams.settings import Settings

EVENT_ID_TABLE = "event_time_by_event_id"
BUDGET_LEDGER_TABLE = "budget_charge_by_ledger_key"
BUDGET_ALERTS_TABLE = "budget_alert_state_by_budget_id"
DETECTOR_TABLE = "detector_state_by_key"
SPEND_TABLE = "spend_by_window_key"
LEDGER_HORIZON_S = 100 * 24 * 3600  # a quarter plus lateness: the longest budget period


class BatchLoggedTable(faust.Table):  # type: ignore[misc]  # faust ships no type information
    """A table written in batches: one store key per entry, one changelog message per batch.

    The changelog message is ``{"items": [[key, value], ...]}``.

    faust's per-key changelog path costs tens of microseconds per write, more than pricing an event,
    so tables written once per event use ``put_batch``. Recovery and standbys expand each batch
    message back into one store key per entry. A batch may repeat entries the store already holds:
    re-logging them keeps the changelog complete after a crash that left the local store ahead of it.
    """

    def contains(self, key: str, partition: int | None = None) -> bool:
        """Whether ``key`` is stored in ``partition`` (default: the current message's partition)."""
        return self.contains_many([key], partition)[0]

    def contains_many(self, keys: Sequence[str], partition: int | None = None) -> list[bool]:
        """Which of ``keys`` are stored in ``partition`` (default: the current message's): one store read."""
        store = self.data
        if getattr(store, "_dbs", None) is None:  # memory store: a plain dict
            return [key in store for key in keys]
        if partition is None:
            partition = faust.current_event().message.partition
        return stored_keys(store._db_for_partition(partition), keys)

    def put_batch(
        self, items: Sequence[tuple[str, Any]], batch_key: str, partition: int | None = None
    ) -> asyncio.Future[Any] | None:
        """Store ``items`` in ``partition`` (default: the current message's) and log them as one message.

        A ``bytes`` value is JSON already (the detector kernel writes some entries itself) and is stored as
        it is. Return the changelog send's future (None when there is nothing to write): an agent whose
        input offsets are committed after it need not wait (faust flushes the producer before it
        commits), but a write whose inputs are not a message of its own must be acknowledged before
        what depends on it is (the detectors' in-place steps, ``streams/detector_agents.py``).
        """
        if not items:
            return None
        store = self.data
        if partition is None:
            partition = faust.current_event().message.partition
        encoded = encode_entries(items)
        if getattr(store, "_dbs", None) is None:  # memory store: a decoded copy, as RocksDB would give back
            for (key, _), (_, value) in zip(items, encoded, strict=True):
                store[key] = from_json(value)
                store._key_partition[key] = partition
        else:
            write_entries(store._db_for_partition(partition), encoded)
        sent: asyncio.Future[Any] = self.send_changelog(
            partition, key=to_json(batch_key), value=batch_message(encoded),
            key_serializer="raw", value_serializer="raw",
        )
        return sent

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        """Expand batch messages from the changelog into one store entry per item."""
        self.data.apply_changelog_batch(
            list(self._expand(batch)), to_key=self._to_key, to_value=self._to_value
        )

    def _expand(self, batch: Iterable[EventT]) -> Iterator[Any]:
        encode = to_json if getattr(self.data, "_dbs", None) is not None else None
        for event in batch:
            message = event.message
            if message.value is None:
                continue
            for key, value in from_json(message.value)["items"]:
                entry = SimpleNamespace(
                    tp=message.tp, offset=message.offset, partition=message.partition,
                    key=encode(key) if encode else key,
                    value=encode(value) if encode else value,
                )
                yield SimpleNamespace(key=key, value=value, message=entry)

    def partition_items(self, partitions: Iterable[int], prefix: str = "") -> Iterator[tuple[str, Any]]:
        """Yield the decoded ``(key, value)`` entries of the given partitions from the local store.

        With ``prefix``, only keys that start with it, read by seeking to it (keys are JSON strings,
        stored in order), so a small part of a large table is read without scanning the rest.
        """
        wanted = set(partitions)
        store = self.data
        dbs = getattr(store, "_dbs", None)
        if dbs is None:  # memory store: plain dict plus key -> partition
            for key, value in list(store.data.items()):
                if store._key_partition.get(key) in wanted and str(key).startswith(prefix):
                    yield key, value
            return
        if prefix:
            start = to_json(prefix)[:-1]  # the opening quote and the prefix, without the closing quote
            for partition in wanted:
                for raw_key, raw_value in store._db_for_partition(partition).items(from_key=start):
                    if not raw_key.startswith(start):
                        break
                    yield from_json(raw_key), from_json(raw_value)
            return
        for partition in wanted:
            # _visible_items skips faust's own bookkeeping key (the persisted changelog offset)
            for raw_key, raw_value in store._visible_items(store._db_for_partition(partition)):
                yield store._decode_key(raw_key), store._decode_value(raw_value)


def _batch_logged(app: faust.App, settings: Settings, name: str, horizon_s: int) -> BatchLoggedTable:
    table = BatchLoggedTable(
        app,
        name=name,
        default=None,
        beacon=app.tables.beacon,
        # Untyped: changelog values are whole batches while store values are the entries' values.
        key_type=None,
        value_type=None,
        partitions=settings.topic_partitions,
        options={"ttl": horizon_s} if settings.store == "rocksdb" else None,
        extra_topic_configs={"cleanup.policy": "compact,delete", "retention.ms": str(horizon_s * 1000)},
    )
    added: BatchLoggedTable = app.tables.add(table)
    return added


def define_event_id_table(app: faust.App, settings: Settings) -> BatchLoggedTable:
    """Declare the dedup memory: event id -> event time (epoch s), kept ``dedup_horizon_hours``.

    The local store expires ids (RocksDB TTL) and the changelog topic deletes them (``compact,delete``),
    so a producer retry or a re-ingest within the horizon is never counted twice while the state stays
    bounded.
    """
    return _batch_logged(app, settings, EVENT_ID_TABLE, int(settings.dedup_horizon_hours * 3600))


def define_budget_ledger_table(app: faust.App, settings: Settings) -> BatchLoggedTable:
    """Declare the budget ledger: ``<budget id>|<charge id>`` -> ``[charge, event, time ms, usd]``.

    It is the source of truth for budget totals: a charge is counted once per budget because its key
    is written once, and a worker rebuilds each budget's running state from it after a restart or a
    rebalance.
    """
    return _batch_logged(app, settings, BUDGET_LEDGER_TABLE, LEDGER_HORIZON_S)


def define_detector_table(app: faust.App, settings: Settings) -> BatchLoggedTable:
    """Declare the detectors' state: seen inputs, entity states, peers and marks, by key (``detector_feed``).

    Kept ``dedup_horizon_hours``, like the event ids: an input repeated within it is dropped, and an
    entity quiet for longer starts over (the detectors expire quiet entities sooner).
    """
    return _batch_logged(app, settings, DETECTOR_TABLE, int(settings.dedup_horizon_hours * 3600))


def define_budget_alert_table(app: faust.App, settings: Settings) -> faust.Table:
    """Declare budget id -> the alert bookkeeping of its state (thresholds fired, last record sent).

    Written only by ``track_budgets``, in the partition of the ``budget.charges`` batch it is counting
    (the budget's own partition). It was placed by the producer's partitioner once, and that path asks
    aiokafka for the changelog topic's partitions without waiting for metadata: when the producer's
    metadata covered only the topics it had sent to, the write raised ``TypeError`` and crashed the agent.
    """
    return app.Table(
        BUDGET_ALERTS_TABLE,
        default=None,
        key_type=str,
        value_type=None,
        partitions=settings.topic_partitions,
    )


def define_spend_table(app: faust.App, settings: Settings) -> BatchLoggedTable:
    """Declare the spend tables: ``c|<charge id>`` marks and ``w|...``/``late|...`` window values.

    Marks and window values of one ``costs.priced`` message go in one changelog message, so a crash
    can never leave a charge marked as counted without its windows, or the reverse. Kept a day plus
    the allowed lateness at least (an open day window must survive a restart), and no less than the
    dedup horizon (a repeated charge must still be recognised).
    """
    horizon_s = max(settings.dedup_horizon_hours * 3600, 86_400 + settings.spend_lateness_hours * 3600 + 3600)
    return _batch_logged(app, settings, SPEND_TABLE, int(horizon_s))


def stored_keys(db: rocksdict.Rdict, keys: Sequence[str]) -> list[bool]:
    """Which of ``keys`` a raw-mode RocksDB of JSON-encoded keys holds: one multi-get."""
    return [value is not None for value in db.get([to_json(key) for key in keys])]


def write_entries(db: rocksdict.Rdict, encoded: Sequence[tuple[bytes, bytes]]) -> None:
    """Write encoded entries (``encode_entries``) to a raw-mode RocksDB in one write."""
    batch = rocksdict.WriteBatch(raw_mode=True)
    for key_json, value_json in encoded:
        batch.put(key_json, value_json)
    db.write(batch)


def encode_entries(items: Sequence[tuple[str, Any]]) -> list[tuple[bytes, bytes]]:
    """Return each entry's key and value as JSON (as faust reads them), once for the store and the changelog.

    A ``bytes`` value is JSON already and is kept as it is.

    >>> encode_entries([("a", {"x": 1.5}), ("b", b'{"y":2}'), ("c", None)])
    [(b'"a"', b'{"x":1.5}'), (b'"b"', b'{"y":2}'), (b'"c"', b'null')]
    """
    return [(to_json(key), value if type(value) is bytes else to_json(value)) for key, value in items]


def batch_message(encoded: Sequence[tuple[bytes, bytes]]) -> bytes:
    """Return the changelog value of a batch from its entries' JSON: ``to_json({"items": items})``.

    >>> items = [("a", {"x": [1, 2.5, None]}), ("b", None)]
    >>> batch_message([(to_json(k), to_json(v)) for k, v in items]) == to_json({"items": items})
    True
    >>> batch_message([])
    b'{"items":[]}'
    """
    parts = [b'{"items":[']
    for key_json, value_json in encoded:  # one join copies each entry once (a log entry can be 500 kB)
        parts += (b"[", key_json, b",", value_json, b"],")
    if encoded:
        parts[-1] = b"]"
    parts.append(b"]}")
    return b"".join(parts)
