"""Idle and underused GPUs, and GPUs that stopped reporting: the per-GPU step.

A GPU is *idle* when it is billed to a workload (allocated) while its utilization stays below a
threshold for a duration (5% for 15 minutes by default; per cluster or team through overrides). The
finding carries the cost wasted so far and per hour, and resolves when utilization returns.
*Underused* is the lower-severity efficiency finding: mean utilization under a level over an hour.
A GPU whose samples stop is a *telemetry gap*, never idle: no data is not zero utilization.
"""

from __future__ import annotations

from typing import Any

from detectors.base import Step, grow_finding, is_open, maybe_update, open_finding, quiet_for, resolve_finding
from detectors.buckets import GpuBucket
from detectors.config import IdleGpuConfig
from detectors.findings import GPU_UNDERUSED, IDLE_GPU, TELEMETRY_GAP, Finding
from detectors.state import State

SLOT_S = 300.0


class IdleGpuDetector:
    """Per-GPU step for ``idle_gpu``, ``gpu_underused`` and ``telemetry_gap``.

    Parameters
    ----------
    config
        Thresholds; ``IdleGpuConfig()`` is the documented default (5% for 900 s).

    Examples
    --------
    >>> import random
    >>> rng = random.Random(42)
    >>> det = IdleGpuDetector(IdleGpuConfig(for_s=60))
    >>> state, seen = det.new_state(), []
    >>> for i in range(12):
    ...     util = 80 + 10 * rng.random() if i < 4 or i > 9 else 2 * rng.random()
    ...     b = GpuBucket("GPU-1", 15.0 * i, 15.0 * (i + 1), util, True, 0.01)
    ...     state, found = det.update(state, b)
    ...     seen += [(f.state, f.started_at.timestamp(), f.detected_at.timestamp()) for f in found]
    >>> seen
    [('open', 60.0, 120.0), ('resolved', 60.0, 120.0)]
    >>> state["open"] if "open" in state else "nothing open"
    'nothing open'
    """

    kinds = (IDLE_GPU, GPU_UNDERUSED, TELEMETRY_GAP)

    def __init__(self, config: IdleGpuConfig | None = None) -> None:
        self.config = config or IdleGpuConfig()

    def new_state(self) -> State:
        """Return the state of a GPU never seen before."""
        return {}

    def update(self, state: State, bucket: GpuBucket) -> Step:
        """Fold one GPU sample interval into the GPU's state."""
        cfg = self.config
        state = dict(state)
        found: list[Finding] = []
        interval = max(bucket.end - bucket.start, 1e-9)
        last = state.get("last")
        if is_open(state, TELEMETRY_GAP):
            found += resolve_finding(state, TELEMETRY_GAP, bucket.start, {"resumed_at": bucket.start})
        elif last is not None and bucket.start - last > cfg.gap_intervals * interval:
            state.pop("idle", None)  # missing samples break an idle run: we do not know what happened
        state["e"], state["iv"], state["last"] = bucket.entity, interval, bucket.end
        state["lab"] = {k: v for k, v in (("team", bucket.team), ("cluster", bucket.cluster)) if v}
        per_hour = bucket.cost_usd / interval * 3600.0
        util_below, for_s = cfg.thresholds(bucket.cluster, bucket.team)
        if bucket.allocated and bucket.util_pct < util_below:
            if state.get("idle") is None:
                state["idle"], state["waste"] = bucket.start, 0.0
            state["waste"] = state.get("waste", 0.0) + bucket.cost_usd
            if is_open(state, IDLE_GPU):
                grow_finding(state, IDLE_GPU, usd=state["waste"], usd_per_hour=per_hour)
                found += maybe_update(state, IDLE_GPU, bucket.end, cfg.update_every_s, self._evidence(bucket))
            elif bucket.end - state["idle"] >= for_s - 1e-6:
                found.append(
                    open_finding(
                        state,
                        IDLE_GPU,
                        bucket.entity,
                        started=state["idle"],
                        detected=bucket.end,
                        severity="warning",
                        summary=f"GPU billed but under {util_below:g}% utilization "
                        f"for {(bucket.end - state['idle']) / 60:.0f} min",
                        usd=state["waste"],
                        usd_per_hour=per_hour,
                        evidence={**self._evidence(bucket), "threshold_pct": util_below, "for_s": for_s},
                        labels=state["lab"],
                    )
                )
        else:
            state.pop("idle", None)
            state.pop("waste", None)
            found += resolve_finding(state, IDLE_GPU, bucket.start, self._evidence(bucket))
        found += self._underused(state, bucket, per_hour)
        return state, found

    def _underused(self, state: State, bucket: GpuBucket, per_hour: float) -> list[Finding]:
        cfg = self.config
        if not bucket.allocated:
            state.pop("slots", None)
            return resolve_finding(state, GPU_UNDERUSED, bucket.start)
        slot = bucket.start // SLOT_S * SLOT_S
        slots: list[list[float]] = [
            s for s in state.get("slots", []) if s[0] > bucket.end - cfg.underused_window_s - SLOT_S
        ]
        if slots and slots[-1][0] == slot:  # a new list: the input state's slots stay as they were
            slots[-1] = [slot, slots[-1][1] + bucket.util_pct, slots[-1][2] + 1]
        else:
            slots.append([slot, bucket.util_pct, 1])
        # only the last slot changed; the others were rounded when they were last written
        state["slots"] = [*slots[:-1], [slot, round(slots[-1][1], 3), slots[-1][2]]]
        covered = bucket.end - slots[0][0]
        mean = sum(s[1] for s in slots) / sum(s[2] for s in slots)
        if is_open(state, GPU_UNDERUSED):
            if mean >= cfg.underused_below_pct:
                return resolve_finding(state, GPU_UNDERUSED, bucket.start, {"mean_util_pct": round(mean, 2)})
            waste_per_hour = per_hour * (1.0 - mean / 100.0)
            record = state["open"][GPU_UNDERUSED]
            grow_finding(
                state,
                GPU_UNDERUSED,
                usd=record["usd"] + waste_per_hour * (bucket.end - bucket.start) / 3600,
                usd_per_hour=waste_per_hour,
            )
            return maybe_update(
                state, GPU_UNDERUSED, bucket.end, cfg.update_every_s, {"mean_util_pct": round(mean, 2)}
            )
        if covered >= cfg.underused_window_s and mean < cfg.underused_below_pct:
            waste_per_hour = per_hour * (1.0 - mean / 100.0)
            return [
                open_finding(
                    state,
                    GPU_UNDERUSED,
                    bucket.entity,
                    started=slots[0][0],
                    detected=bucket.end,
                    severity="info",
                    summary=f"GPU mean utilization {mean:.1f}% over the last {covered / 3600:.1f} h",
                    usd=waste_per_hour * covered / 3600,
                    usd_per_hour=waste_per_hour,
                    evidence={"mean_util_pct": round(mean, 2), "level_pct": cfg.underused_below_pct},
                    labels=state["lab"],
                )
            ]
        return []

    def tick(self, state: State, now: float) -> Step:
        """Open a telemetry gap once the GPU has been silent for ``gap_intervals`` sample intervals."""
        last, interval = state.get("last"), state.get("iv")
        if last is None or interval is None or is_open(state, TELEMETRY_GAP):
            return state, []
        if now - last <= self.config.gap_intervals * interval:
            return state, []
        state = dict(state)
        found = resolve_finding(state, IDLE_GPU, last, {"reason": "telemetry stopped"})
        found += resolve_finding(state, GPU_UNDERUSED, last, {"reason": "telemetry stopped"})
        state.pop("idle", None)
        found.append(
            open_finding(
                state,
                TELEMETRY_GAP,
                state["e"],
                started=last,
                detected=now,
                severity="warning",
                summary=f"no GPU samples for {(now - last) / 60:.1f} min",
                usd=0.0,
                usd_per_hour=0.0,
                evidence={"last_sample_end": last, "interval_s": interval},
                labels=state.get("lab", {}),
            )
        )
        return state, found

    def expired(self, state: State, now: float) -> bool:
        """Return True once the GPU has sent nothing for ``expire_after_s``."""
        return quiet_for(state, now, self.config.expire_after_s)

    @staticmethod
    def _evidence(bucket: GpuBucket) -> dict[str, Any]:
        return {"util_pct": bucket.util_pct, "allocated": bucket.allocated}
