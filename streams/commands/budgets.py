"""``burnwatch budgets validate FILE``: check a budget file."""

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
budgets_app = typer.Typer(help="Check budget files.", no_args_is_help=True, add_completion=False)


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
