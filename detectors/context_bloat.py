"""Context bloat: a session whose input tokens per request rise turn after turn.

Per session, over the per-request input sizes a session bucket keeps in order: ``rising_turns``
consecutive rises that grow the context by at least ``min_growth`` is bloat. The impact is the spend
on input tokens beyond the size the run started at. It resolves at the first turn that does not grow,
or when the session goes quiet.
"""

from __future__ import annotations

from detectors.base import (
    Step,
    begin_step,
    grow_finding,
    is_open,
    open_finding,
    quiet_for,
    quiet_tick,
    resolve_finding,
)
from detectors.buckets import LlmBucket
from detectors.config import ContextBloatConfig
from detectors.findings import CONTEXT_BLOAT
from detectors.state import State


class ContextBloatDetector:
    """Per-session step for ``context_bloat``.

    Parameters
    ----------
    config
        Sensitivity; ``ContextBloatConfig()`` is the documented default (8 rises, 1.5x growth).

    Examples
    --------
    >>> import random
    >>> rng = random.Random(3)
    >>> det = ContextBloatDetector()
    >>> state, size, events = det.new_state(), 1000, []
    >>> for i in range(12):
    ...     inputs = [size + 300 * k + rng.randint(0, 200) for k in range(2)] if i < 8 else [900]
    ...     size = inputs[-1]
    ...     b = LlmBucket("session", "s", "bot", 2.0 * i, 2.0 * (i + 1), requests=len(inputs),
    ...                   input_tokens=sum(inputs), cost_usd=3e-6 * sum(inputs), inputs=inputs)
    ...     state, found = det.update(state, b)
    ...     events += [(f.state, i) for f in found]
    >>> events
    [('open', 4), ('resolved', 8)]
    """

    kinds = (CONTEXT_BLOAT,)

    def __init__(self, config: ContextBloatConfig | None = None) -> None:
        self.config = config or ContextBloatConfig()

    def new_state(self) -> State:
        """Return the state of a session never seen before."""
        return {}

    def update(self, state: State, bucket: LlmBucket) -> Step:
        """Fold one closed session bucket (its per-request input sizes, in order)."""
        cfg = self.config
        state, found = begin_step(state, CONTEXT_BLOAT, bucket, cfg.quiet_s, forget=("run",))
        usd_per_token = bucket.cost_usd / max(bucket.input_tokens + bucket.output_tokens, 1)
        prev = state.get("prev")
        run = state.get("run", 0)
        for size in bucket.inputs:
            if prev is not None and size > prev:
                if run == 0:
                    state["run_from"], state["run_at"] = prev, bucket.start
                run += 1
                if is_open(state, CONTEXT_BLOAT):
                    record = state["open"][CONTEXT_BLOAT]
                    extra = (size - state["run_from"]) * usd_per_token
                    hours = max(bucket.end - record["s"], 1.0) / 3600.0
                    grow_finding(
                        state,
                        CONTEXT_BLOAT,
                        usd=record["usd"] + extra,
                        usd_per_hour=(record["usd"] + extra) / hours,
                    )
                elif run >= cfg.rising_turns and size >= cfg.min_growth * state["run_from"]:
                    found.append(
                        open_finding(
                            state,
                            CONTEXT_BLOAT,
                            bucket.entity,
                            started=state["run_at"],
                            detected=bucket.end,
                            severity="warning",
                            summary=f"input grew {run} turns in a row, {state['run_from']} to {size} tokens",
                            usd=0.0,
                            usd_per_hour=0.0,
                            evidence={"turns": run, "from_tokens": state["run_from"], "to_tokens": size},
                            labels={"team": bucket.team} if bucket.team else {},
                        )
                    )
            else:
                run = 0
                if is_open(state, CONTEXT_BLOAT):
                    found += resolve_finding(state, CONTEXT_BLOAT, bucket.start, {"tokens": size})
            prev = size
        state["prev"], state["run"] = prev, run
        return state, found

    def tick(self, state: State, now: float) -> Step:
        """Resolve open bloat once the session has been quiet for ``quiet_s``."""
        return quiet_tick(state, CONTEXT_BLOAT, now, self.config.quiet_s, forget=("run",))

    def expired(self, state: State, now: float) -> bool:
        """Return True once the session has been quiet for ``expire_after_s``."""
        return quiet_for(state, now, self.config.expire_after_s)
