"""Read GPUs through NVML with nvidia-ml-py (``pip install 'burnwatch[nvml]'``).

nvidia-ml-py is an optional dependency: it is imported when the source is built, and a missing module
becomes a ``SourceError`` that says what to install. Like nvidia-smi, NVML knows nothing of pods.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from streams.core.events import GpuReading
from streams.gpu_agent.sources import SourceError

INSTALL_HINT = "the nvml source needs nvidia-ml-py: pip install 'burnwatch[nvml]' (or nvidia-ml-py>=12)"


def load_pynvml() -> ModuleType:
    """Import ``pynvml`` (shipped by nvidia-ml-py); raise ``SourceError`` with the install hint if absent."""
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        raise SourceError(INSTALL_HINT) from None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlSource:
    """Query every GPU through NVML; initialises NVML once, on the first read."""

    name = "nvml"

    def __init__(self) -> None:
        self._nvml = load_pynvml()
        self._ready = False

    def read(self) -> list[GpuReading]:
        """Return one reading per GPU; an NVML error becomes ``SourceError``."""
        nvml = self._nvml
        try:
            if not self._ready:
                nvml.nvmlInit()
                self._ready = True
            readings = []
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                try:
                    util = nvml.nvmlDeviceGetUtilizationRates(handle).gpu
                except nvml.NVMLError:
                    util = 0  # a GPU in MIG mode has no device-wide utilization
                memory = nvml.nvmlDeviceGetMemoryInfo(handle).used / (1024 * 1024)
                try:
                    power_w = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
                except nvml.NVMLError:
                    power_w = 0.0  # not every board reports power
                readings.append(GpuReading(
                    index=index, uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                    model=_text(nvml.nvmlDeviceGetName(handle)), util_pct=float(util),
                    mem_used_mib=float(memory), power_w=power_w,
                ))
        except nvml.NVMLError as error:
            raise SourceError(f"NVML: {error}") from None
        if not readings:
            raise SourceError("NVML reports no GPU")
        return readings
