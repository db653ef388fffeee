"""Model switches: an app's traffic moving to a pricier model.

Per app, over app buckets: a recent mix (fast, about the last 50 requests) and a baseline mix (slow,
about the last 1,000) of request shares per model,
and each model's observed USD per token. The price index of a mix is its share-weighted USD per
token. A switch is a recent index at least ``price_ratio`` times the baseline index with one model
gaining at least ``min_shift`` of the requests. The baseline is not learned while a switch is open;
a switch older than ``accept_after_s`` is the new normal.
"""

from __future__ import annotations

from detectors.base import Step, grow_finding, is_open, maybe_update, open_finding, quiet_for, resolve_finding
from detectors.buckets import LlmBucket
from detectors.config import ModelSwitchConfig
from detectors.findings import MODEL_SWITCH, Finding
from detectors.state import State

UPDATE_EVERY_S = 600.0


class ModelSwitchDetector:
    """Per-app step for ``model_switch``.

    Parameters
    ----------
    config
        Sensitivity; ``ModelSwitchConfig()`` is the documented default (1.5x price index, 20% shift).

    Examples
    --------
    >>> import random
    >>> rng = random.Random(5)
    >>> det = ModelSwitchDetector()
    >>> state, seen = det.new_state(), []
    >>> for i in range(120):
    ...     n = 40 + rng.randint(0, 10)
    ...     pricey = n if i >= 80 else 0
    ...     b = LlmBucket("app", "bot", "bot", 10.0 * i, 10.0 * (i + 1), requests=n,
    ...                   models={"mini": [n - pricey, 1000.0 * (n - pricey), 1e-4 * (n - pricey)],
    ...                           "big": [pricey, 1000.0 * pricey, 2e-3 * pricey]})
    ...     state, found = det.update(state, b)
    ...     seen += [(f.state, i, f.evidence["to_model"]) for f in found]
    >>> seen
    [('open', 80, 'big')]
    """

    kinds = (MODEL_SWITCH,)

    def __init__(self, config: ModelSwitchConfig | None = None) -> None:
        self.config = config or ModelSwitchConfig()

    def new_state(self) -> State:
        """Return the state of an app never seen before."""
        return {}

    def update(self, state: State, bucket: LlmBucket) -> Step:
        """Fold one closed app bucket into the app's model mix."""
        cfg = self.config
        state = dict(state)
        state["e"], state["last"] = bucket.entity, bucket.end
        models: dict[str, list[float]] = {k: list(v) for k, v in state.get("mix", {}).items()}
        total = sum(v[0] for v in bucket.models.values()) or 1.0
        n = state.get("n", 0)
        reqs_here = int(sum(v[0] for v in bucket.models.values()))
        opened = is_open(state, MODEL_SWITCH)
        learn_slow = not opened
        # learning rates are per request, so a quiet app's single requests do not swing its mix
        fast_a = max(1.0 - (1.0 - cfg.fast_alpha) ** reqs_here, reqs_here / (n + reqs_here or 1))
        slow_a = max(1.0 - (1.0 - cfg.slow_alpha) ** reqs_here, reqs_here / (n + reqs_here or 1))
        for name in set(models) | set(bucket.models):
            fast, slow, price = models.get(name, [0.0, 0.0, 0.0])
            reqs, tokens, usd = bucket.models.get(name, (0.0, 0.0, 0.0))
            share = reqs / total
            fast += fast_a * (share - fast)
            if learn_slow:
                slow += slow_a * (share - slow)
            if tokens > 0:
                price = usd / tokens if price == 0 else price + 0.1 * (usd / tokens - price)
            models[name] = [fast, slow, price]
        if len(models) > cfg.max_models:
            keep = sorted(models, key=lambda m: max(models[m][0], models[m][1]), reverse=True)[
                : cfg.max_models
            ]
            models = {m: models[m] for m in keep}
        state["mix"] = {m: [round(x, 9) for x in v] for m, v in models.items()}
        state["n"] = min(n + reqs_here, 10**9)
        fast_index = slow_index = 0.0  # summed in order (not ``sum()``: 3.12 compensates), as the kernel does
        for v in models.values():
            fast_index += v[0] * v[2]
            slow_index += v[1] * v[2]
        gainer, gain = max(
            ((m, v[0] - v[1]) for m, v in models.items()), key=lambda kv: kv[1], default=("", 0.0)
        )
        tokens_per_hour = (
            sum(v[1] for v in bucket.models.values()) / max(bucket.end - bucket.start, 1e-9) * 3600
        )
        extra_per_hour = max(0.0, fast_index - slow_index) * tokens_per_hour
        found: list[Finding] = []
        if opened:
            record = state["open"][MODEL_SWITCH]
            over = slow_index > 0 and fast_index >= (1 + (cfg.price_ratio - 1) / 2) * slow_index
            if not over or bucket.end - record["s"] > cfg.accept_after_s:
                found += resolve_finding(
                    state,
                    MODEL_SWITCH,
                    bucket.start,
                    {"price_index_ratio": round(fast_index / max(slow_index, 1e-12), 3), "accepted": over},
                )
                if over:  # the new mix is the new normal
                    state["mix"] = {m: [v[0], v[0], v[2]] for m, v in state["mix"].items()}
            else:
                grow_finding(
                    state,
                    MODEL_SWITCH,
                    usd=record["usd"] + extra_per_hour * (bucket.end - bucket.start) / 3600,
                    usd_per_hour=extra_per_hour,
                )
                found += maybe_update(
                    state,
                    MODEL_SWITCH,
                    bucket.end,
                    UPDATE_EVERY_S,
                    {"to_model": gainer, "share": round(models[gainer][0], 3)},
                )
        elif (
            n >= cfg.warmup
            and slow_index > 0
            and fast_index >= cfg.price_ratio * slow_index
            and gain >= cfg.min_shift
        ):
            found.append(
                open_finding(
                    state,
                    MODEL_SWITCH,
                    bucket.entity,
                    started=bucket.start,
                    detected=bucket.end,
                    severity="warning",
                    summary=f"traffic moving to {gainer}: price per token "
                    f"{fast_index / slow_index:.1f}x the usual mix",
                    usd=extra_per_hour * (bucket.end - bucket.start) / 3600,
                    usd_per_hour=extra_per_hour,
                    evidence={
                        "to_model": gainer,
                        "share": round(models[gainer][0], 3),
                        "baseline_share": round(models[gainer][1], 3),
                        "price_index_ratio": round(fast_index / slow_index, 3),
                    },
                    labels={"team": bucket.team} if bucket.team else {},
                )
            )
        return state, found

    def tick(self, state: State, now: float) -> Step:
        """Nothing happens to a quiet app (a switch needs traffic to show)."""
        return state, []

    def expired(self, state: State, now: float) -> bool:
        """Return True once the app has been quiet for ``expire_after_s``."""
        return quiet_for(state, now, self.config.expire_after_s)
