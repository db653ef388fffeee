"""The metrics, the NAB runner, and the acceptance numbers on a suite small enough for a unit test."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from detectors.eval import KindReport, Window, evaluate, merge_reports, percentile
from detectors.findings import Finding
from detectors.nab import score_series, write_nab_results
from streams.commands import eval as eval_command
from tests.support.shared_data import SHARED_DATA, needs_shared

NAB_DIR = SHARED_DATA / "nab"


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def alarm(kind: str, entity: dict[str, str], detected: float) -> Finding:
    return Finding(kind, entity, "open", "warning", "", at(detected - 10), at(detected))


def test_precision_recall_delay_and_false_alarm_rate() -> None:
    windows = [
        Window("idle_gpu", "n1", 1000, 2000),
        Window("idle_gpu", "n2", 5000, 6000),
        Window("agent_loop", "s9", 100, 400, explains=("spend_spike",), related=frozenset({"ml"})),
    ]
    findings = [
        alarm("idle_gpu", {"gpu": "g1", "node": "n1"}, 1900),
        alarm("idle_gpu", {"gpu": "g2", "node": "n1"}, 1950),  # a second GPU of the same node: still true
        alarm("idle_gpu", {"gpu": "g7", "node": "n7"}, 1900),  # false
        alarm("agent_loop", {"session": "s9"}, 130),
        alarm("spend_spike", {"team": "ml", "window": "1m"}, 200),  # explained by the loop
        alarm("spend_spike", {"team": "cx", "window": "1m"}, 200),  # false
        Finding("idle_gpu", {"node": "n2"}, "resolved", "warning", "", at(0), at(5500)),  # not an alarm
    ]
    reports = evaluate(findings, windows, {"idle_gpu": 4.0, "spend_spike": 2.0}).reports
    idle = reports["idle_gpu"]
    assert (idle.alarms, idle.true_alarms, idle.false_alarms) == (3, 2, 1)
    assert idle.precision == pytest.approx(2 / 3)
    assert idle.recall == 0.5
    assert idle.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert idle.delays_s == [900.0]
    assert idle.false_alarms_per_1000_entity_days == 250.0
    assert reports["spend_spike"].precision == 0.5 and reports["spend_spike"].recall is None
    assert reports["agent_loop"].delay_median_s == 30.0


def test_alarm_before_the_window_or_long_after_is_false() -> None:
    windows = [Window("egress_spike", "b1", 1000, 2000, grace_s=60)]
    early, late = alarm("egress_spike", {"bucket": "b1"}, 900), alarm("egress_spike", {"bucket": "b1"}, 2100)
    rep = evaluate([early, late], windows).reports["egress_spike"]
    assert (rep.false_alarms, rep.detected) == (2, 0)


def test_percentiles_and_merge() -> None:
    assert percentile(list(range(1, 101)), 95) == 95
    merged = merge_reports(
        [
            {"x": KindReport("x", windows=2, detected=1, delays_s=[1.0])},
            {"x": KindReport("x", windows=2, detected=2, delays_s=[3.0, 5.0])},
        ]
    )
    assert merged["x"].recall == 0.75 and merged["x"].delay_median_s == 3.0


def test_nab_results_format(tmp_path: Path) -> None:
    data = tmp_path / "data" / "cat"
    data.mkdir(parents=True)
    rows = [
        (f"2014-01-01 {h:02d}:{m:02d}:00", 100.0 if (h, m) == (5, 0) else 10.0 + (m % 3))
        for h in range(8)
        for m in range(0, 60, 5)
    ]
    with open(data / "s.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value"])
        writer.writerows(rows)
    labels = {"cat/s.csv": [["2014-01-01 04:30:00.000000", "2014-01-01 05:30:00.000000"]]}
    (path,) = write_nab_results(tmp_path / "data", tmp_path / "out", labels)
    assert path == tmp_path / "out" / "burnwatchSpike" / "cat" / "burnwatchSpike_s.csv"
    with open(path, newline="") as handle:
        out = list(csv.DictReader(handle))
    assert list(out[0]) == ["timestamp", "value", "anomaly_score", "label"]
    assert len(out) == len(rows)
    flagged = [r["timestamp"] for r in out if float(r["anomaly_score"]) >= 0.5]
    assert flagged == ["2014-01-01 05:00:00"]
    assert sum(int(r["label"]) for r in out) == 13
    assert all(0.0 <= float(r["anomaly_score"]) < 1.0 for r in out)


def test_spike_scores_do_not_learn_the_spike() -> None:
    series = [10.0] * 40 + [100.0] * 3 + [10.0] * 5
    scores = score_series(series)
    assert [i for i, s in enumerate(scores) if s >= 0.5] == [40, 41, 42]


@needs_shared(NAB_DIR / "labels" / "combined_windows.json")
def test_eval_nab_command_writes_results(tmp_path: Path) -> None:
    app = typer.Typer()
    eval_command.register(app)
    sample = tmp_path / "nab"
    (sample / "data" / "realAWSCloudwatch").mkdir(parents=True)
    (sample / "labels").mkdir()
    name = "realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv"
    (sample / "data" / name).write_bytes((NAB_DIR / "data" / name).read_bytes())
    labels = json.loads((NAB_DIR / "labels" / "combined_windows.json").read_text())
    (sample / "labels" / "combined_windows.json").write_text(json.dumps({name: labels[name]}))
    result = CliRunner().invoke(app, ["eval", "nab", str(sample), "--out", str(tmp_path / "res")])
    assert result.exit_code == 0, result.output
    written = (
        tmp_path
        / "res"
        / "burnwatchSpike"
        / "realAWSCloudwatch"
        / "burnwatchSpike_ec2_cpu_utilization_24ae8d.csv"
    )
    assert written.is_file()
    assert sum(1 for _ in open(written)) == sum(1 for _ in open(sample / "data" / name))


def test_acceptance_on_the_quick_scenario_suite() -> None:
    """The issue's acceptance numbers, on a suite that runs in well under a minute."""
    sim = eval_command.summarize(eval_command.simulator_suite(eval_command.QUICK))
    kinds = sim["kinds"]
    assert kinds["idle_gpu"]["recall"] >= 0.98
    assert kinds["idle_gpu"]["delay_p95_s"] <= 900 + 2 * 15
    assert sim["agent_loop_requests_to_detect"]["max"] <= 20
    for kind, rep in kinds.items():
        if rep["windows"]:
            assert rep["recall"] == 1.0, kind
        if rep["alarms"]:
            assert rep["precision"] >= 0.95, kind
    assert sim["incident_free_false_alarms_per_1000_entity_days"] <= 1.0
    traces = eval_command.summarize(eval_command.traces_suite(eval_command.QUICK))
    runaway = traces["kinds"]["token_runaway"]
    assert runaway["recall"] >= 0.98
    assert runaway["precision"] >= 0.95
    assert runaway["delay_median_s"] <= 60


def test_every_five_times_session_within_sixty_seconds() -> None:
    """Each injected 5x session on the quick traces suite is found within a minute, with no false alarm."""
    runs = eval_command.traces_suite(eval_command.QUICK)
    delays = [
        found.detected_at.timestamp() - window.start
        for run in runs
        for window, found in run.evaluation.matches
        if found is not None
    ]
    assert len(delays) == sum(len(run.evaluation.matches) for run in runs) == 6
    assert max(delays) <= 60
    summary = eval_command.summarize(runs)
    assert summary["kinds"]["token_runaway"]["false_alarms"] == 0
    # stricter than the metrics, which take any runaway of the app during a window as explained
    assert summary["bystander_runaway_alarms"] == []
