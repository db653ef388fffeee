"""Creates burnwatch's topics on the cluster (idempotent), with confluent-kafka's AdminClient."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams.names import (
    ALERT_SILENCES,
    ALERTS,
    ALERTS_BY_TEAM,
    ANOMALIES,
    BUDGET_BURN,
    BUDGET_CHARGES,
    COSTS_PRICED,
    DETECTOR_INPUTS,
    SPEND_WINDOWS,
    USAGE_DLQ,
    USAGE_TOPICS,
)
from streams.settings import Settings

log = logging.getLogger("burnwatch.admin")

DLQ_RETENTION_MS = 14 * 24 * 3600 * 1000


def topic_specs(settings: Settings) -> list[NewTopic]:
    """Return the topics burnwatch owns, with their partitions and configs."""
    common = {"num_partitions": settings.topic_partitions,
              "replication_factor": settings.topic_replication_factor}
    specs = [NewTopic(settings.topic(name), **common) for name in USAGE_TOPICS]
    specs.append(NewTopic(settings.topic(COSTS_PRICED), **common))
    dlq_config = {"retention.ms": str(DLQ_RETENTION_MS)}
    specs.append(NewTopic(settings.topic(USAGE_DLQ), config=dlq_config, **common))
    specs.append(NewTopic(settings.topic(BUDGET_CHARGES), **common))
    # The live budget state other services follow: the latest record per budget id is kept.
    specs.append(NewTopic(settings.topic(BUDGET_BURN), config={"cleanup.policy": "compact"}, **common))
    specs.append(NewTopic(settings.topic(ALERTS), config=dlq_config, **common))
    # Detector inputs repartitioned by entity group (internal), and the findings (public record).
    specs.append(NewTopic(settings.topic(DETECTOR_INPUTS), config=dlq_config, **common))
    specs.append(NewTopic(settings.topic(ANOMALIES), config=dlq_config, **common))
    # The notifier's repartition of alerts by team, and its self-addressed ticks.
    specs.append(NewTopic(settings.topic(ALERTS_BY_TEAM), config=dlq_config, **common))
    # Silences: few, written by `burnwatch silence`; compaction keeps the latest version of each id.
    specs.append(NewTopic(settings.topic(ALERT_SILENCES), num_partitions=1,
                          replication_factor=settings.topic_replication_factor,
                          config={"cleanup.policy": "compact"}))
    # Spend per scope and window, one key per (window, partition): the latest value is the truth.
    specs.append(NewTopic(settings.topic(SPEND_WINDOWS), config={"cleanup.policy": "compact"}, **common))
    return specs


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create any missing burnwatch topic; return the names created."""
    admin = AdminClient(settings.librdkafka_config())
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [spec for spec in topic_specs(settings) if spec.topic not in existing]
    if not missing:
        return []
    created = []
    for name, future in admin.create_topics(missing, request_timeout=timeout_s).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    log.info("created topics %s", ", ".join(created) or "(none)")
    return created
