"""Allocation: the mapping file, precedence, required tags, scopes, tag compliance and the CLI."""

from __future__ import annotations

import json
import math
import random
import re
import time
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from streams.commands.allocation import register
from streams.core.allocation import (
    STANDARD_DIMENSIONS,
    UNALLOCATED,
    Allocation,
    AllocationConfig,
    AllocationError,
    Allocator,
    ComplianceTally,
    ExactSum,
    default_allocation,
    load_allocation,
    parse_allocation,
    parse_scope,
    scope_key,
)
from streams.core.catalog import default_catalog
from streams.core.costs import CostRecord
from streams.core.events import EVENT_ADAPTER
from streams.core.pricing import Pricer
from streams.core.simulation import APPS, IncidentSpec, Simulation, SimulationConfig
from streams.settings import get_settings

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
runner = CliRunner()


def record(tags: dict[str, str] | None = None, source: str = "llm.request", **columns: Any) -> CostRecord:
    base: dict[str, Any] = {
        "Tags": tags or {}, "x_SourceType": source, "EffectiveCost": 1.0, "ResourceId": "r-1",
        "x_App": None, "x_User": None, "x_Session": None, "x_Model": None, "x_Cluster": None,
        "x_Workload": None, "x_GpuAllocated": None,
    }
    base.update(columns)
    return base  # type: ignore[return-value]


@lru_cache(maxsize=1)
def simulated_records() -> tuple[tuple[CostRecord, ...], Simulation]:
    """Priced records of a 30-minute simulated run whose second node loses its team label mid-run."""
    untagged = IncidentSpec("untagged", 600, 600, entity=None)
    sim = Simulation(SimulationConfig(start=START, duration_s=1800, seed=5, nodes=4, rate=5.0,
                                      incidents=(untagged,)))
    pricer = Pricer(default_catalog())
    records: list[CostRecord] = []
    for raw in sim.events():
        records.extend(pricer.price(EVENT_ADAPTER.validate_python(raw)))
    return tuple(records), sim


# --- the default mapping against the simulator -------------------------------------------------


def test_default_mapping_loads_and_fits_the_simulator() -> None:
    config = default_allocation()
    assert load_allocation(None) is config
    assert load_allocation(Path("streams/data/allocation.yaml")) == config
    assert config.required == ["team"]
    assert config.hierarchy == ["organization", "business_unit", "product_line", "feature"]
    allocator = Allocator(config)
    records, sim = simulated_records()
    by_app: dict[str, set[str]] = {}
    for r in records:
        a = allocator.allocate(r)
        if r["x_App"]:
            by_app.setdefault(r["x_App"], set()).add(a.team)
        if not a.missing_required:
            # every owned dollar rolls all the way up the hierarchy
            assert UNALLOCATED not in (a.organization, a.business_unit, a.cost_center), a
    assert by_app == {app.name: {app.team} for app in APPS}
    (incident,) = sim.truth
    node = incident.entity
    missing = [r for r in records if allocator.allocate(r).missing_required]
    assert missing, "the untagged incident produced no unallocated spend"
    for r in missing:
        assert r["x_SourceType"] == "gpu.sample" and r["ResourceId"].startswith("GPU-")
        assert r["x_Cluster"] and "team" not in r["Tags"]
        assert allocator.allocate(r).team == UNALLOCATED
    tagged_nodes = {r["x_EventId"].split("-gpu-", 1)[1].rsplit("-", 1)[0] for r in missing}
    assert tagged_nodes == {node}
    # the untagged node keeps its project: the product line still resolves, the owner does not
    lines = {allocator.allocate(r).product_line for r in missing}
    assert lines <= {"foundation-models", "search", "ai-platform"}


def test_allocated_plus_unallocated_is_the_total_on_simulated_spend() -> None:
    records, _ = simulated_records()
    allocator = Allocator(default_allocation())
    tally = ComplianceTally()
    by_team: dict[str, ExactSum] = {}
    for r in records:
        a = allocator.allocate(r)
        tally.add(r, a)
        by_team.setdefault(a.team, ExactSum()).add(r["EffectiveCost"])
    exact_total = math.fsum(r["EffectiveCost"] for r in records)
    assert tally.allocated_usd + tally.unallocated_usd == tally.total_usd
    assert tally.total_usd == pytest.approx(exact_total, rel=1e-12)
    assert 0 < tally.unallocated_usd < tally.total_usd and 0 < tally.ratio < 1
    assert by_team[UNALLOCATED].value == tally.unallocated_usd
    assert math.fsum(s.value for s in by_team.values()) == pytest.approx(exact_total, rel=1e-12)
    assert tally.missing_usd == {"team": pytest.approx(tally.unallocated_usd)}
    top = tally.top(3)
    assert top and all(t["missing"] == ["team"] and t["source_type"] == "gpu.sample" for t in top)
    assert [t["unallocated_usd"] for t in top] == sorted((t["unallocated_usd"] for t in top), reverse=True)
    json.dumps(tally.snapshot())


# --- precedence ---------------------------------------------------------------------------------


PRECEDENCE = AllocationConfig(
    aliases={"team": ["team", "owner"], "app": ["record.x_App", "app"],
             "project": ["project", "k8s namespace"]},
    lookups=[
        {"from": "app", "values": {"bot": {"team": "cx", "env": "prod", "feature": "chat"}}},
        {"from": "team",
         "values": {"cx": {"business_unit": "customer"}, "infra": {"business_unit": "platform"}}},
    ],
    defaults={"*": {"organization": "acme", "env": "dev"},
              "storage.usage": {"team": "infra", "env": "archive"}},
)


def test_explicit_label_beats_lookup_beats_default() -> None:
    allocator = Allocator(PRECEDENCE)
    a = allocator.allocate(record({"owner": "search", "env": "staging"}, x_App="bot"))
    assert (a.team, a.env, a.feature, a.organization) == ("search", "staging", "chat", "acme")
    assert a.business_unit == UNALLOCATED  # the lookup keys on the explicit team, which has no entry
    b = allocator.allocate(record({}, x_App="bot"))
    assert (b.team, b.env, b.business_unit) == ("cx", "prod", "customer")
    c = allocator.allocate(record({}))
    assert (c.team, c.env, c.organization) == (UNALLOCATED, "dev", "acme")
    assert c.missing_required == ("team",)


def test_defaults_per_source_type_override_the_star_and_feed_lookups() -> None:
    allocator = Allocator(PRECEDENCE)
    s = allocator.allocate(record({}, source="storage.usage"))
    assert (s.team, s.env, s.organization, s.business_unit) == ("infra", "archive", "acme", "platform")
    assert s.missing_required == ()


def test_aliases_are_tried_in_order_and_blank_values_count_as_missing() -> None:
    allocator = Allocator(PRECEDENCE)
    assert allocator.allocate(record({"team": "a", "owner": "b"})).team == "a"
    assert allocator.allocate(record({"team": "  ", "owner": "b"})).team == "b"
    assert allocator.allocate(record({"team": " a "})).team == "a"
    assert allocator.allocate(record({"k8s namespace": "ns-1"})).project == "ns-1"
    # a record column named by record.<column> comes before the label
    assert allocator.allocate(record({"app": "bot"}, x_App="other")).team == UNALLOCATED
    assert allocator.allocate(record({"app": "bot"})).team == "cx"


def test_extra_dimensions_and_several_required() -> None:
    config = AllocationConfig(dimensions=["department"], hierarchy=["organization", "department", "team"],
                              required=["team", "department"],
                              lookups=[{"from": "team", "to": "department", "values": {"cx": "sales"}}])
    allocator = Allocator(config)
    a = allocator.allocate(record({"team": "cx"}))
    assert a.extra == (("department", "sales"),) and a.get("department") == "sales" and a.allocated
    b = allocator.allocate(record({}))
    assert b.missing_required == ("team", "department") and b.get("department") == UNALLOCATED
    assert allocator.dimensions[:3] == ("organization", "department", "team")
    assert ("department", "sales") in allocator.scopes(a, record())
    assert a.to_dict()["department"] == "sales"


def test_allocation_field_order_matches_the_standard_dimensions() -> None:
    assert Allocation._fields[: len(STANDARD_DIMENSIONS)] == STANDARD_DIMENSIONS
    a = Allocation(*STANDARD_DIMENSIONS)
    assert [a.get(d) for d in STANDARD_DIMENSIONS] == list(STANDARD_DIMENSIONS)
    assert a.get("nope") == UNALLOCATED


# --- scopes -------------------------------------------------------------------------------------


def test_scopes_list_every_dimension_the_compound_keys_and_the_record_columns() -> None:
    allocator = Allocator(default_allocation())
    r = record({"team": "search", "project": "answers", "env": "prod"}, x_App="search-rag", x_Model="gpt-4o",
               x_User="u-1", x_Session="s-9")
    a = allocator.allocate(r)
    scopes = allocator.scopes(a, r)
    assert scopes == [
        ("organization", "acme"), ("business_unit", "product"), ("product_line", "search"),
        ("feature", "rag-answers"), ("team", "search"), ("project", "answers"), ("env", "prod"),
        ("cost_center", "CC-2100"), ("project/env", "answers/prod"), ("total", "all"),
        ("model", "gpt-4o"), ("app", "search-rag"), ("user", "u-1"), ("session", "s-9"),
    ]
    gpu = record({}, source="gpu.sample", x_Model="H100")
    gpu_scopes = allocator.scopes(allocator.allocate(gpu), gpu)
    assert ("team", UNALLOCATED) in gpu_scopes and ("project/env", "unallocated/unallocated") in gpu_scopes
    assert [k for k, _ in gpu_scopes].count("user") == 0
    gpu_scopes.append(("mutated", "x"))
    assert ("mutated", "x") not in allocator.scopes(allocator.allocate(gpu), gpu)


@given(st.sampled_from(["team", "project/env", "user", "session"]), st.text(min_size=1))
def test_scope_keys_round_trip(kind: str, value: str) -> None:
    assert parse_scope(scope_key((kind, value))) == (kind, value)


@pytest.mark.parametrize("bad", ["team", ":x", "team:", ""])
def test_parse_scope_rejects_malformed_keys(bad: str) -> None:
    with pytest.raises(ValueError, match="kind:value"):
        parse_scope(bad)


# --- the cache ----------------------------------------------------------------------------------


def test_cache_keys_only_on_what_the_mapping_reads_and_stays_bounded() -> None:
    allocator = Allocator(PRECEDENCE, cache_size=10)
    first = allocator.allocate(record({"team": "a", "request": "1"}))
    second = allocator.allocate(record({"team": "a", "request": "2"}))
    assert first is second and allocator.cache_len == 1
    for i in range(50):
        allocator.allocate(record({"team": f"t{i}"}))
        assert allocator.cache_len <= 10
    assert allocator.allocate(record({"team": "t3"})).team == "t3"


def test_allocate_is_fast_on_the_hot_path(capsys: pytest.CaptureFixture[str]) -> None:
    records, _ = simulated_records()
    sample = [records[i % len(records)] for i in range(100_000)]
    allocator = Allocator(default_allocation())
    t0 = time.perf_counter()
    for r in sample:
        allocator.allocate(r)
    t1 = time.perf_counter()
    for r in sample:
        allocator.scopes(allocator.allocate(r), r)
    t2 = time.perf_counter()
    distinct = [{**r, "Tags": {**r["Tags"], "team": f"team-{i}"}} for i, r in enumerate(sample[:5000])]
    t3 = time.perf_counter()
    for r in distinct:
        allocator.allocate(r)  # type: ignore[arg-type]
    t4 = time.perf_counter()
    per_allocate = (t1 - t0) / len(sample) * 1e6
    per_both = (t2 - t1) / len(sample) * 1e6
    per_miss = (t4 - t3) / len(distinct) * 1e6
    with capsys.disabled():
        print(f"\nallocate: {per_allocate:.2f} µs/record; allocate + scopes: {per_both:.2f} µs/record "
              f"({len(sample):,} records, {allocator.cache_len - len(distinct)} distinct keys); "
              f"cache miss: {per_miss:.2f} µs")
    # relative, so a loaded CI machine does not fail it; absolute bound only against pathologies
    assert per_allocate < per_miss / 2
    assert per_both < 200


# --- tag compliance -----------------------------------------------------------------------------

costs = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(st.lists(st.tuples(costs, st.booleans(), st.integers(0, 30)), max_size=200))
@settings(max_examples=200, deadline=None)
def test_allocated_plus_unallocated_equals_total_exactly(rows: list[tuple[float, bool, int]]) -> None:
    tally = ComplianceTally(max_resources=8)
    ok = Allocation.unallocated()._replace(team="t")
    bad = Allocation.unallocated()._replace(missing_required=("team",))
    for cost, owned, resource in rows:
        tally.add(record(EffectiveCost=cost, ResourceId=f"r{resource}"), ok if owned else bad)
    assert tally.allocated_usd + tally.unallocated_usd == tally.total_usd
    assert tally.allocated_usd == math.fsum(c for c, owned, _ in rows if owned)
    assert tally.unallocated_usd == math.fsum(c for c, owned, _ in rows if not owned)
    assert tally.total_usd == pytest.approx(math.fsum(c for c, _, _ in rows), rel=1e-15, abs=1e-300)
    assert 0.0 <= tally.ratio <= 1.0
    if not tally.total_usd:
        assert tally.ratio == 1.0
    assert len(tally.by_resource) <= 8
    tracked = math.fsum(e[0] for e in tally.by_resource.values()) + tally.other_resources_usd
    assert tracked == pytest.approx(tally.unallocated_usd, rel=1e-9, abs=1e-9)


def test_top_offenders_keep_the_biggest_when_pruned() -> None:
    tally = ComplianceTally(max_resources=4)
    bad = Allocation.unallocated()._replace(missing_required=("team",))
    for i in range(20):
        tally.add(record(EffectiveCost=float(i), ResourceId=f"r{i}"), bad)
    assert tally.top(1)[0]["resource_id"] == "r19"
    assert tally.unallocated_records == 20 and tally.ratio == 0.0


@given(st.lists(st.floats(min_value=-1e9, max_value=1e9, allow_nan=False), max_size=60), st.randoms())
def test_exact_sum_is_order_independent(values: list[float], rnd: random.Random) -> None:
    shuffled = list(values)
    rnd.shuffle(shuffled)
    assert ExactSum(values).value == ExactSum(shuffled).value == math.fsum(values)


def test_exact_sum_refuses_non_finite() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        ExactSum().add(math.inf)


# --- the mapping file: errors name file, key path and value ------------------------------------


@pytest.mark.parametrize(("doc", "expected"), [
    ({"required": ["tem"]}, "required[0]: not a dimension; dimensions are business_unit"),
    ({"hierarchy": ["organization", "bizunit"]}, "hierarchy[1]: not a dimension"),
    ({"lookups": [{"from": "app", "values": {"a": "x"}}], "aliases": {"app": ["app"]}},
     "lookups[0].values.a: a plain value needs 'to' (the dimension it fills) (got 'x')"),
    ({"lookups": [{"from": "nope", "values": {}}]},
     "lookups[0].from: not a dimension or an alias name (got 'nope')"),
    ({"lookups": [{"from": "team", "values": {"cx": {"tem": "x"}}}]},
     "lookups[0].values.cx.tem: not a dimension"),
    ({"lookups": [{"from": "team", "to": "business_unit", "values": {"a": "b"}},
                  {"from": "project", "to": "team", "values": {"p": "a"}}]},
     "lookups[0].from: 'team' is only filled by lookups[1], which comes later"),
    ({"aliases": {"app": ["record.x_Nope"]}},
     "aliases.app[0]: not a cost record column (got 'record.x_Nope')"),
    ({"defaults": {"gpu": {"team": "x"}}}, "defaults.gpu: not a source type"),
    ({"dimensions": ["team"]}, "dimensions[0]: already a dimension (got 'team')"),
    ({"colour": "red"}, "colour: is not a known key (got 'red')"),
    ({"shared_costs": {"rules": [{"name": "r", "match": {"x_Foo": 1}}]}},
     "shared_costs.rules[0].match.x_Foo: not a cost record column"),
    ({"shared_costs": {"rules": [{"name": "r", "match": {"x_App": "g"}, "split": "weights"}]}},
     "shared_costs.rules[0].weights: needed by split: weights"),
    ({"shared_costs": {"rules": [{"name": "r", "match": {"x_App": "g"}, "dimension": "squad"}]}},
     "shared_costs.rules[0].dimension: not a dimension"),
    ({"shared_costs": {"mode": "both"}},
     "shared_costs.mode: Input should be 'showback' or 'chargeback' (got 'both')"),
])
def test_errors_name_the_file_the_key_path_and_the_value(doc: dict[str, Any], expected: str) -> None:
    with pytest.raises(AllocationError) as error:
        parse_allocation(doc, "mine.yaml")
    assert f"mine.yaml: {expected}" in str(error.value)


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(AllocationError, match="cannot read the file"):
        load_allocation(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lookups: [unclosed\n")
    with pytest.raises(AllocationError, match=f"{bad}: \\(top level\\): not valid YAML"):
        load_allocation(bad)
    bad.write_text("- a list\n")
    with pytest.raises(AllocationError, match="must be a mapping"):
        load_allocation(bad)
    bad.write_text("")
    assert load_allocation(bad) == AllocationConfig()


# --- the CLI ------------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.delenv("BURNWATCH_CONFIG", raising=False)
    get_settings.cache_clear()
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """Root."""

    register(app)
    yield app
    get_settings.cache_clear()


def test_cli_validate(cli: typer.Typer, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["allocation", "validate", "streams/data/allocation.yaml"])
    assert result.exit_code == 0, result.output
    assert "streams/data/allocation.yaml: ok (version default-2026-03: 11 aliases, 5 lookups" in result.output
    bad = tmp_path / "alloc.yaml"
    bad.write_text("required: [tem]\nlookups:\n  - {from: team, values: {cx: {bu: x}}}\n")
    result = runner.invoke(cli, ["allocation", "validate", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}: required[0]: not a dimension" in result.output
    assert f"{bad}: lookups[0].values.cx.bu: not a dimension" in result.output


def test_cli_show_tables_and_json_round_trip(cli: typer.Typer, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["allocation", "show"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "organization > business_unit > product_line > feature" in result.output
    assert "support-bot" in result.output and "on-prem-idle-capacity" in result.output
    result = runner.invoke(cli, ["allocation", "show", "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["lookups"][0]["from"] == "app"
    assert parse_allocation(doc, "round-trip") == default_allocation()
    mine = tmp_path / "mine.yaml"
    mine.write_text("version: mine-1\nrequired: [team, env]\n")
    result = runner.invoke(cli, ["allocation", "show", "--json", "--mapping", str(mine)])
    assert json.loads(result.stdout)["required"] == ["team", "env"]


def test_the_example_in_the_docs_is_a_valid_mapping() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs/allocation.md").read_text(encoding="utf-8")
    block = re.search(r"## Mapping file reference \(YAML\)\n\n```yaml\n(.*?)```", text, re.S)
    assert block
    config = parse_allocation(yaml.safe_load(block.group(1)), "docs/allocation.md")
    allocator = Allocator(config)
    a = allocator.allocate(record({"kubernetes.io/namespace": "search-prod"}, source="storage.usage"))
    assert (a.team, a.business_unit, a.organization, a.get("department")) == (
        "search", "product", "acme", "engineering")
    assert a.product_line == "data-infrastructure" and a.project == "search-prod"


def test_dims_give_the_mapping_budget_scopes_match_on() -> None:
    allocator = Allocator(default_allocation())
    r = record({"team": "search", "env": "prod"}, x_App="search-rag", x_Model="gpt-4o", x_User="u-1",
               ProviderName="openai", RegionId="global")
    dims = allocator.dims(allocator.allocate(r), r)
    assert dims["team"] == "search" and dims["business_unit"] == "product" and dims["project"] == UNALLOCATED
    assert (dims["app"], dims["model"], dims["user"], dims["session"]) == (
        "search-rag", "gpt-4o", "u-1", None)
    assert (dims["source"], dims["provider"], dims["region"], dims["cluster"]) == (
        "llm.request", "openai", "global", None)
