"""What every detector shares: the per-entity step protocol and open-finding bookkeeping.

A detector is a pure step over one entity's state: ``update(state, bucket) -> (state, findings)`` when
a bucket of that entity closes, and ``tick(state, now) -> (state, findings)`` when event time moves on
without data (a silent GPU, a session gone quiet). An open finding lives in ``state["open"][kind]`` so
a restarted worker neither loses it nor raises it twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from detectors.findings import Finding, Severity
from detectors.state import State, at

Step = tuple[State, list[Finding]]


class Detector(Protocol):
    """The per-entity step every detector offers (the stream keeps ``State`` in a table)."""

    kinds: tuple[str, ...]

    def new_state(self) -> State:
        """Return the state of an entity never seen before."""
        ...

    def update(self, state: State, bucket: Any) -> Step:
        """Fold one closed bucket of the entity into its state; return new findings."""
        ...

    def tick(self, state: State, now: float) -> Step:
        """Advance event time to ``now`` (epoch seconds) without data for the entity."""
        ...

    def expired(self, state: State, now: float) -> bool:
        """Return True once the entity has been quiet long enough to drop its state."""
        ...


def is_open(state: State, kind: str) -> bool:
    """Return True while ``kind`` has an open finding in ``state``."""
    return kind in state.get("open", {})


def open_finding(
    state: State,
    kind: str,
    entity: Mapping[str, str],
    *,
    started: float,
    detected: float,
    severity: Severity,
    summary: str,
    usd: float,
    usd_per_hour: float,
    evidence: dict[str, Any],
    labels: Mapping[str, str] | None = None,
) -> Finding:
    """Record an open finding in ``state`` and return its ``open`` value."""
    state.setdefault("open", {})[kind] = {
        "s": started,
        "d": detected,
        "u": detected,
        "sev": severity,
        "sum": summary,
        "usd": usd,
        "uph": usd_per_hour,
        "e": dict(entity),
        "l": dict(labels or {}),
    }
    return _finding(state["open"][kind], kind, "open", evidence)


def grow_finding(state: State, kind: str, *, usd: float, usd_per_hour: float) -> None:
    """Update the cost impact of the open ``kind`` finding (no output)."""
    record = state["open"][kind]
    record["usd"], record["uph"] = usd, usd_per_hour


def maybe_update(
    state: State, kind: str, now: float, every_s: float, evidence: dict[str, Any]
) -> list[Finding]:
    """Return an ``update`` finding at most every ``every_s`` seconds of event time while open."""
    record = state["open"][kind]
    if now - record["u"] < every_s:
        return []
    record["u"] = now
    return [_finding(record, kind, "update", evidence)]


def resolve_finding(
    state: State, kind: str, when: float, evidence: dict[str, Any] | None = None
) -> list[Finding]:
    """Close the open ``kind`` finding at event time ``when``; return its ``resolved`` value."""
    record = state.get("open", {}).pop(kind, None)
    if record is None:
        return []
    if not state["open"]:
        del state["open"]
    found = _finding(record, kind, "resolved", evidence or {})
    return [found.resolve(at(max(when, record["s"])))]


def _finding(record: dict[str, Any], kind: str, status: Any, evidence: dict[str, Any]) -> Finding:
    return Finding(
        kind=kind,
        entity=dict(record["e"]),
        state=status,
        severity=record["sev"],
        summary=record["sum"],
        started_at=at(record["s"]),
        detected_at=at(record["d"]),
        cost_impact_usd=round(record["usd"], 6),
        cost_impact_usd_per_hour=round(record["uph"], 6),
        evidence=evidence,
        labels=dict(record["l"]),
    )


def ew(mean: float, var: float, x: float, alpha: float) -> tuple[float, float]:
    """One step of an exponentially weighted mean and variance (West's incremental form).

    >>> ew(0.0, 0.0, 10.0, 0.5)
    (5.0, 25.0)
    """
    diff = x - mean
    incr = alpha * diff
    return mean + incr, (1.0 - alpha) * (var + diff * incr)
