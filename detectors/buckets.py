"""Per-entity time buckets built from priced cost records: what detectors see instead of raw events.

Input is the ``costs.priced`` stream (CostRecord dicts, FOCUS columns plus burnwatch ``x_`` columns;
the key names are copied here so this package never imports ``streams``):

- GPU: one ``gpu_hours`` record per GPU per sample *is* that GPU's bucket (``GpuBucket``).
- LLM: the records of one request are summed into an ``LlmUsage``; ``LlmBucketer`` folds usages into
  buckets per session (short), per user and per app.
- Spend and egress: ``SeriesBucketer`` sums cost per team, project, model (spend) and per storage
  bucket (egress) into 1-minute and 1-hour buckets.

Bucketers close a bucket when the watermark (the largest event time seen) passes its end.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from operator import attrgetter
from typing import Any, NamedTuple

from detectors.state import at

# CostRecord keys (streams/core/costs.py) and meters (streams/core/pricing.py) this module reads.
START, END, COST, METER, RESOURCE = (
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "EffectiveCost",
    "SkuMeter",
    "ResourceId",
)
QUANTITY, EVENT_ID, SOURCE = "ConsumedQuantity", "x_EventId", "x_SourceType"
TEAM, PROJECT, APP, USER, SESSION, MODEL = "x_Team", "x_Project", "x_App", "x_User", "x_Session", "x_Model"
CLUSTER, UTIL, ALLOCATED, PROMPT_HASH = "x_Cluster", "x_GpuUtilPct", "x_GpuAllocated", "x_PromptHash"
GPU_METER, EGRESS_METER, STORAGE_METER = "gpu_hours", "egress_gb", "storage_gb_months"
INPUT_METERS = frozenset({"input_tokens", "cached_input_tokens", "cache_write_tokens"})
OUTPUT_METERS = frozenset({"output_tokens", "reasoning_tokens"})
LLM_SOURCE = "llm.request"
UNALLOCATED = "unallocated"
MAX_INPUTS = 64
MAX_PROMPTS = 16


@lru_cache(maxsize=8192)
def parse_time(text: str) -> float:
    """Return epoch seconds of an ISO 8601 UTC time (``Z`` or offset).

    >>> parse_time("2026-01-01T00:00:01.500Z") - parse_time("2026-01-01T00:00:00Z")
    1.5
    """
    return datetime.fromisoformat(text).timestamp()


def _floor(t: float, width: float) -> float:
    return math.floor(t / width) * width


@dataclass(frozen=True, slots=True)
class GpuBucket:
    """One GPU over one sample interval: utilization, whether it is billed to a workload, its cost."""

    gpu: str
    start: float
    end: float
    util_pct: float
    allocated: bool
    cost_usd: float
    node: str | None = None
    cluster: str | None = None
    team: str | None = None

    @property
    def entity(self) -> dict[str, str]:
        """The entity key: the GPU, with its node when known."""
        return {"gpu": self.gpu, "node": self.node} if self.node else {"gpu": self.gpu}


def gpu_bucket(record: Mapping[str, Any], node: str | None = None) -> GpuBucket | None:
    """Return the bucket of one ``gpu_hours`` cost record, or None for any other record.

    >>> r = {"SkuMeter": "gpu_hours", "ResourceId": "GPU-1", "ChargePeriodStart": "2026-01-01T00:00:00Z",
    ...      "ChargePeriodEnd": "2026-01-01T00:00:15Z", "x_GpuUtilPct": 1.0, "x_GpuAllocated": True,
    ...      "EffectiveCost": 0.01, "x_Cluster": "aws-us-east-1", "x_Team": "research"}
    >>> b = gpu_bucket(r, node="n1")
    >>> b.end - b.start, b.entity
    (15.0, {'gpu': 'GPU-1', 'node': 'n1'})
    """
    if record.get(METER) != GPU_METER:
        return None
    return GpuBucket(
        gpu=str(record[RESOURCE]),
        start=parse_time(record[START]),
        end=parse_time(record[END]),
        util_pct=float(record.get(UTIL) or 0.0),
        allocated=bool(record.get(ALLOCATED)),
        cost_usd=float(record[COST]),
        node=node,
        cluster=record.get(CLUSTER),
        team=record.get(TEAM),
    )


class LlmUsage(NamedTuple):
    """One LLM request, its meters summed: tokens in and out, and what it cost.

    A named tuple, not a frozen dataclass: one is made per request, and a frozen dataclass sets each
    field through ``object.__setattr__`` (about 1 µs a request, four times a tuple's cost).
    """

    time: float
    app: str
    user: str
    session: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    prompt_hash: str | None = None
    team: str | None = None


def llm_usages(
    records: Iterable[Mapping[str, Any]], prompt_hashes: Mapping[str, str] | None = None
) -> list[LlmUsage]:
    """Sum the cost records of each LLM request (by ``x_EventId``) into one ``LlmUsage``, in order.

    ``prompt_hashes`` maps event id to prompt hash when the records do not carry ``x_PromptHash``.

    >>> base = {"x_SourceType": "llm.request", "x_EventId": "e1", "ChargePeriodStart": "2026-01-01T00:00:00Z",
    ...         "x_App": "bot", "x_User": "u", "x_Session": "s", "x_Model": "gpt-4o", "x_Team": "cx"}
    >>> recs = [{**base, "SkuMeter": "input_tokens", "ConsumedQuantity": 900.0, "EffectiveCost": 0.002},
    ...         {**base, "SkuMeter": "output_tokens", "ConsumedQuantity": 100.0, "EffectiveCost": 0.001}]
    >>> u = llm_usages(recs, {"e1": "p"})[0]
    >>> u.input_tokens, u.output_tokens, round(u.cost_usd, 3), u.prompt_hash
    (900, 100, 0.003, 'p')
    """
    sums: dict[str, list[Any]] = {}
    for record in records:
        if record.get(SOURCE) == LLM_SOURCE:
            add_llm_record(sums, record)
    return [usage_of(acc, (prompt_hashes or {}).get(eid)) for eid, acc in sums.items()]


def add_llm_record(sums: dict[str, list[Any]], record: Mapping[str, Any]) -> None:
    """Fold one LLM cost record into its request's running sums (keyed by ``x_EventId``)."""
    eid = record[EVENT_ID]
    acc = sums.get(eid)
    if acc is None:
        acc = sums[eid] = [record, 0.0, 0.0, 0.0]
    meter = record[METER]
    if meter in INPUT_METERS:
        acc[1] += record[QUANTITY]
    elif meter in OUTPUT_METERS:
        acc[2] += record[QUANTITY]
    acc[3] += record[COST]


def usage_of(acc: list[Any], prompt_hash: str | None = None) -> LlmUsage:
    """Return the ``LlmUsage`` of one request's sums (``add_llm_record``); its records' hash wins."""
    first = acc[0]
    return LlmUsage(
        time=parse_time(first[START]),
        app=first.get(APP) or UNALLOCATED,
        user=first.get(USER) or "",
        session=first.get(SESSION) or "",
        model=first.get(MODEL) or "",
        input_tokens=int(acc[1]),
        output_tokens=int(acc[2]),
        cost_usd=acc[3],
        prompt_hash=first.get(PROMPT_HASH) or prompt_hash,
        team=first.get(TEAM),
    )


@dataclass(slots=True)
class LlmBucket:
    """One entity's LLM requests over one bucket (``scope`` is ``session``, ``user`` or ``app``)."""

    scope: str
    key: str
    app: str
    start: float
    end: float
    team: str | None = None
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    inputs: list[int] = field(default_factory=list)
    prompts: dict[str, int] = field(default_factory=dict)
    models: dict[str, list[float]] = field(default_factory=dict)

    _entity: dict[str, str] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def entity(self) -> dict[str, str]:
        """The entity key: the app, and the user or session within it (built once per bucket)."""
        entity = self._entity
        if entity is None:
            entity = self._entity = (
                {"app": self.app} if self.scope == "app" else {"app": self.app, self.scope: self.key}
            )
        return entity

    def add(self, usage: LlmUsage) -> None:
        """Fold one request into the bucket.

        Only a session bucket keeps ``inputs`` and ``prompts`` (context bloat and agent loops are
        per session) and only an app bucket keeps ``models`` (model switch is per app): the other
        lists stay empty, which keeps the per-request cost down.
        """
        self.requests += 1
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cost_usd += usage.cost_usd
        scope = self.scope
        if scope == "session":
            if len(self.inputs) < MAX_INPUTS:
                self.inputs.append(usage.input_tokens)
            prompt = usage.prompt_hash
            if prompt:
                prompts = self.prompts
                if prompt in prompts:
                    prompts[prompt] += 1
                elif len(prompts) < MAX_PROMPTS:
                    prompts[prompt] = 1
        elif scope == "app":
            per_model = self.models.get(usage.model)
            if per_model is None:
                per_model = self.models[usage.model] = [0.0, 0.0, 0.0]
            per_model[0] += 1
            per_model[1] += usage.input_tokens + usage.output_tokens
            per_model[2] += usage.cost_usd


_NO_INPUTS: list[int] = []
_NO_PROMPTS: dict[str, int] = {}
_NO_MODELS: dict[str, list[float]] = {}


class LlmBucketer:
    """Fold LLM usages into session, user and app buckets; ``flush`` returns the closed ones in order.

    >>> from detectors.config import BucketConfig
    >>> bk = LlmBucketer(BucketConfig(session_s=2, app_s=10, scope_s=10))
    >>> for t in (0.5, 1.0, 2.5):
    ...     bk.add(LlmUsage(t, "bot", "u1", "s1", "m", 100, 10, 0.01, "p"))
    >>> [(b.scope, b.start, b.requests) for b in bk.flush(3.0)]
    [('session', 0.0, 2)]
    >>> [(b.scope, b.requests) for b in bk.flush(10.0)]
    [('session', 1), ('app', 3), ('user', 3)]
    """

    def __init__(self, config: Any) -> None:
        self.widths = {
            "session": float(config.session_s),
            "user": float(config.scope_s),
            "app": float(config.app_s),
        }
        # per scope: entity key -> its open bucket with the latest start (nearly always its only one), so
        # a request finds its bucket with one lookup and a new session costs no container of its own
        self._scopes: tuple[tuple[str, float, dict[str, LlmBucket]], ...] = tuple(
            (scope, self.widths[scope], {}) for scope in ("session", "user", "app")
        )
        self._tables = {scope: table for scope, _, table in self._scopes}
        # the other open buckets (one left open when a later one began, or a late request's), rare
        self._older: dict[tuple[str, str, float], LlmBucket] = {}
        # every open bucket by end time (the counter orders buckets that end together): the earliest end
        # is its first, so a flush with nothing to close costs one comparison
        self._ends: list[tuple[float, int, LlmBucket]] = []
        self._made = itertools.count()

    def add(self, usage: LlmUsage) -> None:
        """Fold one request into its session, user and app buckets."""
        time = usage.time
        for (scope, width, table), key in zip(
            self._scopes, (usage.session, usage.user, usage.app), strict=True
        ):
            if not key:
                continue
            start = math.floor(time / width) * width
            bucket = table.get(key)
            if bucket is None or bucket.start != start:
                bucket = self._open(scope, width, table, key, start, usage, bucket)
            bucket.add(usage)

    def _open(
        self,
        scope: str,
        width: float,
        table: dict[str, LlmBucket],
        key: str,
        start: float,
        usage: LlmUsage,
        latest: LlmBucket | None,
    ) -> LlmBucket:
        """Return the bucket of ``key`` from ``start`` when it is not ``latest``, the latest open one."""
        if latest is not None and start < latest.start:
            older = self._older.get((scope, key, start))
            if older is None:
                older = self._older[(scope, key, start)] = self._new(scope, width, key, start, usage)
            return older
        if latest is not None:
            self._older[(scope, key, latest.start)] = latest
        bucket = table[key] = self._new(scope, width, key, start, usage)
        return bucket

    def _new(self, scope: str, width: float, key: str, start: float, usage: LlmUsage) -> LlmBucket:
        # a bucket keeps only the containers its scope fills (see LlmBucket.add): the others are shared
        # empty ones, never written, so closing a bucket frees fewer objects
        bucket = LlmBucket(
            scope,
            key,
            usage.app,
            start,
            start + width,
            usage.team,
            0,  # requests, input and output tokens, cost: counted by add
            0,
            0,
            0.0,
            [] if scope == "session" else _NO_INPUTS,
            {} if scope == "session" else _NO_PROMPTS,
            {} if scope == "app" else _NO_MODELS,
        )
        heapq.heappush(self._ends, (bucket.end, next(self._made), bucket))
        return bucket

    def closing_bound(self, watermark: float, limit: int) -> float:
        """Return how far to close: ``watermark``, or an earlier end if more than ``limit`` buckets end by it.

        The earlier end is the latest by which at most ``limit`` buckets end (the first end when more than
        ``limit`` end then). A caller that saves what each flush changed keeps each save bounded.

        >>> from detectors.config import BucketConfig
        >>> bk = LlmBucketer(BucketConfig(session_s=2, app_s=10, scope_s=10))
        >>> for t in (0.5, 2.5, 4.5, 6.5):
        ...     bk.add(LlmUsage(t, "bot", "", f"s{t}", "m", 100, 10, 0.01, None))
        >>> bk.closing_bound(10.0, 5), bk.closing_bound(10.0, 3), bk.closing_bound(10.0, 2)
        (10.0, 6.0, 4.0)
        >>> bk.closing_bound(10.0, 0)  # at least the first end: the buckets ending then close together
        2.0
        """
        ends = self._ends
        if len(ends) <= limit:
            return watermark
        first = heapq.nsmallest(limit + 1, ends)
        past = first[-1][0]  # the end of the first bucket past the limit
        if past > watermark:
            return watermark
        kept = [end for end, _, _ in first if end < past]
        return kept[-1] if kept else past

    def flush(self, watermark: float) -> list[LlmBucket]:
        """Close and return every bucket that ended at or before ``watermark``, by end time.

        The open buckets wait in a heap by end time, so a flush costs the buckets it closes, not every
        open one: while a worker catches up on a backlog, event time trails the inputs of its fastest
        partitions and tens of thousands of buckets can be open at once.
        """
        ends: list[tuple[float, int, LlmBucket]] = self._ends
        if not ends or watermark < ends[0][0]:
            return []
        closed = []
        while ends and ends[0][0] <= watermark:
            bucket = heapq.heappop(ends)[2]
            table = self._tables[bucket.scope]
            if table.get(bucket.key) is bucket:
                del table[bucket.key]
            else:  # left open when a later bucket of its entity began, or a late request's
                del self._older[(bucket.scope, bucket.key, bucket.start)]
            closed.append(bucket)
        closed.sort(key=_CLOSING_ORDER)
        return closed


_CLOSING_ORDER = attrgetter("end", "scope", "key")


@dataclass(slots=True)
class SeriesBucket:
    """Cost of one scope (team, project, model, or storage bucket for egress) over one bucket."""

    kind: str
    scope: str
    key: str
    start: float
    end: float
    cost_usd: float = 0.0
    quantity: float = 0.0

    @property
    def entity(self) -> dict[str, str]:
        """The entity key: scope name and value, and the bucket width."""
        width = self.end - self.start
        return {self.scope: self.key, "window": f"{width / 3600:g}h" if width >= 3600 else f"{width / 60:g}m"}

    @property
    def started(self) -> datetime:
        """The bucket start as an aware datetime."""
        return at(self.start)


SPEND_SCOPES = (("team", TEAM), ("project", PROJECT), ("model", MODEL))


class SeriesBucketer:
    """Sum cost records into spend (team, project, model) and egress (storage bucket) series.

    >>> bk = SeriesBucketer((60.0,))
    >>> bk.add({"ChargePeriodStart": "2026-01-01T00:00:10Z", "EffectiveCost": 2.0, "x_Team": "cx",
    ...         "x_Project": None, "x_Model": None, "SkuMeter": "egress_gb", "ResourceId": "b1",
    ...         "ConsumedQuantity": 20.0})
    >>> for b in bk.flush(parse_time("2026-01-01T00:01:00Z")):
    ...     print(b.kind, b.entity, b.cost_usd)
    egress_spike {'bucket': 'b1', 'window': '1m'} 2.0
    spend_spike {'team': 'cx', 'window': '1m'} 2.0
    """

    def __init__(self, widths: Iterable[float]) -> None:
        self.widths = tuple(float(w) for w in widths)
        # keyed by width too: the minute and the hour that start at the same time are two buckets
        self._open: dict[tuple[str, str, str, float, float], SeriesBucket] = {}
        self._last_keys: tuple[Any, ...] | None = None
        self._last_time = 0.0
        self._last_spend: list[SeriesBucket] = []
        # the spend buckets of each (team, project, model) by their starts, until the next flush: events
        # of one scope in one minute reuse them instead of looking up one bucket per scope and width
        self._spend: dict[tuple[Any, ...], tuple[tuple[float, ...], list[SeriesBucket]]] = {}

    def _bucket(self, kind: str, scope: str, key: str, t: float, width: float) -> SeriesBucket:
        start = _floor(t, width)
        found = self._open.get((scope, key, kind, start, width))
        if found is None:
            found = self._open[(scope, key, kind, start, width)] = SeriesBucket(
                kind, scope, key, start, start + width
            )
        return found

    def add(self, record: Mapping[str, Any]) -> None:
        """Fold one cost record into every series it belongs to."""
        cost = record[COST]
        # the records of one event (one per SKU) share their time and tags: find their buckets once
        keys = (record[START], record.get(TEAM), record.get(PROJECT), record.get(MODEL))
        if keys != self._last_keys:
            self._last_keys = keys
            self._last_time = t = parse_time(keys[0])
            starts = tuple([_floor(t, width) for width in self.widths])
            tags = keys[1:]
            cached = self._spend.get(tags)
            if cached is not None and cached[0] == starts:
                self._last_spend = cached[1]
            else:
                self._last_spend = [
                    self._bucket("spend_spike", scope, key, t, width)
                    for width in self.widths
                    for scope, key in (
                        ("team", keys[1] or UNALLOCATED),
                        ("project", keys[2]),
                        ("model", keys[3]),
                    )
                    if key
                ]
                self._spend[tags] = (starts, self._last_spend)
        for bucket in self._last_spend:
            bucket.cost_usd += cost
        meter = record.get(METER)
        if meter == EGRESS_METER or meter == STORAGE_METER:
            resource = str(record[RESOURCE])
            for width in self.widths:
                egress = self._bucket("egress_spike", "bucket", resource, self._last_time, width)
                if meter == EGRESS_METER:  # a storage report only opens the bucket: quiet minutes are 0
                    egress.cost_usd += cost
                    egress.quantity += record.get(QUANTITY, 0.0)

    def flush(self, watermark: float) -> list[SeriesBucket]:
        """Close and return every bucket that ended at or before ``watermark``, by end time."""
        done = [k for k, b in self._open.items() if b.end <= watermark]
        closed = [self._open.pop(k) for k in done]
        if closed:
            self._last_keys = None  # a cached bucket may be closed now
            self._spend.clear()
        closed.sort(key=lambda b: (b.end, b.kind, b.scope, b.key))
        return closed
