"""The LiteLLM callback, driven by real LiteLLM calls with ``mock_response`` (no network)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of LiteLLM's price file at import
litellm = pytest.importorskip("litellm")

from streams.core.catalog import default_catalog  # noqa: E402
from streams.core.events import EVENT_ADAPTER, LlmRequest  # noqa: E402
from streams.core.pricing import Pricer  # noqa: E402
from streams.hooks.emitter import UsageEmitter  # noqa: E402
from streams.hooks.litellm_callback import BurnwatchLogger  # noqa: E402

KEY = b"litellm-test-key-0123456789"
CATALOG = default_catalog()


class ListSink:
    def __init__(self) -> None:
        self.events: list[Mapping[str, Any]] = []

    def send(self, events: Sequence[Mapping[str, Any]]) -> None:
        self.events.extend(events)

    def flush(self, timeout: float = 60.0) -> None:
        pass


@pytest.fixture(scope="module")
def installed() -> Iterator[tuple[BurnwatchLogger, ListSink, UsageEmitter]]:
    # LiteLLM copies its callbacks into internal lists on the first call: install one logger per module.
    sink = ListSink()
    emitter = UsageEmitter(lambda: sink, linger_s=0.01)
    logger = BurnwatchLogger(app="default-app", labels={"env": "test"}, emitter=emitter, hash_key=KEY)
    before = list(litellm.callbacks)
    litellm.callbacks = [logger]
    yield logger, sink, emitter
    litellm.callbacks = before
    emitter.close()


@pytest.fixture
def captured(installed: tuple[BurnwatchLogger, ListSink, UsageEmitter]) -> Any:
    logger, sink, emitter = installed
    logger.skipped = 0
    return logger, sink, emitter, (len(sink.events), emitter.stats.queued)


def wait_for(captured: Any, count: int, settle_s: float = 0.5) -> list[Mapping[str, Any]]:
    _, sink, emitter, (seen, queued) = captured
    deadline = time.monotonic() + 10
    while len(sink.events) < seen + count and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(settle_s)  # a second (duplicate) callback would have arrived by now
    assert emitter.stats.queued - queued == len(sink.events) - seen
    return sink.events[seen:]


def cost_of(event: Mapping[str, Any]) -> tuple[LlmRequest, float]:
    request = EVENT_ADAPTER.validate_python(event)
    assert isinstance(request, LlmRequest)
    records = Pricer(CATALOG).price(request)
    assert records and not any(r["x_Unpriced"] for r in records)
    return request, sum(r["EffectiveCost"] for r in records)


def price_entry(provider: str, model: str) -> Any:
    return next(e for e in CATALOG.llm if e.provider == provider and e.model == model)


def mock_with_usage(response_id: str, model: str, **usage: Any) -> Any:
    return litellm.ModelResponse(
        id=response_id, model=model, usage=litellm.Usage(**usage),
        choices=[{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop", "index": 0}],
    )


def test_openai_call_through_litellm_emits_its_usage_priced_by_the_catalog(captured: Any) -> None:
    messages = [{"role": "user", "content": "the quarterly numbers are confidential"}]
    response = litellm.completion(model="openai/gpt-4o", messages=messages, mock_response="hello", user="u-7")
    [event] = wait_for(captured, 1)
    request, cost = cost_of(event)
    assert request.input_tokens == response.usage.prompt_tokens > 0
    assert request.output_tokens == response.usage.completion_tokens > 0
    assert (request.provider, request.model, request.event_id) == ("openai", "gpt-4o", response.id)
    assert (request.app, request.user, request.labels) == ("default-app", "u-7", {"env": "test"})
    price = price_entry("openai", "gpt-4o")
    expected = (response.usage.prompt_tokens * price.input_usd_per_token
                + response.usage.completion_tokens * price.output_usd_per_token)
    assert cost == pytest.approx(expected, rel=1e-12)
    assert request.prompt_hash is not None and len(request.prompt_hash) == 64
    assert "confidential" not in json.dumps(event)
    assert request.latency_ms is not None and request.latency_ms >= 0


def test_anthropic_call_with_cache_and_reasoning_tokens(captured: Any) -> None:
    mocked = mock_with_usage(
        "msg_cache_1", "claude-sonnet-4-5-20250929", prompt_tokens=10_000, completion_tokens=900,
        total_tokens=10_900, prompt_tokens_details={"cached_tokens": 6_000},
        cache_creation_input_tokens=1_500, cache_read_input_tokens=6_000,
        completion_tokens_details={"reasoning_tokens": 400},
    )
    response = litellm.completion(
        model="anthropic/claude-sonnet-4-5-20250929", messages=[{"role": "user", "content": "hi"}],
        mock_response=mocked,
        metadata={"burnwatch": {"app": "support-bot", "session": "s-42", "labels": {"team": "cx"}}},
    )
    [event] = wait_for(captured, 1)
    request, cost = cost_of(event)
    usage = response.usage
    assert request.event_id == "msg_cache_1"
    assert request.provider == "anthropic"
    assert request.input_tokens == usage.prompt_tokens == 10_000
    assert request.cached_input_tokens == usage.prompt_tokens_details.cached_tokens == 6_000
    assert request.cache_write_tokens == 1_500
    assert request.output_tokens == usage.completion_tokens == 900
    assert request.reasoning_tokens == 400
    assert (request.app, request.session) == ("support-bot", "s-42")
    assert request.labels == {"env": "test", "team": "cx"}
    price = price_entry("anthropic", "claude-sonnet-4-5-20250929")
    expected = ((10_000 - 6_000 - 1_500) * price.input_usd_per_token
                + 6_000 * price.cached_input_usd_per_token
                + 1_500 * price.cache_write_usd_per_token + 900 * price.output_usd_per_token)
    assert cost == pytest.approx(expected, rel=1e-12)


def test_an_async_call_emits_exactly_one_event(captured: Any) -> None:

    async def call() -> Any:
        response = await litellm.acompletion(model="openai/gpt-4o-mini", mock_response="pong",
                                             messages=[{"role": "user", "content": "x"}])
        await asyncio.sleep(1.0)  # LiteLLM logs from a task on this loop, as in a long-lived server
        return response

    response = asyncio.run(call())
    events = wait_for(captured, 1, settle_s=1.0)
    assert [e["event_id"] for e in events] == [response.id]
    _, cost = cost_of(events[0])
    price = price_entry("openai", "gpt-4o-mini")
    assert cost == pytest.approx(response.usage.prompt_tokens * price.input_usd_per_token
                                 + response.usage.completion_tokens * price.output_usd_per_token, rel=1e-12)


def test_litellm_cache_hits_cost_nothing_and_are_not_emitted(captured: Any) -> None:
    logger = captured[0]
    response = mock_with_usage("c-1", "gpt-4o", prompt_tokens=5, completion_tokens=1, total_tokens=6)
    assert logger.build_event({"cache_hit": True}, response, None, None) is None
    assert logger.build_event({"cache_hit": False, "custom_llm_provider": "openai"}, response, None, None)


def test_a_call_the_callback_cannot_read_is_skipped_without_raising(captured: Any) -> None:
    logger, _, emitter, (_, queued) = captured
    broken = mock_with_usage("c-2", "gpt-4o", prompt_tokens=5, completion_tokens=1, total_tokens=6,
                             prompt_tokens_details={"cached_tokens": 50})  # more cached than input
    logger.log_success_event({"custom_llm_provider": "openai"}, broken, None, None)
    assert logger.skipped == 1
    assert emitter.stats.queued == queued
