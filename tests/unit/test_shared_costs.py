"""Shared costs: exact splits, rule matching and validation, and the per-period ledger."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from streams.core.allocation import Allocation, Allocator, default_allocation, parse_allocation
from streams.core.costs import CostRecord
from streams.core.shared_costs import (
    UNALLOCATED,
    SharedCostLedger,
    SharedCostRule,
    SharedCostsConfig,
    split_by_usage,
    split_by_weights,
    split_evenly,
    split_proportional,
)

amounts = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
weights = st.dictionaries(st.text(min_size=1, max_size=8),
                          st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False),
                          max_size=30)


def record(cost: float, tags: dict[str, str] | None = None, **columns: Any) -> CostRecord:
    base: dict[str, Any] = {"EffectiveCost": cost, "Tags": tags or {}, "x_SourceType": "gpu.sample",
                            "x_App": None, "x_Cluster": None, "x_GpuAllocated": None, "x_GpuUtilPct": None}
    base.update(columns)
    return base  # type: ignore[return-value]


def team(name: str) -> Allocation:
    return Allocation.unallocated()._replace(team=name)


@given(amounts, weights)
@settings(max_examples=300)
def test_shares_add_up_to_the_amount(amount: float, w: dict[str, float]) -> None:
    shares = split_proportional(amount, w)
    assert abs(math.fsum(shares.values()) - amount) <= 1e-9
    assert abs(sum(shares.values()) - amount) <= 1e-9
    if not w:
        assert shares == {UNALLOCATED: amount}
        return
    assert set(shares) <= set(w) and list(shares) == sorted(shares)
    total = math.fsum(w.values())
    for name, share in shares.items():
        expected = amount * (w[name] / total) if total else amount / len(w)
        assert share == pytest.approx(expected, rel=1e-9, abs=1e-9)
        if amount >= 0:
            assert share >= 0
    if total:
        assert all(name in shares for name, value in w.items() if value > 0)


@given(amounts, st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=20))
def test_even_split_is_even_and_exact(amount: float, among: list[str]) -> None:
    shares = split_evenly(amount, among)
    assert set(shares) == set(among)
    assert abs(math.fsum(shares.values()) - amount) <= 1e-9
    assert max(shares.values()) - min(shares.values()) <= 1e-9


def test_split_methods() -> None:
    assert split_by_weights(30.0, {"research": 2, "search": 1}) == {"research": 20.0, "search": 10.0}
    usage = {"search": 60.0, "cx": 20.0, "data": 20.0, "refund": -5.0}
    assert split_by_usage(100.0, usage) == {"cx": 20.0, "data": 20.0, "search": 60.0}
    assert split_by_usage(100.0, usage, among=["search", "cx"]) == {"cx": 25.0, "search": 75.0}
    # nobody in the list has usage: split evenly rather than drop the amount
    assert split_by_usage(10.0, usage, among=["new-a", "new-b"]) == {"new-a": 5.0, "new-b": 5.0}
    assert split_by_usage(10.0, {}) == {UNALLOCATED: 10.0}
    with pytest.raises(ValueError, match="weight of 'x' must be a finite number >= 0"):
        split_proportional(1.0, {"x": -1.0})
    with pytest.raises(ValueError, match="finite"):
        split_proportional(1.0, {"x": math.nan})


def test_rule_matching_on_columns_tags_lists_and_booleans() -> None:
    rule = SharedCostRule(name="idle", match={"x_GpuAllocated": False, "x_Cluster": ["a", "b"],
                                              "Tags.pool": "shared"})
    assert rule.matches(record(1, {"pool": "shared"}, x_GpuAllocated=False, x_Cluster="b"))
    assert not rule.matches(record(1, {"pool": "shared"}, x_GpuAllocated=False, x_Cluster="c"))
    assert not rule.matches(record(1, {"pool": "own"}, x_GpuAllocated=False, x_Cluster="a"))
    assert not rule.matches(record(1, {"pool": "shared"}, x_GpuAllocated=None, x_Cluster="a"))
    zero = SharedCostRule(name="z", match={"x_GpuUtilPct": 0})
    assert zero.matches(record(1, x_GpuUtilPct=0.0))
    assert not zero.matches(record(1, x_GpuUtilPct=False))
    # compiled matchers do not break equality of rules built twice from the same file
    assert SharedCostRule(name="z", match={"x_GpuUtilPct": 0}) == zero


@pytest.mark.parametrize(("rule", "message"), [
    ({"name": "r", "match": {}}, "at least 1 item"),
    ({"name": "r", "match": {"Tags.": "x"}}, "needs a label key after 'Tags.'"),
    ({"name": "r", "match": {"x_App": "g"}, "split": "even"}, "among: needed by split: even"),
    ({"name": "r", "match": {"x_App": "g"}, "weights": {"a": 1}}, "weights: only used with split: weights"),
    ({"name": "r", "match": {"x_App": "g"}, "split": "weights", "weights": {"a": 0}}, "greater than 0"),
])
def test_rule_validation(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SharedCostRule.model_validate(rule)


def test_duplicate_rule_names_are_rejected() -> None:
    rules = [{"name": "r", "match": {"x_App": "a"}}, {"name": "r", "match": {"x_App": "b"}}]
    with pytest.raises(ValueError, match=r"f.yaml: shared_costs.rules\[1\].name: used twice"):
        parse_allocation({"shared_costs": {"rules": rules}}, "f.yaml")


def test_first_matching_rule_wins_and_weights_respect_among() -> None:
    config = SharedCostsConfig(mode="chargeback", rules=[
        {"name": "gw", "match": {"x_App": "gateway"}, "split": "weights", "weights": {"a": 3, "b": 1, "c": 4},
         "among": ["a", "b"]},
        {"name": "any-app", "match": {"x_App": ["gateway", "other"]}, "split": "even", "among": ["z"]},
    ])
    assert config.rule_for(record(1, x_App="gateway")) is config.rules[0]
    assert config.rule_for(record(1, x_App="other")) is config.rules[1]
    assert config.rule_for(record(1, x_App="bot")) is None
    ledger = SharedCostLedger(config)
    ledger.add(record(8.0, x_App="gateway"), team("a"))
    ledger.add(record(2.0, x_App="other"), team("a"))
    (gw, other) = ledger.settle()
    assert gw.to_dict() == {"rule": "gw", "mode": "chargeback", "dimension": "team", "method": "weights",
                            "amount_usd": 8.0, "shares_usd": {"a": 6.0, "b": 2.0}}
    assert other.shares_usd == {"z": 2.0}


def test_default_mapping_splits_idle_on_prem_gpus_by_usage_on_that_cluster() -> None:
    config = default_allocation()
    allocator = Allocator(config)
    ledger = SharedCostLedger(config.shared_costs)
    onprem = {"x_SourceType": "gpu.sample", "x_Cluster": "on_prem-dc-1"}
    rows = [
        record(30.0, {"team": "research"}, x_GpuAllocated=True, **onprem),
        record(10.0, {"team": "search"}, x_GpuAllocated=True, **onprem),
        record(99.0, {"team": "cx"}, x_GpuAllocated=True, x_Cluster="aws-us-east-1"),  # not usage there
        record(8.0, {"team": "ml-platform"}, x_GpuAllocated=False, **onprem),  # idle: shared
        record(5.0, {"team": "cx"}, x_App="gateway", x_SourceType="llm.request"),
    ]
    shared = [ledger.add(r, allocator.allocate(r)) for r in rows]
    assert [s.name if s else None for s in shared] == [None, None, None, "on-prem-idle-capacity",
                                                       "llm-gateway-overhead"]
    idle, gateway = ledger.settle()
    assert idle.mode == "showback" and idle.amount_usd == 8.0
    assert idle.shares_usd == {"research": 6.0, "search": 2.0}
    assert gateway.shares_usd == dict.fromkeys(["cx", "data", "devex", "ml-platform", "search"], 1.0)
    assert math.fsum(gateway.shares_usd.values()) == 5.0


def test_ledger_without_rules_does_nothing() -> None:
    ledger = SharedCostLedger(SharedCostsConfig())
    assert ledger.add(record(1.0), team("a")) is None
    assert ledger.settle() == [] and ledger.usage_usd == {}
