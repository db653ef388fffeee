"""What a detector reports: a finding opens, updates while it grows, and resolves.

Detectors are pure: they take per-entity time buckets and return ``Finding`` values. The stream
shell turns findings into ``alerting.model.Alert`` records on the ``alerts`` topic. Every time on a
finding is an event time (from the data), never the wall clock, so a backtest measures delay.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

FindingState = Literal["open", "update", "resolved"]
Severity = Literal["critical", "error", "warning", "info"]

IDLE_GPU = "idle_gpu"
GPU_UNDERUSED = "gpu_underused"
TELEMETRY_GAP = "telemetry_gap"
TOKEN_RUNAWAY = "token_runaway"  # noqa: S105 (a finding kind, not a secret)
AGENT_LOOP = "agent_loop"
CONTEXT_BLOAT = "context_bloat"
MODEL_SWITCH = "model_switch"
SPEND_SPIKE = "spend_spike"
EGRESS_SPIKE = "egress_spike"
FINDING_KINDS = (
    IDLE_GPU,
    GPU_UNDERUSED,
    TELEMETRY_GAP,
    TOKEN_RUNAWAY,
    AGENT_LOOP,
    CONTEXT_BLOAT,
    MODEL_SWITCH,
    SPEND_SPIKE,
    EGRESS_SPIKE,
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One detector's verdict about one entity at one point in event time.

    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> f = Finding("idle_gpu", {"gpu": "g1"}, "open", "warning", "idle", t, t, cost_impact_usd=1.5)
    >>> f.resolve(t).state, Finding.from_dict(f.to_dict()) == f
    ('resolved', True)
    """

    kind: str
    entity: dict[str, str]
    state: FindingState
    severity: Severity
    summary: str
    started_at: datetime
    detected_at: datetime
    resolved_at: datetime | None = None
    cost_impact_usd: float = 0.0
    cost_impact_usd_per_hour: float = 0.0
    evidence: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def entity_id(self) -> str:
        """Return a stable text id of the entity (sorted ``key=value`` pairs)."""
        return ",".join(f"{k}={self.entity[k]}" for k in sorted(self.entity))

    def resolve(self, at: datetime, **changes: Any) -> Finding:
        """Return the resolved version of this finding, ended at event time ``at``."""
        return replace(self, state="resolved", resolved_at=at, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (times as ISO 8601 UTC strings)."""
        return {
            "kind": self.kind,
            "entity": dict(self.entity),
            "state": self.state,
            "severity": self.severity,
            "summary": self.summary,
            "started_at": self.started_at.astimezone(UTC).isoformat(),
            "detected_at": self.detected_at.astimezone(UTC).isoformat(),
            "resolved_at": self.resolved_at.astimezone(UTC).isoformat() if self.resolved_at else None,
            "cost_impact_usd": self.cost_impact_usd,
            "cost_impact_usd_per_hour": self.cost_impact_usd_per_hour,
            "evidence": dict(self.evidence),
            "labels": dict(self.labels),
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Finding:
        """Build a finding from ``to_dict`` output."""
        resolved = doc.get("resolved_at")
        return cls(
            kind=doc["kind"],
            entity=dict(doc["entity"]),
            state=doc["state"],
            severity=doc["severity"],
            summary=doc["summary"],
            started_at=datetime.fromisoformat(doc["started_at"]),
            detected_at=datetime.fromisoformat(doc["detected_at"]),
            resolved_at=datetime.fromisoformat(resolved) if resolved else None,
            cost_impact_usd=float(doc.get("cost_impact_usd", 0.0)),
            cost_impact_usd_per_hour=float(doc.get("cost_impact_usd_per_hour", 0.0)),
            evidence=dict(doc.get("evidence", {})),
            labels=dict(doc.get("labels", {})),
        )
