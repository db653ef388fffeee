"""Exactness under failure: two workers on six partitions, SIGKILL twice at random moments.

When the stream settles, every budget's spent_usd on budget.burn equals the exact sum of its charges'
EffectiveCost, and events_counted equals its number of unique events. CI runs 20,000 events; the
budgets issue's 200,000 is ``BURNWATCH_KILL_TEST_EVENTS=200000`` (it did not settle within the
600 s test timeout on the shared 2-core machine yet: see the issue).
"""

from __future__ import annotations

import os
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from streams.core.simulation import Simulation, SimulationConfig
from streams.names import COSTS_PRICED
from streams.producer import EventProducer
from tests.integration.test_budgets_stream import BUDGETS, expected_totals, latest_burn, matches

EVENTS = int(os.environ.get("BURNWATCH_KILL_TEST_EVENTS", "20000"))


def events_in_this_month(count: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC).replace(microsecond=0)
    start = max(now - timedelta(hours=1), now.replace(day=1, hour=0, minute=0, second=0))
    if start.date() != now.date():
        start = now.replace(hour=0, minute=0, second=0)  # tiny-daily counts one day
    span = max(60.0, (now - start).total_seconds())
    config = SimulationConfig(start=start, duration_s=span, nodes=8, rate=count / span, seed=5)
    return list(Simulation(config).events())[:count]


def produce(stack: Any, events: list[dict[str, Any]], done: threading.Event) -> None:
    producer = EventProducer(stack.settings, batch_size=500)
    step = max(1, len(events) // 40)
    for start in range(0, len(events), step):
        producer.send(events[start:start + step])
        producer.flush(120)
        time.sleep(0.2)
    producer.close()
    done.set()


def test_two_workers_sigkilled_twice_keep_exact_budget_totals(stack_factory: Any, tmp_path: Path) -> None:
    budgets_file = tmp_path / "budgets.yaml"
    budgets_file.write_text(BUDGETS)
    stack = stack_factory(budgets_path=budgets_file, topic_partitions=6)
    events = events_in_this_month(EVENTS)
    event_ids = {e["event_id"] for e in events}
    stack.start_worker("w1")
    stack.start_worker("w2")
    done = threading.Event()
    thread = threading.Thread(target=produce, args=(stack, events, done), daemon=True)
    thread.start()

    rng = random.Random(20261129)
    for _ in range(2):
        time.sleep(rng.uniform(3, 10))
        victim = rng.choice(sorted(stack.workers))
        stack.kill_worker(victim)
        time.sleep(rng.uniform(0.5, 3))
        stack.start_worker(victim)
    thread.join(timeout=600)
    assert done.is_set(), "the producer did not finish"

    seen: set[str] = set()
    read = [0]

    def all_priced(records: list[dict[str, Any]]) -> bool:
        seen.update(r["x_EventId"] for r in records[read[0]:])
        read[0] = len(records)
        return len(seen) >= len(event_ids)

    records = stack.consume(COSTS_PRICED, until=all_priced, timeout=600)
    assert {r["x_EventId"] for r in records} == event_ids, "events were lost"
    expected = expected_totals(records)
    latest = latest_burn(stack, until=lambda got: matches(got, expected), timeout=300)
    assert matches(latest, expected), {
        b: (r["spent_usd"], r["events_counted"], expected.get(b)) for b, r in latest.items()
    }
