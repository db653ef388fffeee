"""What every detector shares: the per-entity step protocol and open-finding bookkeeping.

A detector is a pure step over one entity's state: ``update(state, bucket) -> (state, findings)`` when
a bucket of that entity closes, and ``tick(state, now) -> (state, findings)`` when event time moves on
without data (a silent GPU, a session gone quiet). An open finding lives in ``state["open"][kind]`` so
a restarted worker neither loses it nor raises it twice.
"""

from __future__ import annotations

import math
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
    """Record an open finding in ``state`` and return its ``open`` value.

    This and the other finding helpers change ``state`` itself, never the containers it shares with
    the step's input state (a step copies its state shallowly): the open findings are copied on write.
    """
    opened = state["open"] = dict(state.get("open", {}))
    opened[kind] = {
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
    record = _own_record(state, kind)
    record["usd"], record["uph"] = usd, usd_per_hour


def maybe_update(
    state: State, kind: str, now: float, every_s: float, evidence: dict[str, Any]
) -> list[Finding]:
    """Return an ``update`` finding at most every ``every_s`` seconds of event time while open."""
    if now - state["open"][kind]["u"] < every_s:
        return []
    record = _own_record(state, kind)
    record["u"] = now
    return [_finding(record, kind, "update", evidence)]


def resolve_finding(
    state: State, kind: str, when: float, evidence: dict[str, Any] | None = None
) -> list[Finding]:
    """Close the open ``kind`` finding at event time ``when``; return its ``resolved`` value."""
    if kind not in state.get("open", {}):
        return []
    opened = dict(state["open"])
    record = opened.pop(kind)
    if opened:
        state["open"] = opened
    else:
        del state["open"]
    found = _finding(record, kind, "resolved", evidence or {})
    return [found.resolve(at(max(when, record["s"])))]


def _own_record(state: State, kind: str) -> dict[str, Any]:
    """Return the open ``kind`` record, copied (with the open findings) so ``state`` owns it."""
    opened = state["open"] = dict(state["open"])
    record = opened[kind] = dict(opened[kind])
    return record


def begin_step(
    state: State, kind: str, bucket: Any, quiet_s: float, forget: tuple[str, ...] = ()
) -> tuple[State, list[Finding]]:
    """Open a session-style step: copy ``state``, resolve ``kind`` if the entity was quiet, stamp it.

    An open finding resolves at the entity's last data when the new ``bucket`` starts more than
    ``quiet_s`` later (the keys in ``forget`` go with it); then ``e`` and ``last`` are stamped.

    >>> state = {"last": 10.0, "open": {"k": {"s": 0.0, "d": 5.0, "u": 5.0, "sev": "info", "sum": "",
    ...          "usd": 0.0, "uph": 0.0, "e": {}, "l": {}}}, "run": 3}
    >>> class B: start, end, entity = 100.0, 102.0, {"session": "s"}
    >>> new, found = begin_step(state, "k", B, 60.0, forget=("run",))
    >>> [f.state for f in found], new["last"], "run" in new, "k" in state["open"]
    (['resolved'], 102.0, False, True)
    """
    state = dict(state)
    found: list[Finding] = []
    if is_open(state, kind) and bucket.start - state.get("last", bucket.start) > quiet_s:
        found += resolve_finding(state, kind, state["last"], {"reason": "quiet"})
        for key in forget:
            state.pop(key, None)
    state["e"], state["last"] = bucket.entity, bucket.end
    return state, found


def quiet_tick(state: State, kind: str, now: float, quiet_s: float, forget: tuple[str, ...] = ()) -> Step:
    """Resolve an open ``kind`` finding once the entity has been quiet for ``quiet_s`` (a ``tick``).

    >>> quiet_tick({"last": 0.0}, "k", 500.0, 60.0)
    ({'last': 0.0}, [])
    """
    last = state.get("last")
    if last is None or not is_open(state, kind) or now - last <= quiet_s:
        return state, []
    state = dict(state)
    for key in forget:
        state.pop(key, None)
    return state, resolve_finding(state, kind, last, {"reason": "quiet"})


def quiet_for(state: State, now: float, seconds: float) -> bool:
    """Return True once the entity's last data (``state["last"]``) is more than ``seconds`` before ``now``.

    >>> quiet_for({"last": 0.0}, 7200.0, 3600.0), quiet_for({}, 7200.0, 3600.0)
    (True, False)
    """
    return bool(now - float(state.get("last", now)) > seconds)


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


def decayed(total: float, last: float, now: float, add: float, tau_s: float) -> float:
    """Return a decayed sum (time constant ``tau_s``) moved on from ``last`` to ``now``, plus ``add``.

    With ``time_rate`` this is an unbiased rate of irregular arrivals, unlike a mean of windowed counts
    sampled when data arrives (those samples fall in busy moments and run high).

    >>> round(decayed(10.0, 0.0, 100.0, 1.0, 100.0), 3)
    4.679
    """
    return total * math.exp(-max(0.0, now - last) / tau_s) + add


def time_rate(total: float, since: float, now: float, tau_s: float) -> float:
    """Return the per-second rate of a ``decayed`` sum begun at ``since``: a plain average until ``tau_s``.

    >>> total = 0.0
    >>> for t in range(1, 101):
    ...     total = decayed(total, t - 1, t, 2.0, 1800.0)
    >>> round(time_rate(total, 0.0, 100.0, 1800.0), 2)
    2.0
    """
    span = now - since
    norm = tau_s * -math.expm1(-span / tau_s) if span > 0 else 0.0
    return total / norm if norm > 0 else 0.0
