"""The GPU agent's settings: which source to read, the node's facts and the local buffer.

Each field is also the env var ``BURNWATCH_GPU_AGENT_<FIELD>`` (upper case); ``labels`` is JSON
(``{"team": "ml"}``). Kafka connection and topic prefix come from the shared ``BURNWATCH_*`` settings.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "BURNWATCH_GPU_AGENT_"


class GpuAgentSettings(BaseSettings):
    """Settings of ``burnwatch gpu-agent``; see docs/collectors/gpu-agent.md for each one."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    # Source
    source: Literal["dcgm", "nvidia_smi", "nvml"] = "dcgm"
    dcgm_url: str = "http://localhost:9400/metrics"
    dcgm_util: Literal["gr_engine_active", "gpu_util"] = "gr_engine_active"
    nvidia_smi_path: str = "nvidia-smi"
    source_timeout_s: float = Field(default=5.0, gt=0, le=60)
    interval_s: int = Field(default=15, ge=1, le=3600)

    # Node facts, copied into every sample
    node: str = Field(default_factory=socket.gethostname, min_length=1, max_length=256)
    cluster: str = "default"
    provider: str = Field(default="on_prem", min_length=1)
    region: str = "global"
    instance_type: str = ""
    pricing: Literal["on_demand", "spot", "reserved", "on_prem"] = "on_prem"
    labels: dict[str, str] = Field(default_factory=dict)

    # Local buffer (see disk_queue.py)
    buffer_dir: Path = Path(".burnwatch/gpu-agent")
    buffer_max_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024)
    buffer_segment_bytes: int = Field(default=1024 * 1024, ge=4096)
    buffer_fsync: bool = True

    # Shipping and the agent's own metrics
    delivery_timeout_s: float = Field(default=30.0, ge=1, le=600)
    send_batch: int = Field(default=500, ge=1, le=10_000)
    metrics_host: str = "0.0.0.0"  # noqa: S104 - Prometheus scrapes the agent from outside the node
    metrics_port: int = Field(default=9402, ge=0, le=65_535)
