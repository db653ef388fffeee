"""The ingest server's Prometheus metrics, with the registry passed in.

``source`` is a configured source name or ``unauthenticated``: a bounded set.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

UNAUTHENTICATED = "unauthenticated"
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class IngestMetrics:
    """Requests by source and status code, events accepted and rejected, and request latency."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "burnwatch_ingest_requests", "HTTP requests to POST /v1/events.", ["source", "code"], registry=r
        )
        self.events_accepted = Counter(
            "burnwatch_ingest_events_accepted", "Events acknowledged by Kafka on their usage topic.",
            ["source"], registry=r,
        )
        self.events_rejected = Counter(
            "burnwatch_ingest_events_rejected", "Events or bodies rejected and sent to usage.dlq.",
            ["source", "reason"], registry=r,
        )
        self.events_rate_limited = Counter(
            "burnwatch_ingest_events_rate_limited", "Events refused with 429 (nothing published).",
            ["source"], registry=r,
        )
        self.request_seconds = Histogram(
            "burnwatch_ingest_request_seconds", "Seconds to answer POST /v1/events, Kafka acks included.",
            buckets=LATENCY_BUCKETS_S, registry=r,
        )
