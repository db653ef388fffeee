"""Runaway token spend per app, user and session: the windowed spend rate against a baseline.

The rate is the spend of the last ``window_s`` seconds, in USD per hour. It is flagged when it is
``ratio`` times the baseline (with a busy app, ``ratio - 1`` times the baseline above what the app's
lift explains) and either ``z`` deviations above it or, against the entity's own baseline, its request
count is improbable for the usual request rate (Poisson tail below ``p_value``): sparse sessions have
spend too jumpy for a deviation test alone (their deviation counts only with a count improbable at
``z_p_value`` too), and users, which mix their sessions, have their own ``user_ratio``. Sessions are
also judged over the shorter spans of ``scan_fractions``, against the app's current level from
``app_activity`` (no lag behind a burst), and sequentially (``excess_cusum``: evidence accumulated
from the onset, not over one span). The baseline is the entity's own, learned online: time-weighted
rates that learn a bucket once it has left the window (so a ramp never raises its own bar), an
exponentially weighted variance, and per hour of day for apps (a busy afternoon is not an anomaly). An
entity too new to have one is compared with its peers: a new session with the distribution of its app's
sessions (in log space because session spend is heavy-tailed). A flagged bucket is never learned into
either baseline.
"""

from __future__ import annotations

import math
from typing import Any

from detectors.app_activity import add_traffic, lift_between, lifts
from detectors.base import (
    Step,
    ew,
    grow_finding,
    is_open,
    maybe_update,
    open_finding,
    quiet_for,
    quiet_tick,
    resolve_finding,
    time_rate,
)
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


def excess_cusum(score: float, requests: int, expected: float, lift: float, excess: float) -> float:
    """Return the Poisson CUSUM ``score`` after ``requests`` more, ``expected`` the own baseline count.

    A log-likelihood ratio accumulated from the onset (Page's CUSUM, reset at zero): the session's
    requests against ``lift`` x its own baseline (what a busy app explains), versus that plus ``excess``
    x its baseline on top (a runaway). Per request it gains ``ln(1 + excess / lift)``; per stretch it
    loses ``excess`` x the baseline count ``expected`` of that stretch, whatever the lift, so a session
    that only follows its app's burst drifts down.

    >>> s = 0.0
    >>> for _ in range(10):  # 4 requests a bucket where 1 is usual: 5x, no burst
    ...     s = excess_cusum(s, 4, 1.0, 1.0, 3.0)
    >>> round(s, 2)
    25.45
    >>> round(excess_cusum(s, 0, 30.0, 1.0, 3.0), 2)  # a quiet stretch brings it back to zero
    0.0
    >>> s = 0.0
    >>> for _ in range(10):  # 3 where 1 is usual, all explained by a 3x burst
    ...     s = excess_cusum(s, 3, 1.0, 3.0, 3.0)
    >>> s
    0.0
    """
    gain = requests * math.log1p(excess / lift) if requests else 0.0
    return max(0.0, score + gain - excess * expected)


def slide(
    kept: list[list[Any]], bucket: LlmBucket, window_s: float
) -> tuple[list[list[Any]], list[list[Any]], float, int]:
    """Move an entity's window ``kept`` on to ``bucket``: ``(dropped, window, usd, requests)``.

    The entries (``[end, usd, requests, start]``, oldest first) that end ``window_s`` or more before
    the bucket does leave it; the bucket's entry is appended; ``usd`` and ``requests`` are the new
    window's sums. ``kept`` is not changed.

    >>> b = LlmBucket("session", "s1", "bot", 60.0, 62.0, requests=2, cost_usd=0.5)
    >>> slide([[1.0, 0.25, 1, 0.0], [10.0, 0.25, 3, 8.0]], b, 60.0)
    ([[1.0, 0.25, 1, 0.0]], [[10.0, 0.25, 3, 8.0], [62.0, 0.5, 2, 60.0]], 0.75, 5)
    """
    cut, edge, size = 0, bucket.end - window_s, len(kept)
    while cut < size and kept[cut][0] <= edge:
        cut += 1
    dropped, window = kept[:cut], kept[cut:]
    window.append([bucket.end, round(bucket.cost_usd, 7), bucket.requests, bucket.start])
    usd, requests = 0, 0  # one pass, in order: the same sums as sum() over each column
    for entry in window:
        usd += entry[1]
        requests += entry[2]
    return dropped, window, usd, requests


class TokenRunawayDetector:
    """Per-entity step for ``token_runaway`` over app, user or session ``LlmBucket`` values.

    Parameters
    ----------
    config
        Sensitivity; ``RunawayConfig()`` is the documented default (2.5x and p 3e-5 over 60 s).

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
    [50.0]
    """

    kinds = (TOKEN_RUNAWAY,)

    def __init__(self, config: RunawayConfig | None = None) -> None:
        self.config = config or RunawayConfig()
        self._min_fraction = min(self.config.scan_fractions)

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
        dropped, window, usd, requests = slide(state.get("w", []), bucket, cfg.window_s)
        state["w"] = window
        rate = usd / cfg.window_s * HOUR_S
        scope = bucket.scope
        slot = str(int(bucket.start // HOUR_S % 24)) if scope == "app" else None
        least = cfg.user_min_requests if scope == "user" else cfg.min_requests
        found: list[Finding] = []
        flagged = warm = False
        opened = "open" in state and TOKEN_RUNAWAY in state["open"]
        # no span holds more than the window, nor spends faster than it over the shortest span: a bucket
        # under both gates, with nothing open or counted, is only learned (most buckets: no baseline read)
        if (
            not opened
            and "hot" not in state
            and (requests < least or rate / self._min_fraction < cfg.min_usd_per_hour)
        ):
            base = None
        else:
            base = self._baseline(state, slot, peers, bucket.end)
        if base is None:
            state.pop("cs", None)
        if base is not None:
            mean, sd, basis = base
            ratio = cfg.app_ratio if scope == "app" else cfg.user_ratio if scope == "user" else cfg.ratio
            # no span holds more than the window, nor spends faster than it over the shortest span, and
            # every bar is at least ratio x the baseline: most buckets need no judging at all
            top_rate = rate / self._min_fraction
            if requests < least or top_rate < cfg.min_usd_per_hour or top_rate < ratio * mean:
                spans = []
            elif basis == "peer":
                spans = [(cfg.window_s, rate, requests, 1.0, 1.0)]
            else:
                spans = self._judge(state, bucket, peers, app)
            # the own request rate only for a bucket that is judged (two exponentials)
            per_s = self._rates(state)[1] if basis != "peer" and spans else None
            p_bar = cfg.p_value / max(1, len(spans))  # a scan over several spans: split the budget
            expected = lift_usd = 0.0
            # the sequential test: [score, time it reaches], kept while the session is judged
            seq = state.pop("cs", None)
            score = self._sequential(state, seq, peers, per_s) if scope == "session" and not opened else 0.0
            for span, judged_rate, judged, lift_usd, lift_req in spans:
                # a busy app explains lift x the usual spend; a runaway spends (ratio - 1) x usual on top
                explained = mean * lift_usd
                expected = per_s * span * lift_req if per_s is not None else 0.0
                if (
                    judged < least
                    or judged_rate < cfg.min_usd_per_hour
                    or judged_rate < explained + (ratio - 1.0) * mean
                ):
                    continue
                # over the ratio bar, and the excess count accumulated since the onset is improbable
                if score > cfg.cusum_h:
                    flagged = True
                    break
                p_value = poisson_sf(judged, expected) if per_s is not None else 1.0
                # over the ratio bar and either unlikely by count or (against peers) with no count test
                warm = warm or p_value <= cfg.warm_p_value or per_s is None
                # spend alone (not the count) is too jumpy to judge over less than the window, and a
                # session's spend deviation counts only with an unusual count too (more spend per request
                # at the usual pace is context bloat's to call)
                spend_z = span == cfg.window_s and judged_rate >= explained + cfg.z * sd * lift_usd
                if spend_z and scope == "session" and per_s is not None:
                    spend_z = p_value <= cfg.z_p_value
                if spend_z or p_value <= p_bar:
                    flagged = True
                    break
            if opened:
                found += self._grow(state, bucket, rate, requests)
                if rate < cfg.resolve_below_ratio * state["bm"]:
                    state.pop("bm", None)
                    found += resolve_finding(
                        state, TOKEN_RUNAWAY, bucket.start, {"usd_per_hour": round(rate, 4)}
                    )
                    flagged = False
            elif flagged:
                state["hot"] = state.get("hot", 0) + 1
            elif not warm:  # evidence hovering just under the bar keeps the count; a normal bucket resets
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
                        usd=max(0.0, usd - mean * cfg.window_s / HOUR_S),
                        usd_per_hour=rate - mean,
                        evidence={
                            "usd_per_hour": round(rate, 4),
                            "baseline_usd_per_hour": round(mean, 4),
                            "baseline_sd": round(sd, 4),
                            "basis": basis,
                            "requests_in_window": requests,
                            "expected_requests": round(expected, 2),
                            "sequential_score": round(score, 2),
                            "app_lift": round(lift_usd, 3),
                            "input_tokens": bucket.input_tokens,
                            "output_tokens": bucket.output_tokens,
                        },
                        labels={"team": bucket.team} if bucket.team else {},
                    )
                )
        # unchanged since ``opened`` unless the bucket was judged (it may have opened or resolved)
        now_open = opened if base is None else is_open(state, TOKEN_RUNAWAY)
        open_long = now_open and bucket.end - state["open"][TOKEN_RUNAWAY]["s"] > cfg.relearn_after_s
        learn = not (flagged or now_open) or open_long
        if not learn:
            window[-1].append(0)  # held: never learned, even after it leaves the window
        self._count(state, bucket, dropped, learn)
        if learn:
            self._learn(state, slot, rate, bucket.end)
        state["rate"] = rate
        return state, found

    def _sequential(
        self, state: State, seq: list[float] | None, peers: State | None, per_s: float | None
    ) -> float:
        """Advance the session's sequential test (``excess_cusum``) by the bucket before this one.

        Lagged one bucket: the app's level over a stretch is complete only once every session's bucket
        ending in it has arrived, and those ending with this bucket may not have. The stretch since the
        score's time is judged against the app's lift over exactly those seconds (``lift_between``), so
        a session's share of a burst is explained however short the burst. Stored only while above zero.
        """
        window = state["w"]
        if per_s is None or len(window) < 2:
            return 0.0
        cfg = self.config
        prev_end, prev_req, prev_start = window[-2][0], window[-2][2], window[-2][3]
        score, since = seq if seq else (0.0, prev_start)
        lift = lift_between(
            peers,
            max(since, prev_end - cfg.window_s),
            prev_end,
            prev_req,
            per_s,
            cfg.window_s,
            cfg.baseline_tau_s,
        )
        if lift is None:
            return 0.0
        score = excess_cusum(score, prev_req, per_s * max(0.0, prev_end - since), lift, cfg.cusum_excess)
        if score > 0.0:
            state["cs"] = [score, prev_end]
        return score

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
        self, state: State, slot: str | None, peers: State | None, now: float
    ) -> tuple[float, float, str] | None:
        cfg = self.config
        seasonal = state.get("h", {}).get(slot) if slot else None
        if seasonal and seasonal[2] >= cfg.warmup:
            return seasonal[0], math.sqrt(seasonal[1]), "hour-of-day"
        learned_s = state["ql"] - state["q0"] if "q0" in state else cfg.window_s
        if state.get("n", 0) >= cfg.warmup and learned_s >= cfg.window_s:
            # the mean is the time-weighted rate: the EW mean of windows sampled when data arrives runs
            # high for sparse entities (their samples fall in their busy moments)
            if "q0" in state:  # _rates(state)[0], without the request rate it would also compute
                mean = time_rate(state["uc"], state["q0"], state["ql"], cfg.baseline_tau_s) * HOUR_S
            else:
                mean = state["m"]
            return mean, math.sqrt(state["v"]), "own"
        if peers and peers.get("n", 0) >= cfg.peer_warmup:
            # peers live in log1p space; map their upper band back to USD/h
            mean = math.expm1(peers["m"])
            upper = math.expm1(peers["m"] + cfg.z * math.sqrt(peers["v"]))
            return mean, (upper - mean) / cfg.z, "peer"
        return None

    def _learn(self, state: State, slot: str | None, rate: float, now: float) -> None:
        # weight by elapsed time, not by bucket: a burst of busy buckets must not drag the baseline up
        elapsed = max(0.0, now - state.get("lt", now))
        state["lt"] = now
        n = state.get("n", 0)
        warm = self.config.warmup
        # a plain mean until warm, then time-weighted (the exp only when it is used)
        alpha = 1.0 / (n + 1) if n < warm else 1.0 - math.exp(-elapsed / self.config.baseline_tau_s)
        m, v = ew(state.get("m", 0.0), state.get("v", 0.0), rate, alpha)
        state["m"], state["v"] = m, v
        state["n"] = min(n + 1, 10**6)
        if slot is not None:
            hours: dict[str, Any] = state.setdefault("h", {})
            m, v, k = hours.get(slot, [0.0, 0.0, 0])
            a = 1.0 / (k + 1) if k < warm else 1.0 - math.exp(-elapsed / self.config.baseline_tau_s)
            m, v = ew(m, v, rate, a)
            hours[slot] = [round(m, 7), round(v, 7), min(k + 1, 10**6)]

    def _judge(
        self, state: State, bucket: LlmBucket, peers: State | None, app: State | None
    ) -> list[tuple[float, float, int, float, float]]:
        """Return ``(span, USD/h, requests, USD lift, request lift)`` for each span to judge.

        Own traffic and the app's level are read over the same stretch of time, or a burst's first
        seconds show in one and not the other: a session against its app's sessions up to the bucket
        before this one (others ending with this one may not have arrived yet), over the scan spans so a
        runaway's first seconds are not diluted by the quiet minute before; a user against the app's
        last closed bucket; an app against itself.
        """
        cfg, window = self.config, state["w"]
        if bucket.scope == "session" and peers:
            own = [(cfg.window_s * f, 0.0, 0) for f in cfg.scan_fractions]
            for entry in window[:-1]:  # earlier buckets: the bucket being judged is not in the level yet
                age = bucket.end - entry[0]
                own = [(s, u + entry[1], r + entry[2]) if age < s else (s, u, r) for s, u, r in own]
            found = lifts(peers, bucket.end, own, self._rates(state), cfg.window_s, cfg.baseline_tau_s)
            if found is not None:
                return [
                    (span, usd * HOUR_S / span, req, lift_usd, lift_req)
                    for (span, usd, req), (lift_usd, lift_req) in zip(own, found, strict=True)
                ]
        to_rate = HOUR_S / cfg.window_s
        if app and bucket.scope != "app" and "last" in app:
            upto = app["last"]
            seen = [w for w in window if upto - cfg.window_s < w[0] <= upto]
            usd, req = sum(w[1] for w in seen), sum(w[2] for w in seen)
            if "q0" in app and "q0" in state:
                app_usd, app_req = self._rates(app)
                own_usd, own_req = self._rates(state)
                rest_usd = (app_usd - own_usd) * cfg.window_s
                rest_req = (app_req - own_req) * cfg.window_s
                in_usd = sum(w[1] for w in app.get("w", ()) if w[0] > upto - cfg.window_s) - usd
                in_req = sum(w[2] for w in app.get("w", ()) if w[0] > upto - cfg.window_s) - req
                lift_usd = max(1.0, in_usd / rest_usd) if rest_usd > 0 else 1.0
                lift_req = max(1.0, in_req / rest_req) if rest_req > 0 else 1.0
                return [(cfg.window_s, usd * to_rate, req, lift_usd, lift_req)]
            lift = self.app_lift(app, {"rate": usd * to_rate, "m": state.get("m", 0.0)})
            return [(cfg.window_s, usd * to_rate, req, lift, lift)]
        usd, requests = 0, 0  # summed in order, as ``slide`` sums them (not ``sum()``: 3.12 compensates)
        for entry in window:
            usd += entry[1]
            requests += entry[2]
        return [(cfg.window_s, usd * to_rate, requests, 1.0, 1.0)]

    def _rates(self, state: State) -> tuple[float, float]:
        """Return the own baseline USD and requests per second (time-weighted, up to a window ago)."""
        if "q0" not in state:
            return 0.0, 0.0
        tau, q0, upto = self.config.baseline_tau_s, state["q0"], state["ql"]
        return time_rate(state["uc"], q0, upto, tau), time_rate(state["qc"], q0, upto, tau)

    def _count(self, state: State, bucket: LlmBucket, dropped: list[list[Any]], learn: bool) -> None:
        """Learn the buckets that left the window into the decayed sums (or hold the rates there).

        The sums stop a window short of now, so the traffic being judged is never part of its own
        baseline: a runaway's first minute cannot raise its own bar.
        """
        tau = self.config.baseline_tau_s
        if "q0" not in state:
            state["q0"] = state["ql"] = bucket.start
            state["uc"] = state["qc"] = 0.0
            if "mq" in state:  # a state from before the sums: start them at the learned request rate
                state["q0"] = bucket.start - tau
                state["qc"] = state.pop("mq") / self.config.window_s * tau * -math.expm1(-1.0)
                state["uc"] = state.get("m", 0.0) / HOUR_S * tau * -math.expm1(-1.0)
        for entry in dropped:
            self._advance(state, entry[0], entry[1], entry[2], learn and (len(entry) < 5 or bool(entry[4])))
        upto = bucket.end - self.config.window_s
        if upto > state["ql"]:  # a session younger than the window has nothing to move on
            self._advance(state, upto, 0.0, 0.0, learn)

    def _advance(self, state: State, to: float, usd: float, requests: float, learn: bool) -> None:
        last = state["ql"]
        if to <= last:
            return
        tau = self.config.baseline_tau_s
        if not learn:  # add what the baseline expects over the stretch: the rates stay where they are
            usd_rate, req_rate = self._rates(state)
            stretch = tau * -math.expm1(-(to - last) / tau)
            usd, requests = usd_rate * stretch, req_rate * stretch
        # decayed() for both sums with one exp: the same factor, the same arithmetic
        decay = math.exp(-(to - last) / tau)
        state["uc"] = state["uc"] * decay + usd
        state["qc"] = state["qc"] * decay + requests
        state["ql"] = to

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

    def learn_peer(self, peers: State, session_state: State, *, owned: bool = False) -> State:
        """Learn a session's current rate into its app's peer distribution (not while it is flagged).

        ``peers`` is not changed unless ``owned`` (the caller keeps no other reference to it, as the
        runner does between restarts): then it is updated in place, without copies.

        >>> det = TokenRunawayDetector()
        >>> peers = det.learn_peer({}, {"rate": 3.0})
        >>> peers["n"], round(peers["m"], 3)
        (1, 1.386)
        """
        if "rate" not in session_state:
            return peers
        if not owned:
            peers = dict(peers)
        window = session_state.get("w")
        if window:  # every session's traffic counts toward how busy the app is now, flagged or not
            latest = window[-1]
            add_traffic(
                peers,
                (latest[3], latest[0], latest[1], latest[2]),
                self.config.window_s,
                self.config.baseline_tau_s,
                owned=owned,
            )
        if is_open(session_state, TOKEN_RUNAWAY) or "hot" in session_state:
            return peers  # a flagged session is not learned, confirmed yet or not
        n = peers.get("n", 0)
        alpha = max(self.config.peer_alpha, 1.0 / (n + 1))
        peers["m"], peers["v"] = ew(
            peers.get("m", 0.0), peers.get("v", 0.0), math.log1p(session_state["rate"]), alpha
        )
        peers["n"] = min(n + 1, 10**6)
        return peers

    def tick(self, state: State, now: float) -> Step:
        """Resolve an open runaway once the entity has been quiet for a whole window."""
        return quiet_tick(state, TOKEN_RUNAWAY, now, self.config.window_s, forget=("bm",))

    def expired(self, state: State, now: float) -> bool:
        """Return True once the entity has been quiet for ``expire_after_s``."""
        return quiet_for(state, now, self.config.expire_after_s)
