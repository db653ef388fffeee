"""Append notifications to a JSON-lines file (a default receiver; easy to tail, grep and test)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from alerting.notification import Notification
from alerting.receivers.base import DeliveryResult


def notification_json(notification: Notification) -> dict[str, object]:
    """Return the JSON form of a notification shared by the file and webhook receivers."""
    return {
        "id": notification.id,
        **notification.model_dump(mode="json", exclude={"thread_ref"}),
        "cost_impact_usd": notification.cost_impact_usd,
    }


class JsonlReceiver:
    """Append one JSON object per notification to ``path`` (parent folders are created)."""

    def __init__(self, name: str = "jsonl", *, path: Path) -> None:
        self.name = name
        self.path = path
        self._lock = threading.Lock()

    def deliver(self, notification: Notification) -> DeliveryResult:
        """Append the notification as one line."""
        line = json.dumps(notification_json(notification), sort_keys=True) + "\n"
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as out:
                    out.write(line)
        except OSError as error:
            return DeliveryResult.retry(f"cannot write {self.path}: {error.strerror}")
        return DeliveryResult.delivered()
