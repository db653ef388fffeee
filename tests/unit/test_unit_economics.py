"""Unit economics: cost per 1K tokens, per job, per active user; bounded state; merge and round trip."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.catalog import PriceCatalog
from streams.core.costs import CostRecord
from streams.core.events import GpuReading, GpuSample, LlmRequest
from streams.core.pricing import Pricer
from streams.core.unit_economics import OTHER, DistinctCounter, UnitEconomics

WHEN = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CATALOG = PriceCatalog(
    version="t",
    llm=[{"provider": "openai", "model": "gpt-4o", "input_usd_per_token": 2.5e-6,
          "cached_input_usd_per_token": 1.25e-6, "output_usd_per_token": 1e-5}],
    gpu=[{"provider": "aws", "gpu_model": "H100", "usd_per_gpu_hour": 4.0}],
)
PRICER = Pricer(CATALOG)


def llm(i: int, app: str = "bot", user: str | None = "u1", model: str = "gpt-4o", inp: int = 1000,
        cached: int = 0, out: int = 100) -> list[CostRecord]:
    event = LlmRequest(event_id=f"e{i}", time=WHEN, provider="openai", model=model, input_tokens=inp,
                       cached_input_tokens=cached, output_tokens=out, app=app, user=user)
    return PRICER.price(event)


def gpu(i: int, workloads: list[str | None]) -> list[CostRecord]:
    gpus = [GpuReading(index=k, model="H100", util_pct=50, allocated=w is not None, workload=w)
            for k, w in enumerate(workloads)]
    return PRICER.price(GpuSample(event_id=f"g{i}", time=WHEN, interval_s=3600, node="n", provider="aws",
                                  gpus=gpus))


def fed(records: list[CostRecord], **kwargs: Any) -> UnitEconomics:
    ue = UnitEconomics(**kwargs)
    for r in records:
        ue.add(r)
    return ue


def test_cost_per_1k_tokens_by_model_and_app() -> None:
    records = llm(1, app="bot", inp=1000, out=1000) + llm(2, app="ide", inp=2000, cached=1000, out=0)
    # an unknown model is unpriced: its tokens must not dilute the price per token
    records += llm(3, app="ide", model="mystery-1", inp=5000, out=5000)
    snap = fed(records).snapshot()
    bot_cost = 1000 * 2.5e-6 + 1000 * 1e-5
    ide_cost = 1000 * 2.5e-6 + 1000 * 1.25e-6
    assert snap["by_app"]["bot"]["usd_per_1k_tokens"] == pytest.approx(bot_cost / 2)
    assert snap["by_app"]["ide"]["usd_per_1k_tokens"] == pytest.approx(ide_cost / 2)
    assert snap["by_app"]["ide"]["tokens"] == 2000
    assert set(snap["by_model"]) == {"gpt-4o"}
    assert snap["by_model"]["gpt-4o"]["usd_per_1k_tokens"] == pytest.approx((bot_cost + ide_cost) / 4)
    assert snap["tokens"]["unpriced_tokens"] == 10_000
    assert snap["tokens"]["tokens"] == 4000
    assert snap["cost_usd"] == pytest.approx(bot_cost + ide_cost)


def test_cost_per_job_and_per_active_user() -> None:
    records = gpu(1, ["train-a", "train-a", "train-b", None]) + gpu(2, ["train-a", None, None, None])
    records += llm(1, user="alice") + llm(2, user="bob") + llm(3, user="alice") + llm(4, user=None)
    snap = fed(records).snapshot()
    jobs = snap["jobs"]
    assert jobs["count"] == 2
    assert jobs["by_workload"] == {"train-a": {"cost_usd": 12.0, "gpu_hours": 3.0},
                                   "train-b": {"cost_usd": 4.0, "gpu_hours": 1.0}}
    assert jobs["usd_per_job"] == 8.0
    assert jobs["gpu_cost_usd"] == 32.0 and jobs["gpu_hours"] == 8.0  # idle GPUs cost, but are no job
    users = snap["users"]
    per_request = 1000 * 2.5e-6 + 100 * 1e-5
    assert users["active"] == 2 and users["exact"] is True
    assert users["cost_usd"] == pytest.approx(3 * per_request)
    assert users["usd_per_active_user"] == pytest.approx(1.5 * per_request)
    json.dumps(snap)


def test_empty_accumulator_has_no_ratios() -> None:
    snap = UnitEconomics().snapshot()
    assert snap["tokens"]["usd_per_1k_tokens"] is None
    assert snap["jobs"]["usd_per_job"] is None and snap["users"]["usd_per_active_user"] is None


def test_tables_are_bounded() -> None:
    records = [r for i in range(50) for r in llm(i, app=f"app-{i}")]
    ue = fed(records, max_keys=10)
    assert len(ue.by_app) == 10 and OTHER in ue.by_app
    assert math.fsum(v[1] for v in ue.by_app.values()) == ue.tokens
    snap = ue.snapshot()
    assert snap["by_app"][OTHER]["tokens"] == ue.tokens - 9 * 1100


def test_distinct_users_switch_to_a_sketch_past_the_bound() -> None:
    counter = DistinctCounter(exact_limit=100)
    for i in range(100):
        counter.add(f"u{i}")
    assert counter.exact and counter.count() == 100
    for i in range(50_000):
        counter.add(f"u{i}")
    assert not counter.exact
    assert counter.count() == pytest.approx(50_000, rel=0.05)
    assert len(json.dumps(counter.to_state())) < 6000  # 4 KiB of registers in base64


@given(st.lists(st.integers(0, 3000), max_size=400), st.lists(st.integers(0, 3000), max_size=400))
@settings(max_examples=50, deadline=None)
def test_merge_counts_the_union(a: list[int], b: list[int]) -> None:
    left, right = DistinctCounter(exact_limit=50), DistinctCounter(exact_limit=50)
    for i in a:
        left.add(f"u{i}")
    for i in b:
        right.add(f"u{i}")
    left.merge(right)
    union = len({*a, *b})
    if left.exact:
        assert left.count() == union
    else:
        assert union > 50 and left.count() == pytest.approx(union, rel=0.1, abs=5)


def test_merge_and_state_round_trip_give_the_same_snapshot() -> None:
    first = llm(1, app="bot", user="alice") + gpu(1, ["job-1", None])
    second = llm(2, app="ide", user="bob") + llm(3, app="bot", user="alice") + gpu(2, ["job-2"])
    together = fed(first + second, exact_users=1)
    merged = fed(first, exact_users=1)
    merged.merge(fed(second, exact_users=1))
    assert _close(merged.snapshot(), together.snapshot())
    state = json.loads(json.dumps(together.to_state()))
    restored = UnitEconomics.from_state(state)
    assert restored.snapshot() == together.snapshot()
    restored.add(llm(9, user="carol")[0])
    assert restored.records == together.records + 1
    assert together.records == len(first + second)  # the original is untouched: state is a copy


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return math.isclose(a, b, rel_tol=1e-12)
    return bool(a == b)
