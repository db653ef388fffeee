"""Detector metrics against labeled windows: precision, recall, F1, detection delay, false alarms.

Pure: findings and labeled windows in, one ``KindReport`` per finding kind out. An alarm is an
``open`` finding. It is *true* when a window of the same kind names one of its entity values and it
was detected inside the window (or within ``grace_s`` after, for a resolve-and-reopen at the edge);
it is also true, without counting toward recall, when a window *explains* its kind (an agent loop
also raises the team's spend; a runaway session its user's and app's runaway, never another
session's). Every other alarm is a false alarm, counted per 1,000 entity-days.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from detectors.findings import Finding

DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class Window:
    """One labeled incident: ``kind`` is the finding kind it should raise on ``entity``."""

    kind: str
    entity: str
    start: float
    end: float
    explains: tuple[str, ...] = ()
    related: frozenset[str] = frozenset()
    exclusive: tuple[str, ...] = ()  # entity keys an explained finding may only name this incident's own
    grace_s: float = 600.0
    label: str = ""

    def covers(self, finding: Finding) -> bool:
        """Return True if ``finding`` was detected during this window (plus grace)."""
        t = finding.detected_at.timestamp()
        return self.start <= t <= self.end + self.grace_s

    def names(self, finding: Finding) -> bool:
        """Return True if ``finding`` is about this window's entity."""
        return self.entity in finding.entity.values()

    def explains_finding(self, finding: Finding) -> bool:
        """Return True if this incident can cause ``finding`` as a side effect.

        A finding on another session of the same app is not explained by a runaway session: with
        ``exclusive=("session", "user")`` such a finding names a session or user this incident does not.

        >>> from datetime import UTC, datetime
        >>> t = datetime.fromtimestamp(50.0, tz=UTC)
        >>> def runaway(**entity):
        ...     return Finding("token_runaway", entity, "open", "error", "", t, t)
        >>> w = Window("token_runaway", "s1", 0.0, 100.0, explains=("token_runaway",),
        ...            related=frozenset({"bot", "u1"}), exclusive=("session", "user"))
        >>> [w.explains_finding(runaway(**e)) for e in ({"app": "bot"}, {"app": "bot", "user": "u1"},
        ...                                              {"app": "bot", "session": "s2"})]
        [True, True, False]
        """
        if finding.kind not in self.explains or not self.covers(finding):
            return False
        values = set(finding.entity.values())
        if not (self.entity in values or self.related & values):
            return False
        own = self.related | {self.entity}
        return all(finding.entity[key] in own for key in self.exclusive if key in finding.entity)


@dataclass(slots=True)
class KindReport:
    """Metrics of one finding kind."""

    kind: str
    windows: int = 0
    detected: int = 0
    alarms: int = 0
    true_alarms: int = 0
    false_alarms: int = 0
    entity_days: float = 0.0
    delays_s: list[float] = field(default_factory=list)

    @property
    def precision(self) -> float | None:
        """True alarms over alarms (None without alarms)."""
        return self.true_alarms / self.alarms if self.alarms else None

    @property
    def recall(self) -> float | None:
        """Detected windows over windows (None without windows)."""
        return self.detected / self.windows if self.windows else None

    @property
    def f1(self) -> float | None:
        """Harmonic mean of precision and recall (None if either is undefined)."""
        p, r = self.precision, self.recall
        if p is None or r is None:
            return None
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)

    @property
    def delay_median_s(self) -> float | None:
        """Median detection delay of detected windows, seconds."""
        return percentile(self.delays_s, 50)

    @property
    def delay_p95_s(self) -> float | None:
        """95th percentile detection delay, seconds."""
        return percentile(self.delays_s, 95)

    @property
    def false_alarms_per_1000_entity_days(self) -> float | None:
        """False alarms per 1,000 entity-days of observed entities of this kind's family."""
        return 1000.0 * self.false_alarms / self.entity_days if self.entity_days else None

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict (rounded)."""

        def r(x: float | None, n: int = 4) -> float | None:
            return None if x is None else round(x, n)

        return {
            "kind": self.kind,
            "windows": self.windows,
            "detected": self.detected,
            "alarms": self.alarms,
            "true_alarms": self.true_alarms,
            "false_alarms": self.false_alarms,
            "precision": r(self.precision),
            "recall": r(self.recall),
            "f1": r(self.f1),
            "delay_median_s": r(self.delay_median_s, 1),
            "delay_p95_s": r(self.delay_p95_s, 1),
            "entity_days": r(self.entity_days, 2),
            "false_alarms_per_1000_entity_days": r(self.false_alarms_per_1000_entity_days, 3),
        }


@dataclass(slots=True)
class Evaluation:
    """Per-kind reports and, per window, the first finding that detected it (or None)."""

    reports: dict[str, KindReport]
    matches: list[tuple[Window, Finding | None]]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Return the nearest-rank ``q``-th percentile of ``values`` (None if empty).

    >>> percentile([1, 2, 3, 4, 100], 50), percentile([1, 2, 3, 4, 100], 95), percentile([], 50)
    (3, 100, None)
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def evaluate(
    findings: Iterable[Finding], windows: Sequence[Window], entity_days: Mapping[str, float] | None = None
) -> Evaluation:
    """Score ``findings`` against ``windows``; ``entity_days`` maps kind to observed entity-days.

    >>> from datetime import UTC, datetime
    >>> t = lambda s: datetime.fromtimestamp(s, tz=UTC)
    >>> hit = Finding("idle_gpu", {"node": "n1"}, "open", "warning", "", t(0), t(910))
    >>> miss = Finding("idle_gpu", {"node": "n2"}, "open", "warning", "", t(0), t(5000))
    >>> ev = evaluate([hit, miss], [Window("idle_gpu", "n1", 0, 1800)], {"idle_gpu": 2.0})
    >>> r = ev.reports["idle_gpu"]
    >>> r.precision, r.recall, r.delay_median_s, r.false_alarms_per_1000_entity_days
    (0.5, 1.0, 910.0, 500.0)
    """
    reports: dict[str, KindReport] = {}

    def report(kind: str) -> KindReport:
        if kind not in reports:
            reports[kind] = KindReport(kind, entity_days=(entity_days or {}).get(kind, 0.0))
        return reports[kind]

    alarms = sorted((f for f in findings if f.state == "open"), key=lambda f: f.detected_at)
    first: dict[int, Finding] = {}
    for finding in alarms:
        rep = report(finding.kind)
        rep.alarms += 1
        true = False
        for i, window in enumerate(windows):
            if window.kind == finding.kind and window.names(finding) and window.covers(finding):
                true = True
                first.setdefault(i, finding)
            elif window.explains_finding(finding):
                true = True
        if true:
            rep.true_alarms += 1
        else:
            rep.false_alarms += 1
    matches: list[tuple[Window, Finding | None]] = []
    for i, window in enumerate(windows):
        rep = report(window.kind)
        rep.windows += 1
        found = first.get(i)
        if found is not None:
            rep.detected += 1
            rep.delays_s.append(found.detected_at.timestamp() - window.start)
        matches.append((window, found))
    for kind in entity_days or {}:
        report(kind)
    return Evaluation(reports, matches)


def entity_days_of(entities: Mapping[str, int], span_s: float) -> float:
    """Return entity-days: distinct entities times the observed span in days.

    >>> entity_days_of({"a": 10, "b": 2}, 43200)
    6.0
    """
    return sum(entities.values()) * span_s / DAY_S


def merge_reports(groups: Iterable[Mapping[str, KindReport]]) -> dict[str, KindReport]:
    """Sum per-kind reports of several runs (counts and entity-days add, delays concatenate).

    >>> a, b = KindReport("x", windows=1, detected=1, delays_s=[5.0]), KindReport("x", windows=1)
    >>> m = merge_reports([{"x": a}, {"x": b}])["x"]
    >>> m.recall, m.delays_s
    (0.5, [5.0])
    """
    merged: dict[str, KindReport] = {}
    for group in groups:
        for kind, rep in group.items():
            into = merged.setdefault(kind, KindReport(kind))
            into.windows += rep.windows
            into.detected += rep.detected
            into.alarms += rep.alarms
            into.true_alarms += rep.true_alarms
            into.false_alarms += rep.false_alarms
            into.entity_days += rep.entity_days
            into.delays_s.extend(rep.delays_s)
    return merged
