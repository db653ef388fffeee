"""Detectors on the real broker: an idle GPU and an agent loop alert once, across repeats and a SIGKILL."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from streams.core.simulation import IncidentSpec, Simulation, SimulationConfig
from streams.names import ALERTS, ANOMALIES, DETECTOR_INPUTS
from streams.producer import EventProducer
from tests.integration.conftest import Stack

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def simulated(incidents: tuple[IncidentSpec, ...], duration_s: float) -> list[dict[str, Any]]:
    config = SimulationConfig(start=START, duration_s=duration_s, nodes=2, rate=1, seed=3,
                              incidents=incidents)
    return list(Simulation(config).events())


def produce_live(stack: Stack, events: list[dict[str, Any]], slice_s: float = 15.0) -> None:
    """Send events as live sources would: every source's envelopes leave each ``slice_s`` of event time.

    ``burnwatch ingest FILE`` fills one envelope per topic before sending it, which puts a sparse
    source (GPU samples) far behind a busy one (LLM requests) in event time.
    """
    producer = EventProducer(stack.settings, batch_size=1000)
    edge = None
    for event in events:
        t = datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()
        if edge is None or t >= edge:
            producer.emit_pending()
            edge = (t // slice_s + 1) * slice_s
        producer.send([event])
    producer.flush()


def transitions(alerts: list[dict[str, Any]], kind: str) -> dict[str, Counter[str]]:
    """Status counts of each alert (fingerprint) of ``kind``; one idle node has several idle GPUs."""
    out: dict[str, Counter[str]] = {}
    for a in alerts:
        if a["kind"] == kind:
            out.setdefault(a["fingerprint"], Counter())[a["status"]] += 1
    return out


def once(alerts: list[dict[str, Any]], kind: str) -> bool:
    """Every alert of ``kind`` fired exactly once and resolved exactly once (and there is one)."""
    seen = transitions(alerts, kind)
    return bool(seen) and all(c == {"firing": 1, "resolved": 1} for c in seen.values())


def wait_alerts(stack: Stack, done: Any, timeout: float = 40) -> list[dict[str, Any]]:
    return stack.consume(ALERTS, until=done, timeout=timeout)


def test_idle_gpu_and_agent_loop_alert_once_despite_repeats(stack_factory: Any, tmp_path: Path) -> None:
    stack = stack_factory(detectors_idle_lane_s=5)
    incidents = (IncidentSpec("idle_gpu", 60, 1080), IncidentSpec("runaway_loop", 300, 90))
    events = simulated(incidents, 1320)
    stack.start_worker("w1")
    produce_live(stack, events)

    def complete(alerts: list[dict[str, Any]]) -> bool:
        return once(alerts, "idle_gpu") and once(alerts, "agent_loop")

    alerts = wait_alerts(stack, complete)
    assert complete(alerts), Counter((a["kind"], a["fingerprint"][:6], a["status"]) for a in alerts)
    idle = next(a for a in alerts if a["kind"] == "idle_gpu" and a["status"] == "firing")
    started, detected = (datetime.fromisoformat(idle[k]) for k in ("started_at", "detected_at"))
    assert START + timedelta(seconds=60) <= started < START + timedelta(seconds=90)  # event times
    assert timedelta(minutes=15) <= detected - started <= timedelta(minutes=15, seconds=30)
    assert idle["cost_impact_usd"] > 0 and idle["evidence"]["util_pct"] < 5
    def idle_states(findings: list[dict[str, Any]]) -> set[str]:
        return {f["state"] for f in findings if f["kind"] == "idle_gpu"}

    findings = stack.consume(ANOMALIES, until=lambda fs: {"open", "resolved"} <= idle_states(fs), timeout=10)
    assert {"open", "resolved"} <= idle_states(findings)
    # every detector partition reports the event time it has judged up to: past the idle GPU's detection
    reached = [float(line.split()[-1]) for line in stack.metrics().splitlines()
               if line.startswith("burnwatch_detector_event_time_seconds{")]
    assert len(reached) == stack.settings.topic_partitions, reached
    assert min(reached) >= detected.timestamp()

    # A pricing worker that crashed after sending re-sends exact copies of its batches' detector inputs
    # (and ticks): nothing fires again.
    sent = stack.consume(DETECTOR_INPUTS, until=lambda rs: False, timeout=8, raw=True)
    producer = stack.producer()
    for partition, key, value in sent:
        producer.produce(stack.topic(DETECTOR_INPUTS), key=key, value=value, partition=partition)
    producer.flush(30)
    time.sleep(6)
    again = wait_alerts(stack, lambda rs: False, timeout=8)
    counts = Counter((a["kind"], a["fingerprint"], a["status"]) for a in again)
    assert max(counts.values()) == 1, counts
    repeated = [line for line in stack.metrics().splitlines()
                if line.startswith("burnwatch_detector_inputs_repeated_total")]
    assert float(repeated[0].split()[-1]) > 0


def test_sigkill_mid_incident_keeps_the_finding_once(stack_factory: Any, tmp_path: Path) -> None:
    stack = stack_factory(detectors_idle_lane_s=5)  # a restarted router waits this long for every lane
    incidents = (IncidentSpec("idle_gpu", 60, 1080),)
    events = simulated(incidents, 1320)
    cut = START + timedelta(seconds=1050)  # the idle GPU's finding opened at about 960 s and is still open
    before = [e for e in events if datetime.fromisoformat(e["time"].replace("Z", "+00:00")) < cut]
    after = events[len(before):]
    stack.start_worker("w1")
    produce_live(stack, before)
    alerts = wait_alerts(stack, lambda rs: len(transitions(rs, "idle_gpu")) >= 2)
    time.sleep(2)
    alerts = wait_alerts(stack, lambda rs: False, timeout=3)
    opened = transitions(alerts, "idle_gpu")
    assert opened and all(c == {"firing": 1} for c in opened.values()), opened
    time.sleep(2)  # let the state reach the changelog and the store: the kill comes mid-incident

    stack.kill_worker("w1")
    stack.start_worker("w1")
    produce_live(stack, after)
    alerts = wait_alerts(stack, lambda rs: once(rs, "idle_gpu"))
    time.sleep(3)
    alerts = wait_alerts(stack, lambda rs: False, timeout=5)
    assert once(alerts, "idle_gpu"), transitions(alerts, "idle_gpu")
    assert set(transitions(alerts, "idle_gpu")) == set(opened)  # the same GPUs: none lost, none new
    for a in alerts:
        if a["kind"] == "idle_gpu" and a["status"] == "resolved":
            assert datetime.fromisoformat(a["resolved_at"]) >= START + timedelta(seconds=1140)
