"""Creates burnwatch's topics on the cluster (idempotent), with confluent-kafka's AdminClient."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

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
    wait_until_visible(admin, {spec.topic: spec.num_partitions for spec in missing}, timeout_s)
    return created


class TopicsNotVisible(RuntimeError):
    """Topics the cluster's metadata does not show yet, with all their partitions led."""


def wait_until_visible(
    admin: AdminClient,
    partitions: dict[str, int],
    timeout_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Wait until the cluster's metadata shows each topic with all its partitions led; False on timeout.

    Creating a topic returns once the controller has it; brokers learn of it a little later. A worker
    whose consumer group is formed in between is assigned none of its partitions, and its client only
    asks again at its next metadata refresh (aiokafka: every 5 minutes): on a first start against a new
    cluster it would sit idle that long. On timeout a warning names the topics still missing, and the
    caller goes on (the refresh will find them).
    """

    def check() -> None:
        topics = admin.list_topics(timeout=max(1.0, timeout_s)).topics
        missing = sorted(
            name for name, count in partitions.items()
            if name not in topics or topics[name].error is not None or len(topics[name].partitions) < count
            or any(partition.leader < 0 for partition in topics[name].partitions.values())
        )
        if missing:
            raise TopicsNotVisible(", ".join(missing))

    retrying = Retrying(retry=retry_if_exception_type(TopicsNotVisible), stop=stop_after_delay(timeout_s),
                        wait=wait_fixed(0.2), sleep=sleep, reraise=True)
    try:
        retrying(check)
    except TopicsNotVisible as error:
        log.warning("topics not yet in the cluster's metadata after %.0f s: %s", timeout_s, error)
        return False
    return True
