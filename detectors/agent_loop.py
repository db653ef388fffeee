"""Agent loops: a session that sends the same prompt again and again, or never stops sending.

Per session, over session buckets: the same ``prompt_hash`` at least ``repeats`` times within
``window_s`` is a loop; so is a session whose request count passes ``max_requests``. The finding's
impact is the session's spend since the loop began. It resolves once the session goes quiet.
"""

from __future__ import annotations

from detectors.base import Step, begin_step, grow_finding, is_open, open_finding, quiet_for, quiet_tick
from detectors.buckets import LlmBucket
from detectors.config import AgentLoopConfig
from detectors.findings import AGENT_LOOP, Finding
from detectors.state import State

MAX_TRACKED = 8


class AgentLoopDetector:
    """Per-session step for ``agent_loop``.

    Parameters
    ----------
    config
        Sensitivity; ``AgentLoopConfig()`` is the documented default (8 repeats in 5 minutes).

    Examples
    --------
    >>> import random
    >>> rng = random.Random(1)
    >>> det = AgentLoopDetector()
    >>> state, sent, caught = det.new_state(), 0, None
    >>> for i in range(20):
    ...     n = rng.randint(1, 3)
    ...     b = LlmBucket("session", "s1", "bot", 2.0 * i, 2.0 * (i + 1), requests=n, cost_usd=0.01 * n,
    ...                   prompts={"same": n})
    ...     sent += n
    ...     state, found = det.update(state, b)
    ...     caught = caught or (sent if found else None)
    >>> caught
    8
    """

    kinds = (AGENT_LOOP,)

    def __init__(self, config: AgentLoopConfig | None = None) -> None:
        self.config = config or AgentLoopConfig()

    def new_state(self) -> State:
        """Return the state of a session never seen before."""
        return {}

    def update(self, state: State, bucket: LlmBucket) -> Step:
        """Fold one closed session bucket into the session's state."""
        cfg = self.config
        state, found = begin_step(state, AGENT_LOOP, bucket, cfg.quiet_s)
        state["req"] = state.get("req", 0) + bucket.requests
        usd = state["usd"] = round(state.get("usd", 0.0) + bucket.cost_usd, 7)
        edge = bucket.end - cfg.window_s
        # an entry is never changed in place, only replaced: the new state shares the unchanged ones
        # with the input state (which stays as it was); a new entry's USD is rounded once, here
        tracked = state.get("p")
        seen: dict[str, list[float]] = {p: e for p, e in tracked.items() if e[1] > edge} if tracked else {}
        for prompt, count in bucket.prompts.items():
            entry = seen.get(prompt)
            if entry is None:
                seen[prompt] = [count, bucket.start, round(usd - bucket.cost_usd, 7)]
            else:
                seen[prompt] = [entry[0] + count, entry[1], entry[2]]
        if len(seen) > MAX_TRACKED:
            keep = sorted(seen, key=lambda p: (seen[p][0], seen[p][1]), reverse=True)[:MAX_TRACKED]
            seen = {p: seen[p] for p in keep}
        state["p"] = seen
        if is_open(state, AGENT_LOOP):
            record = state["open"][AGENT_LOOP]
            hours = max(bucket.end - record["s"], 1.0) / 3600.0
            spent = state["usd"] - state["loop_usd0"]
            grow_finding(state, AGENT_LOOP, usd=spent, usd_per_hour=spent / hours)
            return state, found
        top = None  # the first most repeated prompt, as max() by count would return
        for item in seen.items():
            if top is None or item[1][0] > top[1][0]:
                top = item
        if top is not None and top[1][0] >= cfg.repeats:
            prompt, (repeats, since, usd_before) = top
            reason = f"prompt {prompt} repeated {int(repeats)} times"
            found.append(
                self._open(
                    state,
                    bucket,
                    since,
                    usd_before,
                    reason,
                    {"prompt_hash": prompt, "repeats": int(repeats), "window_s": cfg.window_s},
                )
            )
        elif state["req"] > cfg.max_requests and not state.get("unbounded"):
            state["unbounded"] = True  # raised once per session: a long session is not news twice
            found.append(
                self._open(
                    state,
                    bucket,
                    state.get("first", bucket.start),
                    0.0,
                    f"session passed {cfg.max_requests} requests",
                    {"requests": state["req"]},
                )
            )
        state.setdefault("first", bucket.start)
        return state, found

    def _open(
        self,
        state: State,
        bucket: LlmBucket,
        since: float,
        usd_before: float,
        reason: str,
        evidence: dict[str, object],
    ) -> Finding:
        state["loop_usd0"] = usd_before
        spent = state["usd"] - usd_before
        hours = max(bucket.end - since, 1.0) / 3600.0
        return open_finding(
            state,
            AGENT_LOOP,
            bucket.entity,
            started=since,
            detected=bucket.end,
            severity="error",
            summary=f"agent loop: {reason}",
            usd=spent,
            usd_per_hour=spent / hours,
            evidence={**evidence, "session_requests": state["req"]},
            labels={"team": bucket.team} if bucket.team else {},
        )

    def tick(self, state: State, now: float) -> Step:
        """Resolve an open loop once the session has been quiet for ``quiet_s``."""
        return quiet_tick(state, AGENT_LOOP, now, self.config.quiet_s)

    def expired(self, state: State, now: float) -> bool:
        """Return True once the session has been quiet for ``expire_after_s``."""
        return quiet_for(state, now, self.config.expire_after_s)
