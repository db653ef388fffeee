"""``burnwatch budgets``: the live burn of every budget (from ``budget.burn``), and ``validate FILE``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from streams.core.budgets import BudgetError, load_budgets

console = Console()
err_console = Console(stderr=True)
budgets_app = typer.Typer(
    help="Show the live burn of every budget, or check a budget file.", add_completion=False
)
STATUS_STYLE = {"ok": "green", "warning": "yellow", "critical": "red", "exceeded": "bold red"}


@budgets_app.callback(invoke_without_command=True)
def show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the latest records as JSON.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Idle seconds that end the read.")] = 3.0,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")] = None,
) -> None:
    """Show the latest burn record of every budget, read from the compacted budget.burn topic."""
    if ctx.invoked_subcommand is not None:
        return
    from streams.commands.common import load_settings
    from streams.commands.tail import follow
    from streams.names import BUDGET_BURN

    settings = load_settings(config)
    latest: dict[str, dict[str, object]] = {}
    for record in follow(settings, settings.topic(BUDGET_BURN), from_beginning=True, timeout_s=timeout):
        latest[str(record["budget_id"])] = record
    if as_json:
        typer.echo(json.dumps(sorted(latest.values(), key=lambda r: str(r["budget_id"])), indent=2))
        return
    table = Table(title=f"{len(latest)} budgets", title_justify="left")
    for column in ("budget", "period", "spent USD", "spent %", "USD/h", "forecast USD", "forecast %",
                   "exhaustion", "status"):
        table.add_column(column, justify="left" if column in ("budget", "period", "status") else "right")
    for budget_id, r in sorted(latest.items()):
        status = str(r["status"])
        table.add_row(
            budget_id, str(r["period"]), f"{r['spent_usd']:,.2f}", f"{r['spent_pct']:.1f}",
            f"{r['burn_rate_usd_per_hour']:,.2f}", f"{r['forecast_usd']:,.2f}", f"{r['forecast_pct']:.1f}",
            str(r["exhaustion_at"] or "-"), f"[{STATUS_STYLE.get(status, '')}]{status}[/]",
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the ``budgets`` command group."""
    app.add_typer(budgets_app, name="budgets")


@budgets_app.command("validate")
def validate(
    file: Annotated[Path, typer.Argument(help="Budget YAML file (format in docs/budgets.md).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the validated budgets as JSON.")] = False,
) -> None:
    """Check a budget file; print its budgets, or every problem with its key path and exit 1."""
    try:
        config = load_budgets(file)
    except BudgetError as error:
        err_console.print(str(error), style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(config.model_dump(mode="json"), indent=2))
        return
    table = Table(title=f"{file}: {len(config.budgets)} budgets (burn every {config.burn_interval_s:g} s)",
                  title_justify="left")
    for column in ("id", "scope", "period", "time zone", "USD", "thresholds %", "forecast %"):
        table.add_column(column, justify="right" if column == "USD" else "left")
    for b in config.budgets:
        scope = ", ".join(f"{k}={v}" for k, v in b.scope.items()) or "(everything)"
        table.add_row(b.id, scope, b.period, b.timezone, f"{b.amount_usd:,.2f}",
                      " ".join(f"{t:g}" for t in b.thresholds_pct),
                      " ".join(f"{t:g}" for t in b.forecast_thresholds_pct))
    console.print(table)
    console.print("[green]valid[/green]")
