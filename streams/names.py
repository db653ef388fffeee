"""Topic names (before the configured prefix) and which event type flows on which topic."""

from __future__ import annotations

from streams.core.events import GPU_SAMPLE, LLM_REQUEST, STORAGE_USAGE

USAGE_GPU = "usage.gpu"
USAGE_LLM = "usage.llm"
USAGE_STORAGE = "usage.storage"
USAGE_DLQ = "usage.dlq"
COSTS_PRICED = "costs.priced"
BUDGET_CHARGES = "budget.charges"
BUDGET_BURN = "budget.burn"
SPEND_WINDOWS = "spend.windows"
ALERTS = "alerts"
ANOMALIES = "anomalies"
DETECTOR_INPUTS = "detector.inputs"
ALERTS_BY_TEAM = "alerts.by_team"
ALERT_SILENCES = "alert.silences"

USAGE_TOPICS = (USAGE_GPU, USAGE_LLM, USAGE_STORAGE)
TOPIC_FOR_TYPE = {GPU_SAMPLE: USAGE_GPU, LLM_REQUEST: USAGE_LLM, STORAGE_USAGE: USAGE_STORAGE}
