"""PagerDuty Events API v2: ``trigger`` on firing, ``resolve`` at the end, by ``dedup_key``.

An incident is paged once: updates (new alerts, dollar growth, reminders) go to the Slack thread, not
to the pager, unless ``retrigger_on_update`` sends them as another ``trigger`` with the same
``dedup_key``. PagerDuty merges events with the same ``dedup_key`` into one incident, so a repeated
trigger after a restart is harmless. It answers 202 ``{status, message, dedup_key}``, 400 for a bad
event and 429 when the integration key sends too much (about 120 events per minute).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import SecretStr

from alerting.notification import Notification
from alerting.receivers.base import DeliveryResult, classify_http
from alerting.receivers.http import request
from alerting.render import (
    alert_line,
    dashboard_link,
    owner,
    runbook_links,
    since_text,
    title,
    top_contributors,
)

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
IDENTITY = {"critical": "critical", "error": "error", "warning": "warning", "info": "info"}


class PagerDutyReceiver:
    """Send Events API v2 events; the routing key goes only in the request's ``routing_key`` field."""

    def __init__(
        self,
        name: str,
        *,
        routing_key: SecretStr,
        url: str = EVENTS_URL,
        severity_map: dict[str, str] | None = None,
        timeout_s: float = 10.0,
        dashboard_url: str | None = None,
        retrigger_on_update: bool = False,
    ) -> None:
        self.name = name
        self.url = url
        self.retrigger_on_update = retrigger_on_update
        self.severity_map = dict(severity_map or IDENTITY)
        self.timeout_s = timeout_s
        self._routing_key = routing_key
        self._dashboard_url = dashboard_url

    def __repr__(self) -> str:
        return f"PagerDutyReceiver(name={self.name!r}, url={self.url!r}, routing_key='**********')"

    def takes(self, notification: Notification) -> bool:
        """Return whether ``notification`` becomes an event: firing and resolved, updates only if asked.

        >>> from datetime import datetime, timezone
        >>> t = datetime(2025, 1, 1, tzinfo=timezone.utc)
        >>> n = Notification(receiver="pd", key="k", epoch=t, sequence=2, transition="updated",
        ...                  severity="critical", group_labels={}, created_at=t)
        >>> key = SecretStr("key")
        >>> PagerDutyReceiver("pd", routing_key=key).takes(n)
        False
        >>> PagerDutyReceiver("pd", routing_key=key, retrigger_on_update=True).takes(n)
        True
        """
        return notification.transition != "updated" or self.retrigger_on_update

    def event(self, notification: Notification) -> dict[str, Any]:
        """Return the event without its routing key."""
        action = "resolve" if notification.transition == "resolved" else "trigger"
        event: dict[str, Any] = {"event_action": action, "dedup_key": notification.key}
        if action == "resolve":
            return event
        kinds = sorted({a.kind for a in notification.firing})
        links = [{"href": url, "text": "Runbook"} for url in runbook_links(notification)]
        dashboard = dashboard_link(notification, self._dashboard_url)
        if dashboard:
            links.append({"href": dashboard, "text": "Dashboard"})
        event |= {
            "payload": {
                "summary": title(notification)[:1024],
                "source": f"burnwatch/{owner(notification)}",
                "severity": self.severity_map.get(notification.severity, "error"),
                "timestamp": notification.since.isoformat(),
                "component": ",".join(kinds)[:255],
                "group": owner(notification),
                "class": kinds[0] if len(kinds) == 1 else "spend",
                "custom_details": {
                    "cost_impact_usd": notification.cost_impact_usd,
                    "owner": owner(notification),
                    "since": since_text(notification),
                    "firing": len(notification.firing),
                    "resolved": len(notification.resolved),
                    "top_contributors": [
                        {"name": n, "cost_usd": usd} for n, usd in top_contributors(notification)
                    ],
                    "alerts": [alert_line(a) for a in notification.firing[:20]],
                    "labels": notification.group_labels,
                },
            },
            "links": links,
            "client": "burnwatch",
        }
        if dashboard:
            event["client_url"] = dashboard
        return event

    def deliver(self, notification: Notification) -> DeliveryResult:
        """Enqueue one event (an update that ``takes`` declines is done without a request)."""
        if not self.takes(notification):
            return DeliveryResult.delivered(
                ref=notification.thread_ref, detail="update not sent: retrigger_on_update is off"
            )
        body = {"routing_key": self._routing_key.get_secret_value(), **self.event(notification)}
        resp = request(
            "POST", self.url, json.dumps(body).encode(), {"Content-Type": "application/json"}, self.timeout_s
        )
        answer = resp.json()
        message = str(answer.get("message", "")) if isinstance(answer, dict) else ""
        if resp.status == 400 and isinstance(answer, dict):
            message = f"{message} {answer.get('errors', '')}".strip()
        result = classify_http(resp.status, resp.headers, message or resp.error)
        if result.ok:
            dedup = (
                str(answer.get("dedup_key", notification.key))
                if isinstance(answer, dict)
                else notification.key
            )
            return DeliveryResult.delivered(ref={"dedup_key": dedup}, detail=message)
        return result
