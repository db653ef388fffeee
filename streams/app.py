"""Builds the faust App from settings, and nothing else."""

from __future__ import annotations

import faust
from aiokafka.helpers import create_ssl_context

from streams import faust_fixes, faust_reread, rocksdb_wal
from streams.metrics import WorkerMetrics
from streams.settings import Settings

faust_fixes.apply()
faust_reread.apply()
rocksdb_wal.apply()

MAX_MESSAGE_BYTES_ON_WIRE = 16 * 1024 * 1024


def _credentials(settings: Settings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    ssl_context = None
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        ssl_context = create_ssl_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
            certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
            keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        )
    if settings.kafka_sasl_mechanism:
        password = settings.kafka_sasl_password
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=password.get_secret_value() if password else None,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=ssl_context,
        )
    if ssl_context is not None:
        return faust.SSLCredentials(ssl_context)
    return None


def create_app(settings: Settings, metrics: WorkerMetrics | None = None) -> faust.App:
    """Return a faust App configured from ``settings`` (agents are added by ``streams.worker``).

    ``metrics`` count the app's re-reads (``faust_reread.install_gap_repair``).
    """
    brokers = [f"kafka://{host.strip()}" for host in settings.kafka_bootstrap_servers.split(",")]
    datadir = settings.data_dir / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    app = faust.App(
        settings.app_id,
        broker=brokers,
        broker_credentials=_credentials(settings),
        store="rocksdb://" if settings.store == "rocksdb" else "memory://",
        # One folder per app id: local tables hold changelog offsets of that app's topics only.
        datadir=str(datadir),
        autodiscover=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        # At-least-once plus dedup by event id. faust's exactly_once mode lost events after a SIGKILL
        # in our crash test (faust-streaming 0.15.3, aiokafka 0.14), so it is not offered.
        processing_guarantee="at_least_once",
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_enabled=True,
        producer_max_request_size=MAX_MESSAGE_BYTES_ON_WIRE,
        producer_compression_type=None if (codec := settings.kafka_compression) == "none" else codec,
        producer_acks=-1,
        consumer_max_fetch_size=MAX_MESSAGE_BYTES_ON_WIRE,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_session_timeout_s / 3,
        stream_wait_empty=False,
    )
    faust_reread.install_gap_repair(app, metrics)
    return app
