"""The notification policy as a pure step: ``(state, event) -> (state, notifications)``.

Events are ``Received(alert, now)`` (an alert from the ``alerts`` topic) and ``Tick(now)`` (a timer).
The step routes the alert down the routing tree to receivers, files it into a group per receiver and
``group_by`` labels, and sends a group's message when its ``group_wait`` / ``group_interval`` /
``repeat_interval`` is due, leaving out alerts that a silence, a maintenance window or an inhibition
rule mutes at that moment. The state is a JSON-safe value the stream shell keeps in a table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from alerting.config import GROUP_BY_ALERT, AlertingConfig, InhibitRule, RouteConfig, Timing, TimingOverride
from alerting.matchers import Matcher, alert_labels, match_all
from alerting.model import Alert, Severity, Status
from alerting.notification import Notification, Transition, highest
from alerting.silences import Silence, silenced_by

DEFAULT_GROUP_BY_LABELS = ("team", "env", "kind")


@dataclass(frozen=True, slots=True)
class Received:
    """An alert read from the ``alerts`` topic at wall-clock time ``now``."""

    alert: Alert
    now: datetime


@dataclass(frozen=True, slots=True)
class Tick:
    """The timer: send what is due at ``now``."""

    now: datetime


Event = Received | Tick


class Slot(BaseModel):
    """One alert in a group, with what was last sent about it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alert: Alert
    sent_status: Status | None = None
    sent_severity: Severity | None = None
    sent_cost_usd: float = 0.0


class Group(BaseModel):
    """The alerts one receiver gets together; ``epoch`` is set while an incident is open."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    receiver: str
    key: str
    route: str
    labels: dict[str, str]
    created_at: AwareDatetime
    # The worst severity among its firing alerts: it picks the group's timing defaults.
    severity: Severity = "info"
    slots: dict[str, Slot] = Field(default_factory=dict)
    epoch: AwareDatetime | None = None
    sequence: int = 0
    next_flush_at: AwareDatetime | None = None
    last_flush_at: AwareDatetime | None = None
    last_sent_at: AwareDatetime | None = None


class PolicyState(BaseModel):
    """Every open group, by ``receiver|key``; JSON-safe (``to_json`` / ``from_json``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    groups: dict[str, Group] = Field(default_factory=dict)

    def to_json(self) -> str:
        """Serialise the state (for a table or a file)."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, data: str | bytes) -> PolicyState:
        """Read a state written by ``to_json``."""
        return cls.model_validate_json(data)


@dataclass(frozen=True, slots=True)
class _Route:
    path: str
    matchers: tuple[Matcher, ...]
    receivers: tuple[str, ...]
    group_by: tuple[str, ...]
    timing: TimingOverride
    continue_: bool
    children: tuple[_Route, ...]


def _resolve(config: AlertingConfig) -> _Route:
    """Flatten inheritance: each node carries its effective receivers, group_by and timing."""

    def build(node: RouteConfig, path: str, parent: _Route | None) -> _Route:
        inherited = parent.timing if parent else TimingOverride()
        own = node.override()
        timing = TimingOverride(
            group_wait=own.group_wait if own.group_wait is not None else inherited.group_wait,
            group_interval=own.group_interval if own.group_interval is not None else inherited.group_interval,
            repeat_interval=own.repeat_interval
            if own.repeat_interval is not None
            else inherited.repeat_interval,
        )
        receivers = tuple(node.receivers) or (parent.receivers if parent else ())
        group_by = (
            tuple(node.group_by)
            if node.group_by is not None
            else (parent.group_by if parent else DEFAULT_GROUP_BY_LABELS)
        )
        this = _Route(path, tuple(node.matchers), receivers, group_by, timing, node.continue_, ())
        children = tuple(build(child, f"{path}.routes.{i}", this) for i, child in enumerate(node.routes))
        return _Route(path, this.matchers, receivers, group_by, timing, node.continue_, children)

    return build(config.effective_route(), "route", None)


def _routes_for(node: _Route, labels: dict[str, str]) -> list[_Route]:
    taken: list[_Route] = []
    for child in node.children:
        if match_all(child.matchers, labels):
            taken.extend(_routes_for(child, labels))
            if not child.continue_:
                break
    return taken or [node]


def group_key(route_path: str, group_by: Sequence[str], labels: dict[str, str]) -> str:
    """Return the stable key of the group an alert with ``labels`` joins on a route.

    >>> group_key("route", ["..."], {"fingerprint": "abc"})
    'abc'
    >>> group_key("route", ["team"], {"team": "ml"}) == group_key("route", ["team"], {"team": "ml", "x": "1"})
    True
    """
    if GROUP_BY_ALERT in group_by:
        return labels["fingerprint"]
    canonical = route_path + "|" + "|".join(f"{name}={labels.get(name, '')}" for name in group_by)
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


class _Mutes:
    """What mutes an alert at one moment: silences, maintenance windows and inhibition rules."""

    def __init__(
        self, config: AlertingConfig, state: PolicyState, silences: Sequence[Silence], now: datetime
    ) -> None:
        self.config, self.silences, self.now = config, silences, now
        firing: dict[str, dict[str, str]] = {}
        for group in state.groups.values():
            for fp, slot in group.slots.items():
                if slot.alert.status == "firing":
                    firing.setdefault(fp, alert_labels(slot.alert))
        # Per rule: the equal-label values of firing sources, and which fingerprints gave them.
        self.sources: list[tuple[InhibitRule, dict[tuple[str, ...], set[str]]]] = []
        for rule in config.inhibit_rules:
            index: dict[tuple[str, ...], set[str]] = {}
            for fp, labels in firing.items():
                values = tuple(labels.get(name, "") for name in rule.equal)
                if all(values) and match_all(rule.source_matchers, labels):
                    index.setdefault(values, set()).add(fp)
            self.sources.append((rule, index))

    def muted(self, alert: Alert) -> bool:
        labels = alert_labels(alert)
        if silenced_by(labels, self.silences, self.now) is not None:
            return True
        if any(w.mutes(labels, self.now) for w in self.config.maintenance_windows):
            return True
        for rule, index in self.sources:
            if index and match_all(rule.target_matchers, labels):
                sources = index.get(tuple(labels.get(name, "") for name in rule.equal), set())
                if sources - {alert.fingerprint}:
                    return True
        return False


class Policy:
    """Routing, grouping, inhibition, silences and maintenance windows over one ``AlertingConfig``.

    >>> from datetime import datetime, timedelta, timezone
    >>> from alerting.config import parse_config
    >>> t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    >>> policy = Policy(parse_config({"receivers": {"ops": {"type": "console"}}}))
    >>> alert = Alert.firing("token_runaway", {"session": "s1"}, severity="critical", summary="runaway",
    ...                      started_at=t0, detected_at=t0, labels={"team": "ml"}, cost_impact_usd=40.0)
    >>> state, sent = policy.step(PolicyState(), Received(alert, t0))
    >>> sent
    []
    >>> state, sent = policy.step(state, Tick(t0 + timedelta(seconds=5)))
    >>> [(n.receiver, n.transition, len(n.firing)) for n in sent]
    [('ops', 'firing', 1)]
    >>> later = t0 + timedelta(minutes=3)
    >>> state, sent = policy.step(state, Received(alert.resolve(later), later))
    >>> [(n.transition, len(n.resolved)) for n in sent], state.groups
    ([('resolved', 1)], {})
    """

    def __init__(self, config: AlertingConfig) -> None:
        self.config = config
        self.root = _resolve(config)
        self._by_path = {r.path: r for r in self._all(self.root)}

    def _all(self, node: _Route) -> Iterable[_Route]:
        yield node
        for child in node.children:
            yield from self._all(child)

    def routes(self, alert: Alert) -> list[tuple[str, tuple[str, ...]]]:
        """Return the (route path, receivers) pairs that take ``alert``."""
        return [(r.path, r.receivers) for r in _routes_for(self.root, alert_labels(alert))]

    def timing(self, group: Group) -> Timing:
        """Return the timing of a group: its route's settings over the defaults of its worst severity."""
        return self._by_path[group.route].timing.over(self.config.timing_for(group.severity))

    def step(
        self, state: PolicyState, event: Event, *, silences: Sequence[Silence] = ()
    ) -> tuple[PolicyState, list[Notification]]:
        """Apply one event; return the new state and the notifications now due (``state`` is unchanged)."""
        if isinstance(event, Received):
            state = self._receive(state, event.alert, event.now)
        return self._flush_due(state, event.now, silences)

    def next_due(self, state: PolicyState) -> datetime | None:
        """Return when the next group is due (for a timer that sleeps until then)."""
        due = [g.next_flush_at for g in state.groups.values() if g.next_flush_at is not None]
        return min(due, default=None)

    def _receive(self, state: PolicyState, alert: Alert, now: datetime) -> PolicyState:
        labels = alert_labels(alert)
        groups = dict(state.groups)
        for route in _routes_for(self.root, labels):
            key = group_key(route.path, route.group_by, labels)
            for receiver in route.receivers:
                gid = f"{receiver}|{key}"
                group = groups.get(gid)
                slot = group.slots.get(alert.fingerprint) if group else None
                if slot is None and alert.status == "resolved":
                    continue  # never notified here: nothing to resolve
                if slot is not None and alert.detected_at < slot.alert.detected_at:
                    continue  # an older state replayed after a newer one
                if group is None:
                    group_labels = (
                        {k: v for k, v in labels.items() if k not in ("status", "fingerprint")}
                        if GROUP_BY_ALERT in route.group_by
                        else {name: labels.get(name, "") for name in route.group_by}
                    )
                    group = Group(
                        receiver=receiver, key=key, route=route.path, labels=group_labels, created_at=now
                    )
                new_slot = slot.model_copy(update={"alert": alert}) if slot else Slot(alert=alert)
                severity = (
                    highest([group.severity, alert.severity]) if alert.status == "firing" else group.severity
                )
                group = group.model_copy(
                    update={"slots": {**group.slots, alert.fingerprint: new_slot}, "severity": severity}
                )
                groups[gid] = self._schedule(group)
        return PolicyState(groups=groups)

    def _schedule(self, group: Group) -> Group:
        timing = self.timing(group)
        if group.last_flush_at is None:
            due = group.created_at + timing.group_wait
        else:
            due = group.last_flush_at + timing.group_interval
        if group.next_flush_at is not None:
            due = min(due, group.next_flush_at)
        return group.model_copy(update={"next_flush_at": due})

    def _flush_due(
        self, state: PolicyState, now: datetime, silences: Sequence[Silence]
    ) -> tuple[PolicyState, list[Notification]]:
        due = [
            gid for gid, g in state.groups.items() if g.next_flush_at is not None and g.next_flush_at <= now
        ]
        if not due:
            return state, []
        mutes = _Mutes(self.config, state, silences, now)
        groups = dict(state.groups)
        sent: list[Notification] = []
        for gid in sorted(due, key=lambda g: (groups[g].next_flush_at, g)):
            group, notification = self._flush(groups[gid], now, mutes)
            if notification is not None:
                sent.append(notification)
            if group is None:
                del groups[gid]
            else:
                groups[gid] = group
        return PolicyState(groups=groups), sent

    def _changed(self, slot: Slot) -> bool:
        if slot.sent_status != "firing" or slot.sent_severity != slot.alert.severity:
            return True
        cost, before = slot.alert.cost_impact_usd, slot.sent_cost_usd
        return cost - before >= 0.01 and cost > before * (1 + self.config.update_growth)

    def _flush(self, group: Group, now: datetime, mutes: _Mutes) -> tuple[Group | None, Notification | None]:
        timing = self.timing(group)
        slots = group.slots
        firing = [s for s in slots.values() if s.alert.status == "firing"]
        visible = [s for s in firing if not mutes.muted(s.alert)]
        gone = [s for s in slots.values() if s.alert.status == "resolved" and s.sent_status == "firing"]
        # Still firing and told as firing: while any is left (muted since, or not), the incident is open.
        told = [s for s in firing if s.sent_status == "firing"]
        is_open = group.epoch is not None
        transition: Transition | None = None
        repeat = False
        if not is_open:
            transition = "firing" if visible else None
        elif not visible and not told:
            # Everything the receiver was told of has resolved and the rest is muted and never sent: the
            # incident it knows is over (an alert unmuted later opens a new one), as Alertmanager does.
            transition = "resolved"
        elif gone or any(self._changed(s) for s in visible):
            transition = "updated"
        elif (
            visible and group.last_sent_at is not None and now >= group.last_sent_at + timing.repeat_interval
        ):
            transition, repeat = "updated", True

        notification = None
        updates: dict[str, object] = {"last_flush_at": now}
        kept = {fp: s for fp, s in slots.items() if s.alert.status == "firing"}
        if transition is not None:
            # Event time, not wall time: a replay after a restart rebuilds the same epoch for SentLog.
            epoch = min(s.alert.started_at for s in visible) if transition == "firing" else group.epoch
            sequence = 1 if transition == "firing" else group.sequence + 1
            assert epoch is not None  # noqa: S101 - an open group has an epoch
            shown = visible if transition != "resolved" else []
            notification = Notification(
                receiver=group.receiver,
                key=group.key,
                epoch=epoch,
                sequence=sequence,
                transition=transition,
                repeat=repeat,
                severity=highest([s.alert.severity for s in (shown or gone)]),
                group_labels=group.labels,
                firing=tuple(s.alert for s in _by_cost(shown)),
                resolved=tuple(s.alert for s in _by_cost(gone)),
                created_at=now,
            )
            for s in shown:
                kept[s.alert.fingerprint] = s.model_copy(
                    update={
                        "sent_status": "firing",
                        "sent_severity": s.alert.severity,
                        "sent_cost_usd": s.alert.cost_impact_usd,
                    }
                )
            updates |= {
                "epoch": None if transition == "resolved" else epoch,
                "sequence": sequence,
                "last_sent_at": now,
            }
        if not kept:
            return None, notification
        severity = highest([s.alert.severity for s in kept.values()])
        updated = group.model_copy(update={**updates, "slots": kept, "severity": severity})
        timing = self.timing(updated)
        pending = len(visible) < len(firing) or any(s.sent_status != "firing" for s in kept.values())
        if updated.epoch is not None and not pending and updated.last_sent_at is not None:
            next_at = updated.last_sent_at + timing.repeat_interval
        else:
            next_at = now + timing.group_interval
        return updated.model_copy(update={"next_flush_at": next_at}), notification


def _by_cost(slots: Iterable[Slot]) -> list[Slot]:
    return sorted(slots, key=lambda s: (-s.alert.cost_impact_usd, s.alert.fingerprint))


def changed_groups(before: PolicyState, after: PolicyState) -> tuple[dict[str, Group], list[str]]:
    """Return the groups ``after`` changed or added, and the ids it dropped (what a table must write).

    A step keeps untouched groups as the same objects, so a changed group is one that is not.

    >>> from datetime import datetime, timezone
    >>> g = Group(receiver="ops", key="k", route="route", labels={}, created_at=datetime(2025, 1, 1,
    ...           tzinfo=timezone.utc))
    >>> changed_groups(PolicyState(groups={"ops|k": g}), PolicyState(groups={"ops|k": g}))
    ({}, [])
    >>> changed_groups(PolicyState(groups={"ops|k": g}), PolicyState())
    ({}, ['ops|k'])
    """
    upserts = {gid: g for gid, g in after.groups.items() if before.groups.get(gid) is not g}
    dropped = sorted(gid for gid in before.groups if gid not in after.groups)
    return upserts, dropped


def partition_key(alert: Alert) -> str:
    """Return the key to repartition alerts by, so that one worker sees every alert of a team's groups."""
    return alert.labels.get("team", "") or alert.entity.get("team", "")
