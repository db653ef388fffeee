"""The worker's state tables (RocksDB by default, with a changelog topic each)."""

from __future__ import annotations

import faust

from streams.settings import Settings


def define_event_id_table(app: faust.App, settings: Settings) -> faust.Table:
    """Event ids already priced, with their event time (epoch seconds): the dedup memory.

    Ids are kept ``dedup_horizon_hours``: the local store expires them (RocksDB TTL) and the changelog
    topic deletes them (``compact,delete``), so a producer retry or a re-ingest within the horizon is
    never counted twice while the state stays bounded.
    """
    horizon_s = int(settings.dedup_horizon_hours * 3600)
    options = {"ttl": horizon_s} if settings.store == "rocksdb" else None
    return app.Table(
        "event_time_by_event_id",
        default=None,
        key_type=str,
        value_type=int,
        partitions=settings.topic_partitions,
        options=options,
        extra_topic_configs={"cleanup.policy": "compact,delete", "retention.ms": str(horizon_s * 1000)},
    )
