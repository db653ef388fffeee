"""The benchmark's input: N mixed usage events, pre-serialized into batch envelopes before any timing.

Running the full simulator for a million events takes about a minute (~17k events/s), so a small pool of
simulator events (15 simulated minutes) is made once and copies of them are stamped with a unique
``event_id`` and ``time``. GPU samples and storage reports are drawn from it at random. LLM requests are
taken in the pool's order, pass after pass (``sessions="kept"``, the default), each pass's sessions
renamed (``<session>~<pass>``): so a session keeps the requests and pace the simulator gave it (most send
2-5 requests within minutes), while its user and app recur. Drawn at random instead
(``sessions="drawn"``, the only way before), a session's requests spread over the whole run: on a
200,000-event run each pool session comes back about ten times, minutes apart, for hours.
Each pool event is serialized once into a byte template with the id and time cut out, so a copy costs
one ``bytes.join``. Envelopes are built exactly as ``streams.producer.EventProducer`` builds them: per
(topic, partition) with ``crc32(entity key) % partitions``, at most ``envelope_size`` events and
``max_bytes`` bytes each, keyed by the first event's entity key, emitted when full and the rest at the end.
"""

from __future__ import annotations

import itertools
import random
import re
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

from streams.core.events import GPU_SAMPLE, LLM_REQUEST, MAX_MESSAGE_BYTES, STORAGE_USAGE
from streams.core.simulation import Simulation, SimulationConfig, iso_z
from streams.names import TOPIC_FOR_TYPE
from streams.producer import entity_key_of, envelope, partition_for, serialize

EVENT_ID_PREFIX = "bench-"
POOL_SECONDS = 900.0
GPUS_PER_SAMPLE = 8
_ID_MARK = "@@BENCH_ID@@"
_TIME_MARK = "@@BENCH_TIME@@"
# Agents write records with json.dumps defaults (", " and ": "); accept the compact form as well.
_SESSION = re.compile(rb'"session":"([^"]+)"')
_EVENT_ID_IN_RECORD = re.compile(rb'"x_EventId":\s*"' + re.escape(EVENT_ID_PREFIX.encode()) + rb'(\d+)"')


@dataclass(frozen=True, slots=True)
class Mix:
    """Share of each event type by event count (normalized, so only the ratios matter)."""

    llm: float = 0.85
    gpu: float = 0.10
    storage: float = 0.05

    def weights(self) -> dict[str, float]:
        """Return ``{event type: share}`` with the shares summing to 1.

        >>> Mix(llm=2, gpu=1, storage=1).weights()
        {'llm.request': 0.5, 'gpu.sample': 0.25, 'storage.usage': 0.25}
        """
        total = self.llm + self.gpu + self.storage
        if total <= 0 or min(self.llm, self.gpu, self.storage) < 0:
            raise ValueError("mix shares must be >= 0 and not all 0")
        kinds, shares = (LLM_REQUEST, GPU_SAMPLE, STORAGE_USAGE), (self.llm, self.gpu, self.storage)
        return {kind: share / total for kind, share in zip(kinds, shares, strict=True)}


@dataclass(frozen=True, slots=True)
class Template:
    """One pool event as bytes around its id and time, with where it is sent."""

    kind: str
    key: str
    head: bytes
    middle: bytes
    tail: bytes

    def render(self, event_id: bytes, time: bytes) -> bytes:
        """Return the event's JSON with ``event_id`` and ``time`` filled in."""
        return b"".join((self.head, event_id, self.middle, time, self.tail))


@dataclass(frozen=True, slots=True)
class Envelope:
    """One Kafka message to produce: an unprefixed topic name, partition, key and JSON-array value."""

    topic: str
    partition: int
    key: bytes
    value: bytes
    events: int


@dataclass(slots=True)
class Workload:
    """The envelopes in produce order, and which envelope carries event ``i`` (id ``bench-<i>``)."""

    envelopes: list[Envelope]
    envelope_of: array[int]  # array('I'): event index -> envelope index
    counts: dict[str, int]
    partitions: int
    envelope_size: int
    # each reporter's (event type and entity key: a GPU node, an app, a bucket) last event time, epoch s
    last_by_lane: dict[str, float] = field(default_factory=dict)

    @property
    def events(self) -> int:
        """Return the number of events."""
        return len(self.envelope_of)

    @property
    def final_event_time(self) -> float:
        """Return where the detectors' event time ends: the last time of the reporter that stops first.

        The router's ``Watermark`` moves with the slowest reporter (GPU, app, bucket), and once the
        workload ends every reporter falls silent together, so event time stops at the earliest of their
        last times (a GPU node stands for its GPUs: they report together).

        >>> w = build_workload(50, envelope_size=10, partitions=3, start=datetime(2026, 1, 1, tzinfo=UTC))
        >>> 1767225600.0 <= w.final_event_time <= 1767225600.0 + 49 / 1000
        True
        """
        return min(self.last_by_lane.values())

    @property
    def payload_bytes(self) -> int:
        """Return the total size of the envelope values."""
        return sum(len(e.value) for e in self.envelopes)


@dataclass(slots=True)
class _Buffer:
    key: str = ""
    parts: list[bytes] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    size: int = 2


def template_of(event: dict[str, Any]) -> Template:
    """Serialize a simulator event once, leaving holes for its id and time.

    >>> t = template_of({"type": "storage.usage", "event_id": "x", "time": "t", "bucket": "logs"})
    >>> t.key, t.render(b"bench-1", b"2026-01-01T00:00:00Z")
    ('logs', b'{"type":"storage.usage","event_id":"bench-1","time":"2026-01-01T00:00:00Z","bucket":"logs"}')
    """
    stamped = dict(event, event_id=_ID_MARK, time=_TIME_MARK)
    raw = serialize(stamped)
    head, rest = raw.split(_ID_MARK.encode())
    middle, tail = rest.split(_TIME_MARK.encode())
    return Template(str(event["type"]), entity_key_of(event), head, middle, tail)


@lru_cache(maxsize=4)
def event_pool(seed: int = 7, start: datetime | None = None) -> dict[str, tuple[Template, ...]]:
    """Draw templates of each type from one simulator run: GPU samples of 8-GPU nodes only (cached)."""
    start = start or datetime(2026, 1, 1, tzinfo=UTC)
    config = SimulationConfig(start=start, duration_s=POOL_SECONDS, seed=seed, nodes=10, rate=20.0, buckets=4)
    pool: dict[str, list[Template]] = {LLM_REQUEST: [], GPU_SAMPLE: [], STORAGE_USAGE: []}
    for event in Simulation(config).events():
        if event["type"] == GPU_SAMPLE and len(event["gpus"]) != GPUS_PER_SAMPLE:
            continue
        pool[event["type"]].append(template_of(event))
    return {kind: tuple(templates) for kind, templates in pool.items()}


def in_passes(templates: Sequence[Template]) -> Iterator[Template]:
    """Yield ``templates`` in order, again and again, each pass's sessions renamed ``<session>~<pass>``.

    >>> t = template_of({"type": "llm.request", "event_id": "x", "time": "t", "app": "a", "session": "s1"})
    >>> [p.render(b"i", b"t") for p in itertools.islice(in_passes([t]), 2)][1]
    b'{"type":"llm.request","event_id":"i","time":"t","app":"a","session":"s1~1"}'
    """
    yield from templates
    # where each template's session id ends (None: it has none), found once for every pass
    ends = [(template, found.end(1) if (found := _SESSION.search(template.tail)) else None)
            for template in templates]
    for number in itertools.count(1):
        suffix = b"~%d" % number
        for template, end in ends:
            if end is None:
                yield template
            else:
                tail = template.tail[:end] + suffix + template.tail[end:]
                yield Template(template.kind, template.key, template.head, template.middle, tail)


def build_workload(
    events: int,
    *,
    envelope_size: int = 1000,
    partitions: int = 6,
    mix: Mix | None = None,
    seed: int = 7,
    start: datetime | None = None,
    max_bytes: int = MAX_MESSAGE_BYTES,
    events_per_s: float = 1000.0,
    sessions: Literal["kept", "drawn"] = "kept",
) -> Workload:
    """Build ``events`` events of the given mix and pack them into envelopes.

    Event ``i`` has id ``bench-<i>`` and time ``start + i / events_per_s`` seconds (to the millisecond);
    the same arguments give the same bytes. Pricing ignores the pace; the detectors see it (at the
    default, 1,000 events a second, every entity runs far faster than in the pool it was drawn from).

    >>> w = build_workload(50, envelope_size=10, partitions=3, start=datetime(2026, 1, 1, tzinfo=UTC))
    >>> w.events, sum(e.events for e in w.envelopes), max(e.events for e in w.envelopes) <= 10
    (50, 50, True)
    """
    if events < 1 or envelope_size < 1 or partitions < 1 or events_per_s <= 0:
        raise ValueError("events, envelope_size and partitions must be >= 1, events_per_s > 0")
    start = (start or datetime(2026, 1, 1, tzinfo=UTC)).astimezone(UTC).replace(microsecond=0)
    pool = event_pool(seed, start)
    rng = random.Random(seed)
    weights = (mix or Mix()).weights()
    kinds = rng.choices(list(weights), list(weights.values()), k=events)
    picks: dict[str, Iterator[Template]] = {
        kind: iter(rng.choices(pool[kind], k=kinds.count(kind))) for kind in weights if pool[kind]}
    # LLM requests were drawn above all the same: the other kinds get the same draws as with "drawn"
    if sessions == "kept" and pool[LLM_REQUEST]:
        picks[LLM_REQUEST] = in_passes(pool[LLM_REQUEST])
    partition_of: dict[str, int] = {}
    buffers: dict[tuple[str, int], _Buffer] = {}
    envelopes: list[Envelope] = []
    envelope_of = array("I", bytes(4 * events))
    second, second_at = b"", -1
    last_at_ms: dict[str, int] = {}

    def emit(topic: str, partition: int, buffer: _Buffer) -> None:
        number = len(envelopes)
        for index in buffer.indices:
            envelope_of[index] = number
        value = envelope(buffer.parts)
        envelopes.append(Envelope(topic, partition, buffer.key.encode(), value, len(buffer.parts)))
        buffers[(topic, partition)] = _Buffer()

    for index, kind in enumerate(kinds):
        template = next(picks[kind])
        at_ms = int(index * 1000 // events_per_s)
        if at_ms // 1000 != second_at:
            second_at = at_ms // 1000
            second = iso_z(start + timedelta(seconds=second_at))[:-5].encode()
        time = b"%s.%03dZ" % (second, at_ms % 1000)
        raw = template.render(b"%s%d" % (EVENT_ID_PREFIX.encode(), index), time)
        last_at_ms[f"{kind}|{template.key}"] = at_ms
        topic = TOPIC_FOR_TYPE[kind]
        partition = partition_of.get(template.key)
        if partition is None:
            partition = partition_of[template.key] = partition_for(template.key, partitions)
        buffer = buffers.setdefault((topic, partition), _Buffer())
        if buffer.parts and buffer.size + len(raw) + 1 > max_bytes:
            emit(topic, partition, buffer)
            buffer = buffers[(topic, partition)]
        if not buffer.parts:
            buffer.key = template.key
        buffer.parts.append(raw)
        buffer.indices.append(index)
        buffer.size += len(raw) + 1
        if len(buffer.parts) >= envelope_size:
            emit(topic, partition, buffer)
    for (topic, partition), buffer in list(buffers.items()):
        if buffer.parts:
            emit(topic, partition, buffer)
    counts = {kind: kinds.count(kind) for kind in weights}
    began = start.timestamp()
    last_by_lane = {lane: began + at_ms / 1000 for lane, at_ms in last_at_ms.items()}
    return Workload(envelopes, envelope_of, counts, partitions, envelope_size, last_by_lane)


def event_indices(value: bytes) -> list[int]:
    """Return the event index of every cost record in an output message (one per charge).

    >>> event_indices(b'[{"x_EventId": "bench-12", "a": 1}, {"x_EventId":"bench-3"}, {"x_EventId": "z"}]')
    [12, 3]
    """
    return [int(match) for match in _EVENT_ID_IN_RECORD.findall(value)]


def percentile(ordered: Sequence[float], q: float) -> float:
    """Return the nearest-rank ``q`` percentile (0-100) of already sorted values.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([1.0, 2.0, 3.0, 4.0], 99)
    (2.0, 4.0)
    """
    if not ordered:
        raise ValueError("no values")
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(min(rank, len(ordered))) - 1]


def summarize_latencies(latencies_s: Iterable[float]) -> dict[str, float]:
    """Return p50, p99 and max of latencies in milliseconds.

    >>> summarize_latencies([0.001 * i for i in range(1, 101)])
    {'p50_ms': 50.0, 'p99_ms': 99.0, 'max_ms': 100.0}
    """
    ordered = sorted(latencies_s)
    return {
        "p50_ms": round(percentile(ordered, 50) * 1000, 3),
        "p99_ms": round(percentile(ordered, 99) * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }
