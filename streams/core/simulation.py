"""Deterministic synthetic usage traffic with injected incidents and their ground truth.

A ``Simulation`` yields event dicts (JSON-ready, times as ISO ``...Z`` strings) in event-time order over
simulated time: GPU nodes report one ``gpu.sample`` every ``gpu_interval_s``, an LLM gateway emits
``llm.request`` events as a Poisson stream of ``rate`` requests per simulated second (token sizes from
the Azure LLM traces), and storage buckets report every ``storage_interval_s``. The same config gives
byte-identical events. Every entity draws from its own seeded random stream, and incidents never draw
from those streams, so turning an incident on changes only what it targets.

Incidents (``IncidentSpec``: kind, start offset, duration, intensity; ground truth: ``Incident``):

- ``idle_gpu``: ``intensity`` (0-1] of a node's allocated GPUs drop to 0-2% utilization (memory stays
  held, as with a forgotten job).
- ``runaway_loop``: one agent session repeats the same ``prompt_hash`` at ``2 * intensity`` requests
  per second with a context that grows every turn.
- ``egress_spike``: a bucket sends ``50 GiB * intensity`` per storage interval to the internet.
- ``model_switch``: ``min(1, intensity)`` of an app's requests move to a much pricier model.
- ``untagged``: a GPU node's events lose their ``team`` label.

An incident affects events whose time lies in ``[start, end)``.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.core.llm_traces import TokenSizeSampler

IDLE_GPU = "idle_gpu"
RUNAWAY_LOOP = "runaway_loop"
EGRESS_SPIKE = "egress_spike"
MODEL_SWITCH = "model_switch"
UNTAGGED = "untagged"
INCIDENT_KINDS = (IDLE_GPU, RUNAWAY_LOOP, EGRESS_SPIKE, MODEL_SWITCH, UNTAGGED)

GIB = 1024**3
TIB = 1024**4
MAX_CONTEXT_TOKENS = 200_000
EventDict = dict[str, Any]


# --- the fleet ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeType:
    """A GPU machine type as a provider sells it (GPU count, memory and power are the real specs).

    Provider, instance type and GPU model names follow the default catalog (``streams/data/catalog.yaml``).
    """

    provider: str
    instance_type: str
    region: str
    gpu_model: str
    gpu_count: int
    gpu_mem_mib: int
    tdp_w: float
    idle_w: float
    pricing: str = "on_demand"


NODE_TYPES = (
    NodeType("aws", "p4d.24xlarge", "us-east-1", "A100-SXM4-40GB", 8, 40_960, 400, 55),
    NodeType("aws", "p5.48xlarge", "us-east-1", "H100-SXM5-80GB", 8, 81_559, 700, 70),
    NodeType("gcp", "a2-highgpu-8g", "us-central1", "A100-SXM4-40GB", 8, 40_960, 400, 55),
    NodeType("aws", "g5.12xlarge", "us-west-2", "A10G", 4, 23_028, 300, 25),
    NodeType("on_prem", "dgx-a100", "dc-1", "A100-SXM4-80GB", 8, 81_920, 400, 55, "on_prem"),
)
ROLES = ("training", "inference", "mixed")
ROLE_LABELS = {
    "training": ({"team": "research", "project": "foundation-model", "env": "prod"}, "pretrain"),
    "inference": ({"team": "search", "project": "ranking", "env": "prod"}, "embedding-server"),
    "mixed": ({"team": "ml-platform", "project": "notebooks", "env": "dev"}, "notebook"),
}


@dataclass(frozen=True, slots=True)
class LlmApp:
    """An application behind the LLM gateway: who owns it, which models it calls, how it is used."""

    name: str
    team: str
    project: str
    trace: str
    weight: float
    models: tuple[tuple[str, str, float], ...]
    users: int
    pricey: tuple[str, str] | None = None
    batch_share: float = 0.0


APPS = (
    LlmApp("support-bot", "cx", "helpdesk", "conv", 0.30,
           (("openai", "gpt-4o-mini", 0.9), ("openai", "gpt-4o", 0.1)), 400, ("openai", "o3-pro")),
    LlmApp("code-assist", "devex", "ide", "code", 0.30,
           (("anthropic", "claude-sonnet-4-5", 0.7), ("openai", "gpt-4.1", 0.3)), 120,
           ("anthropic", "claude-opus-4-5")),
    LlmApp("search-rag", "search", "answers", "conv", 0.20,
           (("openai", "gpt-4o", 0.6), ("anthropic", "claude-haiku-4-5", 0.4)), 800),
    LlmApp("doc-summarizer", "data", "etl", "conv", 0.10, (("openai", "gpt-4o-mini", 1.0),), 5,
           ("openai", "gpt-4o"), batch_share=0.8),
    LlmApp("agent-platform", "ml-platform", "agents", "conv", 0.10,
           (("anthropic", "claude-sonnet-4-5", 0.5), ("openai", "gpt-4o", 0.5)), 60),
)
REASONING_MODELS = frozenset({"o3", "o3-pro"})


@dataclass(frozen=True, slots=True)
class Bucket:
    """An object-storage bucket with its size at the start and its growth."""

    name: str
    provider: str
    region: str
    team: str
    stored_bytes: int
    growth_bytes_per_s: float
    egress_mean_bytes: float


BUCKETS = (
    Bucket("training-datasets", "aws", "us-east-1", "research", 180 * TIB, 2_000_000.0, 200e6),
    Bucket("model-checkpoints", "gcp", "us-central1", "research", 40 * TIB, 8_000_000.0, 50e6),
    Bucket("inference-logs", "aws", "us-west-2", "search", 12 * TIB, 500_000.0, 20e6),
    Bucket("public-artifacts", "aws", "us-east-1", "devex", 2 * TIB, 10_000.0, 800e6),
)


# --- configuration and ground truth --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IncidentSpec:
    """An incident to inject: its kind, when (seconds after the start), how long, and how strong.

    ``entity`` names the target (node, app, bucket); ``None`` lets the seed choose one.
    """

    kind: str
    offset_s: float
    duration_s: float
    intensity: float = 1.0
    entity: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in INCIDENT_KINDS:
            raise ValueError(f"unknown incident kind {self.kind!r}; known: {', '.join(INCIDENT_KINDS)}")
        if self.offset_s < 0 or self.duration_s <= 0 or self.intensity <= 0:
            raise ValueError(f"incident {self.kind}: offset must be >= 0, duration and intensity > 0")


@dataclass(frozen=True, slots=True)
class Incident:
    """Ground truth of one injected incident: events of ``entity`` in ``[start, end)`` are affected."""

    kind: str
    entity: str
    start: datetime
    end: datetime
    intensity: float
    detail: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (times as ISO strings ending in ``Z``)."""
        return {
            "kind": self.kind,
            "entity": self.entity,
            "start": iso_z(self.start),
            "end": iso_z(self.end),
            "intensity": self.intensity,
            "detail": dict(self.detail),
        }


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """What to simulate. ``start`` must be timezone-aware; it is kept to the millisecond."""

    start: datetime
    duration_s: float = 3600.0
    seed: int = 7
    nodes: int = 4
    rate: float = 20.0
    gpu_interval_s: float = 15.0
    storage_interval_s: float = 60.0
    buckets: int = 4
    incidents: tuple[IncidentSpec, ...] = ()

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if self.duration_s <= 0 or self.gpu_interval_s <= 0 or self.storage_interval_s <= 0:
            raise ValueError("duration and intervals must be > 0")
        if self.rate < 0 or self.nodes < 0 or self.buckets < 0:
            raise ValueError("rate, nodes and buckets must be >= 0")


_DEFAULT_SCHEDULE = {
    IDLE_GPU: (0.10, 0.25),
    RUNAWAY_LOOP: (0.30, 0.10),
    EGRESS_SPIKE: (0.45, 0.08),
    MODEL_SWITCH: (0.60, 0.20),
    UNTAGGED: (0.80, 0.15),
}


def default_incidents(duration_s: float, kinds: tuple[str, ...] = INCIDENT_KINDS) -> tuple[IncidentSpec, ...]:
    """Spread one incident of each kind over the run, each on its own stretch of time.

    >>> [(s.kind, s.offset_s, s.duration_s) for s in default_incidents(3600, ("idle_gpu",))]
    [('idle_gpu', 360.0, 900.0)]
    """
    specs = []
    for kind in kinds:
        at, length = _DEFAULT_SCHEDULE[kind]
        offset, length_s = float(round(duration_s * at)), float(max(1, round(duration_s * length)))
        specs.append(IncidentSpec(kind, offset, length_s))
    return tuple(specs)


def parse_incidents(text: str, duration_s: float) -> tuple[IncidentSpec, ...]:
    """Parse ``all``, ``none`` or a comma list of ``kind[:offset_s:duration_s[:intensity[:entity]]]``.

    >>> parse_incidents("none", 3600)
    ()
    >>> parse_incidents("egress_spike:60:120:2", 3600)
    (IncidentSpec(kind='egress_spike', offset_s=60.0, duration_s=120.0, intensity=2.0, entity=None),)
    >>> [s.kind for s in parse_incidents("all", 600)][:2]
    ['idle_gpu', 'runaway_loop']
    """
    text = text.strip()
    if text in ("", "none"):
        return ()
    if text == "all":
        return default_incidents(duration_s)
    specs: list[IncidentSpec] = []
    for item in text.split(","):
        parts = item.strip().split(":")
        kind = parts[0]
        if kind not in INCIDENT_KINDS:
            raise ValueError(f"unknown incident kind {kind!r}; known: {', '.join(INCIDENT_KINDS)}")
        if len(parts) == 1:
            specs.extend(default_incidents(duration_s, (kind,)))
            continue
        if len(parts) < 3:
            raise ValueError(f"incident {item!r}: expected kind:offset_s:duration_s[:intensity[:entity]]")
        intensity = float(parts[3]) if len(parts) > 3 and parts[3] else 1.0
        entity = ":".join(parts[4:]) or None
        specs.append(IncidentSpec(kind, float(parts[1]), float(parts[2]), intensity, entity))
    return tuple(specs)


def iso_z(moment: datetime) -> str:
    """Format an aware datetime as UTC ISO 8601 with milliseconds and ``Z``.

    >>> iso_z(datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC))
    '2026-01-01T12:00:00.123Z'
    """
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- the simulation --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Node:
    name: str
    kind: NodeType
    role: str
    labels: dict[str, str]
    workload: str
    allocated: tuple[bool, ...]


@dataclass(slots=True)
class _Session:
    sid: str
    user: str
    turn: int = 0


@dataclass(frozen=True, slots=True)
class _Active:
    """An incident placed on the timeline in milliseconds from the start."""

    spec: IncidentSpec
    entity: str
    start_ms: int
    end_ms: int
    detail: dict[str, str]

    def covers(self, ms: int) -> bool:
        return self.start_ms <= ms < self.end_ms


class Simulation:
    """Deterministic traffic for one config; ``truth`` lists the injected incidents.

    >>> sim = Simulation(SimulationConfig(start=datetime(2026, 1, 1, tzinfo=UTC), duration_s=60,
    ...                                   nodes=1, rate=1, seed=3))
    >>> events = list(sim.events())
    >>> sorted({e["type"] for e in events})
    ['gpu.sample', 'llm.request', 'storage.usage']
    >>> events == list(sim.events())
    True
    """

    def __init__(self, config: SimulationConfig, sampler: TokenSizeSampler | None = None) -> None:
        self.config = config
        start = config.start.astimezone(UTC)
        self.start = start.replace(microsecond=start.microsecond // 1000 * 1000)
        self.sampler = sampler or TokenSizeSampler.packaged()
        self.run_id = f"sim{config.seed}-{int(self.start.timestamp())}"
        self.nodes = tuple(self._make_node(i) for i in range(config.nodes))
        self.buckets = tuple(self._make_bucket(i) for i in range(config.buckets))
        self._active = self._place_incidents()

    @property
    def truth(self) -> tuple[Incident, ...]:
        """Return the injected incidents, in the order they were given."""
        return tuple(
            Incident(
                a.spec.kind,
                a.entity,
                self._at(a.start_ms),
                self._at(a.end_ms),
                a.spec.intensity,
                dict(a.detail),
            )
            for a in self._active
        )

    def truth_document(self) -> dict[str, Any]:
        """Return the run's ground truth as a JSON-ready document (what evaluators score against)."""
        config = self.config
        return {
            "run_id": self.run_id,
            "seed": config.seed,
            "start": iso_z(self.start),
            "end": iso_z(self._at(round(config.duration_s * 1000))),
            "nodes": [n.name for n in self.nodes],
            "buckets": [b.name for b in self.buckets],
            "apps": [a.name for a in APPS],
            "incidents": [incident.to_dict() for incident in self.truth],
        }

    def events(self) -> Iterator[EventDict]:
        """Yield every event in event-time order (a fresh, identical run on each call)."""
        for _, event in self.timed_events():
            yield event

    def timed_events(self) -> Iterator[tuple[float, EventDict]]:
        """Yield ``(seconds after the start, event)`` in event-time order."""
        streams: list[Iterator[tuple[int, EventDict]]] = [self._gpu_stream(n) for n in self.nodes]
        streams += [self._storage_stream(b) for b in self.buckets]
        streams.append(self._gateway_stream())
        streams += [self._loop_stream(a) for a in self._active if a.spec.kind == RUNAWAY_LOOP]
        for ms, event in heapq.merge(*streams, key=lambda item: item[0]):
            yield ms / 1000.0, event

    # --- building the world ---

    def _rng(self, *parts: object) -> random.Random:
        return random.Random("/".join([str(self.config.seed), *map(str, parts)]))

    def _at(self, ms: int) -> datetime:
        return self.start + timedelta(milliseconds=ms)

    def _make_node(self, index: int) -> _Node:
        kind = NODE_TYPES[index % len(NODE_TYPES)]
        role = ROLES[index % len(ROLES)]
        labels, workload = ROLE_LABELS[role]
        if role == "mixed":
            shared = max(1, kind.gpu_count // 2)
            allocated = tuple(i < shared for i in range(kind.gpu_count))
        else:
            allocated = (True,) * kind.gpu_count
        name = f"{kind.provider}-{kind.region}-gpu-{index:02d}"
        return _Node(name, kind, role, dict(labels), f"{workload}-{index:02d}", allocated)

    def _make_bucket(self, index: int) -> Bucket:
        base = BUCKETS[index % len(BUCKETS)]
        if index < len(BUCKETS):
            return base
        return Bucket(f"{base.name}-{index}", base.provider, base.region, base.team, base.stored_bytes,
                      base.growth_bytes_per_s, base.egress_mean_bytes)

    def _place_incidents(self) -> tuple[_Active, ...]:
        pick = self._rng("targets")
        placed: list[_Active] = []
        untagged_used: set[str] = set()
        for spec in self.config.incidents:
            start_ms = round(spec.offset_s * 1000)
            end_ms = start_ms + round(spec.duration_s * 1000)
            entity, detail = self._target(spec, pick, placed, untagged_used)
            placed.append(_Active(spec, entity, start_ms, end_ms, detail))
        return tuple(placed)

    def _target(
        self, spec: IncidentSpec, pick: random.Random, placed: list[_Active], used: set[str]
    ) -> tuple[str, dict[str, str]]:
        kind = spec.kind
        if kind in (IDLE_GPU, UNTAGGED):
            names = [n.name for n in self.nodes]
            if not names:
                raise ValueError(f"incident {kind} needs at least one GPU node")
            # Keep idle and untagged on different nodes when we can, so each ground truth is clean.
            busy = {a.entity for a in placed if a.spec.kind in (IDLE_GPU, UNTAGGED)} | used
            free = [n for n in names if n not in busy] or names
            entity = spec.entity or pick.choice(free)
            if entity not in names:
                raise ValueError(f"incident {kind}: no node named {entity!r}")
            used.add(entity)
            node = next(n for n in self.nodes if n.name == entity)
            return entity, {"node": entity, "team": node.labels.get("team", "")}
        if kind == EGRESS_SPIKE:
            names = [b.name for b in self.buckets]
            if not names:
                raise ValueError("incident egress_spike needs at least one bucket")
            entity = spec.entity or pick.choice(names)
            if entity not in names:
                raise ValueError(f"incident {kind}: no bucket named {entity!r}")
            return entity, {"bucket": entity, "destination": "internet"}
        if kind == MODEL_SWITCH:
            choices = [a.name for a in APPS if a.pricey]
            entity = spec.entity or pick.choice(choices)
            app = _app(entity)
            if app.pricey is None:
                raise ValueError(f"incident {kind}: app {entity!r} has no pricier model to switch to")
            return entity, {"app": entity, "to_provider": app.pricey[0], "to_model": app.pricey[1]}
        app = _app(spec.entity or "agent-platform")
        session = f"{app.name}-loop-{len(placed)}"
        prompt = _short_hash(f"{self.run_id}|{session}|loop")
        user = f"{app.name}-u{pick.randrange(app.users):04d}"
        detail = {"app": app.name, "session": session, "user": user, "prompt_hash": prompt,
                  "provider": app.models[0][0], "model": app.models[0][1]}
        return session, detail

    def _covering(self, kind: str, entity: str, ms: int) -> _Active | None:
        for active in self._active:
            if active.spec.kind == kind and active.entity == entity and active.covers(ms):
                return active
        return None

    # --- GPU nodes ---

    def _gpu_stream(self, node: _Node) -> Iterator[tuple[int, EventDict]]:
        rng = self._rng("gpu", node.name)
        spike_rng = self._rng("incident", "gpu", node.name)
        step_ms = round(self.config.gpu_interval_s * 1000)
        end_ms = round(self.config.duration_s * 1000)
        kind = node.kind
        gpu_ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"burnwatch-sim/{node.name}/{i}"))
                   for i in range(kind.gpu_count)]
        count = 0
        for ms in range(0, end_ms, step_ms):
            hour = (self._at(ms).hour + self._at(ms).minute / 60) / 24
            idle = self._covering(IDLE_GPU, node.name, ms)
            untagged = self._covering(UNTAGGED, node.name, ms)
            allocated_seen = 0
            gpus = []
            for i, allocated in enumerate(node.allocated):
                noise = rng.gauss(0.0, 1.0)
                jitter = rng.random()
                if not allocated:
                    util, mem = jitter * 1.5, jitter * 300
                elif node.role == "training":
                    util = min(100.0, max(85.0, 93.0 + 3.5 * noise))
                    mem = kind.gpu_mem_mib * (0.86 + 0.08 * jitter)
                else:
                    diurnal = 45.0 + 25.0 * math.sin(2 * math.pi * (hour - 10 / 24))
                    low = 5.0 if node.role == "mixed" else 20.0
                    util = min(70.0, max(low, diurnal + 5.0 * noise))
                    mem = kind.gpu_mem_mib * (0.55 + 0.1 * jitter)
                if allocated:
                    allocated_seen += 1
                    idle_share = idle.spec.intensity if idle else 0.0
                    if idle and allocated_seen <= math.ceil(idle_share * sum(node.allocated)):
                        util = 2.0 * spike_rng.random()
                power = kind.idle_w + (kind.tdp_w - kind.idle_w) * util / 100 * (0.95 + 0.1 * jitter)
                labels = {} if not allocated else _drop_team(node.labels, untagged is not None)
                gpus.append({
                    "index": i,
                    "uuid": f"GPU-{gpu_ids[i]}",
                    "model": kind.gpu_model,
                    "util_pct": round(util, 2),
                    "mem_used_mib": round(mem, 1),
                    "power_w": round(power, 1),
                    "allocated": allocated,
                    "workload": node.workload if allocated else None,
                    "labels": labels,
                })
            event = {
                "type": "gpu.sample",
                "event_id": f"{self.run_id}-gpu-{node.name}-{count}",
                "time": iso_z(self._at(ms)),
                "interval_s": self.config.gpu_interval_s,
                "node": node.name,
                "cluster": f"{kind.provider}-{kind.region}",
                "provider": kind.provider,
                "region": kind.region,
                "instance_type": kind.instance_type,
                "pricing": kind.pricing,
                "labels": _drop_team(node.labels, untagged is not None),
                "gpus": gpus,
            }
            count += 1
            yield ms, event

    # --- storage ---

    def _storage_stream(self, bucket: Bucket) -> Iterator[tuple[int, EventDict]]:
        rng = self._rng("storage", bucket.name)
        interval = self.config.storage_interval_s
        step_ms = round(interval * 1000)
        end_ms = round(self.config.duration_s * 1000)
        count = 0
        for ms in range(0, end_ms, step_ms):
            chance, size, where = rng.random(), rng.expovariate(1.0), rng.random()
            egress = int(bucket.egress_mean_bytes * size * interval / 60) if chance < 0.3 else 0
            destination = "internet" if where < 0.7 else "inter_region" if where < 0.9 else "same_region"
            spike = self._covering(EGRESS_SPIKE, bucket.name, ms)
            if spike:
                egress = int(50 * GIB * spike.spec.intensity * interval / 60)
                destination = "internet"
            yield ms, {
                "type": "storage.usage",
                "event_id": f"{self.run_id}-sto-{bucket.name}-{count}",
                "time": iso_z(self._at(ms)),
                "interval_s": interval,
                "provider": bucket.provider,
                "region": bucket.region,
                "bucket": bucket.name,
                "storage_class": "standard",
                "stored_bytes": int(bucket.stored_bytes + bucket.growth_bytes_per_s * ms / 1000),
                "egress_bytes": egress,
                "egress_destination": destination,
                "labels": {"team": bucket.team, "env": "prod"},
            }
            count += 1

    # --- the LLM gateway ---

    def _gateway_stream(self) -> Iterator[tuple[int, EventDict]]:
        if self.config.rate <= 0:
            return
        rng = self._rng("gateway")
        switch_rng = self._rng("incident", "gateway")
        weights = [a.weight for a in APPS]
        sessions: dict[str, list[_Session]] = {a.name: [] for a in APPS}
        opened = dict.fromkeys(sessions, 0)
        end_ms = round(self.config.duration_s * 1000)
        t = 0.0
        count = 0
        while True:
            t += rng.expovariate(self.config.rate)
            ms = int(t * 1000)
            if ms >= end_ms:
                return
            app = rng.choices(APPS, weights)[0]
            draws = [rng.random() for _ in range(8)]
            provider, model = _pick_model(app, draws[0])
            context, generated = self.sampler.sample(app.trace, rng)
            active = sessions[app.name]
            if active and draws[1] < 0.7:
                session = active[int(draws[2] * len(active))]
                session.turn += 1
            else:
                opened[app.name] += 1
                user = f"{app.name}-u{int(draws[2] * app.users):04d}"
                session = _Session(f"{app.name}-s{opened[app.name]}", user)
                active.append(session)
                if len(active) > 50:
                    active.pop(0)
            switch = self._covering(MODEL_SWITCH, app.name, ms)
            if switch and app.pricey and switch_rng.random() < min(1.0, switch.spec.intensity):
                provider, model = app.pricey
            if draws[3] < 0.05:
                prompt = _short_hash(f"{app.name}|faq|{int(draws[4] * 20)}")
            else:
                prompt = _short_hash(f"{self.run_id}|{session.sid}|{session.turn}")
            event = self._llm_event(
                f"{self.run_id}-llm-{count}", ms, app, provider, model, context, generated,
                session, prompt, draws[5:],
            )
            event["batch"] = draws[7] < app.batch_share
            count += 1
            yield ms, event

    def _llm_event(
        self,
        event_id: str,
        ms: int,
        app: LlmApp,
        provider: str,
        model: str,
        context: int,
        generated: int,
        session: _Session,
        prompt: str,
        draws: list[float],
    ) -> EventDict:
        cached = cache_write = 0
        if provider == "openai" and session.turn > 0 and context >= 1024 and draws[0] < 0.5:
            cached = int(context * (0.5 + 0.45 * draws[1])) // 128 * 128
        elif provider == "anthropic" and context >= 1024:
            if session.turn == 0 and draws[0] < 0.3:
                cache_write = int(context * (0.5 + 0.4 * draws[1]))
            elif session.turn > 0 and draws[0] < 0.6:
                cached = int(context * (0.5 + 0.45 * draws[1]))
        failed = draws[2] < 0.005
        output = 0 if failed else generated
        reasoning = 0
        if model in REASONING_MODELS and not failed:
            reasoning = generated * (1 + int(draws[1] * 4))
            output = generated + reasoning
        return {
            "type": "llm.request",
            "event_id": event_id,
            "time": iso_z(self._at(ms)),
            "provider": provider,
            "model": model,
            "input_tokens": context,
            "output_tokens": output,
            "cached_input_tokens": cached,
            "cache_write_tokens": cache_write,
            "reasoning_tokens": reasoning,
            "batch": False,
            "app": app.name,
            "user": session.user,
            "session": session.sid,
            "status": "error" if failed else "ok",
            "latency_ms": round(150 + output * (15 + 20 * draws[1]) + context * 0.05, 1),
            "prompt_hash": prompt,
            "labels": {"team": app.team, "project": app.project, "env": "prod"},
        }

    def _loop_stream(self, loop: _Active) -> Iterator[tuple[int, EventDict]]:
        rng = self._rng("incident", "loop", loop.entity)
        app = _app(loop.detail["app"])
        session = _Session(loop.entity, loop.detail["user"], turn=1)
        provider, model = loop.detail["provider"], loop.detail["model"]
        end_ms = min(loop.end_ms, round(self.config.duration_s * 1000))
        gap_ms = 1000.0 / (2.0 * loop.spec.intensity)
        context = 2000
        count = 0
        t = float(loop.start_ms)
        while t < end_ms:
            generated = 100 + int(200 * rng.random())
            draws = [rng.random() for _ in range(3)]
            draws[2] = 1.0  # a runaway loop is a string of successes
            event = self._llm_event(f"{self.run_id}-loop-{loop.entity}-{count}", int(t), app, provider,
                                    model, context, generated, session, loop.detail["prompt_hash"], draws)
            yield int(t), event
            context = min(MAX_CONTEXT_TOKENS, context + generated + 50 + int(100 * rng.random()))
            session.turn += 1
            count += 1
            t += gap_ms * (0.8 + 0.4 * rng.random())


def _app(name: str) -> LlmApp:
    for app in APPS:
        if app.name == name:
            return app
    raise ValueError(f"no LLM app named {name!r}; known: {', '.join(a.name for a in APPS)}")


def _pick_model(app: LlmApp, draw: float) -> tuple[str, str]:
    total = 0.0
    for provider, model, share in app.models:
        total += share
        if draw < total:
            return provider, model
    return app.models[-1][0], app.models[-1][1]


def _drop_team(labels: dict[str, str], drop: bool) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k != "team"} if drop else dict(labels)


def simulate(config: SimulationConfig) -> Iterator[EventDict]:
    """Yield the events of ``config`` in event-time order (see ``Simulation``)."""
    return Simulation(config).events()
