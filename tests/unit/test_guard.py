"""BudgetGuard decisions and the session token limiter, without a broker."""

from __future__ import annotations

import doctest
import threading
import timeit
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from hypothesis import given
from hypothesis import strategies as st

import streams.guard
from streams.core.budget_state import apply_charge, burn_record
from streams.core.budgets import Budget
from streams.guard import (
    BudgetGuard,
    BurnIndex,
    Decision,
    GuardPolicy,
    SessionTokenLimiter,
    guard_decision,
    scope_relevant,
)
from streams.settings import Settings

NOW = datetime(2026, 3, 20, 12, tzinfo=UTC)


def record(budget_id: str, scope: dict[str, str], status: str, *, period_end: str = "2026-04-01T00:00:00Z",
           spent_pct: float = 50.0) -> dict[str, Any]:
    return {
        "budget_id": budget_id, "scope": scope, "period": "month", "period_start": "2026-03-01T00:00:00Z",
        "period_end": period_end, "amount_usd": 1000.0, "spent_usd": spent_pct * 10, "spent_pct": spent_pct,
        "burn_rate_usd_per_hour": 1.0, "forecast_usd": 900.0, "forecast_pct": 90.0, "forecast_low_usd": 800.0,
        "forecast_high_usd": 1000.0, "exhaustion_at": None, "status": status, "events_counted": 3,
        "as_of": "2026-03-20T11:59:50Z",
    }


RECORDS = {r["budget_id"]: r for r in [
    record("org", {}, "ok"),
    record("search", {"team": "search"}, "warning", spent_pct=85),
    record("x-prod", {"project": "x", "env": "prod"}, "exceeded", spent_pct=104),
    record("s1", {"session": "s1"}, "exceeded", spent_pct=130),
    record("gpt", {"model": "gpt-4o"}, "critical", spent_pct=90),
    record("old", {"team": "ads"}, "exceeded", period_end="2026-03-01T00:00:00Z"),
]}


def test_the_doctests_of_the_guard_module_pass() -> None:
    assert doctest.testmod(streams.guard).failed == 0


@pytest.mark.parametrize(
    ("dims", "verdict", "ids"),
    [
        ({"team": "ads"}, "allowed", ()),  # only an ended period's record: the new period starts clean
        ({"team": "search"}, "warn", ("search",)),
        ({"team": "search", "model": "gpt-4o"}, "warn", ("search", "gpt")),
        ({"team": "search", "project": "x", "env": "prod"}, "blocked", ("search", "x-prod")),
        ({"project": "x", "env": "dev"}, "allowed", ()),
        ({"project": "x"}, "allowed", ()),
        ({"session": "s1", "user": "u1"}, "blocked", ("s1",)),
        ({"session": None}, "allowed", ()),
    ],
)
def test_guard_decision(dims: dict[str, str | None], verdict: str, ids: tuple[str, ...]) -> None:
    decision = guard_decision(RECORDS, dims, now=NOW)
    assert decision.verdict == verdict
    assert set(decision.budget_ids) == set(ids)
    assert len(decision.reasons) == len(ids)
    assert decision.allowed == (verdict != "blocked")


def test_reasons_say_which_budget_and_how_much() -> None:
    decision = guard_decision(RECORDS, {"session": "s1"}, now=NOW)
    assert decision.reasons == ("budget s1 exceeded: 130.0% of $1,000.00 (month) spent, forecast 90%",)


def test_policy_advisory_and_custom_statuses() -> None:
    advisory = GuardPolicy(advisory=frozenset({"s1"}))
    assert guard_decision(RECORDS, {"session": "s1"}, advisory, now=NOW).verdict == "warn"
    strict = GuardPolicy(block=frozenset({"exceeded", "critical"}))
    assert guard_decision(RECORDS, {"model": "gpt-4o"}, strict, now=NOW).verdict == "blocked"
    quiet = GuardPolicy(warn=frozenset())
    assert guard_decision(RECORDS, {"team": "search"}, quiet, now=NOW) == Decision("allowed")


def test_decision_from_real_burn_records() -> None:
    budget = Budget(id="chat-u1", scope={"app": "chat", "user": "u1"}, period="day", amount_usd=5)
    at = datetime.now(UTC) - timedelta(minutes=1)
    state, _ = apply_charge(None, budget, 6.0, at)
    rec = burn_record(budget, state, as_of=at)
    assert guard_decision({"chat-u1": rec}, {"app": "chat", "user": "u1"}).verdict == "blocked"
    assert guard_decision({"chat-u1": rec}, {"app": "chat", "user": "u2"}).verdict == "allowed"


scope_values = st.sampled_from(["a", "b"])
scopes = st.dictionaries(st.sampled_from(["team", "app", "user", "session"]), scope_values, max_size=3)


@given(
    budgets=st.lists(st.tuples(scopes, st.sampled_from(["ok", "warning", "critical", "exceeded"])),
                     max_size=12),
    dims=st.dictionaries(st.sampled_from(["team", "app", "user", "session", "model"]), scope_values),
)
def test_index_lookup_equals_a_linear_scan(
    budgets: list[tuple[dict[str, str], str]], dims: dict[str, str]
) -> None:
    records = {f"b{i}": record(f"b{i}", scope, status) for i, (scope, status) in enumerate(budgets)}
    expected = {f"b{i}" for i, (scope, status) in enumerate(budgets)
                if status != "ok" and all(dims.get(k) == v for k, v in scope.items())}
    decision = guard_decision(BurnIndex.build(records), dims, now=NOW)
    assert set(decision.budget_ids) == expected


def test_guard_updates_tombstones_scopes_and_not_ready_policy() -> None:
    guard = BudgetGuard(Settings(), scopes=[{"app": "chat"}], policy=GuardPolicy(not_ready="blocked"))
    assert guard.check({"app": "chat"}).verdict == "blocked"  # not caught up: this policy fails closed
    guard._ready.set()  # the follower sets it once it has read the topic to its end
    for rec in (record("chat", {"app": "chat"}, "exceeded", period_end="2999-01-01T00:00:00Z"),
                record("mail", {"app": "mail"}, "exceeded", period_end="2999-01-01T00:00:00Z"),
                record("org", {}, "warning", period_end="2999-01-01T00:00:00Z")):
        guard.update(rec)
    assert set(guard.records()) == {"chat", "org"}  # mail's budget can never bind the chat gateway
    assert guard.check({"app": "chat", "team": "t"}).verdict == "blocked"
    guard.update(None, key="chat")
    assert guard.check({"app": "chat"}) == Decision("warn", ("org",), guard.check({"app": "chat"}).reasons)
    assert scope_relevant({}, None) and not scope_relevant({"app": "mail"}, [{"app": "chat"}])


def test_malformed_records_are_skipped_and_counted() -> None:
    guard = BudgetGuard(Settings())
    guard._read(b"k", b"not json")
    guard._read(b"k", b'{"budget_id": "x"}')
    guard._read(b"k", b"[1, 2]")
    assert guard.records_rejected == 3 and guard.records() == {}


def test_check_takes_microseconds_with_ten_thousand_budgets() -> None:
    records = {}
    for i in range(10_000):
        shapes = [{"team": f"t{i}"}, {"app": f"a{i}", "user": f"u{i}"}, {"session": f"s{i}"},
                  {"model": f"m{i}"}]
        scope = shapes[i % 4]
        records[f"b{i}"] = record(f"b{i}", scope, "warning", period_end="2999-01-01T00:00:00Z")
    guard = BudgetGuard(Settings())
    guard.index = BurnIndex.build(records)
    guard._ready.set()
    dims = {"team": "t8", "app": "a9", "user": "u9", "session": "s10", "model": "m11", "project": "p"}
    assert guard.check(dims).verdict == "warn" and len(guard.check(dims).budget_ids) == 4
    runs = 20_000
    per_call_us = min(timeit.repeat(lambda: guard.check(dims), number=runs, repeat=3)) / runs * 1e6
    allowed_us = min(timeit.repeat(lambda: guard.check({"team": "none"}), number=runs, repeat=3)) / runs * 1e6
    print(f"BudgetGuard.check: {per_call_us:.2f} us (4 budgets warn), {allowed_us:.2f} us (allowed)")
    assert per_call_us < 50 and allowed_us < 50


def test_session_limiter_per_minute_is_a_sliding_window() -> None:
    limiter = SessionTokenLimiter(tokens_per_minute=1000)
    assert limiter.check_and_add("s", 1000, now=59.0).verdict == "warn"
    assert limiter.check_and_add("s", 1, now=59.5).verdict == "blocked"
    # 30 s into the next minute half of the previous minute still counts: 500 + 400 fits, 600 does not
    assert limiter.check_and_add("s", 600, now=90.0).verdict == "blocked"
    assert limiter.check_and_add("s", 400, now=90.0).verdict == "warn"
    assert limiter.check_and_add("other", 1000, now=90.0).verdict == "warn"  # sessions are separate
    assert limiter.check_and_add("s", 1000, now=300.0).verdict == "warn"  # an idle minute forgets


def test_session_limiter_total_and_blocked_calls_add_nothing() -> None:
    limiter = SessionTokenLimiter(total_tokens=10_000)
    for i in range(7):
        assert limiter.check_and_add("s", 1000, now=float(i * 60)).verdict == "allowed"
    assert limiter.check_and_add("s", 5000, now=500.0).verdict == "blocked"
    assert limiter.usage("s")[1] == 7000
    decision = limiter.check_and_add("s", 1500, now=500.0)
    assert decision.verdict == "warn" and decision.budget_ids == ("session:s",)
    limiter.add("s", 2000, now=501.0)  # the response was longer than admitted
    assert limiter.check_and_add("s", 1, now=502.0).verdict == "blocked"


def test_session_limiter_forgets_idle_and_least_recent_sessions() -> None:
    limiter = SessionTokenLimiter(total_tokens=100, idle_ttl_s=60, max_sessions=2)
    limiter.check_and_add("a", 90, now=0.0)
    assert limiter.check_and_add("a", 20, now=30.0).verdict == "blocked"
    assert limiter.check_and_add("a", 20, now=200.0).verdict == "allowed"  # idle past the TTL
    limiter.check_and_add("b", 1, now=201.0)
    limiter.check_and_add("c", 1, now=202.0)
    assert limiter.usage("a") == (0, 0) and limiter.usage("c") == (1, 1)


def test_session_limiter_is_exact_under_threads() -> None:
    limiter = SessionTokenLimiter(total_tokens=50_000)

    def work() -> None:
        for _ in range(10_000):
            limiter.check_and_add("s", 1, now=10.0)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert limiter.usage("s")[1] == 50_000


def test_session_limiter_takes_microseconds() -> None:
    limiter = SessionTokenLimiter(tokens_per_minute=10**12, total_tokens=10**15)
    runs = 20_000
    per_call_us = min(timeit.repeat(lambda: limiter.check_and_add("s", 10, now=1.0), number=runs, repeat=3))
    per_call_us = per_call_us / runs * 1e6
    print(f"SessionTokenLimiter.check_and_add: {per_call_us:.2f} us")
    assert per_call_us < 50


class SettlingConsumer:
    """A consumer of a topic just created: its partition 1 has no leader for its first two reads."""

    def __init__(self) -> None:
        self.reads = 0
        self.assigned: list[TopicPartition] = []

    def list_topics(self, topic: str, timeout: float) -> Any:
        metadata = SimpleNamespace(error=None, partitions={0: object(), 1: object()})
        return SimpleNamespace(topics={topic: metadata})

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        if tp.partition == 1:
            self.reads += 1
            if self.reads <= 2:
                raise KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION))
            return 0, 5
        return 0, 0

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions


def test_the_guard_waits_out_a_partition_without_a_leader_and_stops_on_other_errors() -> None:
    guard = BudgetGuard(Settings())
    guard.retry_s = 0.01
    consumer = SettlingConsumer()
    assert guard._assign(consumer) == {1: 5}  # type: ignore[arg-type]
    assert consumer.reads == 3 and [tp.partition for tp in consumer.assigned] == [0, 1]

    class Refused(SettlingConsumer):
        def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
            raise KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))

    with pytest.raises(KafkaException):
        guard._assign(Refused())  # type: ignore[arg-type]
