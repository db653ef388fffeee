from __future__ import annotations

import random

from detectors.buckets import LlmBucket
from detectors.token_runaway import TokenRunawayDetector, poisson_sf

T0 = 1_772_409_600.0


def session(i: int, n: int, rng: random.Random, key: str = "s1", width: float = 10.0) -> LlmBucket:
    usd = sum(0.004 * (0.5 + rng.random()) for _ in range(n))
    return LlmBucket("session", key, "bot", T0 + width * i, T0 + width * (i + 1), requests=n, cost_usd=usd)


def test_a_session_at_five_times_its_own_rate_is_found_within_a_minute() -> None:
    rng = random.Random(2)
    det, state, found = TokenRunawayDetector(), {}, []
    for i in range(600):
        n = rng.randint(0, 3) if i < 500 else rng.randint(5, 15)  # ~8 then ~40 requests a minute
        if n:
            state, new = det.update(state, session(i, n, rng))
            found += new
    opened = [f for f in found if f.state == "open"]
    assert len(opened) == 1
    assert opened[0].detected_at.timestamp() - (T0 + 5000) <= 60
    assert opened[0].evidence["basis"] == "own"
    assert opened[0].cost_impact_usd_per_hour > 0


def test_steady_traffic_is_quiet() -> None:
    rng = random.Random(4)
    det, state, found = TokenRunawayDetector(), {}, []
    for i in range(3000):
        n = rng.randint(0, 3)
        if n:
            state, new = det.update(state, session(i, n, rng))
            found += new
    assert found == []


def test_a_new_session_is_compared_with_its_peers() -> None:
    rng = random.Random(6)
    det, peers = TokenRunawayDetector(), {}
    for s in range(200):  # many normal sessions, a few requests each
        state = {}
        for i in range(3):
            state, found = det.update(state, session(i, 1, rng, key=f"s{s}"), peers=peers)
            assert found == []
            peers = det.learn_peer(peers, state)
    state, opened = {}, []
    for i in range(30):  # a new session at two requests a second, twenty times a normal one
        state, new = det.update(state, session(i, 4, rng, key="hot", width=2.0), peers=peers)
        opened += new
    assert [f.evidence["basis"] for f in opened] == ["peer"]


def test_a_busy_app_lifts_its_sessions_bar() -> None:
    assert TokenRunawayDetector.app_lift({"rate": 40.0, "m": 10.0, "n": 99}, {"rate": 10.0, "m": 0.0}) == 3.0
    assert poisson_sf(20, 4.0) < 1e-6 < poisson_sf(10, 4.0)
