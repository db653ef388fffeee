"""BudgetGuard against the real broker: it reads a compacted budget.burn topic and follows new records."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams.core.budget_state import apply_charge, burn_record
from streams.core.budgets import Budget
from streams.guard import BUDGET_BURN, BudgetGuard
from streams.settings import Settings


@pytest.fixture
def burn_topic(kafka_bootstrap: str) -> Iterator[Settings]:
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:10]}.")
    admin = AdminClient(settings.librdkafka_config())
    topic = settings.topic(BUDGET_BURN)
    spec = NewTopic(topic, num_partitions=3, replication_factor=1, config={"cleanup.policy": "compact"})
    admin.create_topics([spec])[topic].result(timeout=30)
    yield settings
    admin.delete_topics([topic])[topic].result(timeout=30)


def produce(settings: Settings, records: list[tuple[str, dict[str, object] | None]]) -> None:
    producer = Producer({**settings.librdkafka_config(), "enable.idempotence": True})
    for key, value in records:
        producer.produce(settings.topic(BUDGET_BURN), key=key.encode(),
                         value=None if value is None else json.dumps(value).encode())
    assert producer.flush(30) == 0


def burn(budget: Budget, usd: float) -> dict[str, object]:
    at = datetime.now(UTC) - timedelta(seconds=5)
    state, _ = apply_charge(None, budget, usd, at)
    return burn_record(budget, state, as_of=at)


def wait_for(condition: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_guard_reads_the_topic_and_follows_updates(burn_topic: Settings) -> None:
    team = Budget(id="search", scope={"team": "search"}, period="month", amount_usd=100)
    session = Budget(id="s1", scope={"session": "s1"}, period="day", amount_usd=1)
    produce(burn_topic, [("search", burn(team, 10.0)), ("s1", burn(session, 0.1)),
                         ("search", burn(team, 85.0)), ("s1", burn(session, 2.0))])
    with BudgetGuard(burn_topic) as guard:
        assert guard.wait_ready(30)
        # ready means caught up: the latest record of each key is in, no waiting
        assert {k: v["spent_usd"] for k, v in guard.records().items()} == {"search": 85.0, "s1": 2.0}
        assert guard.check({"session": "s1", "team": "other"}).verdict == "blocked"
        assert guard.check({"team": "search"}).verdict == "warn"
        assert guard.check({"team": "ads"}).verdict == "allowed"

        started = time.monotonic()
        produce(burn_topic, [("search", burn(team, 120.0)), ("s1", None)])
        wait_for(lambda: guard.check({"team": "search"}).verdict == "blocked")
        wait_for(lambda: "s1" not in guard.records())
        print(f"guard saw a new burn record {time.monotonic() - started:.2f} s after it was produced")
        assert guard.check({"session": "s1"}).verdict == "allowed"
        assert guard.records_rejected == 0


def test_guard_on_an_empty_topic_is_ready_and_allows(burn_topic: Settings) -> None:
    with BudgetGuard(burn_topic) as guard:
        assert guard.wait_ready(30)
        assert guard.check({"team": "search"}).verdict == "allowed"
