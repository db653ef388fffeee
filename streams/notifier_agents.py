"""The notifier on the stream: alerts -> alerts.by_team -> the policy step -> outbox -> receivers.

``route_alerts`` validates each record on ``alerts`` and forwards it keyed by team, so every group of
a team (the routing and grouping unit) lives in one partition. ``notify_alerts`` runs the pure
``alerting.policy`` step for each alert and for each tick, a message the worker sends to its own
partition on ``alerts.by_team`` when a group is due: faust writes tables only while a message is
processed, and the tick makes the timer's decisions one. Each step saves the notifications it decided
(the outbox), then the groups it changed (``streams.core.alert_group_store``), in one changelog-backed
table, before handing the notifications to the ``Dispatcher``, whose per-receiver queues never hold up
the agent. One table, so one changelog partition per ``alerts.by_team`` partition: a crash keeps a
prefix of a step's writes, so a group saved as sent always has its notification in the outbox. A
delivered notification is written to the sent log and taken out of the outbox; after a crash the
outbox is handed over again and the sent log skips what was already delivered.

Every table value carries its partition, and every write names it: the dispatcher writes from its
own tasks, outside any message, to the partition of the group it delivered for.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import faust
from pydantic import TypeAdapter, ValidationError

from alerting.delivery import Dispatcher, ResultHook, SentLog, SentRecord, utc_now
from alerting.model import Alert
from alerting.notification import Notification
from alerting.policy import (
    Event,
    Policy,
    PolicyState,
    Received,
    Tick,
    partition_key,
)
from alerting.receivers.base import DeliveryResult
from streams.core.alert_group_store import Saved, delete, entries, load_groups, put, save_step
from streams.core.alert_owner import with_owner
from streams.core.allocation import Allocator
from streams.metrics import WorkerMetrics
from streams.notifier_silences import SilenceFeed

log = logging.getLogger("burnwatch.notifier")

TICK_S = 1.0
TICK_KEY = b"~tick"
TICK_VALUE = b'{"tick": true}'
# A tick not processed after this long (a rebalance took it elsewhere) is sent again.
TICK_RESEND_S = 10.0
NO_TEAM = "~unowned"
STATE_TABLE = "notifier_state_by_key"
SENT_TABLE = "sent_record_by_group_id"
_ALERT_LIST = TypeAdapter(list[Alert])


@dataclass
class NotifierTables:
    """The notifier's changelog-backed tables (memory store: small, restored from compacted changelogs)."""

    state: faust.Table
    sent: faust.Table


@dataclass
class LiveNotifier:
    """What one notifier process holds in memory for the partitions it owns."""

    states: dict[int, PolicyState] = field(default_factory=dict)
    # What the state table holds of each open group (``streams.core.alert_group_store``), per partition.
    saved: dict[int, Saved] = field(default_factory=dict)
    # Notification id -> (partition, receiver): handed to the dispatcher, not yet delivered or given up.
    outbox: dict[str, tuple[int, str]] = field(default_factory=dict)
    # Sent-log key (receiver|group key) -> partition of its group, for writes from the dispatcher.
    partition_of: dict[str, int] = field(default_factory=dict)
    ticks: dict[int, float] = field(default_factory=dict)


def define_notifier_tables(app: faust.App, partitions: int) -> NotifierTables:
    """Declare the tables: the state (groups, their alerts and the outbox) and the sent log.

    State keys: group id -> group without its alerts, ``<group id>|<fingerprint>|<version>`` -> one
    alert of a group (``streams.core.alert_group_store``), notification id -> notification. Sent-log
    keys: ``receiver|group key`` -> sent record.
    """

    def table(name: str) -> faust.Table:
        return app.Table(name, default=None, key_type=str, value_type=None, partitions=partitions)

    return NotifierTables(table(STATE_TABLE), table(SENT_TABLE))


def parse_alerts(value: bytes) -> list[Alert]:
    """Return the alerts in one ``alerts`` record: one alert, or a JSON array of them."""
    if value.lstrip()[:1] == b"[":
        return _ALERT_LIST.validate_json(value)
    return [Alert.model_validate_json(value)]


class TableSentLog:
    """The dispatcher's ``SentLogStore`` over the sent table."""

    def __init__(self, table: faust.Table, live: LiveNotifier) -> None:
        self.table, self.live = table, live

    def get(self, receiver: str, key: str) -> SentRecord | None:
        """Return the record for a receiver and a group key."""
        value = self.table.data.get(SentLog.slot(receiver, key))
        return SentRecord.model_validate(value["record"]) if value else None

    def put(self, record: SentRecord) -> None:
        """Store the record in its group's partition."""
        slot = SentLog.slot(record.receiver, record.key)
        partition = self.live.partition_of.get(slot)
        if partition is None:  # not handed over by this process: cannot happen, but never lose the record
            log.error("sent record for %s has no partition; kept in memory only", slot)
            self.table.data[slot] = {"partition": -1, "record": record.model_dump(mode="json")}
            return
        put(self.table, partition, slot, {"partition": partition, "record": record.model_dump(mode="json")})


def outbox_hook(tables: NotifierTables, live: LiveNotifier) -> ResultHook:
    """Return the dispatcher's result hook: take a delivered, skipped or given-up notification out."""

    def done(notification: Notification, result: DeliveryResult) -> None:
        entry = live.outbox.pop(notification.id, None)
        if entry is not None:
            delete(tables.state, entry[0], notification.id)

    return done


def wanted(dispatcher: Dispatcher, notification: Notification) -> bool:
    """Return whether the notification's receiver takes it (PagerDuty declines updates by default).

    A receiver may have ``takes(notification) -> bool``; what it declines is never saved or queued.
    """
    takes = getattr(dispatcher.receivers.get(notification.receiver), "takes", None)
    return takes is None or bool(takes(notification))


def register_notifier_agents(
    app: faust.App,
    policy: Policy,
    dispatcher: Dispatcher,
    tables: NotifierTables,
    live: LiveNotifier,
    alerts_topic: faust.TopicT,
    by_team_topic: faust.TopicT,
    silences: SilenceFeed,
    metrics: WorkerMetrics,
    allocator: Allocator | None = None,
) -> None:
    """Add ``route_alerts``, ``notify_alerts``, the tick timer and the recovery hook to ``app``.

    With an ``allocator``, ``route_alerts`` gives an alert without a team the one the allocation
    mapping names for its labels and entity (``streams.core.alert_owner``) before keying it by team.
    """
    by_team_name = by_team_topic.get_topic_name()

    def owned() -> set[int]:
        actives = app.assignor.assigned_actives() if app.assignor else set()
        return {tp.partition for tp in actives if tp.topic == by_team_name}

    async def submit(partition: int, notification: Notification) -> None:
        live.partition_of[SentLog.slot(notification.receiver, notification.key)] = partition
        live.outbox[notification.id] = (partition, notification.receiver)
        await dispatcher.submit(notification)

    async def step(partition: int, event: Event, now: datetime) -> None:
        before = live.states.get(partition, PolicyState())
        after, decided = policy.step(before, event, silences=silences.current())
        notifications = [n for n in decided if wanted(dispatcher, n)]
        save_step(tables.state, partition, before, after, notifications, live.saved.setdefault(partition, {}))
        live.states[partition] = after  # saved, with the outbox, before any delivery starts
        for n in notifications:
            await submit(partition, n)

    @app.agent(alerts_topic, name="route_alerts")
    async def route_alerts(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            try:
                alerts = parse_alerts(value)
            except (ValidationError, ValueError) as error:
                metrics.notifier_alerts_invalid.inc()
                log.warning("skipped a record on alerts that is not an alert: %s", str(error)[:300])
                continue
            for parsed in alerts:
                metrics.notifier_alerts_in.labels(parsed.kind).inc()
                alert = parsed if allocator is None else with_owner(parsed, allocator)
                key = (partition_key(alert) or NO_TEAM).encode()
                await (await by_team_topic.send(key=key, value=alert.model_dump_json().encode()))

    @app.agent(by_team_topic, name="notify_alerts")
    async def notify_alerts(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            partition = event.message.partition
            now = utc_now()
            if event.message.key == TICK_KEY:
                live.ticks.pop(partition, None)
                await step(partition, Tick(now), now)
                continue
            try:
                alert = Alert.model_validate_json(event.value)
            except ValidationError:
                log.warning("skipped a record on %s that is not an alert", by_team_name)
                continue
            await step(partition, Received(alert, now), now)

    @tables.state.on_recover
    async def rebuild_live_state() -> None:
        """Reload the groups of the owned partitions and hand the outbox to the dispatcher again."""
        mine = owned()
        loaded = load_groups(tables.state, mine)
        live.states, live.saved = loaded.states, loaded.saved
        for key, partition in loaded.garbage:
            delete(tables.state, partition, key)
        live.ticks.clear()
        waiting = sorted(
            (
                (Notification.model_validate(value["notification"]), value["partition"])
                for key, value in entries(tables.state, mine)
                if "notification" in value and key not in live.outbox
            ),
            key=lambda item: (item[0].created_at, item[0].sequence),
        )
        for notification, partition in waiting:
            await submit(partition, notification)
        log.info(
            "notifier state rebuilt: %d groups in partitions %s, %d outbox notifications queued again",
            sum(len(s.groups) for s in live.states.values()), sorted(mine), len(waiting),
        )

    @app.timer(TICK_S, on_leader=False)
    async def send_ticks() -> None:
        now, clock = utc_now(), time.monotonic()
        mine = owned()
        for partition, state in list(live.states.items()):
            due = policy.next_due(state)
            if partition not in mine or due is None or due > now:
                continue
            sent = live.ticks.get(partition)
            if sent is not None and clock - sent < TICK_RESEND_S:
                continue
            live.ticks[partition] = clock
            await by_team_topic.send(key=TICK_KEY, value=TICK_VALUE, partition=partition)


def sync_metrics(dispatcher: Dispatcher, live: LiveNotifier, silences: SilenceFeed, metrics: WorkerMetrics,
                 seen: dict[tuple[str, str], int]) -> None:
    """Copy the dispatcher's counters (``seen`` holds what was copied before) and the gauges."""
    counters = (
        ("delivered", metrics.notifications_sent),
        ("retries", metrics.notification_retries),
        ("failed", metrics.notifications_failed),
        ("fallback", metrics.notifications_fallback),
        ("skipped_duplicates", metrics.notifications_duplicate),
    )
    pending = {name: 0 for name in dispatcher.receivers}
    for _, receiver in live.outbox.values():
        pending[receiver] = pending.get(receiver, 0) + 1
    for name, stats in dispatcher.stats.items():
        for attribute, counter in counters:
            value = getattr(stats, attribute)
            delta = value - seen.get((name, attribute), 0)
            if delta > 0:
                counter.labels(name).inc(delta)
            seen[(name, attribute)] = value
        metrics.notifications_pending.labels(name).set(pending.get(name, 0))
    metrics.silences_active.set(silences.active(utc_now()))


def health(app: faust.App, live: LiveNotifier) -> tuple[dict[str, Any], int]:
    """Return the ``/health`` body and status (503 while rebalancing or restoring tables)."""
    assigned = app.assignor.assigned_actives() if app.assignor else set()
    recovering = bool(app.rebalancing) or not app.tables.recovery.completed.is_set()
    body = {
        "status": "recovering" if recovering else "ok",
        "assigned_partitions": len(assigned),
        "open_groups": sum(len(s.groups) for s in live.states.values()),
        "outbox": len(live.outbox),
    }
    return body, 503 if recovering else 200
