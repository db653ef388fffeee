"""Sessions and users too young to be judged: their buckets wait, unstepped, until they could matter.

Nearly every LLM request closes a session bucket of its own (sessions are sparse: in the bench hour
10,920 sessions send 37,034 requests, and 161 of them send 8 or more), and stepping a session bucket
runs four steps that each build a new state. Yet until a session has sent ``runaway.min_requests``
requests no runaway step can judge it (a window holds no more requests than the session sent), until
``agent_loop.repeats`` no prompt can repeat that often, and until ``context_bloat.rising_turns + 1``
no context can rise that many turns in a row. Below that count every step takes its quiet path, and a
quiet path reads nothing but the entity's own buckets: no peers, no app state, no event time.

So the runner (``DetectorRunner``) keeps such a session's buckets as they are, in a *pending* document
(``{"e": entity, "last": end, "n": requests, "b": [bucket entries], "w": runaway window}``, JSON like
every state; a user's has no window), and steps them, in order, when the session reaches the count: the
same states and the same findings, at the same bucket, as stepping each at once. Only the app's peers
learn from every session bucket as it closes (``learn_peer`` needs the windowed rate alone, and the
pending window gives it). A user waits the same way below ``runaway.user_min_requests``. A pending
entity expires like its states would (``runaway.expire_after_s``); sessions wait only while the three
session detectors expire alike.
"""

from __future__ import annotations

from typing import Any

from detectors.buckets import LlmBucket
from detectors.config import DetectorConfig

PENDING = "pending"
"""The runner's name for pending documents (a section of the LLM document saved before ``pending_log``)."""


def wait_below(config: DetectorConfig) -> dict[str, int]:
    """Return, per scope, the request count under which an entity's buckets can wait (0: never wait).

    >>> wait_below(DetectorConfig())
    {'session': 8, 'user': 20}
    >>> wait_below(DetectorConfig(agent_loop={"expire_after_s": 60}))["session"]
    0
    """
    run, loop, bloat = config.runaway, config.agent_loop, config.context_bloat
    session = min(run.min_requests, loop.repeats, bloat.rising_turns + 1, loop.max_requests + 1)
    if not run.expire_after_s == loop.expire_after_s == bloat.expire_after_s:
        session = 0  # one state would expire before the others: their buckets must not wait together
    return {"session": max(0, session), "user": max(0, run.user_min_requests)}


def entry(bucket: LlmBucket) -> list[Any]:
    """Return a closed bucket as a pending entry (JSON-safe; ``bucket_of`` gives it back).

    >>> b = LlmBucket("session", "s1", "bot", 0.0, 2.0, "ml", 2, 30, 5, 0.25, [10, 20], {"p": 2})
    >>> entry(b)
    [0.0, 2.0, 2, 30, 5, 0.25, [10, 20], {'p': 2}, 'ml']
    >>> bucket_of("session", {"app": "bot", "session": "s1"}, entry(b)) == b
    True
    """
    return [
        bucket.start, bucket.end, bucket.requests, bucket.input_tokens, bucket.output_tokens,
        bucket.cost_usd, bucket.inputs, bucket.prompts, bucket.team,
    ]


def bucket_of(scope: str, entity: dict[str, str], item: list[Any]) -> LlmBucket:
    """Return the bucket of a pending entry of the entity ``entity`` (its lists copied)."""
    start, end, requests, input_tokens, output_tokens, cost_usd, inputs, prompts, team = item
    return LlmBucket(
        scope, entity[scope], entity["app"], start, end, team, requests, input_tokens, output_tokens,
        cost_usd, list(inputs), dict(prompts),
    )
