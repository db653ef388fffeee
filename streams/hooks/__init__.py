"""LLM gateway hooks: turn a provider's ``usage`` into ``llm.request`` events and send them off-path.

``usage`` (pure mapping of OpenAI, Anthropic and LiteLLM usage objects), ``emitter`` (the background
producer with a bounded queue) and ``litellm_callback`` (the LiteLLM ``CustomLogger``; needs the
``burnwatch[litellm]`` extra, so it is not imported here).
"""

from __future__ import annotations

from streams.hooks.emitter import UsageEmitter
from streams.hooks.usage import (
    TokenCounts,
    anthropic_counts,
    llm_request_event,
    load_hash_key,
    openai_counts,
    prompt_hash,
    usage_counts,
)

__all__ = [
    "TokenCounts",
    "UsageEmitter",
    "anthropic_counts",
    "llm_request_event",
    "load_hash_key",
    "openai_counts",
    "prompt_hash",
    "usage_counts",
]
