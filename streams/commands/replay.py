"""``burnwatch replay FILE --out DIR``: backtest exported usage in-process, no Kafka needed."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streams.commands.common import err_console

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add the ``replay`` command."""

    @app.command()
    def replay(
        file: Annotated[str, typer.Argument(help="Events as JSON lines, JSON or CSV; - for stdin.")],
        out: Annotated[Path, typer.Option("--out", help="Directory for the output .jsonl files.")],
        catalog: Annotated[
            Path | None, typer.Option("--catalog", help="Price catalog (default: the shipped one).")
        ] = None,
        fmt: Annotated[str | None, typer.Option("--format", help="jsonl, json or csv.")] = None,
        budgets: Annotated[
            Path | None, typer.Option("--budgets", help="Budgets: also write burn.jsonl, budget alerts.")
        ] = None,
        allocation: Annotated[
            Path | None, typer.Option("--allocation", help="Allocation mapping (default: the shipped one).")
        ] = None,
        lateness_hours: Annotated[
            float, typer.Option("--lateness-hours", help="Allowed lateness of the spend windows.")
        ] = 6.0,
    ) -> None:
        """Price a file of usage events exactly as the stream would, and print a summary."""
        from streams.core.allocation import AllocationError, Allocator, load_allocation
        from streams.core.budgets import BudgetError, load_budgets
        from streams.core.catalog import CatalogError, load_catalog
        from streams.core.costs import CostRecord
        from streams.core.event_files import read_path
        from streams.core.pricing import Pricer
        from streams.replay import replay as run_replay
        from streams.replay_budgets import ReplayBudgets
        from streams.replay_detectors import ReplayDetectors

        try:
            pricer = Pricer(load_catalog(catalog))
            allocator = Allocator(load_allocation(allocation))
            budget_config = load_budgets(budgets) if budgets else None
            items = read_path(file, fmt)
        except (CatalogError, AllocationError, BudgetError, OSError) as error:
            err_console.print(str(error), style="red", markup=False, highlight=False)
            raise typer.Exit(2) from None
        with Progress(TextColumn("replaying"), BarColumn(), TextColumn("{task.completed:,} events"),
                      TimeElapsedColumn(), console=console, transient=True) as progress:
            task = progress.add_task("replay", total=None)
            # budgets outermost: they append their alerts to alerts.jsonl once the detectors closed it
            lateness_s = int(lateness_hours * 3600)
            with ReplayBudgets(out, allocator, budget_config, lateness_s=lateness_s) as stage, \
                    ReplayDetectors(out) as detectors:

                def on_costs(records: list[CostRecord]) -> None:
                    detectors.feed(records)
                    stage.feed(records)

                summary = run_replay(items, pricer, out, progress=lambda n: progress.advance(task, n),
                                     on_costs=on_costs)
        (out / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
        table = Table(title=f"replay of {file} (catalog {pricer.catalog.version})")
        table.add_column("figure")
        table.add_column("value", justify="right")
        for name, value in (
            ("events read", f"{summary.events_read:,}"),
            ("events priced", f"{summary.events_priced:,}"),
            ("duplicates skipped", f"{summary.duplicates:,}"),
            ("rejected", f"{summary.rejected:,}"),
            ("charges", f"{summary.charges:,}"),
            ("unpriced charges", f"{summary.unpriced_charges:,}"),
            ("ListCost USD", f"{summary.list_cost_usd:,.6f}"),
            ("EffectiveCost USD", f"{summary.effective_cost_usd:,.6f}"),
            ("detector alerts (alerts.jsonl)", f"{detectors.alerts:,}"),
            ("budget alerts (alerts.jsonl)", f"{stage.alerts:,}"),
            ("burn records (burn.jsonl)", f"{stage.burn_records:,}"),
            ("spend windows (spend.jsonl)", f"{len(stage.spend.windows):,}"),
        ):
            table.add_row(name, value)
        for service, usd in sorted(summary.cost_by_service_usd.items()):
            table.add_row(f"  {service}", f"{usd:,.6f}")
        Console().print(table)
        for sku in summary.unpriced_skus:
            err_console.print(f"no price for {sku}", style="yellow", markup=False)
