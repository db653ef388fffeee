"""HTTP pages on the worker's faust web server: Prometheus metrics and health."""

from __future__ import annotations

from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.metrics import WorkerMetrics


def register_pages(app: faust.App, metrics: WorkerMetrics, catalog_version: str) -> None:
    """Serve ``/metrics`` (Prometheus text format) and ``/health`` (JSON) on the worker."""

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type, so the exposition type goes in as a header.
        return web.bytes(generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/health")
    async def health_page(web: Any, request: Any) -> Any:
        assigned = app.assignor.assigned_actives() if app.assignor else set()
        recovering = bool(app.rebalancing) or not app.tables.recovery.completed.is_set()
        body = {
            "status": "recovering" if recovering else "ok",
            "assigned_partitions": len(assigned),
            "price_catalog_version": catalog_version,
        }
        return web.json(body, status=503 if recovering else 200)
