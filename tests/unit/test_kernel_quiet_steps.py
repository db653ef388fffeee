"""The steps the kernel takes on their quiet paths leave exactly what the Python steps leave.

Every app bucket takes two steps, ``token_runaway`` and ``model_switch``; the kernel takes both when
neither could open, grow or resolve a finding (``app_quiet.rs``), and hands the rest to the Python steps.
A session grown old enough to be judged has its waiting buckets stepped in order, each by three steps
(runaway, agent loop, context bloat); the kernel steps them (``session_chain.rs``) unless one would open a
finding. The states (keys, their order and their values, as the table's JSON), what is noted as changed
and the findings must be the Python runner's.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic_core import to_json

from detectors.buckets import LlmUsage
from detectors.config import DetectorConfig
from detectors.runner import DetectorRunner

if os.environ.get("BURNWATCH_DETECTOR_KERNEL") == "python":
    pytest.skip("built without the kernel (make KERNEL=off)", allow_module_level=True)

from tests.unit.test_deferred import requests as deferred_requests  # noqa: E402
from tests.unit.test_kernel import kernel_runner  # noqa: E402 - skips without the kernel


class PythonSteps:
    """Count the app steps, the released entities and the session buckets a runner steps in Python."""

    def __init__(self, runner: DetectorRunner) -> None:
        self.apps = self.released = 0
        self.sessions: list[str] = []
        step, step_pending, session = runner._step_key, runner._step_pending, runner._session

        def counted(name: str, key: str, bucket: Any, **extra: Any) -> None:
            self.apps += name == "model_switch"
            step(name, key, bucket, **extra)

        def released(key: str, scope: str, pending: Any) -> None:
            self.released += 1
            step_pending(key, scope, pending)

        def stepped(key: str, app_key: str, bucket: Any) -> None:
            self.sessions.append(bucket.key)
            session(key, app_key, bucket)

        runner._step_key = counted  # type: ignore[method-assign]
        runner._step_pending = released  # type: ignore[method-assign]
        runner._session = stepped  # type: ignore[method-assign]


configs = st.builds(
    lambda app_ratio, warmup, max_models, switch_warmup, price_ratio: DetectorConfig(
        runaway={"app_ratio": app_ratio, "min_requests": 2, "min_usd_per_hour": 0.05, "warmup": warmup,
                 "confirm": 1, "window_s": 20.0},
        model_switch={"warmup": switch_warmup, "max_models": max_models, "price_ratio": price_ratio,
                      "min_shift": 0.1, "accept_after_s": 120.0},
        buckets={"app_s": 5},
    ),
    st.sampled_from([1.5, 3.0]), st.integers(1, 6), st.integers(1, 3), st.integers(0, 40),
    st.sampled_from([1.2, 1.5]),
)
traffic = st.lists(
    st.tuples(
        st.one_of(st.floats(0.0, 4.0), st.sampled_from([0.1, 30.0, 5000.0])),  # since the request before
        st.sampled_from(["bot", "chat"]),
        st.sampled_from(["mini", "mid", "big"]),
        st.integers(1, 4000),  # input tokens
        st.floats(0.0001, 0.5),  # USD
        st.booleans(),  # move event time on after it
    ),
    max_size=120,
)


def state_json(runner: DetectorRunner) -> bytes:
    return to_json(runner.states)


@settings(max_examples=300, deadline=None)
@given(configs, traffic)
def test_app_steps_taken_in_the_kernel_leave_the_python_states_and_findings(
    config: DetectorConfig, steps: list[tuple[Any, ...]]
) -> None:
    """After every step the app states are the Python runner's to the byte (key order included), and
    the findings the same, under any thresholds: bursts, switches, a model over ``max_models``, a pause
    that lets a finding go quiet."""
    python, kernel = DetectorRunner(config, track_entities=False), kernel_runner(config)
    t = 0.0
    for gap, app, model, tokens, usd, tick in steps:
        t += gap
        usage = LlmUsage(t, app, "u", f"s{int(t // 50)}", model, tokens, 10, usd, None, "ml")
        for runner in (python, kernel):
            runner.add_usage(usage)
            if tick:
                runner.advance(t)
        if tick:
            assert state_json(kernel) == state_json(python)
            assert kernel.findings == python.findings
            assert kernel.changed == python.changed
    for runner in (python, kernel):
        runner.advance(t + 100.0)
    assert state_json(kernel) == state_json(python)
    assert kernel.findings == python.findings


def test_a_steady_app_is_stepped_in_the_kernel_and_its_burst_and_switch_in_python() -> None:
    """A steady app's buckets are the kernel's; a burst of spend and a switch to a pricier model are
    found (and resolved) by the Python steps all the same, and the states stay the Python runner's."""
    config = DetectorConfig(
        runaway={"min_usd_per_hour": 0.05, "warmup": 5, "confirm": 1, "window_s": 20.0},
        model_switch={"warmup": 50, "accept_after_s": 600.0},
        buckets={"app_s": 5},
    )
    python, kernel = DetectorRunner(config, track_entities=False), kernel_runner(config)
    in_python = PythonSteps(kernel)
    t, buckets = 0.0, 0
    for i in range(3000):
        switched, burst = i >= 2000, 1200 <= i < 1300
        t += 0.1 if burst else 1.0
        model = "big" if switched and i % 3 else "mini"
        usd = (0.004 if model == "big" else 0.002) * (8 if burst else 1)
        usage = LlmUsage(t, "bot", f"u{i % 7}", f"s{i // 4}", model, 1000, 100, usd, None, "ml")
        for runner in (python, kernel):
            runner.add_usage(usage)
            runner.advance(t)
        buckets = int(t // 5)
    for runner in (python, kernel):
        runner.advance(t + 100.0)
    kinds = {(f.kind, f.state) for f in python.findings if f.entity == {"app": "bot"}}
    found = {(kind, state) for kind in ("model_switch", "token_runaway") for state in ("open", "resolved")}
    assert found <= kinds
    assert state_json(kernel) == state_json(python)
    assert kernel.findings == python.findings
    assert in_python.apps < buckets / 3  # the Python steps took those judged, and the open switch's


session_configs = st.builds(
    lambda min_requests, repeats, turns, growth, most: DetectorConfig(
        runaway={"min_requests": min_requests, "min_usd_per_hour": 0.01, "warmup": 2, "peer_warmup": 3,
                 "confirm": 1, "window_s": 20.0},
        agent_loop={"repeats": repeats, "window_s": 30.0, "max_requests": most},
        context_bloat={"rising_turns": turns, "min_growth": growth},
    ),
    st.integers(2, 10), st.integers(2, 10), st.integers(1, 9), st.sampled_from([1.0, 1.2]),
    st.sampled_from([4, 1000]),  # a session past max_requests is unbounded, once
)


@settings(max_examples=300, deadline=None)
@given(session_configs, deferred_requests)
def test_released_sessions_stepped_in_the_kernel_leave_the_python_states_and_findings(
    config: DetectorConfig, steps: list[tuple[Any, ...]]
) -> None:
    """Sessions that wait and then grow old enough under any thresholds: after every step the states are
    the Python runner's to the byte (key order included), with the same changes noted and findings."""
    python, kernel = DetectorRunner(config, track_entities=False), kernel_runner(config)
    t = 0.0
    for gap, session, user, tokens, prompt, usd, tick in steps:
        t += gap
        usage = LlmUsage(t, "bot", user, session, "m", tokens, 10, usd, prompt, "ml")
        for runner in (python, kernel):
            runner.add_usage(usage)
            if tick:
                runner.advance(t)
        if tick:
            assert state_json(kernel) == state_json(python)
            assert kernel.changed == python.changed
            assert kernel.findings == python.findings
    for later in (100.0, 4000.0):  # every bucket closed; then every entity expired
        for runner in (python, kernel):
            runner.advance(t + later)
        assert state_json(kernel) == state_json(python)
        assert kernel.findings == python.findings


def test_sessions_under_the_default_thresholds_are_stepped_in_the_kernel_until_they_find_something() -> None:
    """Sessions wait, then are released when they reach the count: the kernel steps their waiting buckets
    (none goes to the Python steps) and their later buckets while all three steps only learn; the loops
    and the bloat some of them run into are found by the Python steps, as in the Python runner."""
    config = DetectorConfig()
    python, kernel = DetectorRunner(config, track_entities=False), kernel_runner(config)
    in_python = PythonSteps(kernel)
    t = 0.0
    for s in range(40):
        for turn in range(12):
            t += 0.5 if turn % 3 else 2.5  # buckets of one request and of two or three
            tokens = 1000 + 400 * turn if s % 2 else 800 + (turn % 3) * 50
            usage = LlmUsage(t, "bot", f"u{s % 3}", f"s{s}", "m", tokens, 10, 0.0002 * (1 + turn % 4),
                             "loop" if s % 4 == 0 else f"p{turn % 5}", "ml")
            for runner in (python, kernel):
                runner.add_usage(usage)
                runner.advance(t)
    for runner in (python, kernel):
        runner.advance(t + 100.0)  # every bucket closed
    assert state_json(kernel) == state_json(python)
    assert len(kernel.states["agent_loop"]) == 40 and in_python.released == 0  # every one released, here
    plain = {f"s{s}" for s in range(2, 40, 4)}  # neither a loop nor rising context
    assert not plain & set(in_python.sessions) and len(set(in_python.sessions)) >= 20
    for runner in (python, kernel):
        runner.advance(t + 4000.0)
    kinds = {f.kind for f in python.findings if f.state == "open"}
    assert {"agent_loop", "context_bloat"} <= kinds
    assert state_json(kernel) == state_json(python)
    assert kernel.findings == python.findings
