from __future__ import annotations

from detectors.buckets import GpuBucket
from detectors.config import IdleGpuConfig, IdleOverride
from detectors.idle_gpu import IdleGpuDetector
from detectors.state import size_bytes

T0 = 1_772_409_600.0


def sample(i: int, util: float, *, allocated: bool = True, team: str = "research") -> GpuBucket:
    return GpuBucket("GPU-1", T0 + 15 * i, T0 + 15 * (i + 1), util, allocated, 0.01, node="n1", team=team)


def feed(det: IdleGpuDetector, utils: list[float], **kw: object) -> tuple[dict, list]:
    state, found = det.new_state(), []
    for i, util in enumerate(utils):
        state, new = det.update(state, sample(i, util, **kw))  # type: ignore[arg-type]
        found += new
    return state, found


def test_idle_after_the_duration_with_cost_so_far_and_per_hour() -> None:
    _, found = feed(IdleGpuDetector(), [50.0] * 10 + [1.0] * 70 + [60.0])
    opened = [f for f in found if f.kind == "idle_gpu" and f.state == "open"]
    assert len(opened) == 1
    alarm = opened[0]
    assert alarm.started_at.timestamp() == T0 + 150
    assert alarm.detected_at.timestamp() == T0 + 150 + 900  # exactly the threshold duration
    assert alarm.cost_impact_usd == 0.6  # 60 samples at 0.01 USD
    assert alarm.cost_impact_usd_per_hour == 2.4
    assert alarm.entity == {"gpu": "GPU-1", "node": "n1"}
    resolved = [f for f in found if f.kind == "idle_gpu" and f.state == "resolved"]
    assert resolved[0].resolved_at is not None and resolved[0].resolved_at.timestamp() == T0 + 80 * 15
    assert resolved[0].started_at == alarm.started_at


def test_not_billed_gpus_are_never_idle() -> None:
    _, found = feed(IdleGpuDetector(), [0.5] * 200, allocated=False)
    assert found == []


def test_a_blip_of_work_restarts_the_clock() -> None:
    _, found = feed(IdleGpuDetector(), [1.0] * 50 + [30.0] + [1.0] * 50)
    assert found == []


def test_team_override_changes_the_duration() -> None:
    det = IdleGpuDetector(IdleGpuConfig(overrides=(IdleOverride(team="research", for_s=300),)))
    _, found = feed(det, [1.0] * 25)
    assert [f.detected_at.timestamp() - T0 for f in found] == [300.0]
    _, other = feed(det, [1.0] * 25, team="search")
    assert other == []


def test_silence_is_a_telemetry_gap_not_idle() -> None:
    det = IdleGpuDetector()
    state, found = feed(det, [1.0] * 20)
    state, found = det.tick(state, T0 + 20 * 15 + 59)
    assert found == []
    state, found = det.tick(state, T0 + 20 * 15 + 61)
    assert [(f.kind, f.state) for f in found] == [("telemetry_gap", "open")]
    assert found[0].started_at.timestamp() == T0 + 300
    state, found = det.update(state, sample(40, 1.0))
    assert [(f.kind, f.state) for f in found] == [("telemetry_gap", "resolved")]
    assert "idle" not in state or state["idle"] == T0 + 600  # the idle run restarted after the gap


def test_underused_over_an_hour_is_lower_severity() -> None:
    state, found = feed(IdleGpuDetector(), [8.0] * 250)
    kinds = [(f.kind, f.state, f.severity) for f in found]
    assert kinds == [("gpu_underused", "open", "info")]
    assert found[0].detected_at.timestamp() - found[0].started_at.timestamp() >= 3600
    assert size_bytes(state) <= 2048
