"""Every Prometheus metric the GPU agent exports, declared in one place with the registry passed in."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class GpuAgentMetrics:
    """The GPU agent's metrics; ``samples_dropped`` is the one to alert on (it should stay 0)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.samples_taken = Counter(
            "burnwatch_gpu_agent_samples", "gpu.sample events built and written to the local buffer.",
            registry=r,
        )
        self.samples_sent = Counter(
            "burnwatch_gpu_agent_samples_sent", "gpu.sample events acknowledged by Kafka.", registry=r
        )
        self.samples_dropped = Counter(
            "burnwatch_gpu_agent_samples_dropped",
            "gpu.sample events lost: the local buffer was full (oldest dropped) or a sample was too large.",
            ["reason"],
            registry=r,
        )
        self.source_errors = Counter(
            "burnwatch_gpu_agent_source_errors",
            "Intervals with no sample because the GPU source could not be read.",
            ["source"],
            registry=r,
        )
        self.send_failures = Counter(
            "burnwatch_gpu_agent_send_failures",
            "Attempts to ship buffered samples that Kafka did not acknowledge (they stay buffered).",
            registry=r,
        )
        self.buffer_samples = Gauge(
            "burnwatch_gpu_agent_buffer_samples", "Samples in the local buffer waiting for Kafka.", registry=r
        )
        self.buffer_bytes = Gauge(
            "burnwatch_gpu_agent_buffer_bytes", "Bytes the local buffer's segments take on disk.", registry=r
        )
        self.buffer_max_bytes = Gauge(
            "burnwatch_gpu_agent_buffer_max_bytes", "The local buffer's size limit in bytes.", registry=r
        )
        self.last_sent = Gauge(
            "burnwatch_gpu_agent_last_sent_timestamp_seconds",
            "Unix time of the last Kafka acknowledgement.",
            registry=r,
        )
        self.gpus = Gauge("burnwatch_gpu_agent_gpus", "GPUs in the last reading.", registry=r)
