"""From an LLM provider's ``usage`` object to an ``llm.request`` event dict (pure: no I/O but the key).

Three usage shapes are understood, as plain dicts or as SDK objects (pydantic models are read through
``model_dump``; the SDKs are never imported):

* OpenAI Chat Completions (and LiteLLM's ``Usage``): ``prompt_tokens``, ``completion_tokens``,
  ``prompt_tokens_details.cached_tokens``, ``completion_tokens_details.reasoning_tokens``; LiteLLM adds
  cache writes as ``prompt_tokens_details.cache_creation_tokens`` / ``cache_creation_input_tokens``.
* OpenAI Responses: ``input_tokens``, ``output_tokens``, ``input_tokens_details.cached_tokens``,
  ``output_tokens_details.reasoning_tokens``.
* Anthropic Messages: ``input_tokens``, ``cache_creation_input_tokens``, ``cache_read_input_tokens``,
  ``output_tokens``. Anthropic's ``input_tokens`` EXCLUDES cache reads and writes; burnwatch's includes
  them (the token convention in ``streams/core/events.py``), so the three are added up.

``prompt_hash`` is an HMAC-SHA256 of the prompt under a key only the caller holds: an unkeyed hash of
a short prompt can be reversed by hashing guesses, a keyed one cannot without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from streams.core.events import LLM_REQUEST

MAX_EVENT_ID = 200
MIN_KEY_BYTES = 16
KEY_ENV = "BURNWATCH_PROMPT_HASH_KEY"
KEY_FILE_ENV = "BURNWATCH_PROMPT_HASH_KEY_FILE"

Style = Literal["auto", "openai", "anthropic"]


@dataclass(frozen=True, slots=True)
class TokenCounts:
    """Token counts in burnwatch's convention (as ``LlmRequest`` has them).

    ``input_tokens`` includes cached and cache-write tokens, ``output_tokens`` reasoning tokens.
    """

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        if self.cached_input_tokens + self.cache_write_tokens > self.input_tokens:
            raise ValueError(
                f"usage is inconsistent: cached ({self.cached_input_tokens}) + cache-write "
                f"({self.cache_write_tokens}) tokens exceed input tokens ({self.input_tokens})"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError(
                f"usage is inconsistent: reasoning tokens ({self.reasoning_tokens}) exceed output tokens "
                f"({self.output_tokens})"
            )


def as_mapping(obj: Any) -> Mapping[str, Any]:
    """Return a dict view of a usage object: a mapping as is, a pydantic model through ``model_dump``.

    >>> as_mapping(None), as_mapping({"prompt_tokens": 3})
    ({}, {'prompt_tokens': 3})
    """
    if obj is None:
        return {}
    if isinstance(obj, Mapping):
        return obj
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        dumped = dump()
        if isinstance(dumped, Mapping):
            return dumped
    if hasattr(obj, "__dict__"):
        return {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    raise TypeError(f"cannot read a usage object of type {type(obj).__name__}")


def _count(usage: Mapping[str, Any], *path: str) -> int:
    value: Any = usage
    for name in path:
        value = as_mapping(value).get(name)
        if value is None:
            return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) or value < 0:
        raise ValueError(f"usage field {'.'.join(path)} is not a token count: {value!r}")
    return int(value)


def openai_counts(usage: Any) -> TokenCounts:
    """Read OpenAI Chat Completions or Responses usage (both count cached tokens inside the input).

    >>> counts = openai_counts({"prompt_tokens": 100, "completion_tokens": 40,
    ...                         "prompt_tokens_details": {"cached_tokens": 60},
    ...                         "completion_tokens_details": {"reasoning_tokens": 30}})
    >>> counts.input_tokens, counts.cached_input_tokens, counts.output_tokens, counts.reasoning_tokens
    (100, 60, 40, 30)
    >>> openai_counts({"input_tokens": 10, "output_tokens": 5,
    ...                "input_tokens_details": {"cached_tokens": 4}}).cached_input_tokens
    4
    """
    u = as_mapping(usage)
    if "prompt_tokens" in u or "completion_tokens" in u:
        write = (
            _count(u, "prompt_tokens_details", "cache_creation_tokens")
            or _count(u, "prompt_tokens_details", "cache_write_tokens")
            or _count(u, "cache_creation_input_tokens")
        )
        return TokenCounts(
            input_tokens=_count(u, "prompt_tokens"),
            output_tokens=_count(u, "completion_tokens"),
            cached_input_tokens=_count(u, "prompt_tokens_details", "cached_tokens"),
            cache_write_tokens=write,
            reasoning_tokens=_count(u, "completion_tokens_details", "reasoning_tokens"),
        )
    return TokenCounts(
        input_tokens=_count(u, "input_tokens"),
        output_tokens=_count(u, "output_tokens"),
        cached_input_tokens=_count(u, "input_tokens_details", "cached_tokens"),
        reasoning_tokens=_count(u, "output_tokens_details", "reasoning_tokens"),
    )


def anthropic_counts(usage: Any) -> TokenCounts:
    """Read Anthropic Messages usage, adding cache reads and writes into ``input_tokens``.

    >>> counts = anthropic_counts({"input_tokens": 50, "cache_creation_input_tokens": 200,
    ...                            "cache_read_input_tokens": 1000, "output_tokens": 80})
    >>> counts.input_tokens, counts.cached_input_tokens, counts.cache_write_tokens, counts.output_tokens
    (1250, 1000, 200, 80)
    """
    u = as_mapping(usage)
    fresh = _count(u, "input_tokens")
    write = _count(u, "cache_creation_input_tokens")
    read = _count(u, "cache_read_input_tokens")
    return TokenCounts(
        input_tokens=fresh + write + read,
        output_tokens=_count(u, "output_tokens"),
        cached_input_tokens=read,
        cache_write_tokens=write,
    )


def usage_counts(usage: Any, style: Style = "auto") -> TokenCounts:
    """Read any known usage shape; ``auto`` tells them apart by their field names.

    ``prompt_tokens`` means Chat Completions (LiteLLM's Usage too, even with its Anthropic cache
    fields, because LiteLLM already folds them into ``prompt_tokens``); ``*_tokens_details`` means the
    Responses API; ``input_tokens`` alone means Anthropic. Bare ``input_tokens``/``output_tokens``
    read the same either way.

    >>> usage_counts({"input_tokens": 5, "cache_read_input_tokens": 20, "output_tokens": 1}).input_tokens
    25
    """
    if style == "anthropic":
        return anthropic_counts(usage)
    if style == "openai":
        return openai_counts(usage)
    u = as_mapping(usage)
    if "prompt_tokens" in u or "completion_tokens" in u:
        return openai_counts(u)
    if "input_tokens_details" in u or "output_tokens_details" in u:
        return openai_counts(u)
    return anthropic_counts(u)


def event_id_for(response_id: str | None) -> str:
    """Return the event id: the provider's response id (so a resend dedups), else a random one.

    >>> event_id_for("chatcmpl-abc"), len(event_id_for(None)), event_id_for("x" * 300)[:7]
    ('chatcmpl-abc', 32, 'sha256:')
    """
    if not response_id:
        return uuid.uuid4().hex
    if len(response_id) > MAX_EVENT_ID:
        return "sha256:" + hashlib.sha256(response_id.encode()).hexdigest()
    return response_id


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("time must be timezone-aware")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def llm_request_event(
    usage: Any,
    *,
    provider: str,
    model: str,
    response_id: str | None = None,
    app: str = "unknown",
    user: str | None = None,
    session: str | None = None,
    labels: Mapping[str, Any] | None = None,
    time: datetime | None = None,
    latency_ms: float | None = None,
    status: str = "ok",
    batch: bool = False,
    prompt_hash: str | None = None,
    style: Style = "auto",
) -> dict[str, Any]:
    """Build one ``llm.request`` event dict (JSON-ready) from a provider's usage object.

    ``time`` defaults to now (the call's completion, as the gateway sees it).

    >>> at = datetime(2026, 1, 1, tzinfo=UTC)
    >>> event = llm_request_event({"prompt_tokens": 12, "completion_tokens": 3}, provider="openai",
    ...                           model="gpt-4o", response_id="chatcmpl-1", app="chat", time=at)
    >>> event["event_id"], event["input_tokens"], event["output_tokens"], event["time"]
    ('chatcmpl-1', 12, 3, '2026-01-01T00:00:00Z')
    """
    counts = usage_counts(usage, style)
    event: dict[str, Any] = {
        "type": LLM_REQUEST,
        "event_id": event_id_for(response_id),
        "time": _iso(time or datetime.now(UTC)),
        "provider": provider,
        "model": model,
        "input_tokens": counts.input_tokens,
        "output_tokens": counts.output_tokens,
        "cached_input_tokens": counts.cached_input_tokens,
        "cache_write_tokens": counts.cache_write_tokens,
        "reasoning_tokens": counts.reasoning_tokens,
        "batch": batch,
        "app": app,
        "status": status,
        "labels": {str(k): str(v) for k, v in (labels or {}).items()},
    }
    optional = {"user": user, "session": session, "latency_ms": latency_ms, "prompt_hash": prompt_hash}
    event.update({k: v for k, v in optional.items() if v is not None})
    return event


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def event_from_response(
    response: Any,
    *,
    provider: str | None = None,
    prompt: Any = None,
    hash_key: bytes | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Build the event from a whole SDK response: its ``usage``, ``model`` and ``id``.

    ``response`` is an OpenAI ``ChatCompletion`` or ``Response``, an Anthropic ``Message``, or their dicts.

    ``provider`` defaults to ``anthropic`` for a Messages response (``type == "message"``), else
    ``openai``. ``prompt_hash`` is set only when both ``prompt`` and ``hash_key`` are given. Other
    keyword arguments go to ``llm_request_event`` (app, user, session, labels, time, latency_ms, ...).

    >>> msg = {"id": "msg_1", "type": "message", "model": "claude-sonnet-4-5",
    ...        "usage": {"input_tokens": 3, "cache_read_input_tokens": 7, "output_tokens": 2}}
    >>> event = event_from_response(msg, app="bot")
    >>> event["provider"], event["input_tokens"], event["cached_input_tokens"], event["event_id"]
    ('anthropic', 10, 7, 'msg_1')
    """
    is_anthropic = _get(response, "type") == "message"
    if provider is None:
        provider = "anthropic" if is_anthropic else "openai"
    if prompt is not None and hash_key is not None:
        fields["prompt_hash"] = prompt_hash(prompt, hash_key)
    fields.setdefault("style", "anthropic" if is_anthropic else "auto")
    return llm_request_event(
        _get(response, "usage"),
        provider=provider,
        model=str(_get(response, "model") or "unknown"),
        response_id=_get(response, "id"),
        **fields,
    )


def prompt_hash(prompt: Any, key: bytes) -> str:
    """Return the HMAC-SHA256 (hex) of a prompt: a string, bytes, or messages (as canonical JSON).

    >>> prompt_hash("hello", b"k" * 16) == prompt_hash("hello", b"k" * 16) != prompt_hash("hello", b"j" * 16)
    True
    >>> len(prompt_hash([{"role": "user", "content": "hi"}], b"k" * 16))
    64
    """
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the prompt hash key must be at least {MIN_KEY_BYTES} bytes")
    if isinstance(prompt, bytes):
        data = prompt
    elif isinstance(prompt, str):
        data = prompt.encode("utf-8")
    else:
        # Key order must not change the hash of the same conversation.
        data = json.dumps(prompt, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          default=str).encode("utf-8")
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def load_hash_key(environ: Mapping[str, str] | None = None) -> bytes | None:
    """Return the prompt hash key, or ``None`` when none is configured.

    The key is ``BURNWATCH_PROMPT_HASH_KEY`` or the content of the file named by
    ``BURNWATCH_PROMPT_HASH_KEY_FILE`` (the variable wins). Without a key no prompt hash is computed
    at all (never an unkeyed one).

    >>> load_hash_key({}) is None, load_hash_key({"BURNWATCH_PROMPT_HASH_KEY": "0123456789abcdef"})
    (True, b'0123456789abcdef')
    """
    env = os.environ if environ is None else environ
    raw: bytes | None = None
    if env.get(KEY_ENV):
        raw = env[KEY_ENV].encode("utf-8")
    elif env.get(KEY_FILE_ENV):
        raw = Path(env[KEY_FILE_ENV]).read_bytes().rstrip(b"\r\n")
    if raw is None:
        return None
    if len(raw) < MIN_KEY_BYTES:
        raise ValueError(f"the prompt hash key ({KEY_ENV} or {KEY_FILE_ENV}) must be at least "
                         f"{MIN_KEY_BYTES} bytes")
    return raw
