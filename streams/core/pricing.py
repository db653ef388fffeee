"""Where a dollar is computed: usage events in, FOCUS cost records out (one charge per SKU).

Lookups are resolved once per distinct key (provider, model, instance type, region, ...) into an
ordered list of candidate catalog entries, most specific first; per event only the effective-date
check and the arithmetic remain. Rules are in ``docs/pricing.md``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from streams.core.catalog import (
    GB_BYTES,
    HOURS_PER_MONTH,
    WILDCARD,
    Discount,
    EgressPrice,
    GpuPrice,
    LlmPrice,
    PriceCatalog,
    StoragePrice,
)
from streams.core.costs import BILLING_CURRENCY, CHARGE_CATEGORY_USAGE, CostRecord, iso_utc
from streams.core.events import Event, GpuSample, LlmRequest, StorageUsage

SECONDS_PER_GB_MONTH = HOURS_PER_MONTH * 3600.0
LLM_METERS = (
    "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens",
)

_DATE_SUFFIX = re.compile(r"(?:[-@](?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4}))$")
_GPU_VENDOR = re.compile(r"^(?:nvidia|tesla|amd|instinct)[\s_-]+")


def normalize_gpu_model(name: str) -> str:
    """Reduce a GPU model as NVML or a catalog spells it to one comparable form.

    >>> normalize_gpu_model("NVIDIA A100-SXM4-40GB"), normalize_gpu_model("Tesla T4")
    ('a100-sxm4-40gb', 't4')
    >>> normalize_gpu_model("NVIDIA H100 80GB HBM3")
    'h100-80gb-hbm3'
    """
    name = name.strip().lower()
    while True:
        stripped = _GPU_VENDOR.sub("", name)
        if stripped == name:
            break
        name = stripped
    return re.sub(r"[\s_]+", "-", name)


def model_candidates(model: str) -> list[str]:
    """Return the names to try for an LLM model, exact first: route prefix and date suffix removed.

    >>> model_candidates("openai/gpt-4o-2024-08-06")
    ['openai/gpt-4o-2024-08-06', 'gpt-4o-2024-08-06', 'openai/gpt-4o', 'gpt-4o']
    >>> model_candidates("claude-sonnet-4-5-20250929")
    ['claude-sonnet-4-5-20250929', 'claude-sonnet-4-5']
    """
    name = model.strip().lower()
    out = [name]
    if "/" in name:
        out.append(name.split("/", 1)[1])
    for candidate in list(out):
        undated = _DATE_SUFFIX.sub("", candidate)
        if undated != candidate and undated:
            out.append(undated)
    return list(dict.fromkeys(out))


@dataclass(frozen=True, slots=True)
class _LlmRates:
    """One LLM entry's resolved unit prices: list (normal) and batch, in ``LLM_METERS`` order."""

    entry: LlmPrice
    normal: tuple[float, float, float, float, float]
    batch: tuple[float, float, float, float, float]


def _llm_rates(entry: LlmPrice) -> _LlmRates:
    inp, out = entry.input_usd_per_token, entry.output_usd_per_token
    cached = inp if entry.cached_input_usd_per_token is None else entry.cached_input_usd_per_token
    write = inp if entry.cache_write_usd_per_token is None else entry.cache_write_usd_per_token
    reasoning = out if entry.reasoning_usd_per_token is None else entry.reasoning_usd_per_token
    normal = (inp, cached, write, out, reasoning)
    factor = 1.0 - (entry.batch_discount_pct or 0.0) / 100.0

    def batch_of(explicit: float | None, base: float) -> float:
        return explicit if explicit is not None else base * factor

    b_out = batch_of(entry.batch_output_usd_per_token, out)
    b_reasoning = b_out if entry.reasoning_usd_per_token is None else reasoning * factor
    batch = (
        batch_of(entry.batch_input_usd_per_token, inp),
        batch_of(entry.batch_cached_input_usd_per_token, cached),
        batch_of(entry.batch_cache_write_usd_per_token, write),
        b_out,
        b_reasoning,
    )
    return _LlmRates(entry, normal, batch)


_Dated = TypeVar("_Dated", GpuPrice, StoragePrice, EgressPrice, Discount, _LlmRates)
_Regional = TypeVar("_Regional", StoragePrice, EgressPrice)


def _first_active(candidates: tuple[_Dated, ...], moment: datetime) -> _Dated | None:
    for item in candidates:
        dated = item.entry if isinstance(item, _LlmRates) else item
        if (dated.effective_from is None or dated.effective_from <= moment) and (
            dated.effective_to is None or moment < dated.effective_to
        ):
            return item
    return None


def _low(value: str | None) -> str:
    return (value or "").strip().lower()


class Pricer:
    """Prices usage events against one catalog; build once, call ``price`` per event.

    >>> from datetime import UTC, datetime
    >>> cat = PriceCatalog(version="v1", llm=[{"provider": "openai", "model": "gpt-4o",
    ...     "input_usd_per_token": 2.5e-6, "output_usd_per_token": 1e-5}])
    >>> event = LlmRequest(event_id="e1", time=datetime(2026, 1, 1, tzinfo=UTC), provider="openai",
    ...                    model="gpt-4o-2024-08-06", input_tokens=1000, output_tokens=100)
    >>> [(r["SkuMeter"], round(r["EffectiveCost"], 6)) for r in Pricer(cat).price(event)]
    [('input_tokens', 0.0025), ('output_tokens', 0.001)]
    """

    def __init__(self, catalog: PriceCatalog) -> None:
        self.catalog = catalog
        self.version = catalog.version
        self._gpu: dict[tuple[str, str, str, str, str], list[GpuPrice]] = {}
        for g in catalog.gpu:
            kind, name = ("it", _low(g.instance_type)) if g.instance_type else ("gm", "")
            if kind == "gm":
                name = WILDCARD if g.gpu_model == WILDCARD else normalize_gpu_model(g.gpu_model or "")
            self._gpu.setdefault((_low(g.provider), g.pricing, kind, name, _low(g.region)), []).append(g)
        self._llm_exact: dict[tuple[str, str], list[_LlmRates]] = {}
        self._llm_model: dict[str, list[_LlmRates]] = {}
        for entry in catalog.llm:
            rates = _llm_rates(entry)
            self._llm_exact.setdefault((_low(entry.provider), _low(entry.model)), []).append(rates)
        for (_provider, model), group in self._llm_exact.items():
            # "model alone" tries providers in catalog order, so the answer is stable
            self._llm_model.setdefault(model, []).extend(group)
        self._storage: dict[tuple[str, str, str], list[StoragePrice]] = {}
        for s in catalog.storage:
            self._storage.setdefault((_low(s.provider), _low(s.region), _low(s.storage_class)), []).append(s)
        self._egress: dict[tuple[str, str, str], list[EgressPrice]] = {}
        for e in catalog.egress:
            self._egress.setdefault((_low(e.provider), _low(e.region), e.destination), []).append(e)
        # sort most specific first; among equals the later entry (a user's overlay) wins
        ranked = sorted(enumerate(catalog.discounts), key=lambda p: (p[1].specificity(), p[0]), reverse=True)
        self._discounts = tuple(d for _, d in ranked)
        self._cache_gpu: dict[tuple[str, ...], tuple[GpuPrice, ...]] = {}
        self._cache_llm: dict[tuple[str, str], tuple[_LlmRates, ...]] = {}
        self._cache_storage: dict[tuple[str, str, str], tuple[StoragePrice, ...]] = {}
        self._cache_egress: dict[tuple[str, str, str], tuple[EgressPrice, ...]] = {}
        self._cache_disc: dict[tuple[str, str, str, str, str], tuple[Discount, ...]] = {}
        self._unpriced_seen: set[str] = set()
        self._unpriced_new: list[str] = []

    # --- public -----------------------------------------------------------------------------

    def price(self, event: Event) -> list[CostRecord]:
        """Return one cost record per SKU of ``event`` with a non-zero quantity."""
        if isinstance(event, LlmRequest):
            return self._price_llm(event)
        if isinstance(event, GpuSample):
            return self._price_gpu(event)
        return self._price_storage(event)

    def price_many(self, events: Iterable[Event]) -> list[CostRecord]:
        """Price events in order and return all their records in one list."""
        out: list[CostRecord] = []
        for event in events:
            out.extend(self.price(event))
        return out

    def take_new_unpriced(self) -> list[str]:
        """Return the SKUs first seen without a price since the last call (each SKU only once ever)."""
        new, self._unpriced_new = self._unpriced_new, []
        return new

    # --- lookups ------------------------------------------------------------------------------

    def gpu_candidates(
        self, provider: str, pricing: str, instance_type: str, gpu_model: str, region: str
    ) -> tuple[GpuPrice, ...]:
        """Return the GPU entries that could price this key, most specific first."""
        key = (provider, pricing, instance_type, gpu_model, region)
        hit = self._cache_gpu.get(key)
        if hit is not None:
            return hit
        p, r, it = _low(provider), _low(region), _low(instance_type)
        model = normalize_gpu_model(gpu_model)
        names: list[tuple[str, str]] = [("it", it)] if it else []
        names += [("gm", model), ("gm", model.split("-", 1)[0]), ("gm", WILDCARD)]
        found: list[GpuPrice] = []
        for kind, name in dict.fromkeys(names):
            for prov in dict.fromkeys((p, WILDCARD)):
                for reg in dict.fromkeys((r, WILDCARD)):
                    found += self._gpu.get((prov, pricing, kind, name, reg), ())
        result = self._cache_gpu[key] = tuple(found)
        return result

    def llm_candidates(self, provider: str, model: str) -> tuple[_LlmRates, ...]:
        """Return the LLM rates that could price this model, most specific first."""
        key = (provider, model)
        hit = self._cache_llm.get(key)
        if hit is not None:
            return hit
        p = _low(provider)
        found: list[_LlmRates] = []
        for name in model_candidates(model):
            found += self._llm_exact.get((p, name), ())
            found += self._llm_model.get(name, ())
        result = self._cache_llm[key] = tuple(dict.fromkeys(found))
        return result

    def _regional(
        self,
        index: dict[tuple[str, str, str], list[_Regional]],
        cache: dict[tuple[str, str, str], tuple[_Regional, ...]],
        provider: str,
        region: str,
        third: str,
    ) -> tuple[_Regional, ...]:
        key = (provider, region, third)
        hit = cache.get(key)
        if hit is not None:
            return hit
        p, r, t = _low(provider), _low(region), _low(third)
        found: list[_Regional] = []
        for prov in dict.fromkeys((p, WILDCARD)):
            for reg in dict.fromkeys((r, WILDCARD)):
                found += index.get((prov, reg, t), ())
        result = cache[key] = tuple(found)
        return result

    def discount_pct(self, service: str, provider: str, names: tuple[str, ...], instance_type: str,
                     moment: datetime) -> float:
        """Return the percent off list for a charge: the most specific active discount, else 0."""
        if not self._discounts:
            return 0.0
        key = (service, provider, "\x1f".join(names), instance_type, "")
        rules = self._cache_disc.get(key)
        if rules is None:
            p, it = _low(provider), _low(instance_type)
            low_names = {_low(n) for n in names if n}
            rules = self._cache_disc[key] = tuple(
                d for d in self._discounts
                if (d.service is None or d.service == service)
                and (d.provider is None or _low(d.provider) == p)
                and (d.model is None or _low(d.model) in low_names)
                and (d.instance_type is None or (it and _low(d.instance_type) == it))
            )
        if not rules:
            return 0.0
        found = _first_active(rules, moment)
        return found.pct if found else 0.0

    def _unpriced(self, sku: str) -> None:
        if sku not in self._unpriced_seen:
            self._unpriced_seen.add(sku)
            self._unpriced_new.append(sku)

    # --- per event type -------------------------------------------------------------------------
    # Each event builds one template record; each SKU copies it and sets the few keys that differ,
    # which is several times faster than a fresh 35-key dict per charge (this is the hot path).

    def _template(self, event: Event, start: str, end: str, tags: dict[str, str]) -> CostRecord:
        return {
            "ChargePeriodStart": start,
            "ChargePeriodEnd": end,
            "ListCost": 0.0,
            "EffectiveCost": 0.0,
            "BilledCost": 0.0,
            "ListUnitPrice": 0.0,
            "ConsumedQuantity": 0.0,
            "ConsumedUnit": "",
            "PricingQuantity": 0.0,
            "PricingUnit": "",
            "ServiceCategory": "",
            "ServiceName": "",
            "ProviderName": event.provider,
            "RegionId": "global",
            "ResourceId": "",
            "SkuMeter": "",
            "ChargeCategory": CHARGE_CATEGORY_USAGE,
            "BillingCurrency": BILLING_CURRENCY,
            "Tags": tags,
            "x_EventId": event.event_id,
            "x_ChargeId": "",
            "x_SourceType": event.type,
            "x_Team": tags.get("team"),
            "x_Project": tags.get("project"),
            "x_Env": tags.get("env"),
            "x_App": None,
            "x_User": None,
            "x_Session": None,
            "x_PromptHash": None,
            "x_Model": None,
            "x_Cluster": None,
            "x_Workload": None,
            "x_GpuUtilPct": None,
            "x_GpuAllocated": None,
            "x_PriceVersion": self.version,
            "x_Unpriced": False,
        }

    def _price_gpu(self, event: GpuSample) -> list[CostRecord]:
        moment = event.time
        start = iso_utc(moment)
        end = iso_utc(moment + timedelta(seconds=event.interval_s))
        hours = event.interval_s / 3600.0
        provider, pricing, region = event.provider, event.pricing, event.region
        instance_type = event.instance_type
        template = self._template(event, start, end, event.labels)
        template.update({
            "ConsumedQuantity": hours, "ConsumedUnit": "GPU-Hours", "PricingQuantity": hours,
            "PricingUnit": "GPU-Hours", "ServiceCategory": "Compute", "ServiceName": "GPU Compute",
            "RegionId": region, "SkuMeter": "gpu_hours", "x_Cluster": event.cluster,
        })
        out: list[CostRecord] = []
        for gpu in event.gpus:
            candidates = self.gpu_candidates(provider, pricing, instance_type, gpu.model, region)
            entry = _first_active(candidates, moment) if candidates else None
            pct = 0.0
            if entry is None:
                self._unpriced(f"gpu:{provider}/{instance_type or gpu.model}/{region}/{pricing}")
                unit = 0.0
            else:
                unit = entry.gpu_hour_usd
                if self._discounts:
                    names = (gpu.model, normalize_gpu_model(gpu.model), entry.gpu_model or "")
                    pct = self.discount_pct("gpu", provider, names, instance_type, moment)
            list_cost = hours * unit
            effective = list_cost * (1.0 - pct / 100.0)
            record = template.copy()
            if gpu.labels:
                tags = {**event.labels, **gpu.labels}
                record["x_Team"], record["x_Project"] = tags.get("team"), tags.get("project")
                record["x_Env"] = tags.get("env")
            else:
                tags = dict(event.labels)
            record["Tags"] = tags
            record["ListCost"] = list_cost
            record["EffectiveCost"] = record["BilledCost"] = effective
            record["ListUnitPrice"] = unit
            record["ResourceId"] = gpu.uuid or f"{event.node}/gpu{gpu.index}"
            record["x_ChargeId"] = f"{event.event_id}:gpu{gpu.index}"
            record["x_Model"] = gpu.model
            record["x_Workload"] = gpu.workload
            record["x_GpuUtilPct"] = gpu.util_pct
            record["x_GpuAllocated"] = gpu.allocated
            record["x_Unpriced"] = entry is None
            out.append(record)
        return out

    def _price_llm(self, event: LlmRequest) -> list[CostRecord]:
        quantities = (
            event.input_tokens - event.cached_input_tokens - event.cache_write_tokens,
            event.cached_input_tokens,
            event.cache_write_tokens,
            event.output_tokens - event.reasoning_tokens,
            event.reasoning_tokens,
        )
        if not any(quantities):
            return []
        candidates = self.llm_candidates(event.provider, event.model)
        rates = _first_active(candidates, event.time) if candidates else None
        pct = 0.0
        if rates is None:
            self._unpriced(f"llm:{event.provider}/{event.model}")
            units: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
        else:
            units = rates.batch if event.batch else rates.normal
            if self._discounts:
                names = (event.model, rates.entry.model)
                pct = self.discount_pct("llm", event.provider, names, "", event.time)
        when = iso_utc(event.time)
        labels = event.labels
        template = self._template(event, when, when, labels)
        template.update({
            "ConsumedUnit": "Tokens", "PricingUnit": "Tokens", "ServiceCategory": "AI and Machine Learning",
            "ServiceName": "LLM Inference", "ResourceId": event.model, "x_App": event.app,
            "x_User": event.user, "x_Session": event.session, "x_PromptHash": event.prompt_hash,
            "x_Model": event.model,
            "x_Unpriced": rates is None,
        })
        keep = 1.0 - pct / 100.0
        prefix = event.event_id + ":"
        out: list[CostRecord] = []
        for meter, quantity, unit in zip(LLM_METERS, quantities, units, strict=True):
            if not quantity:
                continue
            list_cost = quantity * unit
            record = template.copy()
            record["Tags"] = dict(labels)
            record["ListCost"] = list_cost
            record["EffectiveCost"] = record["BilledCost"] = list_cost * keep
            record["ListUnitPrice"] = unit
            record["ConsumedQuantity"] = record["PricingQuantity"] = float(quantity)
            record["SkuMeter"] = meter
            record["x_ChargeId"] = prefix + meter
            out.append(record)
        return out

    def _price_storage(self, event: StorageUsage) -> list[CostRecord]:
        start = iso_utc(event.time)
        end = iso_utc(event.time + timedelta(seconds=event.interval_s))
        template = self._template(event, start, end, event.labels)
        template["RegionId"] = event.region
        template["ResourceId"] = event.bucket
        out: list[CostRecord] = []
        if event.stored_bytes:
            quantity = event.stored_bytes / GB_BYTES * (event.interval_s / SECONDS_PER_GB_MONTH)
            candidates_s = self._regional(
                self._storage, self._cache_storage, event.provider, event.region, event.storage_class
            )
            found_s = _first_active(candidates_s, event.time)
            if found_s is None:
                self._unpriced(f"storage:{event.provider}/{event.region}/{event.storage_class}")
            unit = found_s.usd_per_gb_month if found_s else 0.0
            out.append(self._storage_record(event, template, "storage_gb_months", "GB-Months", quantity, unit,
                                            "storage", "Storage", "Object Storage", found_s is None))
        if event.egress_bytes:
            quantity = event.egress_bytes / GB_BYTES
            candidates_e = self._regional(
                self._egress, self._cache_egress, event.provider, event.region, event.egress_destination
            )
            found_e = _first_active(candidates_e, event.time)
            if found_e is None:
                self._unpriced(f"egress:{event.provider}/{event.region}/{event.egress_destination}")
            unit = found_e.usd_per_gb if found_e else 0.0
            out.append(self._storage_record(event, template, "egress_gb", "GB", quantity, unit, "egress",
                                            "Networking", "Data Transfer", found_e is None))
        return out

    def _storage_record(
        self, event: StorageUsage, template: CostRecord, meter: str, unit_name: str, quantity: float,
        unit: float, service: str, category: str, service_name: str, unpriced: bool,
    ) -> CostRecord:
        pct = 0.0 if unpriced else self.discount_pct(service, event.provider, (), "", event.time)
        list_cost = quantity * unit
        record = template.copy()
        record["Tags"] = dict(event.labels)
        record["ListCost"] = list_cost
        record["EffectiveCost"] = record["BilledCost"] = list_cost * (1.0 - pct / 100.0)
        record["ListUnitPrice"] = unit
        record["ConsumedQuantity"] = record["PricingQuantity"] = quantity
        record["ConsumedUnit"] = record["PricingUnit"] = unit_name
        record["ServiceCategory"] = category
        record["ServiceName"] = service_name
        record["SkuMeter"] = meter
        record["x_ChargeId"] = f"{event.event_id}:{meter}"
        record["x_Unpriced"] = unpriced
        return record
