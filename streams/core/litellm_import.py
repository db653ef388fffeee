"""Turn LiteLLM's model price file (``model_prices_and_context_window.json``) into catalog ``llm`` entries.

Only text-generation modes with per-token prices are kept (``chat``, ``completion``, ``responses``);
image, audio, embedding and rerank models are priced per call or per second and are skipped. The
LiteLLM key's provider route prefix (``gemini/``, ``mistral/``) is removed from the model name, so the
entry is ``(provider, model)`` as a gateway reports it; ``vertex_ai-*`` provider families collapse into
``vertex_ai``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml

TOKEN_MODES = frozenset({"chat", "completion", "responses"})

# LiteLLM field -> catalog field; the catalog keeps prices in USD per token, as LiteLLM does.
FIELD_MAP: tuple[tuple[str, str], ...] = (
    ("input_cost_per_token", "input_usd_per_token"),
    ("cache_read_input_token_cost", "cached_input_usd_per_token"),
    ("cache_creation_input_token_cost", "cache_write_usd_per_token"),
    ("output_cost_per_token", "output_usd_per_token"),
    ("output_cost_per_reasoning_token", "reasoning_usd_per_token"),
    ("input_cost_per_token_batches", "batch_input_usd_per_token"),
    ("output_cost_per_token_batches", "batch_output_usd_per_token"),
    ("cache_read_input_token_cost_batches", "batch_cached_input_usd_per_token"),
    ("cache_creation_input_token_cost_batches", "batch_cache_write_usd_per_token"),
)


@dataclass(slots=True)
class ImportResult:
    """The catalog entries made from a LiteLLM file and why the other keys were skipped."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)


def canonical_provider(litellm_provider: str) -> str:
    """Return the provider name burnwatch uses for a LiteLLM provider.

    >>> canonical_provider("vertex_ai-anthropic_models"), canonical_provider("openai")
    ('vertex_ai', 'openai')
    """
    if litellm_provider.startswith("vertex_ai-"):
        return "vertex_ai"
    return litellm_provider


def model_name(key: str, litellm_provider: str) -> str:
    """Strip the LiteLLM route prefix (``gemini/``, ``vertex_ai/``) from a model key.

    >>> model_name("gemini/gemini-2.5-pro", "gemini"), model_name("groq/openai/gpt-oss-20b", "groq")
    ('gemini-2.5-pro', 'openai/gpt-oss-20b')
    >>> model_name("vertex_ai/gemini-3-pro-image", "vertex_ai-language-models")
    'gemini-3-pro-image'
    """
    for prefix in {litellm_provider, canonical_provider(litellm_provider)}:
        if key.startswith(prefix + "/"):
            return key[len(prefix) + 1:]
    return key


def _price(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


# A leading region or geography segment marks a per-region copy of a model's price ("eu/gpt-4o",
# "us-gov-west-1/...", Bedrock's "us.anthropic..." inference profiles).
_REGIONAL = re.compile(r"^(global(-standard)?|us-gov|apac|[a-z]{2})(-[a-z]+-\d)?[/.]")


def is_regional_variant(model: str) -> bool:
    """Tell whether a model name is a per-region or per-geography copy of another entry.

    >>> [is_regional_variant(m) for m in ("eu/gpt-4o", "us.anthropic.claude-opus-4-7", "gpt-4o")]
    [True, True, False]
    >>> is_regional_variant("us-gov-west-1/anthropic.claude-x"), is_regional_variant("amazon.nova-pro-v1:0")
    (True, False)
    """
    return _REGIONAL.match(model) is not None


def _deprecated_before(info: Mapping[str, Any], active_on: date) -> bool:
    raw = info.get("deprecation_date")
    if not isinstance(raw, str):
        return False
    try:
        return date.fromisoformat(raw) < active_on
    except ValueError:
        return False


def llm_entries(
    data: Mapping[str, Any],
    *,
    providers: Collection[str] | None = None,
    active_on: date | None = None,
    drop_regional: bool = False,
) -> ImportResult:
    """Convert LiteLLM's mapping of model key -> info into catalog ``llm`` entries.

    Parameters
    ----------
    data
        The parsed LiteLLM JSON.
    providers
        Keep only these burnwatch provider names (after ``canonical_provider``); ``None`` keeps all.
    active_on
        Drop models whose ``deprecation_date`` is before this day.
    drop_regional
        Drop per-region and per-geography copies (see ``is_regional_variant``).

    >>> result = llm_entries({"gpt-x": {"litellm_provider": "openai", "mode": "chat",
    ...     "input_cost_per_token": 1e-6, "output_cost_per_token": 4e-6},
    ...     "img": {"litellm_provider": "openai", "mode": "image_generation"}})
    >>> result.entries, dict(result.skipped)
    ([{'provider': 'openai', 'model': 'gpt-x', 'input_usd_per_token': 1e-06, \
'output_usd_per_token': 4e-06}], {'mode': 1})
    """
    wanted = {p.strip().lower() for p in providers} if providers is not None else None
    result = ImportResult()
    seen: set[tuple[str, str]] = set()
    for key, info in data.items():
        if not isinstance(info, Mapping) or key == "sample_spec":
            result.skipped["not_a_model"] += 1
            continue
        if info.get("mode") not in TOKEN_MODES:
            result.skipped["mode"] += 1
            continue
        raw_provider = info.get("litellm_provider")
        if not isinstance(raw_provider, str) or not raw_provider:
            result.skipped["no_provider"] += 1
            continue
        provider = canonical_provider(raw_provider)
        if wanted is not None and provider.lower() not in wanted:
            result.skipped["provider"] += 1
            continue
        prices = {out: _price(info.get(src)) for src, out in FIELD_MAP}
        if prices["input_usd_per_token"] is None or prices["output_usd_per_token"] is None:
            result.skipped["no_token_price"] += 1
            continue
        if any(v is not None and v < 0 for v in prices.values()):
            result.skipped["negative_price"] += 1
            continue
        model = model_name(key, raw_provider)
        if drop_regional and is_regional_variant(model):
            result.skipped["regional"] += 1
            continue
        if active_on is not None and _deprecated_before(info, active_on):
            result.skipped["deprecated"] += 1
            continue
        identity = (provider.lower(), model.lower())
        if identity in seen:
            result.skipped["duplicate"] += 1
            continue
        seen.add(identity)
        entry: dict[str, Any] = {"provider": provider, "model": model}
        entry.update({k: v for k, v in prices.items() if v is not None})
        result.entries.append(entry)
    return result


def read_litellm(path: Path) -> tuple[dict[str, Any], str]:
    """Read a LiteLLM price file; return the mapping and a short content hash for the version.

    Raises ``ValueError`` naming the file when it is not a JSON object.
    """
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except ValueError as error:
        raise ValueError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of model -> prices (got {type(data).__name__})")
    return data, hashlib.sha256(raw).hexdigest()[:12]


def catalog_document(
    result: ImportResult,
    *,
    version: str,
    source_name: str,
    extends: str | None = "default",
) -> dict[str, Any]:
    """Wrap imported entries in a catalog document that extends the default catalog by default."""
    doc: dict[str, Any] = {"version": version}
    if extends:
        doc["extends"] = extends
    doc["sources"] = [
        {
            "name": f"LiteLLM model price catalog ({source_name})",
            "url": "https://github.com/BerriAI/litellm/blob/main/model_prices_and_context_window.json",
            "license": "MIT",
        }
    ]
    doc["llm"] = result.entries
    return doc


def to_yaml(doc: Mapping[str, Any]) -> str:
    """Render a catalog document as YAML, one line per price entry so diffs stay readable.

    >>> print(to_yaml({"version": "v", "llm": [{"provider": "openai", "model": "m",
    ...                "input_usd_per_token": 1e-06, "output_usd_per_token": 2e-06}]}), end="")
    version: v
    llm:
    - {provider: openai, model: m, input_usd_per_token: 1.0e-06, output_usd_per_token: 2.0e-06}
    """
    return yaml.safe_dump(dict(doc), default_flow_style=None, sort_keys=False, width=400, allow_unicode=True)
