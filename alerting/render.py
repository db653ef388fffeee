"""The words of a notification, shared by every receiver: what, owner, dollars, since, contributors, links."""

from __future__ import annotations

from string import Template
from urllib.parse import quote

from alerting.model import Alert
from alerting.notification import Notification

EMOJI = {
    "critical": ":rotating_light:",
    "error": ":red_circle:",
    "warning": ":warning:",
    "info": ":information_source:",
}


def owner(notification: Notification) -> str:
    """Return the owning team (``unowned`` when no alert names one)."""
    for alert in notification.alerts:
        team = alert.labels.get("team") or alert.entity.get("team")
        if team:
            return team
    return notification.group_labels.get("team") or "unowned"


def title(notification: Notification) -> str:
    """Return a one-line headline.

    >>> from datetime import datetime, timezone
    >>> t = datetime(2025, 1, 1, tzinfo=timezone.utc)
    >>> a = Alert.firing("idle_gpu", {"node": "n1"}, severity="warning", summary="GPU n1/3 idle 2 h",
    ...                  started_at=t, detected_at=t, labels={"team": "ml"}, cost_impact_usd=12.5)
    >>> n = Notification(receiver="r", key="k", epoch=t, sequence=1, transition="firing", severity="warning",
    ...                  group_labels={"team": "ml"}, firing=(a,), created_at=t)
    >>> title(n)
    '[WARNING] GPU n1/3 idle 2 h ($12.50, team ml)'
    """
    state = "RESOLVED" if notification.transition == "resolved" else notification.severity.upper()
    alerts = notification.firing or notification.resolved
    if len(alerts) == 1:
        what = alerts[0].summary
    else:
        kinds = sorted({a.kind for a in alerts})
        what = f"{len(alerts)} {'/'.join(kinds)} alerts"
    return f"[{state}] {what} (${notification.cost_impact_usd:,.2f}, team {owner(notification)})"


def top_contributors(notification: Notification, limit: int = 5) -> list[tuple[str, float]]:
    """Return up to ``limit`` (summary, dollars) pairs, largest first, including an alert's own evidence."""
    pairs: list[tuple[str, float]] = []
    alerts = notification.firing or notification.resolved
    if len(alerts) == 1:
        for item in alerts[0].evidence.get("top_contributors", [])[:limit]:
            if isinstance(item, dict) and "name" in item:
                pairs.append((str(item["name"]), float(item.get("cost_usd", 0.0))))
        if pairs:
            return pairs
    for alert in sorted(alerts, key=lambda a: -a.cost_impact_usd)[:limit]:
        pairs.append((alert.summary, alert.cost_impact_usd))
    return pairs


def runbook_links(notification: Notification) -> list[str]:
    """Return the distinct runbook URLs of the alerts, in order."""
    seen: dict[str, None] = {}
    for alert in notification.alerts:
        if alert.runbook_url:
            seen.setdefault(alert.runbook_url, None)
    return list(seen)


def dashboard_link(notification: Notification, template: str | None) -> str | None:
    """Fill a ``$label`` dashboard URL template from the group labels (values URL-quoted).

    >>> from datetime import datetime, timezone
    >>> t = datetime(2025, 1, 1, tzinfo=timezone.utc)
    >>> n = Notification(receiver="r", key="k", epoch=t, sequence=1, transition="firing", severity="info",
    ...                  group_labels={"team": "ml ops"}, created_at=t)
    >>> dashboard_link(n, "https://grafana.example/d/bw?var-team=$team&var-kind=$kind")
    'https://grafana.example/d/bw?var-team=ml%20ops&var-kind='
    """
    if not template:
        return None
    values = {"team": "", "env": "", "kind": "", **notification.group_labels, "key": notification.key}
    return Template(template).safe_substitute({k: quote(v, safe="") for k, v in values.items()})


def since_text(notification: Notification) -> str:
    """Return when the incident began, as ISO-8601 UTC."""
    return notification.since.strftime("%Y-%m-%d %H:%M:%S UTC")


def alert_line(alert: Alert) -> str:
    """Return a one-line description of one alert."""
    return f"{alert.kind} {alert.summary} (${alert.cost_impact_usd:,.2f}, since {alert.started_at:%H:%M} UTC)"


def plain_text(notification: Notification, dashboard_template: str | None = None) -> str:
    """Return the notification as a few lines of plain text (console, fallbacks, Slack's ``text``)."""
    lines = [title(notification), f"owner: {owner(notification)}; since {since_text(notification)}"]
    lines += [f"  firing: {alert_line(a)}" for a in notification.firing[:10]]
    lines += [f"  resolved: {alert_line(a)}" for a in notification.resolved[:10]]
    hidden = max(0, len(notification.firing) - 10) + max(0, len(notification.resolved) - 10)
    if hidden:
        lines.append(f"  ... and {hidden} more")
    links = runbook_links(notification)
    dashboard = dashboard_link(notification, dashboard_template)
    if links or dashboard:
        lines.append("  links: " + " ".join([*links, *([dashboard] if dashboard else [])]))
    return "\n".join(lines)
