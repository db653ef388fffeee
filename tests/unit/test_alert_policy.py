"""The alert policy as a pure step: routing, grouping, timing, inhibition, silences, maintenance, replay."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alerting.config import AlertingConfig, parse_config
from alerting.delivery import Dispatcher, MemorySentLog, RetryPolicy, SentLog
from alerting.model import Alert
from alerting.notification import Notification
from alerting.policy import Policy, PolicyState, Received, Tick
from alerting.receivers.base import DeliveryResult, MemoryReceiver
from alerting.receivers.slack import blocks
from alerting.render import plain_text
from alerting.silences import Silence, decode, decode_all, encode

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def alert(
    kind: str = "token_runaway",
    entity: dict[str, str] | None = None,
    *,
    severity: Any = "critical",
    team: str = "ml",
    at: datetime = T0,
    cost: float = 10.0,
    **labels: str,
) -> Alert:
    return Alert.firing(
        kind,
        entity or {"session": "s1"},
        severity=severity,
        summary=f"{kind} {entity}",
        started_at=at,
        detected_at=at,
        labels={"team": team, **labels},
        cost_impact_usd=cost,
    )


def config(**extra: Any) -> AlertingConfig:
    return parse_config({"receivers": {"slack": {"type": "console"}, "pd": {"type": "console"}}, **extra})


def run(
    policy: Policy,
    events: list[Received | Tick],
    state: PolicyState | None = None,
    silences: list[Silence] | None = None,
) -> tuple[PolicyState, list[Notification]]:
    state = state or PolicyState()
    out: list[Notification] = []
    for event in events:
        state, sent = policy.step(state, event, silences=silences or [])
        out += sent
    return state, out


def ticks(start: datetime, seconds: int, every: int = 1) -> list[Tick]:
    return [Tick(start + timedelta(seconds=s)) for s in range(0, seconds + 1, every)]


def test_group_wait_holds_the_first_message_and_critical_is_faster_than_warning() -> None:
    policy = Policy(config())
    crit, warn = alert(severity="critical"), alert("idle_gpu", {"node": "n1"}, severity="warning")
    state, sent = run(policy, [Received(crit, T0), Received(warn, T0), *ticks(T0, 4)])
    assert sent == []
    state, sent = run(policy, ticks(T0 + timedelta(seconds=5), 24), state)
    assert {(n.receiver, n.transition, n.firing[0].kind) for n in sent} == {
        ("slack", "firing", "token_runaway"),
        ("pd", "firing", "token_runaway"),
    }
    _, sent = run(policy, [Tick(T0 + timedelta(seconds=30))], state)
    assert {n.firing[0].kind for n in sent} == {"idle_gpu"}


def test_thousand_alerts_in_a_minute_make_few_messages_and_lose_nothing() -> None:
    policy = Policy(config())
    events: list[Received | Tick] = []
    for i in range(1000):
        at = T0 + timedelta(seconds=i * 60 / 1000)
        kind = "token_runaway" if i % 2 else "agent_loop"
        events.append(Received(alert(kind, {"session": f"s{i}"}, at=at), at))
        if i % 17 == 0:
            events.append(Tick(at))
    state, sent = run(policy, [*events, *ticks(T0 + timedelta(seconds=60), 120)])
    per_receiver = {r: [n for n in sent if n.receiver == r] for r in ("slack", "pd")}
    assert 1 <= len(per_receiver["slack"]) <= 10
    assert len(per_receiver["pd"]) <= 120
    for notifications in per_receiver.values():
        delivered = {a.fingerprint for n in notifications for a in n.firing}
        assert len(delivered) == 1000
        assert {n.key for n in notifications} == {n.key for n in notifications if n.transition == "firing"}
    end = T0 + timedelta(minutes=10)
    resolves = [
        Received(a.resolve(end), end)
        for g in state.groups.values()
        for a in (s.alert for s in g.slots.values())
        if g.receiver == "slack"
    ]
    state, sent = run(policy, [*resolves, *ticks(end, 180, 5)], state)
    assert state.groups == {}
    # The first resolve goes out at once (group_interval since the last message passed), the rest together.
    assert len(sent) <= 8 and [n.transition for n in sent].count("resolved") == 4
    assert sum(len(n.resolved) for n in sent if n.receiver == "slack") == 1000


def test_new_alerts_and_growth_wait_for_group_interval_small_growth_is_quiet() -> None:
    policy = Policy(config(update_growth=0.5))
    first = alert(entity={"session": "a"}, cost=10.0)
    state, sent = run(policy, [Received(first, T0), Tick(T0 + timedelta(seconds=5))])
    assert [n.transition for n in sent] == ["firing", "firing"]
    t1 = T0 + timedelta(seconds=20)
    second = alert(entity={"session": "b"}, at=t1)
    small = first.model_copy(update={"cost_impact_usd": 12.0, "detected_at": t1})
    state, sent = run(policy, [Received(second, t1), Received(small, t1), *ticks(t1, 40)], state)
    assert sent == []
    state, sent = run(policy, [Tick(T0 + timedelta(seconds=65))], state)
    assert {n.transition for n in sent} == {"updated"} and all(len(n.firing) == 2 for n in sent)
    assert all(n.sequence == 2 for n in sent)
    t2 = T0 + timedelta(seconds=70)
    state, sent = run(
        policy,
        [Received(small.model_copy(update={"detected_at": t2}), t2), Tick(T0 + timedelta(seconds=130))],
        state,
    )
    assert sent == []
    big = first.model_copy(update={"cost_impact_usd": 100.0, "detected_at": t2})
    _, sent = run(policy, [Received(big, t2), Tick(T0 + timedelta(seconds=190))], state)
    assert [n.cost_impact_usd for n in sent] == [110.0, 110.0]


def test_repeat_interval_resends_a_still_firing_group() -> None:
    policy = Policy(config(timing={"critical": {"repeat_interval": "10m"}}))
    state, sent = run(policy, [Received(alert(), T0), Tick(T0 + timedelta(seconds=5))])
    state, sent = run(policy, [Tick(T0 + timedelta(minutes=9))], state)
    assert sent == []
    _, sent = run(policy, [Tick(T0 + timedelta(minutes=10, seconds=5))], state)
    assert [(n.transition, n.repeat) for n in sent] == [("updated", True)] * 2


def test_budget_exceeded_inhibits_its_own_lower_thresholds_and_forecast_only() -> None:
    """Budget alerts as streams/core/budget_state.py makes them: entity {budget}, label threshold_pct."""
    policy = Policy(config())

    def budget(name: str, kind: str, pct: str, *, instance: str = "") -> Alert:
        # A distinct entity per threshold here, so the 80 % alert stays in the state next to the 100 % one.
        entity = {"budget": name, **({"instance": instance} if instance else {})}
        return alert(kind, entity, severity="warning", budget=name, threshold_pct=pct)

    events = [
        Received(budget("ml-monthly", "budget_threshold", "80", instance="a"), T0),
        Received(budget("ml-monthly", "budget_threshold", "100", instance="b"), T0),
        Received(budget("ml-monthly", "budget_forecast", "100"), T0),
        Received(budget("web-monthly", "budget_threshold", "87.5"), T0),
        Received(budget("web-monthly", "budget_forecast", "100"), T0),
        Tick(T0 + timedelta(seconds=30)),
    ]
    _, sent = run(policy, events)
    shown = {
        (a.labels["budget"], a.kind, a.labels["threshold_pct"])
        for n in sent
        if n.receiver == "slack"
        for a in n.firing
    }
    assert shown == {
        ("ml-monthly", "budget_threshold", "100"),
        ("web-monthly", "budget_threshold", "87.5"),
        ("web-monthly", "budget_forecast", "100"),
    }


def test_telemetry_gap_inhibits_idle_gpu_on_the_same_node() -> None:
    policy = Policy(config())
    gap = alert("telemetry_gap", {"node": "n1"}, severity="warning")
    idle1 = alert("idle_gpu", {"node": "n1", "gpu": "0"}, severity="warning")
    idle2 = alert("idle_gpu", {"node": "n2", "gpu": "0"}, severity="warning")
    state, sent = run(
        policy,
        [Received(gap, T0), Received(idle1, T0), Received(idle2, T0), Tick(T0 + timedelta(seconds=30))],
    )
    idle_nodes = {a.entity["node"] for n in sent for a in n.firing if a.kind == "idle_gpu"}
    assert idle_nodes == {"n2"}
    t1 = T0 + timedelta(minutes=1)
    # Once the gap ends, the muted alert goes out at the group's next interval.
    _, sent = run(policy, [Received(gap.resolve(t1), t1), *ticks(t1, 300, 10)], state)
    assert [n.transition for n in sent if n.receiver == "slack" and n.group_labels["kind"] == "idle_gpu"] == [
        "updated"
    ]
    assert {a.entity["node"] for n in sent for a in n.firing if a.kind == "idle_gpu"} == {"n1", "n2"}


def test_silence_mutes_until_expired() -> None:
    policy = Policy(config())
    silence = Silence.new(
        ["team=ml", "kind=token_runaway"], timedelta(hours=1), author="ana", comment="load test", now=T0
    )
    state, sent = run(policy, [Received(alert(), T0), *ticks(T0, 120, 5)], silences=[silence])
    assert sent == []
    expired = silence.expire(T0 + timedelta(minutes=3))
    _, sent = run(policy, ticks(T0 + timedelta(minutes=3), 120, 5), state, silences=[expired])
    assert [n.transition for n in sent] == ["firing", "firing"]


def test_silence_codec_and_matchers() -> None:
    s = Silence.new(
        ["kind=~idle_.*", "team!=web"],
        timedelta(minutes=30),
        author="bo",
        comment="drain",
        now=T0,
        silence_id="x",
    )
    assert decode(encode(s)) == s
    assert s.mutes({"kind": "idle_gpu", "team": "ml"}, T0)
    assert not s.mutes({"kind": "idle_gpu", "team": "web"}, T0)
    later = s.expire(T0 + timedelta(minutes=1))
    assert [x.ends_at for x in decode_all([encode(s), encode(later)])] == [later.ends_at]
    with pytest.raises(ValueError, match="matcher"):
        Silence.new(["team"], timedelta(minutes=1), author="a", comment="c", now=T0)


def test_maintenance_windows_fixed_and_weekly() -> None:
    sat = datetime(2025, 3, 1, 2, 30, tzinfo=UTC)  # a Saturday
    policy = Policy(
        config(
            maintenance_windows=[
                {
                    "name": "drain",
                    "matchers": ["node=n1"],
                    "starts_at": "2025-03-01T02:00:00Z",
                    "ends_at": "2025-03-01T03:00:00Z",
                },
                {
                    "name": "weekly",
                    "matchers": ["env=staging"],
                    "weekdays": ["sat"],
                    "start": "02:00",
                    "duration": "2h",
                },
            ]
        )
    )
    muted = [alert("idle_gpu", {"node": "n1"}, at=sat), alert(entity={"session": "x"}, at=sat, env="staging")]
    loud = alert(entity={"session": "y"}, at=sat, env="prod")
    _, sent = run(policy, [*(Received(a, sat) for a in [*muted, loud]), Tick(sat + timedelta(seconds=30))])
    assert {a.fingerprint for n in sent for a in n.firing} == {loud.fingerprint}
    window = policy.config.maintenance_windows[1]
    assert window.is_active(sat + timedelta(days=7)) and not window.is_active(sat + timedelta(days=1))


def test_routing_tree_children_continue_and_team_defaults() -> None:
    cfg = parse_config(
        {
            "receivers": {
                "console": {"type": "console"},
                "pd": {"type": "console"},
                "ml-slack": {"type": "console"},
                "audit": {"type": "console"},
            },
            "route": {
                "receivers": ["console"],
                "routes": [
                    {"matchers": ["env=prod"], "receivers": ["audit"], "continue": True},
                    {"matchers": ["severity=critical"], "receivers": ["pd"], "group_by": ["..."]},
                ],
            },
            "teams": {"ml": {"receivers": ["ml-slack"]}},
        }
    )
    policy = Policy(cfg)
    assert [r for _, r in policy.routes(alert(env="prod"))] == [("audit",), ("pd",)]
    assert [r for _, r in policy.routes(alert(severity="warning"))] == [("ml-slack",)]
    assert [r for _, r in policy.routes(alert(severity="warning", team="web"))] == [("console",)]
    a = alert()
    _, sent = run(policy, [Received(a, T0), Tick(T0 + timedelta(seconds=5))])
    assert [n.key for n in sent if n.receiver == "pd"] == [a.fingerprint]


def test_state_is_json_safe_and_a_restored_state_behaves_the_same() -> None:
    policy = Policy(config())
    events: list[Received | Tick] = [Received(alert(entity={"session": str(i)}), T0) for i in range(5)]
    state, _ = run(policy, [*events, Tick(T0 + timedelta(seconds=5))])
    later = [
        Received(alert(entity={"session": "new"}, at=T0 + timedelta(seconds=9)), T0 + timedelta(seconds=9)),
        Tick(T0 + timedelta(minutes=2)),
    ]
    restored = PolicyState.from_json(state.to_json())
    assert restored == state
    assert run(policy, later, state)[1] == run(policy, later, restored)[1]


def test_step_leaves_its_input_state_alone_and_ignores_stale_or_unknown_resolves() -> None:
    policy = Policy(config())
    a = alert()
    state, _ = run(policy, [Received(a, T0)])
    before = state.to_json()
    run(policy, [Received(a.resolve(T0 + timedelta(seconds=1)), T0), Tick(T0 + timedelta(minutes=5))], state)
    assert state.to_json() == before
    stale = a.model_copy(update={"detected_at": T0 - timedelta(minutes=1), "summary": "old"})
    state2, _ = run(policy, [Received(stale, T0)], state)
    assert (
        state2.groups["slack|" + next(iter(state.groups.values())).key].slots[a.fingerprint].alert.summary
        != "old"
    )
    empty, sent = run(
        policy, [Received(alert(entity={"session": "zz"}).resolve(T0), T0), Tick(T0 + timedelta(hours=1))]
    )
    assert empty.groups == {} and sent == []


def test_replay_after_restart_sends_nothing_twice() -> None:
    """The notifier crashed after delivering: the policy state and alerts replay, SentLog skips repeats."""
    policy = Policy(config())
    a = alert()
    events: list[Received | Tick] = [Received(a, T0), Tick(T0 + timedelta(seconds=5))]
    _, first = run(policy, events)
    slack = MemoryReceiver("slack")
    pd = MemoryReceiver("pd")
    sent_log = MemorySentLog()

    async def deliver(notifications: list[Notification]) -> None:
        dispatcher = Dispatcher({"slack": slack, "pd": pd}, sent_log=sent_log)
        for n in notifications:
            await dispatcher.submit(n)
        await dispatcher.join()
        await dispatcher.close()

    asyncio.run(deliver(first))
    saved = SentLog.model_validate_json(sent_log.log.model_dump_json())
    # Restart: the state was lost, the alerts replay later in wall-clock time.
    replay_at = T0 + timedelta(minutes=3)
    _, again = run(policy, [Received(a, replay_at), Tick(replay_at + timedelta(seconds=5))])
    assert [n.transition for n in again] == ["firing", "firing"]
    sent_log = MemorySentLog(saved)
    asyncio.run(deliver(again))
    assert len(slack.delivered) == 1 and len(pd.delivered) == 1
    end = T0 + timedelta(minutes=4)
    state, _ = run(policy, [Received(a, replay_at), Tick(replay_at + timedelta(seconds=5))])
    _, resolved = run(policy, [Received(a.resolve(end), end), Tick(end + timedelta(minutes=2))], state)
    asyncio.run(deliver(resolved))
    assert [n.transition for n in slack.delivered] == ["firing", "resolved"]
    assert slack.delivered[1].thread_ref == {"id": "1"}  # the resolve edits the first message


def test_delivery_retries_then_falls_back_without_holding_up_other_receivers() -> None:
    n = Notification(
        receiver="flaky",
        key="k",
        epoch=T0,
        sequence=1,
        transition="firing",
        severity="critical",
        group_labels={},
        firing=(alert(),),
        created_at=T0,
    )
    flaky = MemoryReceiver("flaky", script=[DeliveryResult.retry("503")] * 3)
    dead = MemoryReceiver("dead", script=[DeliveryResult.retry("refused")] * 10_000)
    fallback = MemoryReceiver("fallback")
    fast = MemoryReceiver("fast")
    retry = RetryPolicy(
        max_retry=timedelta(seconds=1),
        initial_backoff=timedelta(milliseconds=10),
        max_backoff=timedelta(milliseconds=50),
        jitter=timedelta(milliseconds=5),
    )

    async def main() -> Dispatcher:
        d = Dispatcher(
            {"flaky": flaky, "dead": dead, "fallback": fallback, "fast": fast},
            retry=retry,
            fallback="fallback",
        )
        await d.submit(n.model_copy(update={"receiver": "dead"}))
        await d.submit(n)
        await d.submit(n.model_copy(update={"receiver": "fast"}))
        await asyncio.sleep(0.3)
        assert len(fast.delivered) == 1 and len(flaky.delivered) == 1 and not fallback.delivered
        await d.join()
        await d.close()
        return d

    d = asyncio.run(main())
    assert flaky.attempts == 4 and d.stats["flaky"].retries == 3 and d.stats["flaky"].delivered == 1
    assert d.stats["dead"].failed == 1 and d.stats["dead"].fallback == 1
    assert [x.receiver for x in fallback.delivered] == ["dead"]


def test_an_incident_whose_told_alerts_resolve_while_the_rest_is_muted_resolves_with_them() -> None:
    """Never an empty resolve: the muted alert that was never sent cannot be what closes the incident."""
    policy = Policy(config())
    idle1 = alert("idle_gpu", {"node": "n1", "gpu": "0"}, severity="warning")
    state, sent = run(policy, [Received(idle1, T0), Tick(T0 + timedelta(seconds=30))])
    assert [n.transition for n in sent] == ["firing", "firing"]
    t1 = T0 + timedelta(minutes=1)
    gap = alert("telemetry_gap", {"node": "n2"}, severity="warning", at=t1)
    idle2 = alert("idle_gpu", {"node": "n2", "gpu": "0"}, severity="warning", at=t1)  # muted by the gap
    t2 = T0 + timedelta(minutes=2)
    state, sent = run(policy, [Received(gap, t1), Received(idle2, t1), Received(idle1.resolve(t2), t2),
                               *ticks(t2, 600, 10)], state)
    idle = [n for n in sent if n.group_labels["kind"] == "idle_gpu"]
    assert [(n.transition, len(n.firing), [a.entity["node"] for a in n.resolved]) for n in idle] == [
        ("resolved", 0, ["n1"]), ("resolved", 0, ["n1"])
    ]
    t3 = T0 + timedelta(minutes=20)
    _, sent = run(policy, [Received(idle2.resolve(t3), t3), *ticks(t3, 600, 10)], state)
    assert [n for n in sent if n.group_labels["kind"] == "idle_gpu"] == [], "nothing left to tell"
    # The muted alert outlives its gap: it opens a new incident of its own.
    _, sent = run(policy, [Received(gap.resolve(t3), t3), *ticks(t3, 600, 10)], state)
    reopened = [n for n in sent if n.group_labels["kind"] == "idle_gpu"]
    assert [(n.transition, n.epoch, [a.entity["node"] for a in n.firing]) for n in reopened] == [
        ("firing", t1, ["n2"]), ("firing", t1, ["n2"])
    ]


def test_a_message_with_no_alerts_still_renders_its_start() -> None:
    empty = Notification(receiver="slack", key="k", epoch=T0, sequence=2, transition="resolved",
                         severity="info", group_labels={"team": "ml"}, created_at=T0)
    assert empty.since == T0
    assert "RESOLVED" in plain_text(empty) and blocks(empty)
