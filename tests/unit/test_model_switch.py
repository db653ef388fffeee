from __future__ import annotations

import random

from detectors.buckets import LlmBucket
from detectors.model_switch import ModelSwitchDetector

T0 = 1_772_409_600.0


def run(switch_share: float, *, pricey_price: float = 3e-6, cheap_price: float = 1.5e-7) -> list:
    rng = random.Random(3)
    det, state, found = ModelSwitchDetector(), {}, []
    for i in range(400):
        n = 20 + rng.randint(0, 10)
        moved = sum(rng.random() < switch_share for _ in range(n)) if i >= 300 else 0
        usual = sum(rng.random() < 0.1 for _ in range(n - moved))
        models = {
            "mini": [n - moved - usual, 900.0 * (n - moved - usual), cheap_price * 900 * (n - moved - usual)],
            "gpt-4o": [usual, 900.0 * usual, 2.5e-6 * 900 * usual],
            "o3-pro": [moved, 900.0 * moved, pricey_price * 900 * moved],
        }
        state, new = det.update(
            state, LlmBucket("app", "bot", "bot", T0 + 10 * i, T0 + 10 * (i + 1), requests=n, models=models)
        )
        found += new
    return found


def test_moving_traffic_to_a_pricier_model_is_found_with_its_cost() -> None:
    found = run(0.5, pricey_price=2e-5)
    opened = [f for f in found if f.state == "open"]
    assert len(opened) == 1
    assert opened[0].evidence["to_model"] == "o3-pro"
    assert 3000 <= opened[0].detected_at.timestamp() - T0 <= 3100
    assert opened[0].cost_impact_usd_per_hour > 0


def test_a_steady_mix_and_a_cheap_switch_are_quiet() -> None:
    assert run(0.0) == []
    assert run(0.5, pricey_price=1e-7) == []
