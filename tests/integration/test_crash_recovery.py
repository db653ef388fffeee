"""A worker killed with SIGKILL mid-stream loses nothing; a repeated charge is an exact copy, so totals
deduped by x_ChargeId (as every summing consumer does) are exact."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from streams.names import COSTS_PRICED
from streams.producer import EventProducer
from tests.integration.conftest import Stack
from tests.support.oracle import independent_total, varied_events

EVENTS = 12_000
CHUNKS = 40


def produce_slowly(stack: Stack, events: list[Any], done: threading.Event) -> None:
    producer = EventProducer(stack.settings, batch_size=100)
    step = len(events) // CHUNKS
    for start in range(0, len(events), step):
        producer.send(events[start:start + step])
        producer.flush(60)
        time.sleep(0.25)
    producer.close()
    done.set()


def test_sigkill_mid_stream_loses_nothing(stack: Stack) -> None:
    events = varied_events(EVENTS, seed=99)
    stack.start_worker("w1")
    done = threading.Event()
    thread = threading.Thread(target=produce_slowly, args=(stack, events, done), daemon=True)
    thread.start()

    time.sleep(3)
    stack.kill_worker("w1")  # SIGKILL: no flush, no commit, no clean shutdown
    time.sleep(1)
    stack.start_worker("w1")
    time.sleep(2)
    stack.kill_worker("w1")
    stack.start_worker("w1")
    thread.join(timeout=300)
    assert done.is_set(), "producer did not finish"

    event_ids = {event.event_id for event in events}
    records = stack.consume(
        COSTS_PRICED, until=lambda rs: {r["x_EventId"] for r in rs} >= event_ids, timeout=180
    )
    assert {r["x_EventId"] for r in records} == event_ids, "events were lost"
    unique: dict[str, dict[str, Any]] = {}
    for record in records:
        first = unique.setdefault(record["x_ChargeId"], record)
        assert first == record, "a repeated charge differs from the original"
    assert abs(sum(r["EffectiveCost"] for r in unique.values()) - independent_total(events)) < 1e-6
    repeats = Counter(r["x_ChargeId"] for r in records)
    repeated = sum(n - 1 for n in repeats.values())
    # At-least-once: a kill repeats the messages whose charges reached Kafka before their ids were
    # stored, never everything. The second kill lands 2 s after a restart, in a catch-up batch of
    # thousands of events; the pricing agent stores each message's ids as soon as its charges are
    # acknowledged, so only the messages in flight repeat, not the whole batch.
    assert repeated <= 0.25 * len(unique), f"{repeated} repeated charges of {len(unique)}"
    print(f"charges={len(unique)} repeated_after_sigkill={repeated}")
