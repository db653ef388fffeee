"""The pricing core: one charge per SKU, lookups and their precedence, effective dating, discounts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from streams.core.catalog import PriceCatalog, default_catalog
from streams.core.costs import CostRecord
from streams.core.events import GpuReading, GpuSample, LlmRequest, StorageUsage
from streams.core.pricing import Pricer, model_candidates, normalize_gpu_model
from tests.support.oracle import independent_total, varied_events

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
GB = 2**30


def catalog(**sections: Any) -> PriceCatalog:
    return PriceCatalog.model_validate({"version": "test-1", **sections})


def llm_entry(provider: str, model: str, inp: float, out: float, **extra: Any) -> dict[str, Any]:
    return {"provider": provider, "model": model, "input_usd_per_token": inp, "output_usd_per_token": out,
            **extra}


def llm(model: str = "gpt-4o", provider: str = "openai", **fields: Any) -> LlmRequest:
    base: dict[str, Any] = {"event_id": "e1", "time": T0, "provider": provider, "model": model,
                            "input_tokens": 1000, "output_tokens": 100, "app": "chat"}
    return LlmRequest(**(base | fields))


def gpu_sample(**fields: Any) -> GpuSample:
    base: dict[str, Any] = {
        "event_id": "g1", "time": T0, "interval_s": 60, "node": "node-a", "cluster": "prod-1",
        "provider": "aws", "region": "us-east-1", "instance_type": "p4d.24xlarge",
        "labels": {"team": "ml", "env": "prod"},
        "gpus": [
            GpuReading(index=0, model="NVIDIA A100-SXM4-40GB", util_pct=90, workload="train-1",
                       labels={"team": "research", "project": "llama"}),
            GpuReading(index=1, uuid="GPU-abc", model="NVIDIA A100-SXM4-40GB", util_pct=0, allocated=False),
        ],
    }
    return GpuSample(**(base | fields))


def storage(**fields: Any) -> StorageUsage:
    base: dict[str, Any] = {"event_id": "s1", "time": T0, "interval_s": 3600, "provider": "aws",
                            "region": "us-east-1", "bucket": "datasets", "stored_bytes": 730 * GB,
                            "egress_bytes": 10 * GB, "labels": {"project": "p"}}
    return StorageUsage(**(base | fields))


def by_meter(records: list[CostRecord]) -> dict[str, CostRecord]:
    return {r["SkuMeter"]: r for r in records}


GPU_CAT = catalog(gpu=[
    {"provider": "aws", "instance_type": "p4d.24xlarge", "gpus_per_instance": 8,
     "instance_usd_per_hour": 32.0},
    {"provider": "aws", "instance_type": "p4d.24xlarge", "region": "eu-west-1", "usd_per_gpu_hour": 5.0},
    {"provider": "aws", "gpu_model": "A100-SXM4-40GB", "usd_per_gpu_hour": 3.0},
    {"provider": "aws", "gpu_model": "H100", "usd_per_gpu_hour": 9.0},
    {"provider": "aws", "instance_type": "p4d.24xlarge", "pricing": "spot", "usd_per_gpu_hour": 1.5},
    {"provider": "*", "gpu_model": "*", "pricing": "on_prem", "usd_per_gpu_hour": 0.95},
    {"provider": "dc1", "gpu_model": "H100", "pricing": "on_prem",
     "amortization": {"capex_usd_per_gpu": 35040, "lifetime_years": 4, "opex_usd_per_gpu_hour": 0.25}},
])


# --- GPU ------------------------------------------------------------------------------------------


def test_gpu_sample_bills_every_gpu_allocated_or_not():
    records = Pricer(GPU_CAT).price(gpu_sample())
    assert len(records) == 2
    first, second = records
    assert first["SkuMeter"] == second["SkuMeter"] == "gpu_hours"
    assert first["ConsumedQuantity"] == first["PricingQuantity"] == pytest.approx(60 / 3600)
    assert first["ConsumedUnit"] == first["PricingUnit"] == "GPU-Hours"
    assert first["ListUnitPrice"] == 4.0
    assert first["ListCost"] == first["EffectiveCost"] == first["BilledCost"] == pytest.approx(4.0 / 60)
    assert second["ListCost"] == pytest.approx(4.0 / 60) and second["x_GpuAllocated"] is False
    assert first["ResourceId"] == "node-a/gpu0" and second["ResourceId"] == "GPU-abc"
    assert first["x_ChargeId"] == "g1:gpu0" and second["x_ChargeId"] == "g1:gpu1"
    assert first["ServiceCategory"] == "Compute" and first["ServiceName"] == "GPU Compute"
    assert first["ChargePeriodStart"] == "2026-03-01T12:00:00Z"
    assert first["ChargePeriodEnd"] == "2026-03-01T12:01:00Z"
    assert (first["x_Cluster"], first["x_Workload"], first["x_GpuUtilPct"]) == ("prod-1", "train-1", 90)
    assert (first["ProviderName"], first["RegionId"]) == ("aws", "us-east-1")
    assert first["x_SourceType"] == "gpu.sample" and first["x_EventId"] == "g1"
    assert first["x_PriceVersion"] == "test-1" and first["x_Unpriced"] is False


def test_gpu_labels_win_over_event_labels():
    first, second = Pricer(GPU_CAT).price(gpu_sample())
    assert first["Tags"] == {"team": "research", "env": "prod", "project": "llama"}
    assert (first["x_Team"], first["x_Project"], first["x_Env"]) == ("research", "llama", "prod")
    assert second["Tags"] == {"team": "ml", "env": "prod"}
    assert (second["x_Team"], second["x_Project"], second["x_Env"]) == ("ml", None, "prod")
    first["Tags"]["mutated"] = "yes"
    assert "mutated" not in second["Tags"]


@pytest.mark.parametrize(
    ("fields", "gpu_model", "price"),
    [
        ({}, "NVIDIA A100-SXM4-40GB", 4.0),  # instance type, region "*"
        ({"region": "eu-west-1"}, "NVIDIA A100-SXM4-40GB", 5.0),  # exact region beats "*"
        ({"instance_type": "p4d.unknown"}, "NVIDIA A100-SXM4-40GB", 3.0),  # falls back to GPU model
        ({"instance_type": ""}, "NVIDIA H100 80GB HBM3", 9.0),  # GPU family "h100"
        ({"pricing": "spot"}, "NVIDIA A100-SXM4-40GB", 1.5),  # pricing model must match
        ({"provider": "lab", "pricing": "on_prem", "instance_type": ""}, "Tesla T4", 0.95),  # wildcard
        ({"provider": "dc1", "pricing": "on_prem", "instance_type": ""}, "NVIDIA H100", 1.25),  # amortized
    ],
)
def test_gpu_lookup_precedence(fields, gpu_model, price):
    event = gpu_sample(gpus=[GpuReading(index=0, model=gpu_model, util_pct=1)], **fields)
    (record,) = Pricer(GPU_CAT).price(event)
    assert record["ListUnitPrice"] == pytest.approx(price)
    assert record["x_Unpriced"] is False


def test_unknown_gpu_sku_is_charged_zero_and_reported_once():
    pricer = Pricer(GPU_CAT)
    event = gpu_sample(instance_type="p9.xlarge", pricing="reserved",
                       gpus=[GpuReading(index=i, model="B300", util_pct=5) for i in range(4)])
    records = pricer.price(event)
    assert len(records) == 4
    assert all(r["x_Unpriced"] and r["ListCost"] == r["EffectiveCost"] == 0.0 for r in records)
    assert all(r["ConsumedQuantity"] == pytest.approx(60 / 3600) for r in records)
    assert pricer.take_new_unpriced() == ["gpu:aws/p9.xlarge/us-east-1/reserved"]
    pricer.price(event)
    assert pricer.take_new_unpriced() == []


def test_normalize_gpu_model():
    assert normalize_gpu_model("NVIDIA  Tesla V100_SXM2") == "v100-sxm2"


# --- LLM ------------------------------------------------------------------------------------------

LLM_CAT = catalog(llm=[
    llm_entry("openai", "gpt-4o", 2.5e-6, 1e-5, cached_input_usd_per_token=1.25e-6,
              batch_input_usd_per_token=1.25e-6, batch_output_usd_per_token=5e-6),
    llm_entry("openai", "gpt-4o-2024-05-13", 5e-6, 1.5e-5),
    llm_entry("azure", "gpt-4o", 2.75e-6, 1.1e-5),
    llm_entry("anthropic", "claude-x", 3e-6, 1.5e-5, cached_input_usd_per_token=3e-7,
              cache_write_usd_per_token=3.75e-6, reasoning_usd_per_token=2e-5, batch_discount_pct=50),
    llm_entry("deepseek", "r1", 1e-6, 4e-6),
])


def test_llm_request_splits_tokens_into_one_charge_per_sku():
    event = llm(model="claude-x", provider="anthropic", input_tokens=10_000, cached_input_tokens=6_000,
                cache_write_tokens=1_000, output_tokens=500, reasoning_tokens=200, user="u1", session="s1",
                labels={"team": "search", "project": "qa"})
    records = Pricer(LLM_CAT).price(event)
    meters = by_meter(records)
    assert list(meters) == ["input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
                            "reasoning_tokens"]
    assert {m: r["ConsumedQuantity"] for m, r in meters.items()} == {
        "input_tokens": 3000, "cached_input_tokens": 6000, "cache_write_tokens": 1000,
        "output_tokens": 300, "reasoning_tokens": 200}
    assert {m: r["ListUnitPrice"] for m, r in meters.items()} == {
        "input_tokens": 3e-6, "cached_input_tokens": 3e-7, "cache_write_tokens": 3.75e-6,
        "output_tokens": 1.5e-5, "reasoning_tokens": 2e-5}
    total = 3000 * 3e-6 + 6000 * 3e-7 + 1000 * 3.75e-6 + 300 * 1.5e-5 + 200 * 2e-5
    assert sum(r["EffectiveCost"] for r in records) == pytest.approx(total, abs=1e-12)
    r = meters["input_tokens"]
    assert r["ConsumedUnit"] == "Tokens" and r["ResourceId"] == "claude-x"
    assert r["ServiceCategory"] == "AI and Machine Learning" and r["ServiceName"] == "LLM Inference"
    assert r["ChargePeriodStart"] == r["ChargePeriodEnd"] == "2026-03-01T12:00:00Z"
    assert (r["x_App"], r["x_User"], r["x_Session"], r["x_Model"]) == ("chat", "u1", "s1", "claude-x")
    assert (r["x_Team"], r["x_Project"], r["x_Env"]) == ("search", "qa", None)
    assert r["x_ChargeId"] == "e1:input_tokens" and r["x_SourceType"] == "llm.request"
    assert r["x_GpuUtilPct"] is None and r["x_Cluster"] is None


def test_missing_cache_and_reasoning_prices_default_to_input_and_output():
    event = llm(model="r1", provider="deepseek", input_tokens=100, cached_input_tokens=40,
                cache_write_tokens=10, output_tokens=50, reasoning_tokens=30)
    meters = by_meter(Pricer(LLM_CAT).price(event))
    assert meters["cached_input_tokens"]["ListUnitPrice"] == 1e-6
    assert meters["cache_write_tokens"]["ListUnitPrice"] == 1e-6
    assert meters["reasoning_tokens"]["ListUnitPrice"] == 4e-6


def test_zero_quantities_make_no_charge():
    meters = by_meter(Pricer(LLM_CAT).price(llm(input_tokens=0, output_tokens=7)))
    assert list(meters) == ["output_tokens"]
    assert Pricer(LLM_CAT).price(llm(input_tokens=0, output_tokens=0)) == []


def test_batch_uses_batch_prices_then_the_batch_discount_then_list():
    explicit = by_meter(Pricer(LLM_CAT).price(llm(batch=True, cached_input_tokens=200)))
    assert explicit["input_tokens"]["ListUnitPrice"] == 1.25e-6
    assert explicit["output_tokens"]["ListUnitPrice"] == 5e-6
    assert explicit["cached_input_tokens"]["ListUnitPrice"] == 1.25e-6  # no batch cache price: list
    discounted = by_meter(Pricer(LLM_CAT).price(
        llm(model="claude-x", provider="anthropic", batch=True, reasoning_tokens=10)))
    assert discounted["input_tokens"]["ListUnitPrice"] == pytest.approx(1.5e-6)
    assert discounted["output_tokens"]["ListUnitPrice"] == pytest.approx(7.5e-6)
    assert discounted["reasoning_tokens"]["ListUnitPrice"] == pytest.approx(1e-5)
    plain = by_meter(Pricer(LLM_CAT).price(llm(model="r1", provider="deepseek", batch=True)))
    assert plain["input_tokens"]["ListUnitPrice"] == 1e-6


@pytest.mark.parametrize(
    ("provider", "model", "price"),
    [
        ("openai", "gpt-4o", 2.5e-6),  # exact
        ("azure", "gpt-4o", 2.75e-6),  # exact beats model alone
        ("my-gateway", "gpt-4o", 2.5e-6),  # model alone: first provider listing it
        ("openai", "openai/gpt-4o", 2.5e-6),  # route prefix
        ("azure", "azure/gpt-4o", 2.75e-6),
        ("openai", "gpt-4o-2024-08-06", 2.5e-6),  # dated suffix falls back to the undated entry
        ("openai", "gpt-4o-2024-05-13", 5e-6),  # ... unless the dated entry exists
        ("openai", "openai/gpt-4o-2024-05-13", 5e-6),
        ("anthropic", "claude-x-20250929", 3e-6),
        ("OpenAI", "GPT-4o", 2.5e-6),  # case-insensitive
    ],
)
def test_llm_lookup_precedence(provider, model, price):
    records = Pricer(LLM_CAT).price(llm(provider=provider, model=model))
    assert by_meter(records)["input_tokens"]["ListUnitPrice"] == price
    assert records[0]["ResourceId"] == model and records[0]["x_Model"] == model


def test_model_candidates_order():
    assert model_candidates("gpt-4-0613") == ["gpt-4-0613", "gpt-4"]
    assert model_candidates("x@20251001") == ["x@20251001", "x"]


def test_unknown_model_keeps_its_usage_at_zero_cost_and_is_reported_once():
    pricer = Pricer(LLM_CAT)
    records = pricer.price_many([llm(model="some-model"), llm(model="some-model", event_id="e2"),
                                 llm(model="gpt-4o", event_id="e3")])
    unpriced = [r for r in records if r["x_Unpriced"]]
    assert len(unpriced) == 4 and all(r["ListCost"] == r["BilledCost"] == 0.0 for r in unpriced)
    assert {r["ConsumedQuantity"] for r in unpriced} == {1000.0, 100.0}
    assert pricer.take_new_unpriced() == ["llm:openai/some-model"]
    assert pricer.take_new_unpriced() == []


def test_effective_dating_picks_the_price_at_event_time():
    cat = catalog(llm=[
        llm_entry("openai", "m", 1e-6, 1e-6, effective_to="2026-03-01T00:00:00Z"),
        llm_entry("openai", "m", 2e-6, 2e-6, effective_from="2026-03-01T00:00:00Z",
                  effective_to="2026-04-01T00:00:00Z"),
        llm_entry("other", "m", 7e-6, 7e-6, effective_from="2026-06-01"),
    ])
    pricer = Pricer(cat)

    def unit(when: datetime) -> tuple[float, bool]:
        r = pricer.price(llm(model="m", time=when))[0]
        return r["ListUnitPrice"], r["x_Unpriced"]

    assert unit(datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC)) == (1e-6, False)
    assert unit(datetime(2026, 3, 1, tzinfo=UTC)) == (2e-6, False)
    assert unit(datetime(2026, 4, 15, tzinfo=UTC)) == (0.0, True)  # no openai price then
    assert unit(datetime(2026, 6, 2, tzinfo=UTC)) == (7e-6, False)  # model alone, from another provider


# --- discounts ------------------------------------------------------------------------------------


def test_most_specific_discount_wins():
    cat = catalog(
        llm=[llm_entry("openai", "gpt-4o", 1e-6, 1e-6), llm_entry("openai", "o1", 1e-6, 1e-6),
             llm_entry("azure", "gpt-4o", 1e-6, 1e-6)],
        gpu=[{"provider": "aws", "instance_type": "p5.48xlarge", "usd_per_gpu_hour": 10.0},
             {"provider": "aws", "instance_type": "g5.xlarge", "usd_per_gpu_hour": 1.0}],
        storage=[{"provider": "aws", "usd_per_gb_month": 0.02}],
        egress=[{"provider": "aws", "destination": "internet", "usd_per_gb": 0.09}],
        discounts=[
            {"provider": "openai", "pct": 10},
            {"model": "gpt-4o", "pct": 20},
            {"provider": "openai", "model": "gpt-4o", "pct": 30},
            {"provider": "aws", "pct": 5},
            {"provider": "aws", "service": "egress", "pct": 50},
            {"instance_type": "p5.48xlarge", "pct": 40},
        ],
    )
    pricer = Pricer(cat)

    def pct_of(records: list[CostRecord]) -> float:
        r = records[0]
        assert r["BilledCost"] == r["EffectiveCost"]
        return round(100 * (1 - r["EffectiveCost"] / r["ListCost"]), 9)

    assert pct_of(pricer.price(llm(model="gpt-4o-2024-08-06"))) == 30  # provider + model
    assert pct_of(pricer.price(llm(provider="azure"))) == 20  # model only
    assert pct_of(pricer.price(llm(model="o1"))) == 10  # provider only
    p5 = gpu_sample(instance_type="p5.48xlarge", gpus=[GpuReading(index=0, model="H100", util_pct=1)])
    assert pct_of(pricer.price(p5)) == 40
    g5 = gpu_sample(instance_type="g5.xlarge", gpus=[GpuReading(index=0, model="A10G", util_pct=1)])
    assert pct_of(pricer.price(g5)) == 5
    stored, egress = pricer.price(storage())
    assert pct_of([stored]) == 5 and pct_of([egress]) == 50


def test_discount_effective_dating_and_ties():
    cat = catalog(
        llm=[llm_entry("openai", "m", 1e-6, 1e-6)],
        discounts=[{"provider": "openai", "pct": 10},
                   {"provider": "openai", "pct": 25},  # same specificity: the later one wins
                   {"provider": "openai", "model": "m", "pct": 60, "effective_from": "2026-06-01"}],
    )
    pricer = Pricer(cat)
    before = pricer.price(llm(model="m"))[0]
    after = pricer.price(llm(model="m", time=datetime(2026, 7, 1, tzinfo=UTC)))[0]
    assert before["EffectiveCost"] == pytest.approx(before["ListCost"] * 0.75)
    assert after["EffectiveCost"] == pytest.approx(after["ListCost"] * 0.40)


# --- storage and egress ---------------------------------------------------------------------------

STORAGE_CAT = catalog(
    storage=[{"provider": "aws", "usd_per_gb_month": 0.023},
             {"provider": "aws", "region": "eu-west-1", "usd_per_gb_month": 0.025},
             {"provider": "aws", "storage_class": "glacier_ir", "usd_per_gb_month": 0.004}],
    egress=[{"provider": "aws", "destination": "internet", "usd_per_gb": 0.09},
            {"provider": "*", "destination": "same_region", "usd_per_gb": 0.0}],
)


def test_storage_usage_charges_gb_months_and_egress():
    stored, egress = Pricer(STORAGE_CAT).price(storage())
    assert stored["SkuMeter"] == "storage_gb_months" and stored["ConsumedUnit"] == "GB-Months"
    assert stored["ConsumedQuantity"] == pytest.approx(730 * 3600 / (730 * 3600))
    assert stored["ListCost"] == pytest.approx(0.023)
    assert (stored["ServiceCategory"], stored["ServiceName"]) == ("Storage", "Object Storage")
    assert egress["SkuMeter"] == "egress_gb" and egress["ConsumedUnit"] == "GB"
    assert egress["ConsumedQuantity"] == 10 and egress["ListCost"] == pytest.approx(0.9)
    assert (egress["ServiceCategory"], egress["ServiceName"]) == ("Networking", "Data Transfer")
    assert stored["ResourceId"] == egress["ResourceId"] == "datasets"
    assert stored["x_ChargeId"] == "s1:storage_gb_months" and egress["x_ChargeId"] == "s1:egress_gb"
    assert stored["ChargePeriodEnd"] == "2026-03-01T13:00:00Z"
    assert stored["x_Project"] == "p" and stored["x_Model"] is None


def test_storage_region_class_and_egress_rules():
    pricer = Pricer(STORAGE_CAT)
    (eu,) = pricer.price(storage(region="eu-west-1", egress_bytes=0))
    assert eu["ListUnitPrice"] == 0.025
    (cold,) = pricer.price(storage(storage_class="glacier_ir", egress_bytes=0))
    assert cold["ListUnitPrice"] == 0.004
    (same,) = pricer.price(storage(stored_bytes=0, egress_destination="same_region"))
    assert same["ListCost"] == 0.0 and same["x_Unpriced"] is False
    assert pricer.price(storage(stored_bytes=0, egress_bytes=0)) == []
    missing = pricer.price(
        storage(provider="gcp", storage_class="nearline", egress_destination="inter_region"))
    assert [r["x_Unpriced"] for r in missing] == [True, True]
    assert pricer.take_new_unpriced() == [
        "storage:gcp/us-east-1/nearline", "egress:gcp/us-east-1/inter_region"]


# --- every record is complete ---------------------------------------------------------------------


def test_every_record_fills_every_column():
    records = Pricer(default_catalog()).price_many([gpu_sample(), llm(), storage(), llm(model="nope")])
    assert len(records) == 2 + 2 + 2 + 2
    for record in records:
        assert list(record) == list(CostRecord.__annotations__)
        assert record["ChargeCategory"] == "Usage" and record["BillingCurrency"] == "USD"
        assert record["x_PriceVersion"] == default_catalog().version


# --- money adds up against an independent computation from the catalog file ----------------------


def test_effective_cost_sum_matches_an_independent_recomputation():
    cat = default_catalog()
    events = varied_events()
    pricer = Pricer(cat)
    records = pricer.price_many(events)
    assert not any(r["x_Unpriced"] for r in records)
    assert pricer.take_new_unpriced() == []
    ours = sum(r["EffectiveCost"] for r in records)
    assert ours > 1000  # the events are not trivially cheap
    assert abs(ours - independent_total(events)) < 1e-6
    assert abs(sum(r["BilledCost"] for r in records) - ours) < 1e-9
