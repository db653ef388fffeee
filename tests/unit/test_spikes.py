from __future__ import annotations

import random

from river import anomaly

from detectors.buckets import LlmBucketer, LlmUsage, SeriesBucket, SeriesBucketer, parse_time
from detectors.config import BucketConfig
from detectors.spikes import SpikeDetector, SpikeScorer

T0 = 1_772_409_600.0


def series(values: list[float], kind: str = "spend_spike") -> list:
    det, state, found = SpikeDetector(), {}, []
    for i, v in enumerate(values):
        scope, key = ("bucket", "b1") if kind == "egress_spike" else ("team", "cx")
        state, new = det.update(state, SeriesBucket(kind, scope, key, T0 + 60 * i, T0 + 60 * (i + 1), v))
        found += new
    return found


def test_a_spend_spike_opens_and_resolves_on_event_times() -> None:
    rng = random.Random(1)
    values = [4 + rng.random() for _ in range(60)] + [30.0, 35.0] + [4.5] * 5
    found = series(values)
    assert [(f.kind, f.state) for f in found] == [("spend_spike", "open"), ("spend_spike", "resolved")]
    assert found[0].detected_at.timestamp() == T0 + 61 * 60
    assert found[1].resolved_at is not None and found[1].resolved_at.timestamp() == T0 + 62 * 60
    assert found[1].cost_impact_usd > 50


def test_a_late_bucket_neither_resolves_an_open_spike_nor_is_learned() -> None:
    """A late bucket (its minute judged already) keeps ``last``, the baseline and the calm count as they were.

    Before, its end became the scope's ``last``: the next tick saw the scope silent for minutes and
    resolved the open spike "for want of data" at a time before the spike's own latest minute.
    """
    rng = random.Random(1)
    det, state = SpikeDetector(), {}

    def minute(i: int, usd: float) -> SeriesBucket:
        return SeriesBucket("spend_spike", "team", "cx", T0 + 60 * i, T0 + 60 * (i + 1), usd)

    for i, v in enumerate([4 + rng.random() for _ in range(60)] + [30.0, 35.0]):
        state, _ = det.update(state, minute(i, v))
    assert "open" in state and state["last"] == T0 + 62 * 60
    before = dict(state)
    state, found = det.update(state, minute(55, 0.5))  # late: its minute was judged seven minutes ago
    assert found == [] and state == before
    state, found = det.tick(state, T0 + 63 * 60)  # a minute after the spike's latest: not silent yet
    assert found == [] and "open" in state


def test_egress_from_mostly_zero_minutes() -> None:
    rng = random.Random(2)
    values = [0.02 * rng.expovariate(1.0) if rng.random() < 0.3 else 0.0 for _ in range(120)] + [4.5]
    found = series(values, kind="egress_spike")
    assert [(f.kind, f.state, f.entity["bucket"]) for f in found] == [("egress_spike", "open", "b1")]


def test_noise_and_slow_growth_are_not_spikes() -> None:
    rng = random.Random(3)
    assert series([10 * (1 + i / 500) * (0.8 + 0.4 * rng.random()) for i in range(1000)]) == []


def test_the_scorer_works_as_a_river_detector_behind_a_threshold_filter() -> None:
    guard = anomaly.ThresholdFilter(SpikeScorer(), threshold=0.5)
    flagged = []
    for i in range(80):
        x = {"usd": 50.0 if 60 <= i < 70 else 5.0}
        flagged.append(guard.classify(guard.score_one(x)))
        guard.learn_one(x)
    assert [i for i, f in enumerate(flagged) if f] == list(range(60, 70))  # the spike never became normal


def cost_record(start: str, cost: float, meter: str = "input_tokens", resource: str = "r") -> dict:
    return {
        "ChargePeriodStart": start,
        "EffectiveCost": cost,
        "SkuMeter": meter,
        "ResourceId": resource,
        "ConsumedQuantity": 1.0,
        "x_Team": "cx",
        "x_Project": "bot",
        "x_Model": None,
    }


def test_series_sums_every_record_even_across_a_flush() -> None:
    """The records of one event share their buckets; a late record after a flush opens a new one."""
    bk = SeriesBucketer((60.0,))
    for meter in ("input_tokens", "output_tokens", "egress_gb"):
        bk.add(cost_record("2026-01-01T00:00:10Z", 1.0, meter, resource="b1"))
    first = {(b.kind, b.scope): b.cost_usd for b in bk.flush(parse_time("2026-01-01T00:01:00Z"))}
    assert first == {
        ("spend_spike", "team"): 3.0,
        ("spend_spike", "project"): 3.0,
        ("egress_spike", "bucket"): 1.0,
    }
    bk.add(cost_record("2026-01-01T00:00:10Z", 2.0))  # late: the same keys as the cached records
    late = bk.flush(parse_time("2026-01-01T00:01:00Z"))
    assert sorted((b.scope, b.cost_usd) for b in late) == [("project", 2.0), ("team", 2.0)]


def test_llm_buckets_keep_only_what_their_detectors_read() -> None:
    bk = LlmBucketer(BucketConfig())
    for t in (0.5, 1.0):
        bk.add(LlmUsage(t, "bot", "u1", "s1", "gpt-4o", 100, 10, 0.01, "p1"))
    by_scope = {b.scope: b for b in bk.flush(10.0)}
    assert by_scope["session"].inputs == [100, 100] and by_scope["session"].prompts == {"p1": 2}
    assert by_scope["app"].models == {"gpt-4o": [2.0, 220.0, 0.02]}
    assert all(b.requests == 2 and abs(b.cost_usd - 0.02) < 1e-12 for b in by_scope.values())
    assert by_scope["user"].inputs == [] and by_scope["user"].prompts == {} and by_scope["user"].models == {}


def test_llm_buckets_of_late_requests_close_in_order() -> None:
    bk = LlmBucketer(BucketConfig(session_s=2, app_s=10, scope_s=10))
    for t in (0.5, 2.5, 1.0, 12.0, 4.5, 0.8):  # late requests to buckets still open, and one closed
        bk.add(LlmUsage(t, "bot", "u1", "s1", "m", 100, 10, 0.01))
        if t == 4.5:
            assert [(b.scope, b.start, b.requests) for b in bk.flush(4.0)] == [
                ("session", 0.0, 2),
                ("session", 2.0, 1),
            ]
    closed = [(b.scope, b.start, b.requests) for b in bk.flush(20.0)]
    assert closed == [
        ("session", 0.0, 1),
        ("session", 4.0, 1),
        ("app", 0.0, 5),
        ("user", 0.0, 5),
        ("session", 12.0, 1),
        ("app", 10.0, 1),
        ("user", 10.0, 1),
    ]
