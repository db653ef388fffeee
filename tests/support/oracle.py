"""An independent price oracle for tests: totals straight from the catalog file, with plain formulas.

It shares no code with ``streams.core.pricing``, so a test comparing the two can catch a pricing bug.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import yaml

from streams.core.catalog import default_catalog
from streams.core.events import GpuReading, GpuSample, LlmRequest, StorageUsage

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def independent_total(events: list[Any]) -> float:
    """Recompute the total straight from streams/data/catalog.yaml, with plain dicts and formulas."""
    raw = yaml.safe_load(resources.files("streams").joinpath("data/catalog.yaml").read_text())
    gpu = {g["instance_type"]: g["instance_usd_per_hour"] / g["gpus_per_instance"]
           for g in raw["gpu"] if g.get("instance_type")}
    llm_rows = {(m["provider"], m["model"]): m for m in raw["llm"]}
    sto = {(s["provider"], s["storage_class"]): s["usd_per_gb_month"] for s in raw["storage"]}
    egr = {(e["provider"], e["destination"]): e["usd_per_gb"] for e in raw["egress"]}
    total = 0.0
    for e in events:
        if isinstance(e, GpuSample):
            total += len(e.gpus) * e.interval_s / 3600 * gpu[e.instance_type]
        elif isinstance(e, StorageUsage):
            total += e.stored_bytes / 2**30 * e.interval_s / (730 * 3600) * sto[(e.provider, e.storage_class)]
            total += e.egress_bytes / 2**30 * egr[(e.provider, e.egress_destination)]
        else:
            m = llm_rows[(e.provider, e.model)]
            inp, out = m["input_usd_per_token"], m["output_usd_per_token"]
            cached = m.get("cached_input_usd_per_token", inp)
            write = m.get("cache_write_usd_per_token", inp)
            reasoning = m.get("reasoning_usd_per_token", out)
            if e.batch:
                inp = m.get("batch_input_usd_per_token", inp)
                cached = m.get("batch_cached_input_usd_per_token", cached)
                write = m.get("batch_cache_write_usd_per_token", write)
                out = m.get("batch_output_usd_per_token", out)
                if "reasoning_usd_per_token" not in m:
                    reasoning = out
            plain_in = e.input_tokens - e.cached_input_tokens - e.cache_write_tokens
            total += plain_in * inp + e.cached_input_tokens * cached + e.cache_write_tokens * write
            total += (e.output_tokens - e.reasoning_tokens) * out + e.reasoning_tokens * reasoning
    return total


def varied_events(count: int = 3000, seed: int = 20261129) -> list[Any]:
    """Return ``count`` varied, priceable events of all three types over a month."""
    rng = random.Random(seed)
    cat = default_catalog()
    instance_types = [(g.provider, g.instance_type) for g in cat.gpu if g.instance_type]
    models = [(m.provider, m.model) for m in cat.llm]
    classes = [(s.provider, s.storage_class) for s in cat.storage]
    events: list[Any] = []
    for i in range(count):
        when = T0 + timedelta(seconds=rng.randint(0, 30 * 86400))
        kind = rng.random()
        if kind < 0.3:
            provider, itype = rng.choice(instance_types)
            events.append(GpuSample(
                event_id=f"g{i}", time=when, interval_s=rng.choice([1, 15, 60, 299.5]), node=f"n{i % 7}",
                provider=provider, region="us-east-1", instance_type=itype,
                gpus=[GpuReading(index=k, model="X", util_pct=rng.uniform(0, 100))
                      for k in range(rng.randint(1, 8))]))
        elif kind < 0.85:
            provider, model = rng.choice(models)
            inp = rng.randint(0, 200_000)
            cached = rng.randint(0, inp // 2)
            write = rng.randint(0, (inp - cached) // 3)
            out = rng.randint(0, 20_000)
            events.append(LlmRequest(
                event_id=f"l{i}", time=when, provider=provider, model=model, input_tokens=inp,
                cached_input_tokens=cached, cache_write_tokens=write, output_tokens=out,
                reasoning_tokens=rng.randint(0, out), batch=rng.random() < 0.2))
        else:
            provider, storage_class = rng.choice(classes)
            events.append(StorageUsage(
                event_id=f"s{i}", time=when, interval_s=rng.choice([60, 3600, 86400]), provider=provider,
                bucket=f"b{i % 5}", storage_class=storage_class, stored_bytes=rng.randint(0, 50 * 2**40),
                egress_bytes=rng.choice([0, rng.randint(1, 2**40)]),
                egress_destination=rng.choice(["internet", "inter_region", "same_region"])))
    return events
