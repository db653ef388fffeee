"""Every Prometheus metric the worker exports, declared in one place with the registry passed in.

Label values stay few and bounded (event source, rejection reason, service category): never event,
session or request ids.
"""

from __future__ import annotations

import gc
import time
from types import TracebackType
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LAG_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class WorkerMetrics:
    """The pricing worker's metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages_in = Counter(
            "burnwatch_messages_received", "Kafka messages read from usage topics.", ["source"], registry=r
        )
        self.events_in = Counter(
            "burnwatch_events_received", "Usage events read (valid or not).", ["source"], registry=r
        )
        self.events_priced = Counter(
            "burnwatch_events_priced", "Usage events priced and sent to costs.priced.", ["source"], registry=r
        )
        self.events_duplicate = Counter(
            "burnwatch_events_duplicate",
            "Usage events skipped because their event_id was already priced.",
            ["source"],
            registry=r,
        )
        self.events_rejected = Counter(
            "burnwatch_events_rejected",
            "Messages or batch elements sent to the dead-letter topic.",
            ["source", "reason"],
            registry=r,
        )
        self.charges_unpriced = Counter(
            "burnwatch_charges_unpriced",
            "Charges emitted at zero cost because no catalog price matched.",
            ["source"],
            registry=r,
        )
        self.cost_usd = Counter(
            "burnwatch_cost_priced_usd",
            "EffectiveCost priced, in USD.",
            ["service_category"],
            registry=r,
        )
        self.list_cost_usd = Counter(
            "burnwatch_list_cost_priced_usd",
            "ListCost priced, in USD.",
            ["service_category"],
            registry=r,
        )
        self.processing_lag = Histogram(
            "burnwatch_processing_lag_seconds",
            "Seconds from a message's Kafka timestamp to its priced records being sent.",
            ["source"],
            buckets=LAG_BUCKETS_S,
            registry=r,
        )
        self.budget_charges_counted = Counter(
            "burnwatch_budget_charges_counted", "Charges counted against a budget (once per budget).",
            registry=r,
        )
        self.budget_charges_repeated = Counter(
            "burnwatch_budget_charges_repeated",
            "Charges that reached a budget again (a redelivery) and were not counted twice.", registry=r,
        )
        self.budget_late_usd = Counter(
            "burnwatch_budget_late_cost_usd",
            "Spend that arrived after its budget period closed (reported, not added to the new period).",
            registry=r,
        )
        self.budget_spent_pct = Gauge(
            "burnwatch_budget_spent_pct", "Spend of each budget's current period, percent of its amount.",
            ["budget"], registry=r,
        )
        self.spend_usd = Counter(
            "burnwatch_spend_counted_usd",
            "Spend counted into the spend tables, in USD, by whether its required tags were present.",
            ["allocated"], registry=r,
        )
        self.spend_late_usd = Counter(
            "burnwatch_spend_late_usd",
            "Spend that arrived after its day window closed (kept in a correction bucket), in USD.",
            registry=r,
        )
        self.tag_compliance = Gauge(
            "burnwatch_tag_compliance_ratio",
            "Allocated / total spend of the current UTC day, over the costs.priced partitions this "
            "worker owns (sum burnwatch_spend_counted_usd across workers for the whole).",
            registry=r,
        )
        self.alerts_sent = Counter(
            "burnwatch_alerts_sent", "Alert records sent to the alerts topic.", ["kind"], registry=r,
        )
        self.detector_inputs = Counter(
            "burnwatch_detector_inputs",
            "Detector inputs applied (GPU samples, LLM requests, series shares).",
            registry=r,
        )
        self.detector_inputs_in_place = Counter(
            "burnwatch_detector_inputs_in_place",
            "Detector inputs the router applied itself, their detector.inputs partition being this worker's "
            "(the rest go through the topic; BURNWATCH_DETECTORS_IN_PLACE).",
            registry=r,
        )
        self.detector_inputs_repeated = Counter(
            "burnwatch_detector_inputs_repeated",
            "Detector inputs dropped because their charge was already applied (a redelivery).", registry=r,
        )
        self.detector_late_buckets = Counter(
            "burnwatch_detector_late_buckets",
            "Detector buckets opened only by late inputs (older than the buckets already closed), closed "
            "and judged at the end of their batch. Rising means a usage source sends its usage late, or a "
            "reporter let go as silent came back (see Late inputs in docs/detectors.md).",
            registry=r,
        )
        self.detector_event_time = Gauge(
            "burnwatch_detector_event_time_seconds",
            "Event time (Unix seconds) the detectors of each detector.inputs partition this worker owns have "
            "reached: buckets ending by then are closed and judged. Behind the newest usage by more than a "
            "minute or two means the detectors lag (or a reporter is starved; see docs/detectors.md).",
            ["partition"], registry=r,
        )
        self.batches_failed = Counter(
            "burnwatch_batches_failed",
            "Batches an agent's handler raised on: not acknowledged, read again after 10 s (see the log).",
            ["agent"], registry=r,
        )
        self.partition_rereads = Counter(
            "burnwatch_partition_rereads",
            "Seeks back to re-read a partition: its commit waited 10 s on a message a stream dropped "
            "(reason=dropped), or an agent failed on a batch there (reason=failed).",
            ["topic", "reason"], registry=r,
        )
        self.messages_lost_to_retention = Counter(
            "burnwatch_messages_lost_to_retention",
            "Messages the topic's retention deleted before they were processed (skipped; see the log).",
            ["topic"], registry=r,
        )
        self.findings_sent = Counter(
            "burnwatch_findings_sent", "Findings sent to the anomalies topic.", ["kind", "state"], registry=r,
        )
        # The notifier (`burnwatch notifier`): alerts in, notifications out per receiver.
        self.notifier_alerts_in = Counter(
            "burnwatch_notifier_alerts_received", "Alert records read by the notifier.", ["kind"], registry=r,
        )
        self.notifier_alerts_invalid = Counter(
            "burnwatch_notifier_alerts_invalid", "Records on the alerts topic that are not alerts (skipped).",
            registry=r,
        )
        self.notifications_sent = Counter(
            "burnwatch_notifications_sent", "Notifications delivered.", ["receiver"], registry=r,
        )
        self.notification_retries = Counter(
            "burnwatch_notification_retries", "Delivery attempts that failed and were retried.", ["receiver"],
            registry=r,
        )
        self.notifications_failed = Counter(
            "burnwatch_notifications_failed",
            "Notifications given up: a permanent error, or retries past delivery.max_retry.", ["receiver"],
            registry=r,
        )
        self.notifications_fallback = Counter(
            "burnwatch_notifications_fallback", "Given-up notifications the fallback receiver took.",
            ["receiver"], registry=r,
        )
        self.notifications_duplicate = Counter(
            "burnwatch_notifications_duplicate", "Notifications skipped because the sent log had them.",
            ["receiver"], registry=r,
        )
        self.notifications_pending = Gauge(
            "burnwatch_notifications_pending", "Notifications decided and not yet delivered (the outbox).",
            ["receiver"], registry=r,
        )
        self.silences_active = Gauge(
            "burnwatch_silences_active", "Silences active now, as this notifier sees them.", registry=r,
        )
        self.stage_cpu = Counter(
            "burnwatch_stage_cpu_seconds",
            "CPU seconds (the worker thread's user and system time) spent in a stage of the hot path.",
            ["stage"],
            registry=r,
        )
        self.gc_cpu = Counter(
            "burnwatch_gc_cpu_seconds",
            "CPU seconds (the collecting thread's) spent in passes of Python's cyclic garbage collector, by "
            "generation; also counted in whichever stage the pass interrupted.",
            ["generation"],
            registry=r,
        )
        self.catalog_info = Gauge(
            "burnwatch_price_catalog_info", "The price catalog in use (value is always 1).", ["version"],
            registry=r,
        )


class StageTimer:
    """Add the CPU time of the block it wraps to one stage of ``burnwatch_stage_cpu_seconds_total``.

    Thread CPU time (``time.thread_time``), not wall time: a stage waiting for the broker costs nothing,
    and another thread's work is not counted. It wraps code that does not ``await``: another task run
    in between would be counted too. One instance per stage, used by one task at a time.

    >>> metrics = WorkerMetrics()
    >>> price = StageTimer(metrics.stage_cpu, "price")
    >>> with price:
    ...     _ = sum(i * i for i in range(200_000))
    >>> metrics.registry.get_sample_value("burnwatch_stage_cpu_seconds_total", {"stage": "price"}) > 0
    True
    """

    __slots__ = ("_began", "_stage")

    def __init__(self, counter: Counter, stage: str) -> None:
        self._stage = counter.labels(stage)
        self._began = 0.0

    def __enter__(self) -> None:
        self._began = time.thread_time()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stage.inc(time.thread_time() - self._began)


class CollectorTimer:
    """Add the CPU time of each pass of the cyclic garbage collector to ``burnwatch_gc_cpu_seconds_total``.

    A ``gc.callbacks`` hook (``install``). A pass runs on the thread whose allocation started it, within
    whatever that thread was doing, so its time is in that stage's ``StageTimer`` figure too: this says
    how much of the worker's CPU the collector itself takes (``streams/gc_tuning.py``), stages or not.

    >>> metrics = WorkerMetrics()
    >>> timer = CollectorTimer(metrics.gc_cpu)
    >>> timer.install()
    >>> _ = gc.collect()
    >>> timer.remove()
    >>> metrics.registry.get_sample_value("burnwatch_gc_cpu_seconds_total", {"generation": "2"}) > 0
    True
    """

    __slots__ = ("_began", "_generations")

    def __init__(self, counter: Counter) -> None:
        self._generations = [counter.labels(str(generation)) for generation in range(3)]
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        """Note a pass's start, or add its time to its generation at its stop."""
        if phase == "start":
            self._began = time.thread_time()
        else:  # "stop": passes never overlap, the collector holding the interpreter throughout
            self._generations[info["generation"]].inc(time.thread_time() - self._began)

    def install(self) -> None:
        """Time every pass from now on, in place of any timer installed before.

        The collector is the process's: a process that builds several workers, as tests do, counts it in
        the latest one's metrics.
        """
        gc.callbacks[:] = [hook for hook in gc.callbacks if not isinstance(hook, CollectorTimer)] + [self]

    def remove(self) -> None:
        """Stop timing the passes."""
        gc.callbacks.remove(self)
