"""Build the configured receivers."""

from __future__ import annotations

from collections.abc import Callable

from alerting.config import (
    AlertingConfig,
    ConsoleReceiverConfig,
    JsonlReceiverConfig,
    PagerDutyReceiverConfig,
    RunbookReceiverConfig,
    SlackReceiverConfig,
    SlackWebhookReceiverConfig,
    WebhookReceiverConfig,
)
from alerting.receivers.base import Receiver
from alerting.receivers.console import ConsoleReceiver
from alerting.receivers.jsonl import JsonlReceiver
from alerting.receivers.pagerduty import PagerDutyReceiver
from alerting.receivers.runbook import ActionOutcome, PlannedAction, RunbookReceiver
from alerting.receivers.slack import SlackReceiver, SlackWebhookReceiver
from alerting.receivers.webhook import WebhookReceiver


def build_receivers(
    config: AlertingConfig,
    *,
    approver: Callable[[PlannedAction], bool] | None = None,
    on_outcome: Callable[[ActionOutcome], None] | None = None,
) -> dict[str, Receiver]:
    """Return one receiver per configured name (secrets were resolved when the config was validated)."""
    dash = config.dashboard_url
    built: dict[str, Receiver] = {}
    for name, rc in config.receivers.items():
        if isinstance(rc, ConsoleReceiverConfig):
            built[name] = ConsoleReceiver(name, dashboard_url=dash)
        elif isinstance(rc, JsonlReceiverConfig):
            built[name] = JsonlReceiver(name, path=rc.path)
        elif isinstance(rc, SlackReceiverConfig):
            assert rc.token is not None  # noqa: S101 - required by the config validator
            built[name] = SlackReceiver(
                name,
                token=rc.token,
                channel=rc.channel,
                base_url=rc.base_url,
                timeout_s=rc.timeout_s,
                dashboard_url=dash,
            )
        elif isinstance(rc, SlackWebhookReceiverConfig):
            assert rc.url is not None  # noqa: S101 - required by the config validator
            built[name] = SlackWebhookReceiver(name, url=rc.url, timeout_s=rc.timeout_s, dashboard_url=dash)
        elif isinstance(rc, PagerDutyReceiverConfig):
            assert rc.routing_key is not None  # noqa: S101 - required by the config validator
            built[name] = PagerDutyReceiver(
                name,
                routing_key=rc.routing_key,
                url=rc.url,
                severity_map=dict(rc.severity_map),
                timeout_s=rc.timeout_s,
                dashboard_url=dash,
                retrigger_on_update=rc.retrigger_on_update,
            )
        elif isinstance(rc, WebhookReceiverConfig):
            built[name] = WebhookReceiver(
                name,
                url=rc.url,
                secret=rc.secret,
                signature_header=rc.signature_header,
                headers=rc.headers,
                timeout_s=rc.timeout_s,
            )
        elif isinstance(rc, RunbookReceiverConfig):
            built[name] = RunbookReceiver(name, rc, approver=approver, on_outcome=on_outcome)
    return built
