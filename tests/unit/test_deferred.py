"""Young sessions and users wait unstepped (``detectors.deferred``): nothing they find or learn changes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.buckets import LlmUsage
from detectors.config import DetectorConfig
from detectors.deferred import PENDING
from detectors.pending_log import entry_time, replay
from detectors.runner import DetectorRunner
from streams.core import detector_feed
from streams.core.detector_feed import LLM_STATES, LOG, PartitionDetectors
from tests.unit.test_detector_feed import Table, inputs, priced_events, run_feed


def outcome(runner: DetectorRunner) -> tuple[str, str, list[str]]:
    """States (every pending entity stepped first) and peers as JSON, and the findings."""
    runner.step_pending()
    states = {name: {key: {k: v for k, v in state.items() if k != "_v"} for key, state in table.items()}
              for name, table in runner.states.items()}
    return (json.dumps(states, sort_keys=True), json.dumps(runner.peers, sort_keys=True),
            [repr(finding) for finding in runner.findings])


def fed(events: list[list[dict[str, Any]]], *, wait: bool, roundtrip: bool = False) -> DetectorRunner:
    runner = DetectorRunner(wait=wait, roundtrip_state=roundtrip)
    for records in events:
        runner.feed(records)
    runner.finish()
    return runner


def test_waiting_finds_and_learns_exactly_what_stepping_every_bucket_does() -> None:
    events = priced_events()
    for roundtrip in (False, True):
        waited = fed(events, wait=True, roundtrip=roundtrip)
        stepped = fed(events, wait=False, roundtrip=roundtrip)
        assert waited.pending and not stepped.pending  # young sessions did wait
        assert {f.kind for f in stepped.findings} >= {"agent_loop"}
        assert waited.entities == stepped.entities  # eval counts entity-days from these
        assert outcome(waited) == outcome(stepped)


# small thresholds, so that entities cross them within a few requests
configs = st.builds(
    lambda min_requests, user_min, repeats, turns: DetectorConfig(
        runaway={"min_requests": min_requests, "user_min_requests": user_min, "min_usd_per_hour": 0.01,
                 "warmup": 2, "peer_warmup": 3, "confirm": 1, "window_s": 20.0},
        agent_loop={"repeats": repeats, "window_s": 30.0},
        context_bloat={"rising_turns": turns, "min_growth": 1.0},
    ),
    st.integers(1, 6), st.integers(1, 8), st.integers(1, 5), st.integers(1, 4),
)
requests = st.lists(
    st.tuples(
        st.one_of(st.floats(0.0, 3.0), st.sampled_from([70.0, 4000.0])),  # since the request before: a
        # pause long enough to resolve a quiet session's findings, or to expire its state
        st.sampled_from(["s1", "s2", "s3"]),
        st.sampled_from(["u1", "u2"]),
        st.integers(1, 4000),  # input tokens
        st.sampled_from(["p1", "p2", None]),
        st.floats(0.0001, 0.5),  # USD
        st.booleans(),  # move event time on after it
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(configs, requests)
def test_any_requests_under_any_thresholds_give_the_same_findings_and_states(
    config: DetectorConfig, steps: list[tuple[Any, ...]]
) -> None:
    runners = [DetectorRunner(config, wait=wait) for wait in (True, False)]
    t = 0.0
    for gap, session, user, tokens, prompt, usd, tick in steps:
        t += gap
        usage = LlmUsage(t, "bot", user, session, "m", tokens, 10, usd, prompt, "ml")
        for runner in runners:
            runner.add_usage(usage)
            if tick:
                runner.advance(t)
    for runner in runners:
        runner.advance(t + 4000.0)  # closes everything, resolves quiet findings, expires entities
        runner.finish()
    waited, stepped = (outcome(runner) for runner in runners)
    assert waited == stepped


def logged(table: Table) -> list[tuple[int, Any]]:
    """The young entities' log entries a table holds: ``(seq, records)``."""
    return [(int(key.rsplit("|", 1)[1]), value) for key, value in table.data.items()
            if key.startswith(LOG) and value is not None]


def test_young_entities_are_saved_in_the_log_and_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each step writes one log entry at most; entries go once their entities are, and entities pinned
    too far back are written again, so the log stays short; a restore replays it."""
    monkeypatch.setattr(detector_feed, "LOG_CARRY_FRACTION", 0.05)  # written again after 180 s
    events = priced_events()
    det, table = PartitionDetectors(0), Table()
    written: dict[str, Any] = {}  # every log entry written, by key
    original = det.apply

    def apply(items: Any, known: Any) -> Any:
        done = original(items, known)
        entries = [(key, value) for key, value in done.entries if key.startswith(LOG) and value is not None]
        assert len(entries) <= 1  # one entry per step
        written.update(entries)
        assert not any(key.startswith(LLM_STATES) and value is not None and PENDING in value
                       for key, value in done.entries)  # no young entity has a document of its own
        table.put(done.entries)
        assert all(entry_time(value) >= det.runner.watermark - 180.0 for _, value in logged(table))
        return done

    det.apply = apply  # type: ignore[method-assign]
    run_feed(iter(events[: len(events) // 2]), det, table)
    docs, _ = replay(logged(table), det.runner.runaway.config.window_s)
    assert docs and docs == json.loads(json.dumps(det.runner.pending))
    assert len(logged(table)) < len(written) / 2  # the older entries were deleted
    carried = [record[1] for value in written.values() for record in value["r"] if record[0] == "d"]
    assert len(carried) > len(set(carried))  # some were written again whole
    restored = PartitionDetectors.restore(0, table.data.items())
    assert restored.runner.pending == json.loads(json.dumps(det.runner.pending))


def continue_an_old_table(feed: tuple[Any, Any] = (None, None)) -> tuple[Table, set[str]]:
    """Restore a table saved before the log (young entities as ``s|llm|`` documents) and go on feeding it.

    After every step the documents the table gives (its old documents, the log replayed over them) are
    the detectors' own, and a restore from it gives them back. Return the table and the old entities.
    """
    events = priced_events()
    half = len(events) // 2
    det, table = PartitionDetectors(0), Table()
    run_feed(iter(events[:half]), det, table)
    old = Table()  # the same state, as a version before the log saved it
    old.data = {key: value for key, value in table.data.items() if not key.startswith(LOG)}
    old.data.update((LLM_STATES + key, {"_v": 1, PENDING: doc}) for key, doc in det.runner.pending.items())
    restored = PartitionDetectors.restore(0, old.data.items(), None, *feed)
    window_s = restored.runner.runaway.config.window_s

    def docs(detectors: PartitionDetectors) -> dict[str, Any]:
        runner = detectors.runner
        pending = runner.llm.pending_docs() if runner.bucketer_waits else runner.pending
        return dict(json.loads(json.dumps(pending)))

    for step, records in enumerate(events[half:]):
        done = restored.apply(inputs(records), old.known)
        old.put(done.entries)
        if step % 40 == 0:  # what a restore would replay, and a restore
            base = {key[len(LLM_STATES):]: value[PENDING] for key, value in old.data.items()
                    if key.startswith(LLM_STATES) and value is not None and PENDING in value}
            assert replay(logged(old), window_s, base)[0] == docs(restored)
        if step % 400 == 0:
            assert docs(PartitionDetectors.restore(0, old.data.items(), None, *feed)) == docs(restored)
    return old, set(det.runner.pending)


def test_a_table_saved_before_the_log_is_continued_by_it() -> None:
    """A young entity saved whole before the log keeps that document as the base of its log records; the
    document goes when the entity does (never all of them rewritten in one step)."""
    old, entities = continue_an_old_table()
    kept = [key for key in entities if PENDING in (old.data[LLM_STATES + key] or {})]
    assert len(kept) < len(entities)  # the others' documents went with them (or hold their states now)
    records = [record for _, value in logged(old) for record in value["r"]]
    assert any(record[1] in entities and record[0] == "b" for record in records)
