from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import pytest

from streams.core.events import EVENT_ADAPTER
from streams.core.simulation import (
    APPS,
    INCIDENT_KINDS,
    IncidentSpec,
    Simulation,
    SimulationConfig,
    default_incidents,
    parse_incidents,
)

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def config(**overrides: Any) -> SimulationConfig:
    base: dict[str, Any] = {"start": START, "duration_s": 1800, "seed": 11, "nodes": 4, "rate": 5.0}
    return SimulationConfig(**(base | overrides))


@lru_cache(maxsize=4)
def run(incidents: str = "all", seed: int = 11) -> tuple[Simulation, list[dict[str, Any]]]:
    sim = Simulation(config(seed=seed, incidents=parse_incidents(incidents, 1800)))
    return sim, list(sim.events())


def when(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["time"])


def test_same_seed_gives_byte_identical_events() -> None:
    first = "\n".join(json.dumps(e) for e in Simulation(config(incidents=default_incidents(1800))).events())
    second = "\n".join(json.dumps(e) for e in Simulation(config(incidents=default_incidents(1800))).events())
    assert first == second
    other = "\n".join(json.dumps(e) for e in Simulation(config(seed=12)).events())
    assert other != first


def test_every_event_validates_and_ids_are_unique() -> None:
    _, events = run()
    ids = [EVENT_ADAPTER.validate_python(e).event_id for e in events]
    assert len(ids) == len(set(ids))
    assert {e["type"] for e in events} == {"gpu.sample", "llm.request", "storage.usage"}


def test_events_come_in_event_time_order_within_the_run() -> None:
    _, events = run()
    times = [when(e) for e in events]
    assert times == sorted(times)
    assert times[0] >= START and times[-1] < START + timedelta(seconds=1800)


def test_counts_follow_nodes_intervals_and_rate() -> None:
    _, events = run("none")
    by_type = Counter(e["type"] for e in events)
    assert by_type["gpu.sample"] == 4 * 1800 // 15
    assert by_type["storage.usage"] == 4 * 1800 // 60
    expected = 5.0 * 1800
    assert abs(by_type["llm.request"] - expected) < 4 * expected**0.5  # Poisson: within 4 sigma


def test_utilization_matches_each_node_role() -> None:
    sim, events = run("none")
    roles = {n.name: n.role for n in sim.nodes}
    for event in (e for e in events if e["type"] == "gpu.sample"):
        for gpu in event["gpus"]:
            role = roles[event["node"]]
            if not gpu["allocated"]:
                assert gpu["util_pct"] <= 2 and gpu["workload"] is None
            elif role == "training":
                assert 85 <= gpu["util_pct"] <= 100
            elif role == "inference":
                assert 20 <= gpu["util_pct"] <= 70
    assert any(not g["allocated"] for e in events if e["type"] == "gpu.sample" for g in e["gpus"])


def test_token_sizes_come_from_the_traces_and_cache_parts_fit() -> None:
    _, events = run("none")
    llm = [e for e in events if e["type"] == "llm.request"]
    assert {e["provider"] for e in llm} == {"openai", "anthropic"}
    assert any(e["cached_input_tokens"] > 0 for e in llm)
    assert any(e["cache_write_tokens"] > 0 for e in llm)
    inputs = sorted(e["input_tokens"] for e in llm)
    assert 300 < inputs[len(inputs) // 2] < 3000  # the Azure traces' medians are about 1000-1500
    assert all(e["labels"]["team"] for e in llm)
    sessions = Counter(e["session"] for e in llm)
    assert max(sessions.values()) > 1  # sessions span several requests


def incident(sim: Simulation, kind: str) -> Any:
    (found,) = [i for i in sim.truth if i.kind == kind]
    assert found.start < found.end
    return found


def inside(event: dict[str, Any], truth: Any) -> bool:
    return truth.start <= when(event) < truth.end


def test_idle_gpu_drops_the_nodes_allocated_gpus_to_near_zero() -> None:
    sim, events = run()
    truth = incident(sim, "idle_gpu")
    samples = [e for e in events if e["type"] == "gpu.sample" and e["node"] == truth.entity]
    during = [g["util_pct"] for e in samples if inside(e, truth) for g in e["gpus"] if g["allocated"]]
    before = [g["util_pct"] for e in samples if when(e) < truth.start for g in e["gpus"] if g["allocated"]]
    assert during and before
    assert max(during) <= 2.0
    assert sum(before) / len(before) > 15
    # memory stays held during the incident: the classic signature of a forgotten job
    held = [g["mem_used_mib"] for e in samples if inside(e, truth) for g in e["gpus"] if g["allocated"]]
    assert min(held) > 1000


def test_runaway_loop_repeats_one_prompt_with_growing_context() -> None:
    sim, events = run()
    truth = incident(sim, "runaway_loop")
    loop = [e for e in events if e["type"] == "llm.request" and e["session"] == truth.entity]
    assert loop and all(inside(e, truth) for e in loop)
    assert {e["prompt_hash"] for e in loop} == {truth.detail["prompt_hash"]}
    assert {e["app"] for e in loop} == {truth.detail["app"]}
    seconds = (truth.end - truth.start).total_seconds()
    assert abs(len(loop) - 2.0 * seconds) < 0.15 * 2.0 * seconds
    contexts = [e["input_tokens"] for e in loop]
    assert contexts == sorted(contexts) and contexts[-1] > 10 * contexts[0]


def test_egress_spike_jumps_the_buckets_egress() -> None:
    sim, events = run()
    truth = incident(sim, "egress_spike")
    usage = [e for e in events if e["type"] == "storage.usage" and e["bucket"] == truth.entity]
    during = [e["egress_bytes"] for e in usage if inside(e, truth)]
    outside = [e["egress_bytes"] for e in usage if not inside(e, truth)]
    assert during and min(during) >= 50 * 1024**3
    assert max(outside) < 10 * 1024**3


def test_model_switch_moves_the_app_to_the_pricier_model_only_in_the_window() -> None:
    sim, events = run()
    truth = incident(sim, "model_switch")
    calls = [e for e in events if e["type"] == "llm.request" and e["app"] == truth.entity]
    during = {e["model"] for e in calls if inside(e, truth)}
    outside = {e["model"] for e in calls if not inside(e, truth)}
    assert during == {truth.detail["to_model"]}
    assert truth.detail["to_model"] not in outside


def test_untagged_node_loses_its_team_label_only_in_the_window() -> None:
    sim, events = run()
    truth = incident(sim, "untagged")
    samples = [e for e in events if e["type"] == "gpu.sample" and e["node"] == truth.entity]
    assert all("team" not in e["labels"] for e in samples if inside(e, truth))
    assert all(e["labels"]["team"] == truth.detail["team"] for e in samples if not inside(e, truth))


def test_incidents_change_only_their_targets() -> None:
    sim, with_incidents = run()
    _, without = run("none")
    targets = {i.entity for i in sim.truth} | {i.detail.get("app", "") for i in sim.truth}

    def untouched(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        keys = ("node", "bucket", "app")
        return [e for e in events if not any(e.get(k) in targets for k in keys)]

    assert untouched(with_incidents) == untouched(without)
    assert len(untouched(without)) > 1000


def test_truth_document_is_json_and_names_every_incident() -> None:
    sim, _ = run()
    doc = json.loads(json.dumps(sim.truth_document()))
    assert [i["kind"] for i in doc["incidents"]] == list(INCIDENT_KINDS)
    assert doc["start"] == "2026-03-02T09:00:00.000Z"
    assert all(i["start"] < i["end"] for i in doc["incidents"])


def test_explicit_incident_spec_targets_the_named_entity() -> None:
    specs = parse_incidents("model_switch:60:120:1:code-assist,egress_spike:0:60:2:inference-logs", 600)
    sim = Simulation(config(duration_s=600, incidents=specs))
    assert [(i.kind, i.entity) for i in sim.truth] == [
        ("model_switch", "code-assist"),
        ("egress_spike", "inference-logs"),
    ]
    first = next(e for e in sim.events() if e["type"] == "storage.usage" and e["bucket"] == "inference-logs")
    assert first["egress_bytes"] == 100 * 1024**3


@pytest.mark.parametrize(
    "text",
    ["bogus", "idle_gpu:10", "idle_gpu:x:10", "idle_gpu:0:-5", "egress_spike:0:60:1:nope"],
)
def test_bad_incident_specs_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Simulation(config(incidents=parse_incidents(text, 600)))


def test_config_refuses_naive_start_and_bad_numbers() -> None:
    with pytest.raises(ValueError, match="timezone"):
        SimulationConfig(start=datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError):
        SimulationConfig(start=START, duration_s=0)
    with pytest.raises(ValueError):
        IncidentSpec("idle_gpu", 0, 10, intensity=0)


def test_model_switch_targets_have_a_pricier_model() -> None:
    assert all(app.pricey != app.models[0][:2] for app in APPS if app.pricey)
