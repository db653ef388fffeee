"""Assembles the worker: app, topics, tables, agents and web pages from one Settings."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from streams.agents import PricedStage, register_price_agent
from streams.app import create_app
from streams.budget_agents import LiveBudgets, register_budget_agents
from streams.core.allocation import Allocator, load_allocation
from streams.core.budgets import load_budgets
from streams.core.catalog import load_catalog
from streams.core.detector_feed import load_detector_config
from streams.core.pricing import Pricer
from streams.cost_agents import CostStage, register_cost_agent
from streams.detector_agents import LiveDetectors, register_detector_agents
from streams.metrics import CollectorTimer, WorkerMetrics
from streams.settings import Settings
from streams.spend_agents import SpendState, register_spend_agents
from streams.tables import (
    BatchLoggedTable,
    define_budget_alert_table,
    define_budget_ledger_table,
    define_detector_table,
    define_event_id_table,
    define_spend_table,
)
from streams.topics import Topics, define_topics
from streams.web import register_pages


@dataclass
class Worker:
    """Everything one worker process runs."""

    app: faust.App
    topics: Topics
    event_ids: BatchLoggedTable
    pricer: Pricer
    metrics: WorkerMetrics
    budgets: LiveBudgets | None = None
    detectors: LiveDetectors | None = None
    spend: SpendState | None = None


def build_worker(settings: Settings) -> Worker:
    """Build the worker's faust app and wire its agents (nothing connects until it starts).

    Config files are read here, so a bad catalog, allocation or budgets file stops start-up.
    """
    catalog = load_catalog(settings.catalog_path)
    allocator = Allocator(load_allocation(settings.allocation_path))
    budgets_config = load_budgets(settings.budgets_path) if settings.budgets_path else None
    detector_config = load_detector_config(settings.detectors_config_path)
    pricer = Pricer(catalog)
    metrics = WorkerMetrics()
    CollectorTimer(metrics.gc_cpu).install()
    metrics.catalog_info.labels(catalog.version).set(1)
    app = create_app(settings, metrics)
    topics = define_topics(app, settings)
    event_ids = define_event_id_table(app, settings)
    priced_stages: list[PricedStage] = []  # run by price_usage on each message's priced records
    register_price_agent(app, settings, topics, event_ids, pricer, metrics, priced_stages)
    worker = Worker(app, topics, event_ids, pricer, metrics)
    cost_stages: list[CostStage] = []  # the stages of the one costs.priced agent, in order
    if budgets_config is not None and budgets_config.budgets:
        worker.budgets = register_budget_agents(
            app, settings, topics, define_budget_ledger_table(app, settings),
            define_budget_alert_table(app, settings), allocator, budgets_config, metrics, cost_stages,
        )
    if settings.detectors_enabled:
        worker.detectors = register_detector_agents(
            app, settings, topics, define_detector_table(app, settings), metrics, priced_stages,
            detector_config,
        )
    if settings.spend_tables:
        worker.spend = register_spend_agents(
            app, settings, topics, define_spend_table(app, settings), allocator, metrics, cost_stages)
    if cost_stages:
        register_cost_agent(app, settings, topics, cost_stages, metrics)
    register_pages(app, metrics, catalog.version)
    return worker
