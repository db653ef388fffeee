"""The price catalog: the packaged default, validation messages, and ``extends``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from streams.core.catalog import (
    CatalogError,
    GpuPrice,
    PriceCatalog,
    default_catalog,
    load_catalog,
    merge,
)

LLM_OK = "{provider: openai, model: m%d, input_usd_per_token: 1.0e-06, output_usd_per_token: 2.0e-06}"


def write(tmp_path: Path, text: str, name: str = "catalog.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    return str(info.value).splitlines()


# --- the packaged default -------------------------------------------------------------------------


def test_default_catalog_is_versioned_sourced_and_cached():
    cat = default_catalog()
    assert cat is default_catalog() is load_catalog(None)
    assert cat.version == "2026.11.29"
    assert cat.currency == "USD"
    assert cat.units["gb"] == "2^30 bytes" and cat.units["month"] == "730 hours"
    names = " ".join(s.name for s in cat.sources)
    assert "OpenCost" in names and "LiteLLM" in names and "AWS" in names
    assert cat.discounts == []


def test_default_gpu_prices_are_list_prices_per_gpu_hour():
    by_type = {g.instance_type: g for g in default_catalog().gpu if g.instance_type}
    assert by_type["p4d.24xlarge"].usd_per_gpu_hour == pytest.approx(32.7726 / 8)
    assert by_type["p5.48xlarge"].usd_per_gpu_hour == pytest.approx(98.32 / 8)
    assert by_type["g5.xlarge"].usd_per_gpu_hour == pytest.approx(1.006)
    assert by_type["Standard_ND96asr_v4"].usd_per_gpu_hour == pytest.approx(27.197 / 8)
    assert by_type["a2-highgpu-1g"].provider == "gcp"
    on_prem = [g for g in default_catalog().gpu if g.pricing == "on_prem"]
    assert [(g.provider, g.gpu_model, g.usd_per_gpu_hour) for g in on_prem] == [("*", "*", 0.95)]


def test_default_llm_section_is_a_small_subset_of_major_providers():
    cat = default_catalog()
    assert 200 <= len(cat.llm) <= 500
    providers = {m.provider for m in cat.llm}
    assert {"openai", "anthropic", "azure", "bedrock", "vertex_ai", "gemini", "mistral", "groq",
            "deepseek"} <= providers
    gpt4o = next(m for m in cat.llm if (m.provider, m.model) == ("openai", "gpt-4o"))
    assert (gpt4o.input_usd_per_token, gpt4o.output_usd_per_token) == (2.5e-06, 1e-05)
    assert gpt4o.cached_input_usd_per_token == 1.25e-06
    assert (gpt4o.batch_input_usd_per_token, gpt4o.batch_output_usd_per_token) == (1.25e-06, 5e-06)


def test_default_storage_and_egress_cover_each_cloud():
    cat = default_catalog()
    assert {(s.provider, s.storage_class) for s in cat.storage} >= {
        ("aws", "standard"), ("gcp", "standard"), ("azure", "standard")}
    assert {(e.provider, e.destination) for e in cat.egress} >= {
        (p, d) for p in ("aws", "gcp", "azure") for d in ("internet", "inter_region", "same_region")}
    aws = {s.storage_class: s.usd_per_gb_month for s in cat.storage if s.provider == "aws"}
    assert aws["standard"] == 0.023


# --- entry models -------------------------------------------------------------------------------


def test_gpu_price_three_ways():
    by_instance = GpuPrice(provider="aws", instance_type="x", gpus_per_instance=4, instance_usd_per_hour=10)
    assert by_instance.usd_per_gpu_hour == 2.5
    direct = GpuPrice(provider="aws", gpu_model="H100", usd_per_gpu_hour=3.0)
    assert direct.usd_per_gpu_hour == 3.0
    owned = GpuPrice(provider="dc1", gpu_model="H100", pricing="on_prem",
                     amortization={"capex_usd_per_gpu": 30000, "lifetime_years": 4,
                                   "opex_usd_per_gpu_hour": 0.4})
    assert owned.usd_per_gpu_hour == pytest.approx(30000 / (4 * 8760) + 0.4)


def test_dates_become_utc_and_periods_are_half_open():
    cat = PriceCatalog.model_validate({"version": "v", "llm": [
        {"provider": "p", "model": "m", "input_usd_per_token": 0, "output_usd_per_token": 0,
         "effective_from": "2026-01-01", "effective_to": "2026-02-01T00:00:00+02:00"}]})
    entry = cat.llm[0]
    assert entry.effective_from == datetime(2026, 1, 1, tzinfo=UTC)
    assert entry.effective_to == datetime(2026, 1, 31, 22, tzinfo=UTC)
    assert entry.active(datetime(2026, 1, 1, tzinfo=UTC))
    assert not entry.active(datetime(2026, 1, 31, 22, tzinfo=UTC))
    assert not entry.active(datetime(2025, 12, 31, 23, 59, tzinfo=UTC))


# --- validation messages name file, key path and value ------------------------------------------


def test_negative_price_message_names_file_key_and_value(tmp_path):
    rows = "\n".join(f"  - {LLM_OK % i}" for i in range(3))
    path = write(tmp_path, f"version: t\nllm:\n{rows}\n"
                 "  - {provider: openai, model: bad, input_usd_per_token: -1, output_usd_per_token: 0}\n")
    assert errors_of(path) == [f"{path}: llm[3].input_usd_per_token: must be >= 0 (got -1)"]


def test_every_problem_is_listed(tmp_path):
    path = write(tmp_path, """
version: t
gpu:
  - {provider: aws, instance_type: x, usd_per_gpu_hour: 1, effective_from: 2026-01-01T00:00:00}
  - {provider: aws, gpu_model: x}
  - {provider: aws, instance_type: y, instance_usd_per_hour: 8}
storage:
  - {provider: aws, usd_per_gb_month: 0.02, colour: red}
egress:
  - {provider: aws, destination: moon, usd_per_gb: 0.1}
discounts:
  - {pct: 150}
""")
    errors = errors_of(path)
    assert f"{path}: gpu[0].effective_from: must carry a UTC offset, e.g. 2026-01-01T00:00:00Z " \
           "(got 2026-01-01 00:00:00)" in errors
    assert f"{path}: gpu[1]: give exactly one of usd_per_gpu_hour, instance_usd_per_hour, " \
           "amortization" in errors
    assert f"{path}: gpu[2]: instance_usd_per_hour needs gpus_per_instance" in errors
    assert f"{path}: storage[0].colour: is not a known key (got 'red')" in errors
    assert any(e.startswith(f"{path}: egress[0].destination: ") and e.endswith("(got 'moon')")
               for e in errors)
    assert f"{path}: discounts[0].pct: must be <= 100 (got 150)" in errors
    assert len(errors) == 6


def test_missing_version_and_bad_period(tmp_path):
    path = write(tmp_path, "llm:\n  - {provider: p, model: m, input_usd_per_token: 0, "
                 "output_usd_per_token: 0, effective_from: 2026-02-01, effective_to: 2026-01-01}\n")
    errors = errors_of(path)
    assert f"{path}: version: is required" in errors
    assert f"{path}: llm[0]: effective_to must be after effective_from" in errors


def test_overlapping_duplicates_are_rejected_but_successive_periods_are_fine(tmp_path):
    base = "{provider: OpenAI, model: m, input_usd_per_token: 1.0e-06, output_usd_per_token: 1.0e-06"
    ok = write(tmp_path, f"version: t\nllm:\n  - {base}, effective_to: 2026-01-01}}\n"
               f"  - {base}, effective_from: 2026-01-01}}\n", "ok.yaml")
    assert len(load_catalog(ok).llm) == 2
    bad = write(tmp_path, f"version: t\nllm:\n  - {base}}}\n  - {base}, effective_from: 2026-01-01}}\n",
                "bad.yaml")
    assert errors_of(bad) == [
        f"{bad}: llm[1]: same openai/m as llm[0] with an overlapping effective period (got openai/m)"]


def test_unreadable_and_malformed_files(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert errors_of(missing)[0].startswith(f"{missing}: (top level): cannot read the file")
    not_yaml = write(tmp_path, "version: [unclosed\n", "broken.yaml")
    assert errors_of(not_yaml)[0].startswith(f"{not_yaml}: (top level): not valid YAML")
    a_list = write(tmp_path, "- 1\n- 2\n", "list.yaml")
    assert errors_of(a_list) == [f"{a_list}: (top level): must be a mapping (got list)"]


# --- extends --------------------------------------------------------------------------------------


def test_extends_default_replaces_same_identity_and_keeps_the_rest(tmp_path):
    path = write(tmp_path, """
version: acme-1
extends: default
llm:
  - {provider: openai, model: GPT-4o, input_usd_per_token: 2.0e-06, output_usd_per_token: 8.0e-06}
  - {provider: acme, model: in-house, input_usd_per_token: 1.0e-07, output_usd_per_token: 1.0e-07}
discounts:
  - {provider: aws, pct: 12}
""")
    cat = load_catalog(path)
    default = default_catalog()
    assert cat.version == f"acme-1+{default.version}"
    gpt4o = [m for m in cat.llm if m.provider == "openai" and m.model.lower() == "gpt-4o"]
    assert len(gpt4o) == 1 and gpt4o[0].input_usd_per_token == 2.0e-06
    assert len(cat.llm) == len(default.llm) + 1
    assert cat.gpu == default.gpu and cat.storage == default.storage
    assert [(d.provider, d.pct) for d in cat.discounts] == [("aws", 12)]
    assert len(cat.sources) == len(default.sources)


def test_extends_a_relative_path_and_rejects_cycles(tmp_path):
    write(tmp_path, "version: base\nstorage:\n  - {provider: aws, usd_per_gb_month: 0.5}\n", "base.yaml")
    top = write(tmp_path, "version: top\nextends: base.yaml\n"
                "storage:\n  - {provider: aws, storage_class: cold, usd_per_gb_month: 0.1}\n", "top.yaml")
    cat = load_catalog(top)
    assert cat.version == "top+base"
    assert [(s.storage_class, s.usd_per_gb_month) for s in cat.storage] == [("cold", 0.1), ("standard", 0.5)]
    loop = write(tmp_path, "version: loop\nextends: loop.yaml\n", "loop.yaml")
    assert "chain deeper than 8 files" in errors_of(loop)[0]


def test_without_extends_a_user_file_replaces_the_default(tmp_path):
    cat = load_catalog(write(tmp_path, "version: mine\n"))
    assert (cat.version, cat.llm, cat.gpu) == ("mine", [], [])


def test_merge_appends_overlay_discounts_last():
    base = PriceCatalog(version="b", discounts=[{"provider": "aws", "pct": 5}])
    top = PriceCatalog(version="t", discounts=[{"provider": "aws", "pct": 7}])
    assert [d.pct for d in merge(base, top).discounts] == [5, 7]
