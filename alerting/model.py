"""The alert record: the public shape on the ``alerts`` topic (key: fingerprint).

Budget crossings and detector findings both become ``Alert`` records; the notifier routes them to
receivers. Changing a field is a version bump (``schema_version``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

Severity = Literal["critical", "error", "warning", "info"]
Status = Literal["firing", "resolved"]
SCHEMA_VERSION = 1

ALERT_KINDS = (
    "budget_threshold",
    "budget_forecast",
    "idle_gpu",
    "gpu_underused",
    "telemetry_gap",
    "token_runaway",
    "agent_loop",
    "context_bloat",
    "model_switch",
    "spend_spike",
    "egress_spike",
)


def fingerprint(kind: str, entity: Mapping[str, str]) -> str:
    """Return the stable id of one (kind, entity): the PagerDuty dedup_key and the Slack thread key.

    >>> a = fingerprint("idle_gpu", {"node": "n1", "gpu": "3"})
    >>> a == fingerprint("idle_gpu", {"gpu": "3", "node": "n1"})
    True
    >>> len(fingerprint("idle_gpu", {"node": "n1"}))
    24
    """
    canonical = kind + "|" + "|".join(f"{k}={entity[k]}" for k in sorted(entity))
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


class Alert(BaseModel):
    """One alert state change. Times are event times (when, in the data, it began, was seen, ended)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    fingerprint: str
    kind: str
    status: Status
    severity: Severity
    entity: dict[str, str]
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str
    started_at: AwareDatetime
    detected_at: AwareDatetime
    resolved_at: AwareDatetime | None = None
    cost_impact_usd: float = 0.0
    evidence: dict[str, Any] = Field(default_factory=dict)
    runbook_url: str | None = None

    @classmethod
    def firing(
        cls,
        kind: str,
        entity: Mapping[str, str],
        *,
        severity: Severity,
        summary: str,
        started_at: datetime,
        detected_at: datetime,
        **fields: Any,
    ) -> Alert:
        """Build a firing alert with its fingerprint computed from ``kind`` and ``entity``."""
        return cls(
            fingerprint=fingerprint(kind, entity), kind=kind, status="firing", severity=severity,
            entity=dict(entity), summary=summary, started_at=started_at, detected_at=detected_at, **fields,
        )

    def resolve(self, at: datetime, **changes: Any) -> Alert:
        """Return the resolved version of this alert."""
        return self.model_copy(update={"status": "resolved", "resolved_at": at, **changes})
