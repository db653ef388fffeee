"""``burnwatch spend``: hourly or daily spend by any scope, from ``spend.windows`` or replay's spend.jsonl."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()


class Period(str, Enum):
    """The window sizes the spend tables keep."""

    hour = "hour"
    day = "day"


def spend(
    by: Annotated[str, typer.Option("--by", help="Scope: team, project, app, model, business_unit, ..., "
                                                 "project/env, workload or total.")] = "team",
    period: Annotated[Period, typer.Option("--period", help="Window size.")] = Period.day,
    last: Annotated[int, typer.Option("--last", min=1, help="How many of the newest windows.")] = 7,
    file: Annotated[Path | None, typer.Option(
        "--file", exists=True, dir_okay=False,
        help="Read a replay's spend.jsonl instead of the spend.windows topic.")] = None,
    units: Annotated[bool, typer.Option("--units", help="Also print unit economics (day windows of "
                                                        "team and total).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Idle seconds that end the read.")] = 3.0,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")] = None,
) -> None:
    """Show spend per window for one scope: exact sums by event time, late corrections beside them."""
    from streams.commands.common import load_settings
    from streams.core.allocation import load_allocation
    from streams.core.spend_report import spend_rows

    settings = load_settings(config)
    if file is not None:
        records: list[Any] = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    else:
        from streams.commands.tail import follow
        from streams.names import SPEND_WINDOWS

        topic = settings.topic(SPEND_WINDOWS)
        records = list(follow(settings, topic, from_beginning=True, timeout_s=timeout))
    shared = load_allocation(settings.allocation_path).shared_costs
    rows = spend_rows(records, by=by, period=period.value, last=last, shared_costs=shared)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    _print_rows(rows, by, period.value, units)


def _print_rows(rows: list[dict[str, Any]], by: str, period: str, units: bool) -> None:
    table = Table(title=f"spend by {by}, per {period} (UTC, event time)", title_justify="left")
    for column in ("window", by, "USD", "list USD", "events", "tagged %", "state"):
        table.add_column(column, justify="left" if column in ("window", by, "state") else "right")
    for r in rows:
        state = "correction" if r["kind"] == "correction" else ("closed" if r["closed"] else "open")
        tagged = "-" if r["tag_compliance"] is None else f"{100 * r['tag_compliance']:.1f}"
        table.add_row(r["window_start"][:16].replace("T", " "), r["value"], f"{r['usd']:,.6f}",
                      f"{r['list_usd']:,.6f}", f"{r['events']:,}", tagged,
                      f"[yellow]{state}[/]" if state == "correction" else state)
    console.print(table)
    for r in rows:
        for split in r.get("shared", []):
            shares = ", ".join(f"{k} {v:,.4f}" for k, v in sorted(split["shares_usd"].items()))
            console.print(f"{r['window_start'][:10]} shared {split['rule']} ({split['mode']}, "
                          f"{split['method']}): {split['amount_usd']:,.4f} USD -> {shares}")
        for offender in r.get("unallocated_resources", [])[:5]:
            console.print(f"{r['window_start'][:10]} missing {'+'.join(offender['missing'])}: "
                          f"{offender['resource_id']} ({offender['source_type']}) "
                          f"{offender['unallocated_usd']:,.4f} USD", highlight=False)
        ue = r.get("unit_economics")
        if units and ue:
            per_1k = _fmt(ue["tokens"]["usd_per_1k_tokens"])
            console.print(
                f"{r['window_start'][:10]} {r['value']}: USD/1K tokens {per_1k}, "
                f"USD/job {_fmt(ue['jobs']['usd_per_job'])} ({ue['jobs']['count']} jobs), "
                f"USD/active user {_fmt(ue['users']['usd_per_active_user'])} ({ue['users']['active']} users)")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.6f}"


def register(app: typer.Typer) -> None:
    """Add the ``spend`` command."""
    app.command("spend")(spend)
