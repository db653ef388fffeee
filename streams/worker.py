"""Assembles the pricing worker: app, topics, tables, agents and web pages from one Settings."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from streams.agents import register_price_agent
from streams.app import create_app
from streams.core.catalog import load_catalog
from streams.core.pricing import Pricer
from streams.metrics import WorkerMetrics
from streams.settings import Settings
from streams.tables import EventIdTable, define_event_id_table
from streams.topics import Topics, define_topics
from streams.web import register_pages


@dataclass
class PricingWorker:
    """Everything one worker process runs."""

    app: faust.App
    topics: Topics
    event_ids: EventIdTable
    pricer: Pricer
    metrics: WorkerMetrics


def build_worker(settings: Settings) -> PricingWorker:
    """Build the worker's faust app and wire its agents (nothing connects until it starts)."""
    catalog = load_catalog(settings.catalog_path)
    pricer = Pricer(catalog)
    metrics = WorkerMetrics()
    metrics.catalog_info.labels(catalog.version).set(1)
    app = create_app(settings)
    topics = define_topics(app, settings)
    event_ids = define_event_id_table(app, settings)
    register_price_agent(app, settings, topics, event_ids, pricer, metrics)
    register_pages(app, metrics, catalog.version)
    return PricingWorker(app, topics, event_ids, pricer, metrics)
