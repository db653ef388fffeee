"""Usage events: the three record types producers send, and how a Kafka message becomes events.

A message is one event object, a JSON array of up to ``MAX_EVENTS_PER_MESSAGE`` events (a batch
envelope), or CloudEvents 1.0 structured JSON (one object or an array of them). Every event carries
an ``event_id`` (used to count it once) and a timezone-aware ``time``; naive timestamps are rejected
because they break billing windows.

Token convention for ``llm.request`` (the OpenAI one): ``input_tokens`` counts every prompt token,
including ``cached_input_tokens`` and ``cache_write_tokens``; ``output_tokens`` counts every generated
token, including ``reasoning_tokens``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

MAX_EVENTS_PER_MESSAGE = 10_000
MAX_MESSAGE_BYTES = 8 * 1024 * 1024

Labels = dict[str, str]
NonNegInt = Annotated[int, Field(ge=0)]
MAX_TOKENS = 10**12
"""No request has a trillion tokens (the largest context windows hold a few million): a count above it
is a broken counter, and goes to the dead letters with the field named rather than into the sums."""
TokenCount = Annotated[int, Field(ge=0, le=MAX_TOKENS)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
IntervalSeconds = Annotated[float, Field(gt=0, le=86_400, allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1, max_length=256)]

GPU_SAMPLE: Final = "gpu.sample"
LLM_REQUEST: Final = "llm.request"
STORAGE_USAGE: Final = "storage.usage"
EVENT_TYPES = (GPU_SAMPLE, LLM_REQUEST, STORAGE_USAGE)


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Annotated[str, Field(min_length=1, max_length=200)]
    time: AwareDatetime
    labels: Labels = Field(default_factory=dict)

    @field_validator("time")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        try:
            return value.astimezone(UTC)
        except OverflowError:
            # 0001-01-01T00:00+01:00 is valid ISO 8601 but has no UTC datetime; pydantic lets
            # OverflowError escape, so turn it into a validation error.
            raise ValueError("time is out of range once converted to UTC") from None


class GpuReading(BaseModel):
    """One GPU's reading within a node's sample."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: NonNegInt
    uuid: str | None = None
    model: Name
    util_pct: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
    mem_used_mib: NonNegFloat = 0.0
    power_w: NonNegFloat = 0.0
    allocated: bool = True
    workload: str | None = None
    labels: Labels = Field(default_factory=dict)


class GpuSample(_Event):
    """A GPU node's report for one interval starting at ``time`` and lasting ``interval_s``."""

    type: Literal["gpu.sample"] = GPU_SAMPLE
    interval_s: IntervalSeconds
    node: Name
    cluster: str = "default"
    provider: Name
    region: str = "global"
    instance_type: str = ""
    pricing: Literal["on_demand", "spot", "reserved", "on_prem"] = "on_demand"
    gpus: Annotated[list[GpuReading], Field(min_length=1, max_length=64)]


class LlmRequest(_Event):
    """One LLM API call, as the gateway saw it complete at ``time``."""

    type: Literal["llm.request"] = LLM_REQUEST
    provider: Name
    model: Name
    input_tokens: TokenCount
    output_tokens: TokenCount
    cached_input_tokens: TokenCount = 0
    cache_write_tokens: TokenCount = 0
    reasoning_tokens: TokenCount = 0
    batch: bool = False
    app: str = "unknown"
    user: str | None = None
    session: str | None = None
    status: str = "ok"
    latency_ms: NonNegFloat | None = None
    prompt_hash: str | None = None

    @model_validator(mode="after")
    def _token_parts_fit(self) -> LlmRequest:
        if self.cached_input_tokens + self.cache_write_tokens > self.input_tokens:
            raise ValueError("cached_input_tokens + cache_write_tokens exceed input_tokens")
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError("reasoning_tokens exceed output_tokens")
        return self


class StorageUsage(_Event):
    """A bucket's stored bytes (a gauge over ``interval_s``) and the egress in that interval."""

    type: Literal["storage.usage"] = STORAGE_USAGE
    interval_s: IntervalSeconds
    provider: Name
    region: str = "global"
    bucket: Name
    storage_class: str = "standard"
    stored_bytes: NonNegInt
    egress_bytes: NonNegInt = 0
    egress_destination: Literal["internet", "inter_region", "same_region"] = "internet"


UsageEvent = Annotated[GpuSample | LlmRequest | StorageUsage, Field(discriminator="type")]
EVENT_ADAPTER: TypeAdapter[GpuSample | LlmRequest | StorageUsage] = TypeAdapter(UsageEvent)
BATCH_ADAPTER: TypeAdapter[list[GpuSample | LlmRequest | StorageUsage]] = TypeAdapter(list[UsageEvent])

Event = GpuSample | LlmRequest | StorageUsage


def entity_key(event: Event) -> str:
    """Return the partitioning key: node for GPUs, app for LLM calls, bucket for storage.

    >>> entity_key(LlmRequest(event_id="e1", time=datetime(2026, 1, 1, tzinfo=UTC), provider="openai",
    ...                       model="gpt-4o", input_tokens=10, output_tokens=2, app="chat"))
    'chat'
    """
    if isinstance(event, GpuSample):
        return event.node
    if isinstance(event, LlmRequest):
        return event.app
    return event.bucket


# --- turning bytes into events -------------------------------------------------------------------

REASONS = (
    "oversize",
    "unparseable",
    "not_an_event",
    "too_many_events",
    "naive_timestamp",
    "negative_quantity",
    "schema",
)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one message, or one element of a batch (``index``), was not accepted.

    ``original`` is the message's exact bytes, or for a batch element that element as compact JSON.
    """

    reason: str
    detail: str
    original: bytes
    index: int | None = None


@dataclass(slots=True)
class ParsedMessage:
    """The valid events of one message and the rejections, in input order."""

    events: list[Event] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def _reason_for(error: ValidationError) -> str:
    types = {e["type"] for e in error.errors()}
    if "timezone_aware" in types:
        return "naive_timestamp"
    if types & {"greater_than_equal", "greater_than"}:
        return "negative_quantity"
    return "schema"


def _short(error: ValidationError) -> str:
    parts = []
    for e in error.errors()[:5]:
        loc = ".".join(str(p) for p in e["loc"])
        parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
    return "; ".join(parts)


_CE_PREFIXES = ("dev.burnwatch.", "io.burnwatch.", "burnwatch.")


def from_cloudevent(obj: dict[str, Any]) -> dict[str, Any]:
    """Map a CloudEvents 1.0 structured-mode object onto a plain event object.

    ``type`` may be ``gpu.sample`` or carry a reverse-DNS prefix (``dev.burnwatch.gpu.sample``); the
    CloudEvent's ``id`` and ``time`` fill ``event_id`` and ``time`` when ``data`` lacks them.

    >>> from_cloudevent({"specversion": "1.0", "id": "c1", "type": "dev.burnwatch.llm.request",
    ...                  "source": "/gw", "time": "2026-01-01T00:00:00Z", "data": {"model": "m"}})
    {'model': 'm', 'type': 'llm.request', 'event_id': 'c1', 'time': '2026-01-01T00:00:00Z'}
    """
    if str(obj.get("specversion")) != "1.0":
        raise ValueError(f"unsupported CloudEvents specversion {obj.get('specversion')!r}")
    data = obj.get("data")
    if not isinstance(data, dict):
        raise ValueError("CloudEvent has no object 'data'")
    ce_type = str(obj.get("type", ""))
    for prefix in _CE_PREFIXES:
        if ce_type.startswith(prefix):
            ce_type = ce_type[len(prefix):]
            break
    out = dict(data)
    out.setdefault("type", ce_type)
    if "id" in obj:
        out.setdefault("event_id", obj["id"])
    if "time" in obj:
        out.setdefault("time", obj["time"])
    return out


def _element_bytes(obj: Any, payload: bytes) -> bytes:
    try:
        return json.dumps(obj, separators=(",", ":"), default=str).encode()
    except RecursionError:
        # json.loads accepted the nesting but re-encoding it one frame deeper overflows.
        return payload


def _reject(
    parsed: ParsedMessage, reason: str, detail: str, obj: Any, index: int | None, payload: bytes
) -> None:
    # A whole message keeps its exact bytes; a batch element keeps its own JSON (before any
    # CloudEvents mapping), so the dead letter shows what the producer sent.
    original = payload if index is None else _element_bytes(obj, payload)
    parsed.rejections.append(Rejection(reason, detail, original, index))


def _validate_one(obj: Any, index: int | None, parsed: ParsedMessage, payload: bytes) -> None:
    if not isinstance(obj, dict):
        _reject(parsed, "not_an_event", "element is not a JSON object", obj, index, payload)
        return
    try:
        candidate = from_cloudevent(obj) if "specversion" in obj else obj
        parsed.events.append(EVENT_ADAPTER.validate_python(candidate))
    except ValidationError as error:
        _reject(parsed, _reason_for(error), _short(error), obj, index, payload)
    except ValueError as error:
        _reject(parsed, "schema", str(error), obj, index, payload)


def parse_message(
    payload: bytes,
    *,
    max_bytes: int = MAX_MESSAGE_BYTES,
    max_events: int = MAX_EVENTS_PER_MESSAGE,
) -> ParsedMessage:
    """Parse one Kafka message value into events, keeping every valid event of a batch.

    The whole batch is validated at once (the fast path); only when that fails is it split so each
    bad element is rejected on its own and the good ones survive.

    >>> ok = b'{"type":"llm.request","event_id":"a","time":"2026-01-01T00:00:00Z","provider":"openai",'
    >>> ok += b'"model":"gpt-4o","input_tokens":5,"output_tokens":1}'
    >>> bad = b'{"type":"llm.request","event_id":"b","time":"2026-01-01T00:00:00","provider":"x",'
    >>> bad += b'"model":"m","input_tokens":1,"output_tokens":1}'
    >>> parsed = parse_message(b"[" + ok + b"," + bad + b"]")
    >>> [e.event_id for e in parsed.events], [(r.reason, r.index) for r in parsed.rejections]
    (['a'], [('naive_timestamp', 1)])
    """
    parsed = ParsedMessage()
    if len(payload) > max_bytes:
        parsed.rejections.append(
            Rejection("oversize", f"message is {len(payload)} bytes, limit {max_bytes}", payload)
        )
        return parsed
    stripped = payload.lstrip()
    if stripped[:1] == b"[":
        try:
            events = BATCH_ADAPTER.validate_json(payload)
        except ValidationError:
            pass
        else:
            if len(events) > max_events:
                detail = f"batch has {len(events)} events, limit {max_events}"
                parsed.rejections.append(Rejection("too_many_events", detail, payload))
            else:
                parsed.events = events
            return parsed
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError) as error:  # RecursionError: nesting deeper than the stack
        parsed.rejections.append(Rejection("unparseable", f"not JSON: {error}", payload))
        return parsed
    if isinstance(doc, list):
        if len(doc) > max_events:
            detail = f"batch has {len(doc)} events, limit {max_events}"
            parsed.rejections.append(Rejection("too_many_events", detail, payload))
            return parsed
        for index, item in enumerate(doc):
            _validate_one(item, index, parsed, payload)
    else:
        _validate_one(doc, None, parsed, payload)
    return parsed


def event_json_schema() -> dict[str, Any]:
    """Return the JSON Schema of one usage event (any of the three types)."""
    schema = EVENT_ADAPTER.json_schema()
    schema["title"] = "burnwatch usage event"
    return schema
