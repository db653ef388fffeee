from __future__ import annotations

import random

from river import anomaly

from detectors.buckets import SeriesBucket
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
