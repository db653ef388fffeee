"""``burnwatch tail TOPIC``: follow a burnwatch topic, one record per line or as a live summary."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from streams.commands.common import CONFIG_OPTION, load_settings
from streams.settings import Settings

console = Console()


def records_of(value: bytes) -> list[Any]:
    """Split one message value into records (batch envelopes are JSON arrays)."""
    doc = json.loads(value)
    return doc if isinstance(doc, list) else [doc]


def follow(settings: Settings, topic: str, *, from_beginning: bool, timeout_s: float | None) -> Iterator[Any]:
    """Yield the records of ``topic``; stop after ``timeout_s`` seconds without a message."""
    from confluent_kafka import Consumer, KafkaException

    conf = settings.librdkafka_config() | {
        "group.id": f"burnwatch-tail-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "isolation.level": "read_committed",
    }
    consumer = Consumer(conf)
    consumer.subscribe([topic])
    idle_since = time.monotonic()
    try:
        while timeout_s is None or time.monotonic() - idle_since < timeout_s:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().fatal():
                    raise KafkaException(message.error())
                continue
            idle_since = time.monotonic()
            try:
                yield from records_of(message.value() or b"null")
            except ValueError:
                yield {"undecodable": (message.value() or b"")[:200].decode(errors="replace")}
    finally:
        consumer.close()


def _cost_summary(totals: dict[tuple[str, str], list[float]], started: float) -> Table:
    table = Table(title="priced spend (EffectiveCost, USD)")
    for column in ("team", "service", "charges", "cost_usd", "usd_per_hour_of_data"):
        table.add_column(column, justify="right" if column not in ("team", "service") else "left")
    for (team, service), (charges, cost, hours) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
        rate = cost / hours if hours else 0.0
        table.add_row(team, service, f"{charges:,.0f}", f"{cost:,.6f}", f"{rate:,.2f}")
    grand = sum(v[1] for v in totals.values())
    table.caption = f"total {grand:,.6f} USD over {time.monotonic() - started:,.0f} s"
    return table


def summarize_costs(records: Iterator[dict[str, Any]]) -> None:
    """Show a live table of priced spend by team and service."""
    totals: dict[tuple[str, str], list[float]] = {}
    first_seen: dict[tuple[str, str], str] = {}
    last_seen: dict[tuple[str, str], str] = {}
    started = time.monotonic()
    refreshed = 0.0
    with Live(_cost_summary(totals, started), console=console, refresh_per_second=2) as live:
        for record in records:
            key = (record.get("x_Team") or "unallocated", record.get("ServiceCategory", "?"))
            entry = totals.setdefault(key, [0, 0.0, 0.0])
            entry[0] += 1
            entry[1] += float(record.get("EffectiveCost", 0.0))
            start = record.get("ChargePeriodStart", "")
            first_seen.setdefault(key, start)
            last_seen[key] = max(last_seen.get(key, start), start)
            entry[2] = _hours_between(first_seen[key], last_seen[key])
            if time.monotonic() - refreshed > 0.5:
                live.update(_cost_summary(totals, started))
                refreshed = time.monotonic()
        live.update(_cost_summary(totals, started))


def _hours_between(start: str, end: str) -> float:
    from datetime import datetime

    try:
        delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    except ValueError:
        return 0.0
    return delta.total_seconds() / 3600


SEVERITY_STYLE = {"critical": "bold red", "error": "red", "warning": "yellow", "info": "cyan"}


def alert_line(alert: dict[str, Any]) -> str:
    """Render an alert record as one console line: status, severity, kind, entity, summary, dollars.

    The entity's ``key=value`` pairs are shown unless the summary already names their value (a
    budget's id), so alerts of the same kind on three GPUs of a node tell themselves apart.

    >>> from rich.text import Text
    >>> line = alert_line({"status": "firing", "severity": "warning", "kind": "idle_gpu",
    ...     "entity": {"gpu": "GPU-3", "node": "gpu-01"}, "summary": "GPU idle [15 min]",
    ...     "cost_impact_usd": 3.07, "detected_at": "2026-11-29T23:28:00Z"})
    >>> for part in Text.from_markup(line).plain.split("  ("):
    ...     print(part)
    FIRING   warning  idle_gpu         gpu=GPU-3 node=gpu-01: GPU idle [15 min]
    impact $3.07, at 2026-11-29T23:28:00Z)
    >>> Text.from_markup(alert_line({"status": "resolved", "kind": "budget_threshold",
    ...     "entity": {"budget": "search-daily"}, "summary": "Budget search-daily: 80% spent"})).plain
    'RESOLVED          budget_threshold Budget search-daily: 80% spent  (impact $0.00, at )'
    """
    status = "RESOLVED" if alert.get("status") == "resolved" else "FIRING"
    style = "green" if status == "RESOLVED" else SEVERITY_STYLE.get(str(alert.get("severity")), "")
    impact = float(alert.get("cost_impact_usd") or 0.0)
    summary = str(alert.get("summary", ""))
    entity = alert.get("entity") if isinstance(alert.get("entity"), dict) else {}
    named = " ".join(f"{key}={value}" for key, value in entity.items() if str(value) not in summary)
    return (f"[{style}]{status:8} {alert.get('severity', ''):8}[/] {alert.get('kind', ''):16} "
            f"{escape(named + ': ' if named else '')}{escape(summary)}  "
            f"[dim](impact ${impact:,.2f}, at {alert.get('detected_at', '')})[/]")


def register(app: typer.Typer) -> None:
    """Add the ``tail`` command."""

    @app.command()
    def tail(
        topic: str = typer.Argument(..., help="Topic name without prefix, e.g. costs.priced or usage.dlq."),
        as_json: bool = typer.Option(False, "--json", help="Print each record as one JSON line."),
        summary: bool = typer.Option(False, "--summary", help="costs.priced: a live spend table instead."),
        from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at the oldest record."),
        timeout: float | None = typer.Option(None, "--timeout", help="Stop after this many idle seconds."),
        config: Path | None = CONFIG_OPTION,
    ) -> None:
        """Follow a topic and print its records (batch envelopes are split into records)."""
        settings = load_settings(config)
        records = follow(settings, settings.topic(topic), from_beginning=from_beginning, timeout_s=timeout)
        try:
            if summary:
                summarize_costs(records)
                return
            for record in records:
                if as_json:
                    typer.echo(json.dumps(record, separators=(",", ":")))
                elif isinstance(record, dict) and "fingerprint" in record and "summary" in record:
                    console.print(alert_line(record), highlight=False)
                else:
                    console.print_json(data=record)
        except KeyboardInterrupt:
            pass
