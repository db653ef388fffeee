"""The notifier's groups in their table: small writes per alert, and no torn group after any crash."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from alerting.config import parse_config
from alerting.model import Alert
from alerting.notification import Notification
from alerting.policy import Event, Group, Policy, PolicyState, Received, Tick
from streams.core.alert_group_store import Saved, delete, load_groups, save_groups, save_step

T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)
POLICY = Policy(parse_config({"receivers": {"slack": {"type": "console"}, "pd": {"type": "console"}}}))


class LogTable:
    """A table as faust keeps it: its data, and every changelog message in the order it was sent."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data: dict[str, Any] = dict(data or {})
        self.log: list[tuple[str, Any]] = []
        self.sent_bytes = 0

    def send_changelog(self, partition: int | None, key: str, value: Any, **_: Any) -> None:
        self.log.append((key, value))
        self.sent_bytes += len(json.dumps(value))

    @classmethod
    def restored(cls, log: list[tuple[str, Any]]) -> LogTable:
        """Return the table a restart restores from ``log`` (the messages that reached the broker)."""
        data: dict[str, Any] = {}
        for key, value in log:
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        return cls(data)


def alert(session: str = "s1", team: str = "ml") -> Alert:
    return Alert.firing("token_runaway", {"session": session}, severity="critical", summary="runaway",
                        started_at=T0, detected_at=T0, labels={"team": team})


def run(events: list[Event], table: LogTable, saved: Saved, state: PolicyState | None = None,
        sent: list[list[Notification]] | None = None) -> list[tuple[int, PolicyState]]:
    """Step and save each event as the notifier does; return (log length after the step, state after it)
    per step, and add each step's notifications to ``sent``."""
    state = state or PolicyState()
    steps = []
    for event in events:
        before = state
        state, notifications = POLICY.step(state, event)
        save_step(table, 0, before, state, notifications, saved)
        steps.append((len(table.log), state))
        if sent is not None:
            sent.append(notifications)
    return steps


def test_a_group_is_saved_as_a_header_and_its_changed_alerts_only() -> None:
    """An alert joining a 1,000-alert group writes two small entries, not the group (which was O(n^2))."""
    table, saved = LogTable(), {}
    ((_, state),) = run([Received(alert(f"s{i}"), T0) for i in range(1000)], table, saved)[-1:]
    assert len(table.log) == 4000  # per alert and receiver: its slot, then the group's header
    per_alert = table.sent_bytes / 1000
    assert per_alert < 3_000, f"{per_alert:.0f} bytes logged per alert"
    loaded = load_groups(table, {2})
    assert (loaded.states, loaded.garbage) == ({2: PolicyState()}, [])
    loaded = load_groups(table, {0})
    assert (loaded.states, loaded.saved, loaded.garbage) == ({0: state}, {0: saved}, [])

    before = state  # the flush marks every alert as sent: each slot once, then the old entries go
    state, sent = POLICY.step(state, Tick(T0 + timedelta(seconds=10)))
    assert [len(n.firing) for n in sent] == [1000, 1000]
    assert save_groups(table, 0, before, state, saved) == 2 * (1000 + 1 + 1000)
    loaded = load_groups(table, {0})
    assert (loaded.states, loaded.saved, loaded.garbage) == ({0: state}, {0: saved}, [])
    assert len(table.data) == 2 + 2000

    resolved_at = T0 + timedelta(minutes=1)
    resolves = [Received(alert(f"s{i}").resolve(resolved_at), resolved_at) for i in range(1000)]
    ((_, state),) = run([*resolves, Tick(resolved_at + timedelta(minutes=5))], table, saved, state)[-1:]
    assert state.groups == {} and saved == {}
    assert all("notification" in v for v in table.data.values()), "closed groups leave only the outbox"


def test_a_crash_in_the_middle_of_the_firing_flush_never_leaves_an_open_group_with_an_unsent_alert() -> None:
    """The torn group behind an empty resolve: the header said "open", its alert "never sent"."""
    table, saved = LogTable(), {}
    run([Received(alert(), T0)], table, saved)
    received = len(table.log)
    ((_, flushed),) = run([Tick(T0 + timedelta(seconds=10))], table, saved, load_groups(table, {0}).states[0])
    for cut in range(received, len(table.log) + 1):
        (group, *_) = load_groups(LogTable.restored(table.log[:cut]), {0}).states[0].groups.values()
        (slot,) = group.slots.values()
        assert (group.epoch is None) == (slot.sent_status is None), f"torn at message {cut}"
    assert load_groups(table, {0}).states[0] == flushed


def _events() -> st.SearchStrategy[list[Event]]:
    receive = st.tuples(st.integers(0, 3), st.sampled_from(["ml", "web"]), st.booleans())
    step = st.one_of(receive, st.integers(0, 30).map(lambda minute: ("tick", minute)))

    def events(raw: list[Any]) -> list[Event]:
        made: list[Event] = []
        for i, item in enumerate(raw):
            now = T0 + timedelta(minutes=i)
            if item[0] == "tick":
                made.append(Tick(now + timedelta(seconds=item[1])))
                continue
            session, team, resolved = item
            fired = Alert.firing("token_runaway", {"session": f"s{session}"}, severity="critical",
                                 summary="runaway", started_at=T0, detected_at=now, labels={"team": team},
                                 cost_impact_usd=float(i))
            made.append(Received(fired.resolve(now) if resolved else fired, now))
        return made

    return st.lists(step, min_size=1, max_size=14).map(events)


@settings(max_examples=60, deadline=None)
@given(_events())
def test_a_crash_after_any_message_restores_each_group_as_a_whole_step_left_it(events: list[Event]) -> None:
    """Cut the log anywhere: each group is what the step of its last logged header made, every
    notification of the steps it has seen is in the outbox, and after the garbage is deleted the next
    steps save and restore exactly (versions carry on)."""
    table, saved, sent = LogTable(), {}, []
    steps = run(events, table, saved, sent=sent)
    groups = {gid for _, state in steps for gid in state.groups}
    for cut in range(len(table.log) + 1):
        restored = LogTable.restored(table.log[:cut])
        loaded = load_groups(restored, {0})
        for gid in groups:
            headers = [i for i, (key, _) in enumerate(table.log[:cut]) if key == gid]
            expected: Group | None = None
            if headers and table.log[headers[-1]][1] is not None:
                step = next(s for s, (end, _) in enumerate(steps) if end > headers[-1])
                expected = steps[step][1].groups[gid]
                told = [n.id for notes in sent[:step + 1] for n in notes if f"{n.receiver}|{n.key}" == gid]
                assert set(told) <= restored.data.keys(), f"group {gid} sent, not in the outbox, at {cut}"
            assert loaded.states[0].groups.get(gid) == expected, f"group {gid} torn at message {cut}"
        for key, partition in loaded.garbage:
            delete(restored, partition, key)
        assert load_groups(restored, {0}).garbage == []
        # Carry on from the restored state: the rest of the events, saved with the restored versions.
        later = [Tick(T0 + timedelta(days=1)), Received(alert("s9"), T0 + timedelta(days=1))]
        ((_, state),) = run(later, restored, loaded.saved[0], loaded.states[0])[-1:]
        again = load_groups(restored, {0})
        assert (again.states[0], again.saved[0], again.garbage) == (state, loaded.saved[0], [])


def test_alerts_left_by_a_crash_while_a_group_closed_never_join_a_later_group_with_the_same_id() -> None:
    table, saved = LogTable(), {}
    steps = run([Received(alert("s1"), T0), Received(alert("s2"), T0), Tick(T0 + timedelta(seconds=10))],
                table, saved)
    closed_at = T0 + timedelta(minutes=1)
    resolves = [Received(alert(s).resolve(closed_at), closed_at) for s in ("s1", "s2")]
    run([*resolves, Tick(closed_at + timedelta(minutes=5))], table, saved, steps[-1][1])
    (gid, *_) = steps[-1][1].groups
    # The crash: the slack group's header tombstone was logged, its two alerts' were not.
    cut = next(i for i, (key, value) in enumerate(table.log) if key == gid and value is None) + 1
    restored = LogTable.restored(table.log[:cut])
    loaded = load_groups(restored, {0})
    assert loaded.states[0].groups.get(gid) is None and len(loaded.garbage) == 2
    later = [T0 + timedelta(hours=1, minutes=i) for i in range(6)]  # past the stale entries' versions
    updates = [Received(alert("s3").model_copy(update={"detected_at": t}), t) for t in later]
    reopened = run(updates, restored, loaded.saved[0], loaded.states[0])[-1][1]
    assert set(load_groups(restored, {0}).states[0].groups[gid].slots) == {alert("s3").fingerprint}, (
        "the stale alerts s1 and s2 are not in the reopened group, even with their garbage not yet deleted"
    )
    assert load_groups(restored, {0}).states[0] == reopened
