"""The nvidia-smi source (with a stand-in binary printing real nvidia-smi CSV) and the NVML import guard."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from streams.commands import gpu_agent as gpu_agent_command
from streams.core.events import parse_message
from streams.gpu_agent.nvidia_smi import NvidiaSmiSource, parse_nvidia_smi_csv
from streams.gpu_agent.sources import SourceError
from streams.producer import serialize

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures/nvidia-smi"


@pytest.fixture
def smi_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(FIXTURES / "nvidia-smi", bin_dir / "nvidia-smi")
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("NVIDIA_SMI_FIXTURE", str(FIXTURES / "query-gpu.csv"))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def test_real_csv_rows_parse_with_not_available_as_zero() -> None:
    gpus = parse_nvidia_smi_csv((FIXTURES / "query-gpu.csv").read_text())
    assert [(g.index, g.util_pct, g.mem_used_mib, g.power_w) for g in gpus] == [
        (0, 100.0, 19818.0, 631.95), (1, 0.0, 0.0, 69.85), (2, 0.0, 11125.0, 433.78)
    ]
    assert {g.model for g in gpus} == {"NVIDIA H100 80GB HBM3"}
    assert gpus[1].uuid == "GPU-00000000-0000-0000-0000-000000000001"
    assert all(g.allocated and g.workload is None for g in gpus)


@pytest.mark.parametrize("text, match", [
    ("", "no GPU"),
    ("0, GPU-1, NVIDIA A10G, 5, 10\n", "has 5 fields"),
    ("x, GPU-1, NVIDIA A10G, 5, 10, 20\n", "not a number"),
])
def test_malformed_output_is_a_source_error(text: str, match: str) -> None:
    with pytest.raises(SourceError, match=match):
        parse_nvidia_smi_csv(text)


def test_the_stand_in_binary_on_path_is_read(smi_on_path: Path) -> None:
    gpus = NvidiaSmiSource().read()
    assert [(g.util_pct, g.mem_used_mib) for g in gpus] == [(100.0, 19818.0), (0.0, 0.0), (0.0, 11125.0)]


def test_a_missing_or_failing_binary_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not found"):
        NvidiaSmiSource(str(tmp_path / "no-such-nvidia-smi")).read()
    failing = tmp_path / "nvidia-smi"
    message = "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver."
    failing.write_text(f"#!/bin/sh\necho '{message}' >&2\nexit 9\n")
    failing.chmod(0o755)
    with pytest.raises(SourceError, match="exited 9: NVIDIA-SMI has failed"):
        NvidiaSmiSource(str(failing)).read()


def test_gpu_agent_once_prints_a_valid_gpu_sample_from_nvidia_smi(
    smi_on_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = typer.Typer()
    gpu_agent_command.register(app)

    @app.command()
    def noop() -> None:  # a second command keeps typer from collapsing the app into gpu-agent itself
        """Do nothing."""

    monkeypatch.setenv("BURNWATCH_GPU_AGENT_NODE", "h100-node-1")
    monkeypatch.setenv("BURNWATCH_GPU_AGENT_PROVIDER", "aws")
    monkeypatch.setenv("BURNWATCH_GPU_AGENT_LABELS", '{"team": "research"}')
    result = CliRunner().invoke(app, ["gpu-agent", "--source", "nvidia_smi", "--interval", "30", "--once"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    (event,) = parse_message(serialize(doc)).events
    assert (event.node, event.provider, event.interval_s) == ("h100-node-1", "aws", 30)
    assert event.labels == {"team": "research"}
    assert [g.mem_used_mib for g in event.gpus] == [19818.0, 0.0, 11125.0]
    assert event.event_id == f"gpu/default/h100-node-1/{doc['time']}"


def test_gpu_agent_rejects_an_unknown_source() -> None:
    app = typer.Typer()
    gpu_agent_command.register(app)
    app.command()(lambda: None)
    result = CliRunner().invoke(app, ["gpu-agent", "--source", "rocm", "--once"])
    assert result.exit_code == 2
    assert "source" in result.output


@pytest.mark.skipif(importlib.util.find_spec("pynvml") is not None, reason="nvidia-ml-py is installed")
def test_nvml_source_without_nvidia_ml_py_says_what_to_install() -> None:
    from streams.gpu_agent.nvml import NvmlSource

    with pytest.raises(SourceError, match=r"pip install 'burnwatch\[nvml\]'"):
        NvmlSource()
