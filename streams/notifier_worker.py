"""Assembles ``burnwatch notifier``: its own faust app, topics, tables, agents, dispatcher and pages.

The notifier is its own process and consumer group (app id ``<BURNWATCH_APP_ID>-notifier``): a
receiver that is slow or down, or a Slack outage, never shares an event loop with pricing, and a
pricing worker's rebalance never pauses paging. Its tables use the memory store: they hold open groups,
undelivered notifications and sent records, a few kilobytes per incident, restored from their
compacted changelogs at start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from alerting.config import AlertingConfig, load_config, parse_config
from alerting.delivery import Dispatcher, RetryPolicy
from alerting.policy import Policy
from alerting.receivers.factory import build_receivers
from streams.app import create_app
from streams.core.allocation import Allocator, load_allocation
from streams.metrics import CollectorTimer, WorkerMetrics
from streams.names import ALERTS, ALERTS_BY_TEAM
from streams.notifier_agents import (
    LiveNotifier,
    NotifierTables,
    TableSentLog,
    define_notifier_tables,
    health,
    outbox_hook,
    register_notifier_agents,
    sync_metrics,
)
from streams.notifier_silences import SilenceFeed
from streams.settings import Settings

APP_SUFFIX = "-notifier"


@dataclass
class Notifier:
    """Everything one notifier process runs."""

    app: faust.App
    config: AlertingConfig
    policy: Policy
    dispatcher: Dispatcher
    tables: NotifierTables
    live: LiveNotifier
    silences: SilenceFeed
    metrics: WorkerMetrics
    copied: dict[tuple[str, str], int] = field(default_factory=dict)


def notifier_settings(settings: Settings) -> Settings:
    """Return the settings of the notifier's faust app: its own app id, web port and the memory store."""
    return settings.model_copy(update={
        "app_id": settings.app_id + APP_SUFFIX, "web_port": settings.notifier_web_port, "store": "memory",
    })


def load_alerting(settings: Settings) -> AlertingConfig:
    """Read ``BURNWATCH_ALERTING_PATH`` (its ``alerting:`` section), or the defaults: console and JSONL.

    The default JSONL file is ``<BURNWATCH_DATA_DIR>/notifications.jsonl``. Raises
    ``AlertingConfigError`` naming every bad field.
    """
    if settings.alerting_path is not None:
        return load_config(settings.alerting_path)
    return parse_config({"receivers": {
        "console": {"type": "console"},
        "jsonl": {"type": "jsonl", "path": str(settings.data_dir / "notifications.jsonl")},
    }})


def build_notifier(settings: Settings) -> Notifier:
    """Build the notifier (nothing connects until it starts; ``silences.start()`` follows the topic)."""
    config = load_alerting(settings)
    allocator = Allocator(load_allocation(settings.allocation_path))  # a bad mapping stops start-up
    policy = Policy(config)
    own = notifier_settings(settings)
    metrics = WorkerMetrics()
    CollectorTimer(metrics.gc_cpu).install()
    app = create_app(own, metrics)
    raw: dict[str, Any] = {
        "key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw",
    }
    alerts_topic = app.topic(settings.topic(ALERTS), **raw)
    by_team_topic = app.topic(settings.topic(ALERTS_BY_TEAM), **raw)
    tables = define_notifier_tables(app, settings.topic_partitions)
    live = LiveNotifier()
    dispatcher = Dispatcher(
        build_receivers(config),
        sent_log=TableSentLog(tables.sent, live),
        retry=RetryPolicy.from_config(config.delivery),
        fallback=config.delivery.fallback_receiver,
        on_result=outbox_hook(tables, live),
    )
    silences = SilenceFeed(settings)
    notifier = Notifier(app, config, policy, dispatcher, tables, live, silences, metrics)
    register_notifier_agents(
        app, policy, dispatcher, tables, live, alerts_topic, by_team_topic, silences, metrics, allocator
    )
    for name in dispatcher.receivers:  # every receiver's series exist from the start, at zero
        for counter in (metrics.notifications_sent, metrics.notification_retries,
                        metrics.notifications_failed, metrics.notifications_fallback,
                        metrics.notifications_duplicate):
            counter.labels(name)

    @app.timer(1.0, on_leader=False)
    async def copy_metrics() -> None:
        sync_metrics(dispatcher, live, silences, metrics, notifier.copied)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        sync_metrics(dispatcher, live, silences, metrics, notifier.copied)
        return web.bytes(generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/health")
    async def health_page(web: Any, request: Any) -> Any:
        body, status = health(app, live)
        return web.json(body, status=status)

    return notifier
