"""Read GPUs by running ``nvidia-smi --query-gpu=... --format=csv,noheader,nounits`` (the fallback source).

nvidia-smi knows nothing of pods, so every GPU is reported as allocated with no workload; use the DCGM
source on Kubernetes. A field the GPU cannot report (``[N/A]``, ``[Not Supported]``; e.g. utilization
of a GPU in MIG mode) reads as 0.
"""

from __future__ import annotations

import csv
import subprocess  # noqa: S404 - runs the configured nvidia-smi binary, no shell
from typing import Final

from streams.core.events import GpuReading
from streams.gpu_agent.sources import SourceError

FIELDS: Final = ("index", "uuid", "name", "utilization.gpu", "memory.used", "power.draw")
ARGS: Final = (f"--query-gpu={','.join(FIELDS)}", "--format=csv,noheader,nounits")


def _number(cell: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        return 0.0  # [N/A], [Not Supported], [Unknown Error]: the GPU does not report it
    return value if value >= 0 else 0.0


def parse_nvidia_smi_csv(text: str) -> list[GpuReading]:
    r"""Parse the CSV that ``nvidia-smi`` prints for ``ARGS``; one reading per line, by GPU index.

    >>> out = "0, GPU-8f3b, NVIDIA H100 80GB HBM3, 100, 19818, 631.95\n"
    >>> r = parse_nvidia_smi_csv(out)[0]
    >>> r.index, r.model, r.util_pct, r.mem_used_mib, r.power_w
    (0, 'NVIDIA H100 80GB HBM3', 100.0, 19818.0, 631.95)
    """
    readings = []
    for number, row in enumerate(csv.reader(text.splitlines(), skipinitialspace=True), start=1):
        if not row:
            continue
        if len(row) != len(FIELDS):
            expected = len(FIELDS)
            raise SourceError(f"nvidia-smi line {number} has {len(row)} fields, expected {expected}: {row}")
        index, uuid, name, util, mem, power = (cell.strip() for cell in row)
        try:
            gpu = int(index)
        except ValueError:
            raise SourceError(f"nvidia-smi line {number}: GPU index {index!r} is not a number") from None
        readings.append(GpuReading(
            index=gpu, uuid=uuid if uuid.startswith(("GPU-", "MIG-")) else None, model=name or "unknown",
            util_pct=min(_number(util), 100.0), mem_used_mib=_number(mem), power_w=_number(power),
        ))
    if not readings:
        raise SourceError("nvidia-smi printed no GPU")
    return sorted(readings, key=lambda r: r.index)


class NvidiaSmiSource:
    """Run ``nvidia-smi`` each interval."""

    name = "nvidia_smi"

    def __init__(self, binary: str = "nvidia-smi", *, timeout_s: float = 5.0) -> None:
        self.binary = binary
        self.timeout_s = timeout_s

    def read(self) -> list[GpuReading]:
        """Run the query and parse it; raise ``SourceError`` when nvidia-smi is missing or fails."""
        try:
            done = subprocess.run(  # noqa: S603 - fixed arguments, binary from the agent's own settings
                [self.binary, *ARGS], capture_output=True, text=True, timeout=self.timeout_s, check=False
            )
        except FileNotFoundError:
            hint = "install the NVIDIA driver or set nvidia_smi_path"
            raise SourceError(f"{self.binary} not found; {hint}") from None
        except (OSError, subprocess.TimeoutExpired) as error:
            raise SourceError(f"cannot run {self.binary}: {error}") from None
        if done.returncode != 0:
            why = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise SourceError(f"{self.binary} exited {done.returncode}: {why[0]}")
        return parse_nvidia_smi_csv(done.stdout)
