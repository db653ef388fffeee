"""Every Prometheus metric the worker exports, declared in one place with the registry passed in.

Label values stay few and bounded (event source, rejection reason, service category): never event,
session or request ids.
"""

from __future__ import annotations

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
        self.alerts_sent = Counter(
            "burnwatch_alerts_sent", "Alert records sent to the alerts topic.", ["kind"], registry=r,
        )
        self.catalog_info = Gauge(
            "burnwatch_price_catalog_info", "The price catalog in use (value is always 1).", ["version"],
            registry=r,
        )
