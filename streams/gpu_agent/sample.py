"""Build one node's ``gpu.sample`` for one interval: pure, from readings, node facts and the interval.

Intervals sit on a grid aligned to the Unix epoch (``k * interval_s``), so every agent, and every
restart of the same agent, names an interval the same way. A sample read at grid tick ``T`` reports the
interval that just ended, ``[T - interval_s, T)``, and its ``event_id`` is made from the cluster, the
node and that interval's start: a resend, after a timeout or a restart, carries the same id, and the
worker's dedup counts it once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streams.core.events import GPU_SAMPLE, GpuReading, GpuSample

MAX_EVENT_ID = 200


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What the node is, as configured: copied into every sample."""

    node: str
    cluster: str = "default"
    provider: str = "on_prem"
    region: str = "global"
    instance_type: str = ""
    pricing: str = "on_prem"
    labels: Mapping[str, str] = field(default_factory=dict)


def grid_tick(moment: datetime, interval_s: int) -> datetime:
    """Return the latest grid tick at or before ``moment`` (UTC, a multiple of ``interval_s``).

    >>> grid_tick(datetime(2026, 1, 1, 0, 0, 29, 900_000, tzinfo=UTC), 15)
    datetime.datetime(2026, 1, 1, 0, 0, 15, tzinfo=datetime.timezone.utc)
    """
    if moment.tzinfo is None:
        raise ValueError("moment must be timezone-aware")
    seconds = int(moment.timestamp())
    return datetime.fromtimestamp(seconds - seconds % interval_s, tz=UTC)


def sample_event_id(facts: NodeFacts, start: datetime) -> str:
    """Return the deterministic event id of ``facts.node``'s sample for the interval starting at ``start``.

    >>> sample_event_id(NodeFacts(node="gpu-a"), datetime(2026, 1, 1, 0, 0, 15, tzinfo=UTC))
    'gpu/default/gpu-a/2026-01-01T00:00:15Z'
    """
    stamp = start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    readable = f"gpu/{facts.cluster}/{facts.node}/{stamp}"
    if len(readable) <= MAX_EVENT_ID:
        return readable
    # Long node or cluster names: a stable digest instead of truncating (which could collide).
    digest = hashlib.sha256(f"{facts.cluster}\x1f{facts.node}".encode()).hexdigest()[:32]
    return f"gpu/{digest}/{stamp}"


def build_sample(
    readings: Sequence[GpuReading], facts: NodeFacts, tick: datetime, interval_s: int
) -> dict[str, Any]:
    """Return the ``gpu.sample`` (a JSON-ready dict) read at grid ``tick``, for the interval before it.

    The dict is validated against ``GpuSample``, so a sample that leaves the agent is one the worker
    accepts.

    >>> r = GpuReading(index=0, model="NVIDIA A10G", util_pct=50.0, workload="ml/train-0")
    >>> s = build_sample([r], NodeFacts(node="gpu-a"), datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC), 15)
    >>> s["event_id"], s["time"], s["interval_s"], s["gpus"][0]["workload"]
    ('gpu/default/gpu-a/2026-01-01T00:00:15Z', '2026-01-01T00:00:15Z', 15, 'ml/train-0')
    """
    if grid_tick(tick, interval_s) != tick:
        raise ValueError(f"tick {tick.isoformat()} is not on the {interval_s}s grid")
    start = datetime.fromtimestamp(tick.timestamp() - interval_s, tz=UTC)
    event = GpuSample(
        type=GPU_SAMPLE,
        event_id=sample_event_id(facts, start),
        time=start,
        labels=dict(facts.labels),
        interval_s=interval_s,
        node=facts.node,
        cluster=facts.cluster,
        provider=facts.provider,
        region=facts.region,
        instance_type=facts.instance_type,
        pricing=facts.pricing,
        gpus=list(readings),
    )
    doc = event.model_dump(mode="json")
    doc["time"] = start.strftime("%Y-%m-%dT%H:%M:%SZ")
    doc["interval_s"] = interval_s
    return doc
