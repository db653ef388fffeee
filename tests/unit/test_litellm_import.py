"""The LiteLLM importer, on the real LiteLLM price file in ../shared/data/prices."""

from __future__ import annotations

import json
from datetime import date

import pytest
import yaml

from streams.core.catalog import PriceCatalog, default_catalog
from streams.core.litellm_import import (
    catalog_document,
    is_regional_variant,
    llm_entries,
    read_litellm,
    to_yaml,
)
from tests.support.shared_data import SHARED_DATA, needs_shared

SHARED = SHARED_DATA
LITELLM = SHARED / "prices/litellm_model_prices_and_context_window.json"
DEFAULT_FLAGS = {
    "providers": "openai,anthropic,azure,bedrock,vertex_ai,gemini,mistral,groq,deepseek,xai".split(","),
    "active_on": date(2026, 11, 29),
    "drop_regional": True,
}

pytestmark = needs_shared(LITELLM)


@pytest.fixture(scope="module")
def litellm() -> dict:
    data, _ = read_litellm(LITELLM)
    return data


@pytest.fixture(scope="module")
def full(litellm):
    return llm_entries(litellm)


def find(entries: list[dict], provider: str, model: str) -> dict:
    return next(e for e in entries if (e["provider"], e["model"]) == (provider, model))


def test_counts_on_the_real_file(litellm, full):
    assert len(litellm) == 4878
    assert len(full.entries) == 3512
    assert dict(full.skipped) == {"mode": 1169, "no_token_price": 172, "duplicate": 24, "not_a_model": 1}
    assert len(full.entries) + sum(full.skipped.values()) == len(litellm)


def test_only_token_priced_text_modes_are_kept(litellm, full):
    kept = {(e["provider"], e["model"]) for e in full.entries}
    assert ("openai", "gpt-4o") in kept
    for key in ("gpt-4o-transcribe", "gpt-4o-mini-realtime-preview-2024-12-17", "gpt-4o-mini-tts",
                "gpt-image-2"):
        assert litellm[key]["mode"] not in ("chat", "completion", "responses")
        assert ("openai", key) not in kept
    responses = [k for k, v in litellm.items() if isinstance(v, dict) and v.get("mode") == "responses"
                 and v.get("litellm_provider") == "openai" and "input_cost_per_token" in v]
    assert responses and all(("openai", k) in kept for k in responses)


def test_known_model_prices(full):
    gpt4o = find(full.entries, "openai", "gpt-4o")
    assert gpt4o == {
        "provider": "openai", "model": "gpt-4o", "input_usd_per_token": 2.5e-06,
        "cached_input_usd_per_token": 1.25e-06, "output_usd_per_token": 1e-05,
        "batch_input_usd_per_token": 1.25e-06, "batch_output_usd_per_token": 5e-06,
    }
    sonnet = find(full.entries, "anthropic", "claude-sonnet-4-5")
    assert sonnet["input_usd_per_token"] == 3e-06 and sonnet["output_usd_per_token"] == 1.5e-05
    assert sonnet["cache_write_usd_per_token"] == 3.75e-06 and sonnet["cached_input_usd_per_token"] == 3e-07
    assert sonnet["batch_cache_write_usd_per_token"] == 1.875e-06
    qwen = find(full.entries, "dashscope", "qwen-turbo")
    assert qwen["reasoning_usd_per_token"] == 5e-07 and qwen["output_usd_per_token"] == 2e-07


def test_route_prefixes_are_stripped_and_vertex_families_merge(full):
    assert find(full.entries, "gemini", "gemini-2.5-pro")["input_usd_per_token"] == 1.25e-06
    assert find(full.entries, "groq", "openai/gpt-oss-20b")
    assert find(full.entries, "vertex_ai", "gemini-2.5-pro")
    assert not any(e["provider"].startswith("vertex_ai-") for e in full.entries)


def test_every_imported_entry_is_a_valid_catalog_entry(full):
    doc = catalog_document(full, version="x", source_name="f.json", extends=None)
    cat = PriceCatalog.model_validate(doc)
    assert len(cat.llm) == len(full.entries)


def test_filters(litellm):
    only = llm_entries(litellm, providers=["Anthropic"])
    assert only.entries and {e["provider"] for e in only.entries} == {"anthropic"}
    regional = llm_entries(litellm, providers=["azure"])
    plain = llm_entries(litellm, providers=["azure"], drop_regional=True)
    assert len(plain.entries) + plain.skipped["regional"] == len(regional.entries)
    assert not any(is_regional_variant(e["model"]) for e in plain.entries)
    current = llm_entries(litellm, active_on=date(2026, 11, 29))
    assert current.skipped["deprecated"] > 0


def test_the_default_catalog_llm_section_is_the_documented_import(litellm):
    result = llm_entries(litellm, **DEFAULT_FLAGS)
    shipped = [m.model_dump(exclude_none=True, exclude={"effective_from", "effective_to"})
               for m in default_catalog().llm]
    assert shipped == result.entries


def test_yaml_round_trip_keeps_tiny_prices_as_numbers():
    result = llm_entries({"m": {"litellm_provider": "p", "mode": "chat", "input_cost_per_token": 1e-07,
                                "output_cost_per_token": 3e-09}})
    text = to_yaml(catalog_document(result, version="v", source_name="f"))
    assert "3.0e-09" in text  # PyYAML reads "3e-09" (no dot) back as a string
    cat = PriceCatalog.model_validate(yaml.safe_load(text))
    assert cat.llm[0].output_usd_per_token == 3e-09


def test_bad_files_name_themselves(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{nope")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        read_litellm(broken)
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="list.json: expected a JSON object"):
        read_litellm(listed)
