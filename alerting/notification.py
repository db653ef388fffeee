"""What the policy hands to a receiver: one message about one alert group.

A group is the alerts of one route that share the route's ``group_by`` labels. Its ``key`` is stable
for as long as the group exists: the PagerDuty ``dedup_key``, the Slack thread key and the webhook
idempotency key. With ``group_by: ["..."]`` a group is one alert and its key is the alert fingerprint.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from alerting.model import Alert, Severity

Transition = Literal["firing", "updated", "resolved"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "error": 2, "critical": 3}


def highest(severities: list[Severity]) -> Severity:
    """Return the most severe of ``severities`` (``info`` for none).

    >>> highest(["warning", "critical", "info"])
    'critical'
    """
    return max(severities, key=SEVERITY_RANK.__getitem__, default="info")


class Notification(BaseModel):
    """One message for one receiver about one alert group.

    ``epoch`` is when the group's incident began (the earliest ``started_at`` in its first ``firing``
    notification, an event time, so a replay rebuilds it) and ``sequence`` counts notifications within
    it; with ``receiver`` and ``key`` they identify the message for ``SentLog``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    receiver: str
    key: str
    epoch: AwareDatetime
    sequence: int = Field(ge=1)
    transition: Transition
    repeat: bool = False
    severity: Severity
    group_labels: dict[str, str]
    firing: tuple[Alert, ...] = ()
    resolved: tuple[Alert, ...] = ()
    created_at: AwareDatetime
    # Filled by delivery from the SentLog: where the first message of this incident went (Slack ts).
    thread_ref: dict[str, str] | None = None

    @property
    def id(self) -> str:
        """Return the stable id of this message (the webhook ``Idempotency-Key``)."""
        return f"{self.receiver}:{self.key}:{self.epoch.isoformat()}:{self.sequence}"

    @property
    def alerts(self) -> tuple[Alert, ...]:
        """Return the firing alerts, then the resolved ones."""
        return self.firing + self.resolved

    @property
    def cost_impact_usd(self) -> float:
        """Return the dollar impact of the firing alerts (of all alerts once the group resolved)."""
        pool = self.firing or self.resolved
        return round(sum(a.cost_impact_usd for a in pool), 2)

    @property
    def since(self) -> datetime:
        """Return when the earliest alert in this message started (the incident's epoch if it has none)."""
        return min((a.started_at for a in self.alerts), default=self.epoch)
