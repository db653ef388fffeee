"""``bench.in_place``: the in-place detector path over bench.run's workload, in process."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from bench import in_place
from bench.run import DetectorKernel


@pytest.fixture(scope="module")
def runs():
    return in_place.priced_runs(2000, 200, 3, 24.0, 7)[0]


def test_the_runs_are_the_workload_envelopes_in_order_per_usage_partition(runs):
    offsets: dict[str, list[int]] = {}
    for run in runs:
        offsets.setdefault(run.source, []).extend(offset for offset, _ in run.messages)
        assert sum(count for _, count in run.messages) == len(run.records)
    assert all(seen == list(range(len(seen))) for seen in offsets.values())
    assert sum(len({r["x_EventId"] for r in run.records}) for run in runs) == 2000


def test_a_run_takes_a_partitions_envelopes_until_it_holds_the_run_records():
    runs = in_place.priced_runs(2000, 100, 2, 24.0, 7, run_records=500)[0]
    full = [run for run in runs if len(run.records) >= 500]
    partial = runs[len(full):]  # last: what each usage partition's envelopes left, one run at most
    assert runs[:len(full)] == full and len({run.source for run in partial}) == len(partial) > 0
    # a run is full with its last envelope, not before
    assert all(len(run.records) - run.messages[-1][1] < 500 for run in full)
    assert any(len(run.messages) > 1 for run in full)
    one_each = in_place.priced_runs(2000, 100, 2, 24.0, 7, run_records=1)[0]
    assert {len(run.messages) for run in one_each} == {1}  # every envelope a run of its own
    assert len(one_each) == sum(len(run.messages) for run in runs)


def test_both_feeds_apply_the_same_inputs_and_write_the_same_entries(runs):
    pytest.importorskip("burnwatch_kernel")
    python = in_place.one_pass(runs, 3, DetectorKernel.python)
    compiled = in_place.one_pass(runs, 3, DetectorKernel.compiled)
    assert python["applied"] == compiled["applied"] > 2000  # GPU samples, requests and series sums
    assert python["entries"] == compiled["entries"] > 0
    assert all(python[stage] > 0 for stage in in_place.STAGES)


def test_the_command_prints_and_writes_the_figures(tmp_path):
    out, profile = tmp_path / "in_place.json", tmp_path / "in_place.prof"
    app = typer.Typer()
    app.command()(in_place.main)
    # Python's collector (0): tuning it here would freeze this test process's objects for the tests after it
    result = CliRunner().invoke(app, ["--events", "1500", "--envelope-size", "300", "--repeat", "1",
                                      "--gc-young-threshold", "0", "--kernel", "python", "--json", str(out),
                                      "--profile", str(profile)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert "detector_feed.py" in result.output  # the profile's top functions
    assert profile.stat().st_size > 0
    assert set(figures["us_per_event"]) == set(in_place.STAGES)
    assert figures["path_us_per_event"] == pytest.approx(sum(figures["us_per_event"].values()), abs=0.05)



def test_no_pass_builds_and_prices_only(tmp_path):
    """``--repeat 0``: the baseline process an instruction count of the path subtracts."""
    app = typer.Typer()
    app.command()(in_place.main)
    out = tmp_path / "in_place.json"
    result = CliRunner().invoke(app, ["--events", "600", "--envelope-size", "300", "--repeat", "0",
                                      "--gc-young-threshold", "0", "--kernel", "python", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "600 events built and priced" in result.output and "no pass" in result.output
    assert not out.exists()  # no figures: nothing was run to have them
