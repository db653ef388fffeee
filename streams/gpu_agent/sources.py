"""What every GPU source is (a ``read()`` returning one ``GpuReading`` per GPU) and how one is built."""

from __future__ import annotations

from typing import Protocol

from streams.core.events import GpuReading
from streams.gpu_agent.settings import GpuAgentSettings


class SourceError(RuntimeError):
    """A source could not be read this interval (exporter down, binary failed, NVML error)."""


class GpuSource(Protocol):
    """Reads the node's GPUs now."""

    name: str

    def read(self) -> list[GpuReading]:
        """Return one reading per GPU, ordered by index; raise ``SourceError`` when unreadable."""
        ...


def build_source(settings: GpuAgentSettings) -> GpuSource:
    """Return the source named by ``settings.source``."""
    if settings.source == "dcgm":
        from streams.gpu_agent.dcgm import DcgmSource

        return DcgmSource(settings.dcgm_url, util=settings.dcgm_util, timeout_s=settings.source_timeout_s)
    if settings.source == "nvidia_smi":
        from streams.gpu_agent.nvidia_smi import NvidiaSmiSource

        return NvidiaSmiSource(settings.nvidia_smi_path, timeout_s=settings.source_timeout_s)
    from streams.gpu_agent.nvml import NvmlSource

    return NvmlSource()
