"""The worker's Kafka topics. Values are raw bytes: agents validate whole batches themselves."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from streams.names import (
    ALERTS,
    ANOMALIES,
    BUDGET_BURN,
    BUDGET_CHARGES,
    COSTS_PRICED,
    DETECTOR_INPUTS,
    SPEND_WINDOWS,
    USAGE_DLQ,
    USAGE_GPU,
    USAGE_LLM,
    USAGE_STORAGE,
)
from streams.settings import Settings


@dataclass(frozen=True)
class Topics:
    """The topics one worker reads and writes."""

    usage_topic: faust.TopicT
    costs_priced_topic: faust.TopicT
    usage_dlq_topic: faust.TopicT
    budget_charges_topic: faust.TopicT
    budget_burn_topic: faust.TopicT
    alerts_topic: faust.TopicT
    detector_inputs_topic: faust.TopicT
    anomalies_topic: faust.TopicT
    spend_windows_topic: faust.TopicT


def define_topics(app: faust.App, settings: Settings) -> Topics:
    """Declare the worker's topics on ``app`` (names carry the configured prefix)."""
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    return Topics(
        usage_topic=app.topic(
            settings.topic(USAGE_GPU), settings.topic(USAGE_LLM), settings.topic(USAGE_STORAGE), **raw
        ),
        costs_priced_topic=app.topic(settings.topic(COSTS_PRICED), **raw),
        usage_dlq_topic=app.topic(settings.topic(USAGE_DLQ), **raw),
        budget_charges_topic=app.topic(settings.topic(BUDGET_CHARGES), **raw),
        budget_burn_topic=app.topic(settings.topic(BUDGET_BURN), **raw),
        alerts_topic=app.topic(settings.topic(ALERTS), **raw),
        detector_inputs_topic=app.topic(settings.topic(DETECTOR_INPUTS), **raw),
        anomalies_topic=app.topic(settings.topic(ANOMALIES), **raw),
        spend_windows_topic=app.topic(settings.topic(SPEND_WINDOWS), **raw),
    )
