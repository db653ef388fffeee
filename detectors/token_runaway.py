"""Runaway token spend per app, user and session: the windowed spend rate against a baseline.

The rate is the spend of the last ``window_s`` seconds, in USD per hour. It is flagged when it is
``ratio`` times the baseline and either ``z`` deviations above it or, against the entity's own
baseline, its request count is improbable for the usual request rate (Poisson tail below
``p_value``): sparse sessions have spend too jumpy for a deviation test alone. The baseline is the entity's
own, learned online (exponentially weighted mean and variance; per hour of day for apps, so a busy
afternoon is not an anomaly). An entity too new to have one is compared with its peers: a new session
with the distribution of its app's sessions (``PeerStats``, in log space because session spend is
heavy-tailed). A flagged bucket is never learned into either baseline.
"""

from __future__ import annotations

import math
from typing import Any

from detectors.base import Step, ew, grow_finding, is_open, maybe_update, open_finding, resolve_finding
from detectors.buckets import LlmBucket
from detectors.config import RunawayConfig
from detectors.findings import TOKEN_RUNAWAY, Finding
from detectors.state import State

HOUR_S = 3600.0


def poisson_sf(k: int, mean: float) -> float:
    """Return P(N >= k) for N ~ Poisson(mean): how surprising ``k`` requests in a window are.

    >>> round(poisson_sf(3, 1.0), 4), poisson_sf(0, 2.0)
    (0.0803, 1.0)
    """
    if k <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    log_term = k * math.log(mean) - mean - math.lgamma(k + 1)
    total, term = 0.0, math.exp(log_term)
    i = k
    while term > 1e-18 * max(total, 1e-300) and i < k + 1000:
        total += term
        i += 1
        term *= mean / i
    return min(1.0, total)


class TokenRunawayDetector:
    """Per-entity step for ``token_runaway`` over app, user or session ``LlmBucket`` values.

    Parameters
    ----------
    config
        Sensitivity; ``RunawayConfig()`` is the documented default (3x and 4 deviations over 60 s).

    Examples
    --------
    A session that spends steadily, then five times faster:

    >>> import random
    >>> rng = random.Random(7)
    >>> det = TokenRunawayDetector()
    >>> state, opened = det.new_state(), []
    >>> for i in range(400):
    ...     n = 1 if i < 300 else 5
    ...     b = LlmBucket("session", "s1", "bot", 10.0 * i, 10.0 * (i + 1), requests=3 * n,
    ...                   cost_usd=n * 0.03 * (0.8 + 0.4 * rng.random()))
    ...     state, found = det.update(state, b)
    ...     opened += [f.detected_at.timestamp() - 3000 for f in found if f.state == "open"]
    >>> opened
    [40.0]
    """

    kinds = (TOKEN_RUNAWAY,)

    def __init__(self, config: RunawayConfig | None = None) -> None:
        self.config = config or RunawayConfig()

    def new_state(self) -> State:
        """Return the state of an entity never seen before."""
        return {}

    def update(
        self, state: State, bucket: LlmBucket, peers: State | None = None, app: State | None = None
    ) -> Step:
        """Fold one closed bucket of the entity.

        For a session, ``peers`` is its app's peer state (``learn_peer``) and ``app`` the app's own
        runaway state (read only): a session that only follows a busy app is not a runaway, so its
        baseline is scaled by how far the rest of the app runs above its baseline right now.
        """
        cfg = self.config
        state = dict(state)
        state["e"], state["last"] = bucket.entity, bucket.end
        window = [w for w in state.get("w", []) if w[0] > bucket.end - cfg.window_s]
        window.append([bucket.end, round(bucket.cost_usd, 7), bucket.requests, bucket.start])
        state["w"] = window
        rate = sum(w[1] for w in window) / cfg.window_s * HOUR_S
        requests = sum(w[2] for w in window)
        slot = str(int(bucket.start // HOUR_S % 24)) if bucket.scope == "app" else None
        base = self._baseline(state, slot, peers)
        found: list[Finding] = []
        flagged = False
        if base is not None:
            mean, sd, basis = base
            expected = state.get("mq") if basis != "peer" else None
            lift = self.app_lift(app, state) if basis != "peer" else 1.0
            if lift > 1.0:
                mean, sd = mean * lift, sd * lift
                expected = expected * lift if expected is not None else None
            ratio = cfg.app_ratio if bucket.scope == "app" else cfg.ratio
            least = cfg.user_min_requests if bucket.scope == "user" else cfg.min_requests
            flagged = (
                requests >= least
                and rate >= cfg.min_usd_per_hour
                and rate >= ratio * mean
                and (
                    rate >= mean + cfg.z * sd
                    or (expected is not None and poisson_sf(requests, expected) <= cfg.p_value)
                )
            )
            if is_open(state, TOKEN_RUNAWAY):
                found += self._grow(state, bucket, rate, requests)
                if rate < cfg.resolve_below_ratio * state["bm"]:
                    state.pop("bm", None)
                    found += resolve_finding(
                        state, TOKEN_RUNAWAY, bucket.start, {"usd_per_hour": round(rate, 4)}
                    )
                    flagged = False
            elif flagged:
                state["hot"] = state.get("hot", 0) + 1
            else:
                state.pop("hot", None)
            if flagged and not is_open(state, TOKEN_RUNAWAY) and state["hot"] >= cfg.confirm:
                state.pop("hot", None)
                state["bm"] = mean
                first = min(
                    (w[3] for w in window if w[1] / max(w[0] - w[3], 1e-9) * HOUR_S > ratio * mean),
                    default=bucket.start,
                )
                found.append(
                    open_finding(
                        state,
                        TOKEN_RUNAWAY,
                        bucket.entity,
                        started=first,
                        detected=bucket.end,
                        severity="error",
                        summary=f"{bucket.scope} spending {rate:.2f} USD/h, "
                        f"{rate / max(mean, 1e-9):.1f}x its {basis} baseline",
                        usd=max(0.0, sum(w[1] for w in window) - mean * cfg.window_s / HOUR_S),
                        usd_per_hour=rate - mean,
                        evidence={
                            "usd_per_hour": round(rate, 4),
                            "baseline_usd_per_hour": round(mean, 4),
                            "baseline_sd": round(sd, 4),
                            "basis": basis,
                            "requests_in_window": requests,
                            "input_tokens": bucket.input_tokens,
                            "output_tokens": bucket.output_tokens,
                        },
                        labels={"team": bucket.team} if bucket.team else {},
                    )
                )
        open_long = (
            is_open(state, TOKEN_RUNAWAY)
            and bucket.end - state["open"][TOKEN_RUNAWAY]["s"] > cfg.relearn_after_s
        )
        if not (flagged or is_open(state, TOKEN_RUNAWAY)) or open_long:
            self._learn(state, slot, rate, requests, bucket.end)
        state["rate"] = rate
        return state, found

    def _grow(self, state: State, bucket: LlmBucket, rate: float, requests: int) -> list[Finding]:
        record = state["open"][TOKEN_RUNAWAY]
        above = bucket.cost_usd - state["bm"] * (bucket.end - bucket.start) / HOUR_S
        grow_finding(
            state,
            TOKEN_RUNAWAY,
            usd=record["usd"] + max(0.0, above),
            usd_per_hour=max(0.0, rate - state["bm"]),
        )
        return maybe_update(
            state,
            TOKEN_RUNAWAY,
            bucket.end,
            self.config.update_every_s,
            {"usd_per_hour": round(rate, 4), "requests_in_window": requests},
        )

    def _baseline(
        self, state: State, slot: str | None, peers: State | None
    ) -> tuple[float, float, str] | None:
        cfg = self.config
        seasonal = state.get("h", {}).get(slot) if slot else None
        if seasonal and seasonal[2] >= cfg.warmup:
            return seasonal[0], math.sqrt(seasonal[1]), "hour-of-day"
        if state.get("n", 0) >= cfg.warmup:
            return state["m"], math.sqrt(state["v"]), "own"
        if peers and peers.get("n", 0) >= cfg.peer_warmup:
            # peers live in log1p space; map their upper band back to USD/h
            mean = math.expm1(peers["m"])
            upper = math.expm1(peers["m"] + cfg.z * math.sqrt(peers["v"]))
            return mean, (upper - mean) / cfg.z, "peer"
        return None

    def _learn(self, state: State, slot: str | None, rate: float, requests: int, now: float) -> None:
        # weight by elapsed time, not by bucket: a burst of busy buckets must not drag the baseline up
        elapsed = max(0.0, now - state.get("lt", now))
        state["lt"] = now
        step = 1.0 - math.exp(-elapsed / self.config.baseline_tau_s)
        n = state.get("n", 0)
        warm = self.config.warmup
        alpha = 1.0 / (n + 1) if n < warm else step  # a plain mean until warm, then time-weighted
        state["mq"] = round(state.get("mq", 0.0) + alpha * (requests - state.get("mq", 0.0)), 5)
        state["m"], state["v"] = (
            round(x, 7) for x in ew(state.get("m", 0.0), state.get("v", 0.0), rate, alpha)
        )
        state["n"] = min(n + 1, 10**6)
        if slot is not None:
            hours: dict[str, Any] = state.setdefault("h", {})
            m, v, k = hours.get(slot, [0.0, 0.0, 0])
            a = 1.0 / (k + 1) if k < warm else step
            m, v = ew(m, v, rate, a)
            hours[slot] = [round(m, 7), round(v, 7), min(k + 1, 10**6)]

    @staticmethod
    def app_lift(app_state: State | None, own: State | None = None) -> float:
        """Return how many times its baseline the rest of an app spends now, without ``own`` (>= 1).

        >>> TokenRunawayDetector.app_lift({"rate": 30.0, "m": 10.0, "n": 50}, {"rate": 6.0, "m": 2.0})
        3.0
        >>> TokenRunawayDetector.app_lift(None)
        1.0
        """
        if not app_state or app_state.get("n", 0) < 2:
            return 1.0
        own = own or {}
        rest_base = float(app_state.get("m", 0.0) - own.get("m", 0.0))
        if rest_base <= 0:
            return 1.0
        return max(1.0, float(app_state.get("rate", 0.0) - own.get("rate", 0.0)) / rest_base)

    def learn_peer(self, peers: State, session_state: State) -> State:
        """Learn a session's current rate into its app's peer distribution (not while it is flagged).

        >>> det = TokenRunawayDetector()
        >>> peers = det.learn_peer({}, {"rate": 3.0})
        >>> peers["n"], round(peers["m"], 3)
        (1, 1.386)
        """
        if "rate" not in session_state or is_open(session_state, TOKEN_RUNAWAY):
            return peers
        peers = dict(peers)
        n = peers.get("n", 0)
        alpha = max(self.config.peer_alpha, 1.0 / (n + 1))
        peers["m"], peers["v"] = ew(
            peers.get("m", 0.0), peers.get("v", 0.0), math.log1p(session_state["rate"]), alpha
        )
        peers["n"] = min(n + 1, 10**6)
        return peers

    def tick(self, state: State, now: float) -> Step:
        """Resolve an open runaway once the entity has been quiet for a whole window."""
        last = state.get("last")
        if last is None or not is_open(state, TOKEN_RUNAWAY) or now - last <= self.config.window_s:
            return state, []
        state = dict(state)
        state.pop("bm", None)
        return state, resolve_finding(state, TOKEN_RUNAWAY, last, {"reason": "quiet"})

    def expired(self, state: State, now: float) -> bool:
        """Return True once the entity has been quiet for ``expire_after_s``."""
        return bool(now - float(state.get("last", now)) > self.config.expire_after_s)
