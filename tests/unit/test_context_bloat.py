from __future__ import annotations

from detectors.buckets import LlmBucket
from detectors.context_bloat import ContextBloatDetector

T0 = 1_772_409_600.0


def run(sizes: list[int], per_bucket: int = 1) -> list:
    det, state, found = ContextBloatDetector(), {}, []
    for i in range(0, len(sizes), per_bucket):
        chunk = sizes[i : i + per_bucket]
        b = LlmBucket(
            "session",
            "s",
            "bot",
            T0 + i,
            T0 + i + 1,
            requests=len(chunk),
            input_tokens=sum(chunk),
            cost_usd=3e-6 * sum(chunk),
            inputs=chunk,
        )
        state, new = det.update(state, b)
        found += new
    return found


def test_context_rising_turn_after_turn_opens_and_resolves() -> None:
    found = run([1000 + 400 * k for k in range(12)] + [800], per_bucket=3)
    assert [(f.kind, f.state) for f in found] == [("context_bloat", "open"), ("context_bloat", "resolved")]
    assert found[0].evidence["turns"] == 8 and found[0].evidence["from_tokens"] == 1000
    assert found[1].cost_impact_usd > 0


def test_small_growth_or_a_dip_is_not_bloat() -> None:
    assert run([1000 + k for k in range(20)]) == []  # rising but under 1.5x
    assert run([1000, 1500, 2000, 2500, 1000, 1500, 2000, 2500, 3000, 3500]) == []  # the run restarts
