from __future__ import annotations

import json

from detectors.agent_loop import AgentLoopDetector
from detectors.buckets import LlmBucket
from detectors.config import AgentLoopConfig

T0 = 1_772_409_600.0


def bucket(i: int, prompts: dict[str, int], usd: float = 0.01) -> LlmBucket:
    n = sum(prompts.values())
    return LlmBucket(
        "session", "s1", "bot", T0 + 2 * i, T0 + 2 * (i + 1), requests=n, cost_usd=usd * n, prompts=prompts
    )


def test_the_same_prompt_repeated_is_a_loop_with_its_spend() -> None:
    det, state, found = AgentLoopDetector(), {}, []
    for i in range(10):
        state, new = det.update(state, bucket(i, {"same": 2}))
        found += new
    assert [(f.kind, f.state) for f in found] == [("agent_loop", "open")]
    alarm = found[0]
    assert alarm.evidence["repeats"] == 8 and alarm.evidence["prompt_hash"] == "same"
    assert alarm.started_at.timestamp() == T0 and alarm.detected_at.timestamp() == T0 + 8
    assert alarm.cost_impact_usd == 0.08
    state, resolved = det.tick(state, T0 + 20 + 61)
    assert [f.state for f in resolved] == ["resolved"]
    assert resolved[0].resolved_at is not None and resolved[0].resolved_at.timestamp() == T0 + 20


def test_distinct_prompts_and_repeats_spread_out_are_not_loops() -> None:
    det, state, found = AgentLoopDetector(), {}, []
    for i in range(200):
        state, new = det.update(state, bucket(i, {f"p{i}": 1}))
        found += new
    for i in range(7):  # the same prompt, but one every 10 minutes
        state, new = det.update(state, bucket(1000 + 300 * i, {"faq": 1}))
        found += new
    assert found == []


def test_a_session_that_never_stops_is_raised_once() -> None:
    det, state, found = AgentLoopDetector(AgentLoopConfig(max_requests=50)), {}, []
    for i in range(100):
        state, new = det.update(state, bucket(i, {f"p{i}": 1}))
        found += new
        state, new = det.tick(state, T0 + 2 * (i + 1) + 0.5)
        found += new
    assert [(f.kind, f.state) for f in found] == [("agent_loop", "open")]
    assert found[0].evidence["requests"] == 51


def test_a_step_leaves_its_input_prompt_counts_untouched() -> None:
    det, state = AgentLoopDetector(AgentLoopConfig(repeats=100)), {}
    for i in range(12):
        bucket = LlmBucket(
            "session",
            "s",
            "bot",
            2.0 * i,
            2.0 * (i + 1),
            requests=2,
            cost_usd=0.02,
            prompts={"a": 1, f"b{i}": 1},
        )
        before = json.dumps(state, sort_keys=True)
        new, _ = det.update(state, bucket)
        assert json.dumps(state, sort_keys=True) == before
        state = new
    assert state["p"]["a"][0] == 12 and state["p"]["b11"][0] == 1
