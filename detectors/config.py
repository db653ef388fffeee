"""Every detector sensitivity in one place, with its default and why (docs/detectors.md lists them).

Load from YAML or env through the stream's settings, or build in code: ``DetectorConfig()`` is the
documented default. Unknown keys are errors, so a typo never silently keeps a default.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IdleOverride(_Frozen):
    """Idle thresholds for one cluster and/or team (the most specific match wins)."""

    cluster: str | None = None
    team: str | None = None
    util_below_pct: float | None = None
    for_s: float | None = None


class IdleGpuConfig(_Frozen):
    """``idle_gpu``, ``gpu_underused`` and ``telemetry_gap`` for billed GPUs."""

    util_below_pct: float = Field(5.0, description="a billed GPU under this utilization is idle")
    for_s: float = Field(900.0, description="idle this long (event time) before a finding opens")
    underused_below_pct: float = Field(10.0, description="hourly mean utilization under this is underused")
    underused_window_s: float = Field(3600.0, description="window of the underused mean")
    gap_intervals: float = Field(4.0, description="silent for this many sample intervals is a telemetry gap")
    update_every_s: float = Field(600.0, description="re-emit an open finding with its cost this often")
    expire_after_s: float = Field(86400.0, description="drop a GPU's state after this long without data")
    overrides: tuple[IdleOverride, ...] = ()

    def thresholds(self, cluster: str | None, team: str | None) -> tuple[float, float]:
        """Return ``(util_below_pct, for_s)`` for a GPU, applying the most specific override.

        >>> c = IdleGpuConfig(overrides=(IdleOverride(team="research", for_s=1800),))
        >>> c.thresholds("aws", "research"), c.thresholds("aws", "search")
        ((5.0, 1800.0), (5.0, 900.0))
        """
        util, span, best = self.util_below_pct, self.for_s, -1
        for rule in self.overrides:
            if (rule.cluster and rule.cluster != cluster) or (rule.team and rule.team != team):
                continue
            rank = (rule.cluster is not None) * 2 + (rule.team is not None)
            if rank > best:
                best = rank
                util = rule.util_below_pct if rule.util_below_pct is not None else self.util_below_pct
                span = rule.for_s if rule.for_s is not None else self.for_s
        return util, span


class RunawayConfig(_Frozen):
    """``token_runaway`` per app, user and session: windowed spend rate against a learned baseline."""

    window_s: float = Field(60.0, description="rate window; short so a 5x session is seen within 60 s")
    ratio: float = Field(2.5, description="flag when the rate is at least this many times the baseline")
    app_ratio: float = Field(3.0, description="the same for whole apps (real app traffic bursts 2.5x)")
    user_ratio: float = Field(
        3.0, description="the same for users (their traffic mixes their sessions: two at once can run 2.5x)"
    )
    confirm: int = Field(
        3, description="buckets over the bar before a finding opens (a normal bucket between them resets)"
    )
    z: float = Field(5.0, description="...and at least this many baseline deviations above it")
    z_p_value: float = Field(
        1e-4,
        description="...with, for a session against its own baseline, its request count at least this "
        "improbable too (spend alone is too jumpy)",
    )
    p_value: float = Field(
        3e-5, description="...or its request count this improbable (Poisson, own baseline x app lift)"
    )
    scan_fractions: tuple[float, ...] = Field(
        (0.25, 0.5, 1.0),
        description="sessions are judged over these fractions of the window too (p_value split among them)",
    )
    warm_p_value: float = Field(
        1e-3,
        description="between flagged buckets, one over the ratio bar and this improbable (or judged against "
        "peers) keeps the confirm count",
    )
    cusum_excess: float = Field(
        3.0,
        description="sessions: a sequential (CUSUM) test of the request count from the onset, against the "
        "own baseline x app lift, tuned to a runaway adding this many times the baseline on top",
    )
    cusum_h: float = Field(
        11.0,
        description="...over the ratio bar with its log-likelihood ratio above this is flagged like a "
        "count below p_value",
    )
    min_usd_per_hour: float = Field(5.0, description="ignore rates below this (noise on tiny spend)")
    min_requests: int = Field(8, description="a runaway is sustained: at least this many requests in window")
    user_min_requests: int = Field(20, description="the same for users (their traffic mixes many sessions)")
    baseline_tau_s: float = Field(
        1800.0, description="baseline time constant, in event time (not per bucket)"
    )
    peer_alpha: float = Field(0.01, description="peer distribution learning rate per session bucket")
    warmup: int = Field(30, description="buckets of own history before the own baseline is used")
    peer_warmup: int = Field(50, description="peer observations before peers are a baseline")
    resolve_below_ratio: float = Field(1.5, description="resolve once the rate falls under this x baseline")
    relearn_after_s: float = Field(3600.0, description="an anomaly this long becomes the new normal")
    update_every_s: float = Field(300.0, description="re-emit an open finding with its cost this often")
    expire_after_s: float = Field(3600.0, description="drop an entity's state after this long quiet")


class AgentLoopConfig(_Frozen):
    """``agent_loop``: one prompt repeated in a session, or a session that never stops."""

    repeats: int = Field(8, description="the same prompt_hash this many times in a session ...")
    window_s: float = Field(300.0, description="... within this window is a loop")
    max_requests: int = Field(1000, description="a session with more requests than this is unbounded (once)")
    quiet_s: float = Field(60.0, description="resolve once the session is quiet this long")
    expire_after_s: float = Field(3600.0, description="drop a session's state after this long quiet")


class ContextBloatConfig(_Frozen):
    """``context_bloat``: input tokens per request rising turn after turn in a session."""

    rising_turns: int = Field(8, description="this many consecutive rises of input tokens ...")
    min_growth: float = Field(1.5, description="... growing the context at least this factor")
    quiet_s: float = Field(60.0, description="resolve once the session is quiet this long")
    expire_after_s: float = Field(3600.0, description="drop a session's state after this long quiet")


class ModelSwitchConfig(_Frozen):
    """``model_switch``: an app's traffic moving to a pricier model."""

    price_ratio: float = Field(1.5, description="blended USD per token at least this x its baseline")
    min_shift: float = Field(0.2, description="and one model gained at least this share of requests")
    fast_alpha: float = Field(0.02, description="learning rate of the recent mix, per request (~50 requests)")
    slow_alpha: float = Field(
        0.001, description="learning rate of the baseline mix, per request (not while open)"
    )
    warmup: int = Field(300, description="requests before the baseline mix is trusted")
    accept_after_s: float = Field(3600.0, description="a switch this old is the new normal: resolve, relearn")
    max_models: int = Field(8, description="models tracked per app (state bound)")
    expire_after_s: float = Field(86400.0, description="drop an app's state after this long quiet")


class SpikeConfig(_Frozen):
    """``spend_spike`` and ``egress_spike`` over bucketed series per scope."""

    z: float = Field(5.0, description="robust score (log space) at which a bucket is a spike")
    ratio: float = Field(3.0, description="and the bucket is at least this many times the baseline")
    min_excess_usd: float = Field(0.5, description="and at least this many USD above it")
    floor_usd: float = Field(0.1, description="added before the log, so near-zero series are not jumpy")
    min_sd: float = Field(0.1, description="lower bound of the log-space deviation")
    alpha: float = Field(0.02, description="baseline learning rate per bucket (flagged buckets not learned)")
    warmup: int = Field(20, description="buckets before a scope can be flagged")
    resolve_after: int = Field(2, description="normal buckets in a row that resolve a spike")
    relearn_after: int = Field(60, description="flagged buckets in a row that become the new normal")
    expire_after_s: float = Field(7 * 86400.0, description="drop a scope's state after this long quiet")


class BucketConfig(_Frozen):
    """Bucket widths: detectors see per-entity time buckets, not raw events."""

    session_s: float = Field(2.0, description="session buckets: short, so loops are caught within requests")
    app_s: float = Field(10.0, description="app buckets")
    scope_s: float = Field(10.0, description="user buckets")
    series_s: tuple[float, ...] = Field((60.0, 3600.0), description="spend/egress series buckets")


class DetectorConfig(_Frozen):
    """All detector settings; ``DetectorConfig()`` is the documented default.

    >>> DetectorConfig().idle_gpu.for_s, DetectorConfig(idle_gpu={"for_s": 600}).idle_gpu.for_s
    (900.0, 600.0)
    """

    buckets: BucketConfig = BucketConfig()
    idle_gpu: IdleGpuConfig = IdleGpuConfig()
    runaway: RunawayConfig = RunawayConfig()
    agent_loop: AgentLoopConfig = AgentLoopConfig()
    context_bloat: ContextBloatConfig = ContextBloatConfig()
    model_switch: ModelSwitchConfig = ModelSwitchConfig()
    spikes: SpikeConfig = SpikeConfig()
