"""Print notifications to the terminal (a default receiver, so the demo needs no accounts)."""

from __future__ import annotations

from typing import TextIO

from rich.console import Console
from rich.markup import escape

from alerting.notification import Notification
from alerting.receivers.base import DeliveryResult
from alerting.render import plain_text

STYLE = {"critical": "bold red", "error": "red", "warning": "yellow", "info": "cyan"}


class ConsoleReceiver:
    """Write each notification as a few coloured lines to ``stream`` (stdout by default)."""

    def __init__(
        self, name: str = "console", *, stream: TextIO | None = None, dashboard_url: str | None = None
    ) -> None:
        self.name = name
        self._console = Console(file=stream, highlight=False, soft_wrap=True)
        self._dashboard_url = dashboard_url

    def deliver(self, notification: Notification) -> DeliveryResult:
        """Print the notification."""
        style = "green" if notification.transition == "resolved" else STYLE[notification.severity]
        text = plain_text(notification, self._dashboard_url)
        head, _, rest = text.partition("\n")
        self._console.print(f"[{style}]{escape(head)}[/]")
        if rest:
            self._console.print(escape(rest))
        return DeliveryResult.delivered()
