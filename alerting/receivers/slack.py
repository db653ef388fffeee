"""Slack receivers: a bot token (threads) and an incoming webhook (plain messages).

The bot-token receiver posts one message per incident, replies in its thread with updates and edits
the message on resolve; the incoming-webhook receiver posts one message per notification.
"""

from __future__ import annotations

import logging
import math
import urllib.error
from typing import Any

from pydantic import SecretStr
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.webhook import WebhookClient

from alerting.notification import Notification
from alerting.receivers.base import DeliveryResult, classify_http, retry_after_seconds
from alerting.render import (
    EMOJI,
    dashboard_link,
    owner,
    runbook_links,
    since_text,
    title,
    top_contributors,
)

# slack-sdk logs request bodies at DEBUG; keep its loggers quiet whatever the root level is.
_QUIET = logging.getLogger("burnwatch.alerting.slack_sdk")
_QUIET.setLevel(logging.WARNING)
_PERMANENT = {
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "invalid_blocks",
    "msg_too_long",
    "missing_scope",
}


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def blocks(notification: Notification, dashboard_template: str | None = None) -> list[dict[str, Any]]:
    """Return the Block Kit message: what, owner, dollar impact, since when, top contributors, links."""
    resolved = notification.transition == "resolved"
    emoji = ":white_check_mark:" if resolved else EMOJI[notification.severity]
    head = f"{emoji} {title(notification)}"
    if notification.transition == "updated":
        head = f"{emoji} update: {len(notification.firing)} firing, {len(notification.resolved)} resolved"
        if notification.repeat:
            head = f"{emoji} still firing: {len(notification.firing)} alerts"
    out: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": head[:150], "emoji": True}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*What*\n{_esc(title(notification))}"},
                {"type": "mrkdwn", "text": f"*Owner*\n{_esc(owner(notification))}"},
                {"type": "mrkdwn", "text": f"*Dollar impact*\n${notification.cost_impact_usd:,.2f}"},
                {"type": "mrkdwn", "text": f"*Since*\n{since_text(notification)}"},
            ],
        },
    ]
    contributors = top_contributors(notification)
    if contributors:
        lines = "\n".join(f"• {_esc(name)}: ${usd:,.2f}" for name, usd in contributors)
        out.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Top contributors*\n{lines}"[:3000]}}
        )
    links = [f"<{url}|Runbook>" for url in runbook_links(notification)[:3]]
    dashboard = dashboard_link(notification, dashboard_template)
    if dashboard:
        links.append(f"<{dashboard}|Dashboard>")
    if links:
        out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(links)}]})
    out.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"burnwatch · {notification.severity} · key `{notification.key}`"}
            ],
        }
    )
    return out


class SlackReceiver:
    """Post with ``chat.postMessage``, reply in the incident's thread, ``chat.update`` it on resolve."""

    def __init__(
        self,
        name: str,
        *,
        token: SecretStr,
        channel: str,
        base_url: str = "https://slack.com/api/",
        timeout_s: float = 10.0,
        dashboard_url: str | None = None,
    ) -> None:
        self.name = name
        self.channel = channel
        self._dashboard_url = dashboard_url
        # No slack-sdk retry handlers: alerting.delivery retries, with one policy for every receiver.
        self._client = WebClient(
            token=token.get_secret_value(),
            base_url=base_url,
            timeout=max(1, math.ceil(timeout_s)),
            retry_handlers=[],
            logger=_QUIET,
        )

    def __repr__(self) -> str:
        return f"SlackReceiver(name={self.name!r}, channel={self.channel!r}, token='**********')"

    def deliver(self, notification: Notification) -> DeliveryResult:
        """Post, reply in the thread, or edit the first message, depending on the transition."""
        ref = notification.thread_ref
        text = title(notification)
        body = blocks(notification, self._dashboard_url)
        try:
            if ref is None or "ts" not in ref:
                resp = self._client.chat_postMessage(
                    channel=self.channel, text=text, blocks=body, unfurl_links=False
                )
                return DeliveryResult.delivered(ref={"channel": str(resp["channel"]), "ts": str(resp["ts"])})
            if notification.transition == "resolved":
                self._client.chat_update(channel=ref["channel"], ts=ref["ts"], text=text, blocks=body)
            else:
                self._client.chat_postMessage(
                    channel=ref["channel"], thread_ts=ref["ts"], text=text, blocks=body, unfurl_links=False
                )
            return DeliveryResult.delivered(ref=ref)
        except SlackApiError as error:
            status = error.response.status_code
            code = str(error.response.get("error", "")) if isinstance(error.response.data, dict) else ""
            headers = {k: str(v) for k, v in (error.response.headers or {}).items()}
            if status == 429 or code == "ratelimited":
                return DeliveryResult.retry(
                    f"slack rate limited ({code or status})", retry_after_seconds(headers)
                )
            if status >= 500 or code in (
                "internal_error",
                "fatal_error",
                "service_unavailable",
                "request_timeout",
            ):
                return DeliveryResult.retry(f"slack {status} {code}".strip())
            if code in _PERMANENT:
                return DeliveryResult.failed(f"slack refused: {code}")
            return DeliveryResult.failed(f"slack error {status} {code}".strip())
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, SlackRequestError) as error:
            return DeliveryResult.retry(f"slack unreachable: {type(error).__name__}")


class SlackWebhookReceiver:
    """Post each notification to a Slack incoming webhook (the URL itself is the secret)."""

    def __init__(
        self, name: str, *, url: SecretStr, timeout_s: float = 10.0, dashboard_url: str | None = None
    ) -> None:
        self.name = name
        self._dashboard_url = dashboard_url
        self._client = WebhookClient(
            url.get_secret_value(), timeout=max(1, math.ceil(timeout_s)), retry_handlers=[], logger=_QUIET
        )

    def __repr__(self) -> str:
        return f"SlackWebhookReceiver(name={self.name!r}, url='**********')"

    def deliver(self, notification: Notification) -> DeliveryResult:
        """Send one message."""
        try:
            resp = self._client.send(
                text=title(notification), blocks=blocks(notification, self._dashboard_url)
            )
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
            return DeliveryResult.retry(f"slack webhook unreachable: {type(error).__name__}")
        headers = {k: str(v) for k, v in (resp.headers or {}).items()}
        return classify_http(resp.status_code, headers, resp.body if resp.status_code >= 400 else "")
