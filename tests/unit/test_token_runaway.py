from __future__ import annotations

import json
import random

from detectors.buckets import LlmBucket
from detectors.config import RunawayConfig
from detectors.token_runaway import TokenRunawayDetector, excess_cusum, poisson_sf

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


def poisson(rng: random.Random, mean: float) -> int:
    count, total = 0, rng.expovariate(1.0)
    while total < mean:
        count += 1
        total += rng.expovariate(1.0)
    return count


def run_app(
    seed: int,
    burst: tuple[float, float, float],
    hot: tuple[str, float] | None = None,
    config: RunawayConfig | None = None,
) -> list[tuple[str, float]]:
    """Twenty sessions at 8 requests a minute in 2 s buckets; the app runs ``burst[2]`` x between its
    first two values (seconds); ``hot`` adds ``(session, extra x its rate)`` from the burst's start."""
    rng = random.Random(seed)
    det, peers, states, opened = TokenRunawayDetector(config), {}, {}, []
    per_bucket = 8 / 60 * 2.0
    for i in range(1800):  # one hour
        t = T0 + 2.0 * i
        level = burst[2] if burst[0] <= 2.0 * i < burst[1] else 1.0
        for s in range(20):
            key = f"s{s:02d}"
            mean = per_bucket * level
            if hot and key == hot[0] and 2.0 * i >= burst[0]:
                mean += per_bucket * hot[1]
            n = poisson(rng, mean)
            if not n:
                continue
            usd = sum(0.01 * (0.5 + rng.random()) for _ in range(n))
            bucket = LlmBucket("session", key, "bot", t, t + 2.0, requests=n, cost_usd=usd)
            states[key], found = det.update(states.get(key, {}), bucket, peers=peers)
            peers = det.learn_peer(peers, states[key])
            opened += [(key, f.detected_at.timestamp() - T0 - burst[0]) for f in found if f.state == "open"]
    return opened


def test_sessions_that_follow_their_apps_burst_are_not_runaways() -> None:
    """The whole app runs 4x for three minutes: every session is busier, none is flagged."""
    assert run_app(1, (2400.0, 2580.0, 4.0)) == []


def test_a_runaway_during_its_apps_burst_is_still_found_within_a_minute() -> None:
    """One session adds 4x its rate while the app runs 2x: the app explains 2x, not 6x."""
    opened = run_app(2, (2400.0, 2700.0, 2.0), hot=("s07", 4.0))
    assert [key for key, _ in opened] == ["s07"]
    assert opened[0][1] <= 60


def test_the_sequential_score_accumulates_excess_requests_and_not_a_followed_burst() -> None:
    excess, h = RunawayConfig().cusum_excess, RunawayConfig().cusum_h
    score, crossed = 0.0, None
    for i in range(30):  # 2 s buckets of a session at 8 a minute, now 5x: 4 excess per 0.27 expected
        score = excess_cusum(score, 1 if i % 2 else 2, 8 / 60 * 2.0, 1.0, excess)
        crossed = crossed if crossed is not None or score <= h else i
    assert crossed is not None and crossed * 2.0 <= 30
    following = 0.0
    for i in range(300):  # the same count, all of it explained by the app running 5x: never accumulates
        following = excess_cusum(following, 1 if i % 2 else 2, 8 / 60 * 2.0, 5.6, excess)
    assert following < 2.0
    assert excess_cusum(50.0, 0, 100.0, 1.0, excess) == 0.0  # a quiet stretch resets it


def test_a_runaway_starting_with_its_apps_burst_is_found_sooner_by_the_sequential_test() -> None:
    """Adding 4x while the app bursts 3x: the count over any one span stays under its bar for a
    minute, while the sequential score, accumulated from the onset, crosses its bar within it."""
    without = run_app(1, (2400.0, 2700.0, 3.0), hot=("s07", 4.0), config=RunawayConfig(cusum_h=1e9))
    opened = run_app(1, (2400.0, 2700.0, 3.0), hot=("s07", 4.0))
    assert [key for key, _ in opened] == [key for key, _ in without] == ["s07"]
    assert opened[0][1] <= 60 < without[0][1]


def test_the_sequential_score_is_a_small_json_value_in_the_session_state() -> None:
    rng = random.Random(8)
    det, peers, states = TokenRunawayDetector(), {}, {}
    scores = []
    for i in range(1200):
        for key in ("o0", "o1", "o2", "o3", "s1"):  # s1 runs 5x over its last 200 s
            n = poisson(rng, 8 / 60 * 2.0 * (5 if key == "s1" and i >= 1100 else 1))
            if n:
                t = T0 + 2.0 * i
                b = LlmBucket("session", key, "bot", t, t + 2.0, requests=n, cost_usd=0.01 * n)
                states[key], _ = det.update(states.get(key, {}), b, peers=peers)
                peers = det.learn_peer(peers, states[key])
                if key == "s1" and "cs" in states[key]:
                    scores.append(states[key]["cs"])
    assert scores and all(len(s) == 2 and s[0] > 0 for s in scores)
    assert max(s[0] for s in scores) > 5.0  # it accumulates over the runaway's first buckets
    state = states["s1"]
    assert json.loads(json.dumps(state)) == state and len(json.dumps(state)) <= 2048


def test_learning_a_peer_leaves_the_old_peer_state_untouched() -> None:
    det, rng = TokenRunawayDetector(), random.Random(3)
    peers: dict = {}
    state: dict = {}
    for i in range(100):
        state, _ = det.update(state, session(i, 2, rng, width=2.0), peers=peers)
        before = json.dumps(peers, sort_keys=True)
        new_peers = det.learn_peer(peers, state)
        assert json.dumps(peers, sort_keys=True) == before
        peers = new_peers
    assert peers["cw"] and peers["ct"] > peers["c0"]


def test_a_state_saved_before_the_time_weighted_rates_still_loads() -> None:
    det, rng = TokenRunawayDetector(), random.Random(5)
    old = {"e": {"app": "bot", "session": "s1"}, "last": T0, "lt": T0, "m": 2.0, "v": 0.5, "n": 40, "mq": 8.0}
    state, found = det.update(old, session(1, 2, rng))
    assert found == [] and "mq" not in state
    assert round(det._rates(state)[1] * 60, 3) == 8.0  # the old mean count per window, per minute


def test_learning_a_peer_in_place_gives_the_same_peer_state() -> None:
    det, rng = TokenRunawayDetector(), random.Random(5)
    copied: dict = {}
    owned: dict = {}
    state: dict = {}
    for i in range(100):
        state, _ = det.update(state, session(i, 2, rng, width=2.0), peers=copied)
        copied = det.learn_peer(copied, state)
        same = det.learn_peer(owned, state, owned=True)
        assert same is owned  # updated in place, no copy
    assert json.dumps(owned, sort_keys=True) == json.dumps(copied, sort_keys=True)


def _opened(config: RunawayConfig, scope: str, requests_x: int, usd_x: float) -> int:
    """Findings opened over 500 usual buckets then 100 at ``requests_x`` x the requests, ``usd_x`` x each."""
    rng = random.Random(8)
    det, state, opened = TokenRunawayDetector(config), {}, 0
    for i in range(600):
        n = rng.randint(0, 3) * (requests_x if i >= 500 else 1)
        if n:
            b = session(i, n, rng)
            usd = b.cost_usd * (usd_x if i >= 500 else 1.0)
            b = LlmBucket(scope, "k1", "bot", b.start, b.end, requests=n, cost_usd=usd)
            state, new = det.update(state, b)
            opened += sum(f.state == "open" for f in new)
    return opened


def test_a_sessions_pricier_requests_at_its_usual_pace_are_not_a_runaway() -> None:
    # spend six times the usual at the usual count: the spend deviation (z) alone no longer opens a
    # session's runaway (context bloat calls requests that grow); the count must be unusual too
    assert _opened(RunawayConfig(), "session", 1, 6.0) == 0
    assert _opened(RunawayConfig(z_p_value=1.0), "session", 1, 6.0) == 1


def _user_opened(config: RunawayConfig, factor: float) -> int:
    """Findings opened for a user at 2 requests per 10 s, then ``factor`` x its spend (2x the count)."""
    det, state, opened = TokenRunawayDetector(config), {}, 0
    for i in range(600):
        n, usd = (4, 0.01 * factor) if i >= 500 else (2, 0.01)
        b = LlmBucket("user", "u1", "bot", T0 + 10.0 * i, T0 + 10.0 * (i + 1), requests=n, cost_usd=usd)
        state, new = det.update(state, b)
        opened += sum(f.state == "open" for f in new)
    return opened


def test_a_user_needs_three_times_its_baseline() -> None:
    # a user's traffic mixes its sessions (two of them at once can run 2.5x): its bar is user_ratio
    assert _user_opened(RunawayConfig(), 2.75) == 0
    assert _user_opened(RunawayConfig(user_ratio=2.5), 2.75) == 1
    assert _user_opened(RunawayConfig(), 5.0) == 1
