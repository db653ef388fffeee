"""Usage objects (OpenAI Chat/Responses, Anthropic, as dicts and SDK models) to priced llm.request events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from streams.core.catalog import LlmPrice, default_catalog
from streams.core.events import EVENT_ADAPTER, LlmRequest
from streams.core.pricing import Pricer
from streams.hooks.usage import (
    TokenCounts,
    anthropic_counts,
    event_from_response,
    llm_request_event,
    load_hash_key,
    openai_counts,
    prompt_hash,
    usage_counts,
)

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CATALOG = default_catalog()
PRICER = Pricer(CATALOG)
KEY = b"test-key-0123456789abcdef"


def entry(provider: str, model: str) -> LlmPrice:
    return next(e for e in CATALOG.llm if e.provider == provider and e.model == model)


def hand_cost(price: LlmPrice, counts: TokenCounts) -> float:
    """The list cost computed straight from the catalog entry's per-token prices."""
    inp = price.input_usd_per_token
    out = price.output_usd_per_token
    cached = price.cached_input_usd_per_token if price.cached_input_usd_per_token is not None else inp
    write = price.cache_write_usd_per_token if price.cache_write_usd_per_token is not None else inp
    reasoning = price.reasoning_usd_per_token if price.reasoning_usd_per_token is not None else out
    fresh = counts.input_tokens - counts.cached_input_tokens - counts.cache_write_tokens
    visible = counts.output_tokens - counts.reasoning_tokens
    return (fresh * inp + counts.cached_input_tokens * cached + counts.cache_write_tokens * write
            + visible * out + counts.reasoning_tokens * reasoning)


def priced(event: dict[str, Any]) -> tuple[LlmRequest, float]:
    model = EVENT_ADAPTER.validate_python(event)
    assert isinstance(model, LlmRequest)
    records = PRICER.price(model)
    assert records and not any(r["x_Unpriced"] for r in records)
    return model, sum(r["EffectiveCost"] for r in records)


# SDK look-alikes: pydantic models with the SDKs' field names (the hooks never import the SDKs).
class PromptDetails(BaseModel):
    cached_tokens: int | None = None
    audio_tokens: int | None = None


class CompletionDetails(BaseModel):
    reasoning_tokens: int | None = None


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptDetails | None = None
    completion_tokens_details: CompletionDetails | None = None


class ChatCompletion(BaseModel):
    id: str
    object: str = "chat.completion"
    model: str
    usage: CompletionUsage | None


class AnthropicUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    service_tier: str | None = "standard"


class AnthropicMessage(BaseModel):
    id: str
    type: str = "message"
    model: str
    usage: AnthropicUsage


OPENAI_CHAT = {"prompt_tokens": 12_000, "completion_tokens": 900, "total_tokens": 12_900,
               "prompt_tokens_details": {"cached_tokens": 8_192, "audio_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": 0}}
OPENAI_REASONING = {"prompt_tokens": 3_000, "completion_tokens": 5_000, "total_tokens": 8_000,
                    "prompt_tokens_details": {"cached_tokens": 1_024},
                    "completion_tokens_details": {"reasoning_tokens": 4_200}}
RESPONSES = {"input_tokens": 2_500, "output_tokens": 1_800, "total_tokens": 4_300,
             "input_tokens_details": {"cached_tokens": 2_048},
             "output_tokens_details": {"reasoning_tokens": 1_500}}
ANTHROPIC = {"input_tokens": 150, "cache_creation_input_tokens": 4_000, "cache_read_input_tokens": 20_000,
             "output_tokens": 700}


@pytest.mark.parametrize(("usage", "model"), [(OPENAI_CHAT, "gpt-4o"), (OPENAI_REASONING, "o3")])
def test_openai_chat_usage_gives_the_same_counts_and_the_catalog_cost(usage: dict[str, Any],
                                                                      model: str) -> None:
    event = llm_request_event(usage, provider="openai", model=model, response_id="chatcmpl-7", app="chat",
                              user="u-1", session="s-1", labels={"team": "search"}, time=T0)
    request, cost = priced(event)
    assert request.input_tokens == usage["prompt_tokens"]
    assert request.output_tokens == usage["completion_tokens"]
    assert request.cached_input_tokens == usage["prompt_tokens_details"]["cached_tokens"]
    assert request.reasoning_tokens == usage["completion_tokens_details"]["reasoning_tokens"]
    assert (request.app, request.user, request.session) == ("chat", "u-1", "s-1")
    assert request.labels == {"team": "search"}
    assert request.event_id == "chatcmpl-7"
    assert cost == pytest.approx(hand_cost(entry("openai", model), usage_counts(usage)), rel=1e-12)
    assert cost > 0


def test_responses_api_usage_is_read_from_its_own_field_names() -> None:
    event = llm_request_event(RESPONSES, provider="openai", model="o3", response_id="resp_1", time=T0)
    request, cost = priced(event)
    assert (request.input_tokens, request.cached_input_tokens) == (2_500, 2_048)
    assert (request.output_tokens, request.reasoning_tokens) == (1_800, 1_500)
    expected = TokenCounts(2_500, 1_800, cached_input_tokens=2_048, reasoning_tokens=1_500)
    assert cost == pytest.approx(hand_cost(entry("openai", "o3"), expected), rel=1e-12)


def test_anthropic_input_tokens_exclude_cache_so_they_are_added_up() -> None:
    event = llm_request_event(ANTHROPIC, provider="anthropic", model="claude-sonnet-4-5-20250929", time=T0)
    request, cost = priced(event)
    assert request.input_tokens == 150 + 4_000 + 20_000
    assert request.cached_input_tokens == 20_000
    assert request.cache_write_tokens == 4_000
    assert request.output_tokens == 700
    price = entry("anthropic", "claude-sonnet-4-5-20250929")
    by_hand = (150 * price.input_usd_per_token + 20_000 * price.cached_input_usd_per_token
               + 4_000 * price.cache_write_usd_per_token + 700 * price.output_usd_per_token)
    assert cost == pytest.approx(by_hand, rel=1e-12)
    # Reading Anthropic usage as if it were inclusive would undercharge the fresh input heavily.
    assert cost != pytest.approx(hand_cost(price, TokenCounts(150, 700)), rel=1e-3)


def test_sdk_objects_are_read_through_model_dump_like_dicts() -> None:
    openai_obj = ChatCompletion(id="chatcmpl-x", model="gpt-4o-2024-08-06",
                                usage=CompletionUsage.model_validate(OPENAI_CHAT))
    from_obj = event_from_response(openai_obj, app="chat", time=T0)
    from_dict = event_from_response(openai_obj.model_dump(), app="chat", time=T0)
    assert from_obj == from_dict
    assert from_obj["provider"] == "openai" and from_obj["model"] == "gpt-4o-2024-08-06"
    _, cost = priced(from_obj)
    assert cost == pytest.approx(hand_cost(entry("openai", "gpt-4o-2024-08-06"), usage_counts(OPENAI_CHAT)))

    message = AnthropicMessage(id="msg_01", model="claude-sonnet-4-5-20250929",
                               usage=AnthropicUsage.model_validate(ANTHROPIC))
    event = event_from_response(message, app="bot", time=T0)
    assert (event["provider"], event["event_id"]) == ("anthropic", "msg_01")
    assert event["input_tokens"] == 24_150 and event["cache_write_tokens"] == 4_000


def test_the_real_openai_sdk_types_when_installed() -> None:
    types = pytest.importorskip("openai.types")
    usage = types.CompletionUsage.model_validate(OPENAI_REASONING)
    assert openai_counts(usage) == openai_counts(OPENAI_REASONING)
    assert openai_counts(usage).reasoning_tokens == 4_200


def test_anthropic_usage_with_null_cache_fields_reads_as_zero() -> None:
    counts = anthropic_counts({"input_tokens": 10, "output_tokens": 3, "cache_creation_input_tokens": None,
                               "cache_read_input_tokens": None})
    assert counts == TokenCounts(10, 3)


def test_litellm_style_usage_with_anthropic_cache_fields_is_not_counted_twice() -> None:
    # LiteLLM folds Anthropic cache reads/writes into prompt_tokens and repeats them at the top level.
    usage = {"prompt_tokens": 1_000, "completion_tokens": 300, "cache_creation_input_tokens": 100,
             "cache_read_input_tokens": 600,
             "prompt_tokens_details": {"cached_tokens": 600, "cache_creation_tokens": 100}}
    assert usage_counts(usage) == TokenCounts(1_000, 300, cached_input_tokens=600, cache_write_tokens=100)


def test_inconsistent_or_invalid_usage_is_an_error_not_a_wrong_event() -> None:
    with pytest.raises(ValueError, match="exceed input"):
        openai_counts({"prompt_tokens": 10, "completion_tokens": 1,
                       "prompt_tokens_details": {"cached_tokens": 11}})
    with pytest.raises(ValueError, match="reasoning"):
        openai_counts({"prompt_tokens": 10, "completion_tokens": 1,
                       "completion_tokens_details": {"reasoning_tokens": 2}})
    with pytest.raises(ValueError, match="not a token count"):
        openai_counts({"prompt_tokens": -1, "completion_tokens": 1})
    with pytest.raises(ValueError, match="not a token count"):
        anthropic_counts({"input_tokens": "ten", "output_tokens": 1})


def test_event_id_is_the_response_id_so_a_resend_dedups_else_random() -> None:
    one = llm_request_event(OPENAI_CHAT, provider="openai", model="gpt-4o", response_id="chatcmpl-9")
    again = llm_request_event(OPENAI_CHAT, provider="openai", model="gpt-4o", response_id="chatcmpl-9")
    assert one["event_id"] == again["event_id"] == "chatcmpl-9"
    first = llm_request_event(OPENAI_CHAT, provider="openai", model="gpt-4o")
    second = llm_request_event(OPENAI_CHAT, provider="openai", model="gpt-4o")
    assert first["event_id"] != second["event_id"]
    long_id = llm_request_event(OPENAI_CHAT, provider="openai", model="gpt-4o", response_id="r" * 500)
    EVENT_ADAPTER.validate_python(long_id)


def test_time_defaults_to_now_in_utc_and_must_be_aware() -> None:
    event = llm_request_event(OPENAI_CHAT, provider="openai", model="gpt-4o")
    moment = datetime.fromisoformat(event["time"])
    assert abs(datetime.now(UTC) - moment) < timedelta(seconds=5)
    plus_two = llm_request_event(OPENAI_CHAT, provider="openai", model="gpt-4o",
                                 time=datetime(2026, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))))
    assert plus_two["time"] == "2026-01-01T12:00:00Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        llm_request_event(OPENAI_CHAT, provider="openai", model="gpt-4o", time=datetime(2026, 1, 1))  # noqa: DTZ001


def test_prompt_hash_is_keyed_and_the_prompt_never_leaves() -> None:
    prompt = [{"role": "user", "content": "my secret launch plan"}]
    event = event_from_response({"id": "c1", "model": "gpt-4o", "usage": OPENAI_CHAT}, prompt=prompt,
                                hash_key=KEY, time=T0)
    assert event["prompt_hash"] == prompt_hash(prompt, KEY)
    assert "secret launch" not in json.dumps(event)
    assert prompt_hash(prompt, KEY) != prompt_hash(prompt, b"another-key-0123456789")
    # the same conversation with keys in another order hashes the same
    assert prompt_hash([{"content": "my secret launch plan", "role": "user"}], KEY) == event["prompt_hash"]
    no_key = event_from_response({"id": "c1", "model": "gpt-4o", "usage": OPENAI_CHAT}, prompt=prompt,
                                 time=T0)
    assert "prompt_hash" not in no_key
    with pytest.raises(ValueError, match="at least"):
        prompt_hash("x", b"short")


def test_hash_key_comes_from_env_or_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_bytes(b"file-key-0123456789abcdef\n")
    assert load_hash_key({"BURNWATCH_PROMPT_HASH_KEY_FILE": str(key_file)}) == b"file-key-0123456789abcdef"
    both = {"BURNWATCH_PROMPT_HASH_KEY": "env-key-0123456789abc",
            "BURNWATCH_PROMPT_HASH_KEY_FILE": str(key_file)}
    assert load_hash_key(both) == b"env-key-0123456789abc"
    assert load_hash_key({}) is None
    with pytest.raises(ValueError, match="at least 16"):
        load_hash_key({"BURNWATCH_PROMPT_HASH_KEY": "short"})
