"""``burnwatch worker``: run the stream processor."""

from __future__ import annotations

from pathlib import Path

import typer

from streams.commands.common import CONFIG_OPTION, err_console, fail, load_settings, setup_logging


def register(app: typer.Typer) -> None:
    """Add the ``worker`` command."""

    @app.command()
    def worker(config: Path | None = CONFIG_OPTION) -> None:
        """Run a worker: price usage events from Kafka into costs.priced (scale out by running more)."""
        import faust

        from streams.admin import ensure_topics
        from streams.core.allocation import AllocationError
        from streams.core.budgets import BudgetError
        from streams.core.catalog import CatalogError
        from streams.core.detector_kernel import KernelMissing
        from streams.gc_tuning import tune_collector
        from streams.worker import build_worker

        settings = load_settings(config)
        setup_logging(settings.log_level)
        try:
            built = build_worker(settings)
        except (CatalogError, AllocationError, BudgetError) as error:
            err_console.print(f"bad config file: {error}", style="red", markup=False, highlight=False)
            raise typer.Exit(2) from None
        except KernelMissing as error:
            raise fail(str(error), code=2) from None
        ensure_topics(settings)
        tune_collector(settings.gc_young_threshold)
        worker_process = faust.Worker(built.app, loglevel=settings.log_level.lower(), redirect_stdouts=False)
        worker_process.execute_from_commandline()
