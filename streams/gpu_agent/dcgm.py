"""Read GPUs from an NVIDIA DCGM exporter's ``/metrics`` (Prometheus text format).

Used series: ``DCGM_FI_DEV_GPU_UTIL`` (%), ``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` (ratio 0-1),
``DCGM_FI_DEV_FB_USED`` (MiB) and ``DCGM_FI_DEV_POWER_USAGE`` (W), keyed by the ``gpu`` label.

Utilization: by default (``util="gr_engine_active"``) the profiling metric
``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` wins when the exporter serves it for that GPU, because ``GPU_UTIL``
counts a sample period as busy if any kernel ran at all (a GPU running one tiny kernel at a time reads
100 %), and because MIG instances report only the profiling metric. Otherwise
``DCGM_FI_DEV_GPU_UTIL`` is used; ``util="gpu_util"`` reverses the order.

Kubernetes: the exporter (with pod mapping on) labels each series with ``namespace``, ``pod`` and
``container``. A GPU with a pod is ``allocated`` and its ``workload`` is ``namespace/pod``; a GPU
whose ``pod`` label is empty is not allocated (idle capacity). Without pod mapping (no ``pod`` label
at all, as on bare metal) every GPU counts as allocated, as with nvidia-smi.

When several series name the same GPU (MIG instances, or pods sharing a GPU), memory is summed,
utilization and power take the maximum, and the workload is the first pod in name order; every pod is
listed in the ``pods`` label.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from streams.core.events import GpuReading
from streams.gpu_agent.sources import SourceError

GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
GR_ENGINE_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
FB_USED = "DCGM_FI_DEV_FB_USED"
POWER_USAGE = "DCGM_FI_DEV_POWER_USAGE"
USED = frozenset({GPU_UTIL, GR_ENGINE_ACTIVE, FB_USED, POWER_USAGE})
POD_LABELS = ("namespace", "pod", "container")
MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass
class _Gpu:
    index: int
    uuid: str | None = None
    model: str = "unknown"
    util_pct: float | None = None
    engine_active: float | None = None
    mem: dict[tuple[str, ...], float] = field(default_factory=dict)
    power_w: float = 0.0
    pods: dict[str, dict[str, str]] = field(default_factory=dict)
    pod_mapping: bool = False

    def reading(self, util: str) -> GpuReading:
        engine = None if self.engine_active is None else self.engine_active * 100.0
        first, second = (self.util_pct, engine) if util == "gpu_util" else (engine, self.util_pct)
        pct = first if first is not None else second
        pct = min(max(pct or 0.0, 0.0), 100.0)
        workload: str | None = None
        labels: dict[str, str] = {}
        if self.pods:
            workload = sorted(self.pods)[0]
            labels = dict(self.pods[workload])
            if len(self.pods) > 1:
                labels["pods"] = ",".join(sorted(self.pods))
        return GpuReading(
            index=self.index, uuid=self.uuid, model=self.model, util_pct=pct,
            mem_used_mib=max(sum(self.mem.values()), 0.0), power_w=max(self.power_w, 0.0),
            allocated=bool(self.pods) or not self.pod_mapping, workload=workload, labels=labels,
        )


def parse_dcgm(text: str, util: str = "gr_engine_active") -> list[GpuReading]:
    """Turn DCGM exporter output into one reading per GPU, ordered by GPU index.

    >>> text = '''# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).
    ... # TYPE DCGM_FI_DEV_FB_USED gauge
    ... DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-1",modelName="NVIDIA A10G",namespace="ml",pod="train-0"} 2048
    ... DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-1",modelName="NVIDIA A10G",namespace="ml",pod="train-0"} 87
    ... '''
    >>> r = parse_dcgm(text)[0]
    >>> r.util_pct, r.mem_used_mib, r.allocated, r.workload
    (87.0, 2048.0, True, 'ml/train-0')
    """
    gpus: dict[int, _Gpu] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as error:
        raise SourceError(f"DCGM exporter output is not Prometheus text: {error}") from None
    for family in families:
        for s in family.samples:
            if s.name not in USED or "gpu" not in s.labels or not math.isfinite(s.value):
                continue
            _add(gpus, s.name, s.labels, float(s.value))
    if not gpus:
        raise SourceError(f"DCGM exporter output has none of {', '.join(sorted(USED))} with a gpu label")
    return [gpus[i].reading(util) for i in sorted(gpus)]


def _add(gpus: dict[int, _Gpu], name: str, labels: dict[str, str], value: float) -> None:
    try:
        index = int(labels["gpu"])
    except ValueError:
        return
    gpu = gpus.setdefault(index, _Gpu(index))
    gpu.uuid = labels.get("UUID") or labels.get("uuid") or gpu.uuid
    gpu.model = labels.get("modelName") or labels.get("model_name") or gpu.model
    namespace, pod = labels.get("namespace", ""), labels.get("pod", "")
    gpu.pod_mapping = gpu.pod_mapping or "pod" in labels
    if pod:
        gpu.pods.setdefault(f"{namespace}/{pod}", {k: labels.get(k, "") for k in POD_LABELS})
    # One series per MIG instance or per pod: memory adds up across them, the rest is per device.
    series = (labels.get("GPU_I_ID", ""), namespace, pod, labels.get("container", ""))
    if name == FB_USED:
        gpu.mem[series] = value
    elif name == GPU_UTIL:
        gpu.util_pct = max(gpu.util_pct or 0.0, value)
    elif name == GR_ENGINE_ACTIVE:
        gpu.engine_active = max(gpu.engine_active or 0.0, value)
    elif name == POWER_USAGE:
        gpu.power_w = max(gpu.power_w, value)


class DcgmSource:
    """Scrape a DCGM exporter over HTTP each interval."""

    name = "dcgm"

    def __init__(self, url: str, *, util: str = "gr_engine_active", timeout_s: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"dcgm_url must be an http(s) URL, got {url!r}")
        self.url = url
        self.util = util
        self.timeout_s = timeout_s

    def read(self) -> list[GpuReading]:
        """Fetch ``/metrics`` and parse it; raise ``SourceError`` if unreachable or unusable."""
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout_s) as response:  # noqa: S310 - http(s) checked
                body = response.read(MAX_BODY_BYTES + 1)
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise SourceError(f"cannot scrape DCGM exporter at {self.url}: {error}") from None
        if len(body) > MAX_BODY_BYTES:
            raise SourceError(f"DCGM exporter at {self.url} sent more than {MAX_BODY_BYTES} bytes")
        return parse_dcgm(body.decode("utf-8", errors="replace"), self.util)

