"""Where the worker's tables write: never through the producer's partitioner (define_budget_alert_table)."""

from __future__ import annotations

from streams.app import create_app
from streams.settings import Settings
from streams.tables import (
    define_budget_alert_table,
    define_budget_ledger_table,
    define_detector_table,
    define_event_id_table,
    define_spend_table,
)


def test_no_table_is_placed_by_the_producers_partitioner() -> None:
    """faust's partitioner path reads producer metadata without waiting for it; it crashed track_budgets."""
    settings = Settings(store="memory")
    app = create_app(settings)
    tables = [define(app, settings) for define in (define_event_id_table, define_budget_ledger_table,
                                                   define_budget_alert_table, define_detector_table,
                                                   define_spend_table)]
    assert [table.name for table in tables if table.use_partitioner] == []
