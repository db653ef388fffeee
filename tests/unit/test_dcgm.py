"""The DCGM exporter source: parsing real-format exporter output, and scraping a real HTTP server."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pytest_httpserver import HTTPServer

from streams.core.events import parse_message
from streams.gpu_agent.dcgm import DcgmSource, parse_dcgm
from streams.gpu_agent.sample import NodeFacts, build_sample
from streams.gpu_agent.sources import SourceError
from streams.producer import serialize

TRAIN, SERVE = "ml-research/llm-finetune-0", "inference/vllm-chat-7d9c8b6f5-x2k4q"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures/dcgm/metrics.txt"


@pytest.fixture(scope="module")
def exporter_text() -> str:
    return FIXTURE.read_text()


def test_fixture_reads_as_four_gpus_with_pods_mapped_to_workloads(exporter_text: str) -> None:
    gpus = parse_dcgm(exporter_text)
    assert [g.index for g in gpus] == [0, 1, 2, 3]
    assert {g.model for g in gpus} == {"NVIDIA A100-SXM4-80GB"}
    assert gpus[0].uuid == "GPU-5fd4f087-86f3-7a43-b711-4771313afc50"
    assert [g.workload for g in gpus] == [
        TRAIN, TRAIN, SERVE, None
    ]
    assert [g.allocated for g in gpus] == [True, True, True, False]
    assert gpus[2].labels == {"namespace": "inference", "pod": SERVE.split("/")[1], "container": "vllm"}
    assert gpus[3].labels == {}
    assert [g.mem_used_mib for g in gpus] == [64722, 64136, 37940, 0]
    assert [g.power_w for g in gpus] == pytest.approx([352.811, 348.104, 201.592, 61.207])


def test_engine_active_is_preferred_for_utilization_and_gpu_util_on_request(exporter_text: str) -> None:
    assert [g.util_pct for g in parse_dcgm(exporter_text)] == pytest.approx([91.2345, 89.712, 31.8774, 0.0])
    assert [g.util_pct for g in parse_dcgm(exporter_text, util="gpu_util")] == [100, 99, 47, 0]


def test_without_profiling_metrics_gpu_util_is_used(exporter_text: str) -> None:
    text = "\n".join(line for line in exporter_text.splitlines() if "DCGM_FI_PROF_" not in line)
    assert [g.util_pct for g in parse_dcgm(text)] == [100, 99, 47, 0]


def series(name: str, value: str, **labels: str) -> str:
    base = {"gpu": "0", "UUID": "GPU-1", "device": "nvidia0", "modelName": "NVIDIA H100 80GB HBM3"}
    body = ",".join(f'{k}="{v}"' for k, v in (base | labels).items())
    return f"{name}{{{body}}} {value}"


def test_mig_instances_add_their_memory_and_list_every_pod() -> None:
    text = "\n".join([
        "# TYPE DCGM_FI_DEV_FB_USED gauge",
        series("DCGM_FI_DEV_FB_USED", "4384", GPU_I_PROFILE="3g.40gb", GPU_I_ID="1", namespace="b", pod="p2"),
        series("DCGM_FI_DEV_FB_USED", "6", GPU_I_PROFILE="1g.10gb", GPU_I_ID="9", namespace="a", pod="p1"),
        "# TYPE DCGM_FI_PROF_GR_ENGINE_ACTIVE gauge",
        series("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "0.250000", GPU_I_ID="1", namespace="b", pod="p2"),
        series("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "0.500000", GPU_I_ID="9", namespace="a", pod="p1"),
        "",
    ])
    (gpu,) = parse_dcgm(text)
    assert gpu.mem_used_mib == 4390
    assert gpu.util_pct == 50
    assert gpu.workload == "a/p1"
    assert gpu.labels["pods"] == "a/p1,b/p2"


def test_without_pod_mapping_every_gpu_counts_as_allocated() -> None:
    text = series("DCGM_FI_DEV_GPU_UTIL", "3") + "\n" + series("DCGM_FI_DEV_GPU_UTIL", "0", gpu="1") + "\n"
    assert [(g.allocated, g.workload) for g in parse_dcgm(text)] == [(True, None), (True, None)]


def test_nan_values_and_series_without_a_gpu_label_are_ignored() -> None:
    text = "\n".join([
        series("DCGM_FI_DEV_GPU_UTIL", "NaN"),
        series("DCGM_FI_DEV_FB_USED", "100"),
        'DCGM_FI_DEV_FB_USED{UUID="GPU-9"} 5',
        "",
    ])
    (gpu,) = parse_dcgm(text)
    assert (gpu.util_pct, gpu.mem_used_mib) == (0, 100)


@pytest.mark.parametrize("text", ["", "# HELP x y\nsome_other_metric 1\n", "DCGM_FI_DEV_GPU_UTIL{gpu=0} 1\n"])
def test_output_without_usable_series_is_a_source_error(text: str) -> None:
    with pytest.raises(SourceError):
        parse_dcgm(text)


@given(st.lists(
    st.tuples(st.integers(0, 100), st.integers(0, 81920), st.floats(0, 1000, allow_nan=False),
              st.sampled_from(["", "team-a/job-1", "team-b/svc-2"])),
    min_size=1, max_size=8,
))
def test_exporter_style_output_round_trips(gpus: list[tuple[int, int, float, str]]) -> None:
    lines = []
    columns = (("DCGM_FI_DEV_GPU_UTIL", 0), ("DCGM_FI_DEV_FB_USED", 1), ("DCGM_FI_DEV_POWER_USAGE", 2))
    for name, column in columns:
        lines += [f"# HELP {name} help", f"# TYPE {name} gauge"]
        for index, row in enumerate(gpus):
            namespace, _, pod = row[3].partition("/")
            value = f"{row[column]:f}" if column == 2 else str(row[column])
            lines.append(series(name, value, gpu=str(index), container="c" if pod else "",
                                namespace=namespace, pod=pod))
    parsed = parse_dcgm("\n".join(lines) + "\n")
    assert [(g.util_pct, g.mem_used_mib) for g in parsed] == [(float(u), float(m)) for u, m, _, _ in gpus]
    assert [g.power_w for g in parsed] == pytest.approx([p for _, _, p, _ in gpus], abs=1e-6)
    assert [g.workload or "" for g in parsed] == [w for *_, w in gpus]
    assert [g.allocated for g in parsed] == [bool(w) for *_, w in gpus]


# --- against a real HTTP server (acceptance: the DCGM path) ---------------------------------------


def test_scraping_a_real_exporter_endpoint_yields_gpu_samples_with_the_served_values(
    httpserver: HTTPServer, exporter_text: str
) -> None:
    httpserver.expect_request("/metrics").respond_with_data(
        exporter_text, content_type="text/plain; version=0.0.4; charset=utf-8"
    )
    source = DcgmSource(httpserver.url_for("/metrics"))
    tick = datetime(2026, 3, 1, 12, 0, 15, tzinfo=UTC)
    doc = build_sample(source.read(), NodeFacts(node="gpu-node-7", provider="aws",
                                                instance_type="p4de.24xlarge", pricing="on_demand"), tick, 15)
    parsed = parse_message(serialize(doc))
    assert not parsed.rejections
    (event,) = parsed.events
    assert event.type == "gpu.sample" and event.node == "gpu-node-7"
    assert event.time == datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert [g["util_pct"] for g in doc["gpus"]] == pytest.approx([91.2345, 89.712, 31.8774, 0.0])
    assert [g.util_pct for g in event.gpus] == pytest.approx([91.2345, 89.712, 31.8774, 0.0])
    assert [g.mem_used_mib for g in event.gpus] == [64722, 64136, 37940, 0]
    assert [g.workload for g in event.gpus] == [
        TRAIN, TRAIN, SERVE, None
    ]
    assert [g.allocated for g in event.gpus] == [True, True, True, False]
    assert event.gpus[0].labels == {"namespace": "ml-research", "pod": "llm-finetune-0",
                                    "container": "trainer"}


def test_an_exporter_error_or_no_exporter_is_a_source_error(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/metrics").respond_with_data("boom", status=500)
    with pytest.raises(SourceError, match="cannot scrape"):
        DcgmSource(httpserver.url_for("/metrics")).read()
    with pytest.raises(SourceError, match="cannot scrape"):
        DcgmSource("http://127.0.0.1:9/metrics", timeout_s=1).read()


def test_dcgm_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        DcgmSource("file:///etc/passwd")
