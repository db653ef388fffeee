"""Spend and egress spikes over bucketed series (team, project, model; storage bucket egress).

``SpikeScorer`` is a river anomaly detector (``learn_one``/``score_one``): a robust score of how far a
bucket's value sits above an exponentially weighted baseline in log space (spend is heavy-tailed and
multiplicative), mapped to [0, 1) with 0.5 at the configured threshold. ``SpikeDetector`` is the
per-scope step: it scores before it learns, and a flagged bucket is never learned (river's
``ThresholdFilter`` pattern), unless a spike lasts so long it has become the new level.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

from river import base as river_base

from detectors.base import Step, ew, grow_finding, is_open, open_finding, quiet_for, resolve_finding
from detectors.buckets import SeriesBucket
from detectors.config import SpikeConfig
from detectors.findings import EGRESS_SPIKE, SPEND_SPIKE, Finding
from detectors.state import State


class SpikeScorer(river_base.AnomalyDetector):
    """Robust upward-spike score of a positive series, river style (``x = {"usd": value}``).

    Parameters
    ----------
    config
        Sensitivity; ``SpikeConfig()`` is the documented default.

    Examples
    --------
    >>> import random
    >>> from river import anomaly
    >>> rng = random.Random(42)
    >>> guard = anomaly.ThresholdFilter(SpikeScorer(), threshold=0.5)
    >>> flags = []
    >>> for i in range(60):
    ...     x = {"usd": 10 + rng.random() if i != 50 else 60.0}
    ...     flags.append(guard.classify(guard.score_one(x)))
    ...     guard.learn_one(x)
    >>> [i for i, f in enumerate(flags) if f]
    [50]
    """

    def __init__(self, config: SpikeConfig | None = None) -> None:
        self.config = config or SpikeConfig()
        self.state: State = {}

    def _log(self, x: dict[Hashable, Any]) -> float:
        return math.log(max(0.0, x["usd"]) + self.config.floor_usd)

    def learn_one(self, x: dict[Hashable, Any]) -> None:
        """Learn one bucket value into the baseline."""
        self.state = learn(self.state, self._log(x), self.config)

    def score_one(self, x: dict[Hashable, Any]) -> float:
        """Return the spike score of one bucket value (0 until warmed up)."""
        return score(self.state, x["usd"], self.config)[0]


def learn(state: State, logx: float, cfg: SpikeConfig) -> State:
    """Return ``state`` with one log value learned (EW mean and variance; plain mean while warming)."""
    n = state.get("n", 0)
    alpha = max(cfg.alpha, 1.0 / (n + 1))
    m, v = ew(state.get("m", logx), state.get("v", 0.0), logx, alpha)
    return {**state, "m": round(m, 9), "v": round(v, 9), "n": min(n + 1, 10**6)}


def score(state: State, value: float, cfg: SpikeConfig) -> tuple[float, float, float]:
    """Return ``(score in [0, 1), z, baseline USD)`` of ``value`` against ``state``.

    >>> score({"m": 0.0, "v": 0.01, "n": 50}, 5.0, SpikeConfig())[0] > 0.5
    True
    """
    if state.get("n", 0) < cfg.warmup:
        return 0.0, 0.0, 0.0
    baseline = max(0.0, math.exp(state["m"]) - cfg.floor_usd)
    sd = max(math.sqrt(state["v"]), cfg.min_sd)
    z = (math.log(max(0.0, value) + cfg.floor_usd) - state["m"]) / sd
    if z <= 0 or value < cfg.ratio * baseline or value - baseline < cfg.min_excess_usd:
        return 0.0 if z <= 0 else min(0.49, z * z / (z * z + cfg.z * cfg.z)), z, baseline
    return z * z / (z * z + cfg.z * cfg.z), z, baseline


class SpikeDetector:
    """Per-scope step for ``spend_spike`` and ``egress_spike`` over ``SeriesBucket`` values.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(11)
    >>> det, state, seen = SpikeDetector(), {}, []
    >>> for i in range(50):
    ...     usd = 5 + rng.random() if not 40 <= i < 43 else 40.0
    ...     b = SeriesBucket("spend_spike", "team", "cx", 60.0 * i, 60.0 * (i + 1), usd)
    ...     state, found = det.update(state, b)
    ...     seen += [(f.state, i) for f in found]
    >>> seen
    [('open', 40), ('resolved', 44)]
    """

    kinds = (SPEND_SPIKE, EGRESS_SPIKE)

    def __init__(self, config: SpikeConfig | None = None) -> None:
        self.config = config or SpikeConfig()

    def new_state(self) -> State:
        """Return the state of a scope never seen before."""
        return {}

    def update(self, state: State, bucket: SeriesBucket) -> Step:
        """Score one closed bucket, then learn it unless it was flagged.

        A *late* bucket, one that ends no later than the scope's last (it holds only inputs that came
        after their minute was judged: ``DetectorRunner.close_late``), is part of a minute already
        judged. It can still open or grow a spike on its own, but it is not learned (a part of a
        minute would pull the baseline down), does not count as a calm bucket toward resolving one,
        and does not move ``last`` back (the quiet tick would take the scope for silent and resolve
        an open spike for want of data).
        """
        cfg = self.config
        state = dict(state)
        kind = bucket.kind
        late = bucket.end <= state.get("last", -math.inf)
        state["e"], state["w"] = bucket.entity, bucket.end - bucket.start
        if not late:
            state["last"] = bucket.end
        value = bucket.cost_usd
        s, z, baseline = score(state, value, cfg)
        flagged = s >= 0.5
        found: list[Finding] = []
        width_h = (bucket.end - bucket.start) / 3600.0
        if flagged:
            state["calm"] = 0
            if is_open(state, kind):
                record = state["open"][kind]
                state["hot"] = state.get("hot", 0) + 1
                grow_finding(
                    state,
                    kind,
                    usd=record["usd"] + value - state["base"],
                    usd_per_hour=(value - state["base"]) / width_h,
                )
            else:
                state["base"], state["hot"] = baseline, 1
                found.append(
                    open_finding(
                        state,
                        kind,
                        bucket.entity,
                        started=bucket.start,
                        detected=bucket.end,
                        severity="warning",
                        summary=f"{bucket.scope} {bucket.key}: {value:.2f} USD in {width_h * 60:g} min, "
                        f"{value / max(baseline, 1e-9):.1f}x its usual {baseline:.2f}",
                        usd=value - baseline,
                        usd_per_hour=(value - baseline) / width_h,
                        evidence=self._evidence(bucket, z, baseline),
                    )
                )
        elif is_open(state, kind) and not late:
            state["calm"] = state.get("calm", 0) + 1
            if state["calm"] == 1:
                state["calm_at"] = bucket.start
            if state["calm"] >= cfg.resolve_after:
                found += resolve_finding(
                    state, kind, state.pop("calm_at"), self._evidence(bucket, z, baseline)
                )
                for key in ("calm", "hot", "base"):
                    state.pop(key, None)
        if not late and (not (flagged or is_open(state, kind)) or state.get("hot", 0) > cfg.relearn_after):
            state.update(learn(state, math.log(max(0.0, value) + cfg.floor_usd), cfg))
        return state, found

    @staticmethod
    def _evidence(bucket: SeriesBucket, z: float, baseline: float) -> dict[str, Any]:
        evidence: dict[str, Any] = {
            "usd": round(bucket.cost_usd, 6),
            "baseline_usd": round(baseline, 6),
            "z": round(z, 2),
            "window_s": bucket.end - bucket.start,
        }
        if bucket.quantity:
            evidence["gb"] = round(bucket.quantity, 3)
        return evidence

    def tick(self, state: State, now: float) -> Step:
        """Resolve an open spike once the scope has had no buckets for ``resolve_after`` + 1 widths."""
        last, opened = state.get("last"), [k for k in self.kinds if is_open(state, k)]
        if last is None or not opened or now - last <= (self.config.resolve_after + 1) * state.get("w", 60.0):
            return state, []
        state = dict(state)
        found: list[Finding] = []
        for kind in opened:
            found += resolve_finding(state, kind, last, {"reason": "no data"})
        return state, found

    def expired(self, state: State, now: float) -> bool:
        """Return True once the scope has been quiet for ``expire_after_s``."""
        return quiet_for(state, now, self.config.expire_after_s)
