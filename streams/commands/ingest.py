"""``burnwatch ingest FILE``: validate usage events from a file and produce the valid ones to Kafka."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from streams.commands.common import CONFIG_OPTION, err_console, load_settings
from streams.core.event_files import FORMATS, Item, ReadError, Record, read_path
from streams.core.events import Event, parse_message

console = Console()
SHOWN_REJECTS = 20
READ_ERROR_REASON = "unparseable"


@dataclass(frozen=True, slots=True)
class Reject:
    """One input element that was not accepted: where it was, the reason code and the detail."""

    where: str
    reason: str
    detail: str


@dataclass(slots=True)
class Checked:
    """The valid events of one chunk of input and its rejects."""

    events: list[Event] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


def validate_chunk(items: list[Item]) -> Checked:
    """Validate records the way the stream's parser does (``parse_message`` on one batch envelope)."""
    checked = Checked()
    records: list[Record] = []
    positions: list[int] = []
    rejects: list[tuple[int, Reject]] = []
    for position, item in enumerate(items):
        if isinstance(item, ReadError):
            rejects.append((position, Reject(item.where, READ_ERROR_REASON, item.detail)))
        else:
            records.append(item)
            positions.append(position)
    if records:
        payload = json.dumps([r.event for r in records], separators=(",", ":"), default=str).encode()
        parsed = parse_message(payload, max_bytes=len(payload) + 1, max_events=len(records))
        checked.events = parsed.events
        for rejection in parsed.rejections:
            index = rejection.index if rejection.index is not None else 0
            reject = Reject(records[index].where, rejection.reason, rejection.detail)
            rejects.append((positions[index], reject))
    checked.rejects = [reject for _, reject in sorted(rejects, key=lambda pair: pair[0])]
    return checked


def checked_chunks(items: Iterable[Item], size: int) -> Iterator[Checked]:
    """Validate ``items`` in chunks of ``size``, in input order."""
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield validate_chunk(chunk)
            chunk = []
    if chunk:
        yield validate_chunk(chunk)


def _summary(counts: Counter[str], rejected: Counter[str], sent: int) -> Table:
    table = Table(title="ingest", show_header=True)
    table.add_column("outcome")
    table.add_column("events", justify="right")
    for kind, n in sorted(counts.items()):
        table.add_row(f"valid {kind}", f"{n:,}")
    table.add_row("sent", f"{sent:,}")
    for reason, n in sorted(rejected.items()):
        table.add_row(f"rejected: {reason}", f"{n:,}", style="red")
    return table


def register(app: typer.Typer) -> None:
    """Add the ``ingest`` command."""

    @app.command()
    def ingest(
        file: str = typer.Argument(..., help="File of events (JSON lines, JSON or CSV), or - for stdin."),
        batch_size: int = typer.Option(1000, min=1, help="Events per Kafka message (batch envelope)."),
        fmt: str | None = typer.Option(
            None, "--format", help=f"One of {', '.join(FORMATS)}; default: from the extension or content."
        ),
        dry_run: bool = typer.Option(False, "--dry-run", help="Validate and report only; send nothing."),
        config: Path | None = CONFIG_OPTION,
    ) -> None:
        """Validate events from a file; produce the valid ones to their topics, report the invalid ones.

        Exits 1 if any event was rejected or not delivered (the valid ones are still sent).
        """
        if fmt is not None and fmt not in FORMATS:
            err_console.print(f"ingest: --format must be one of {', '.join(FORMATS)}", style="red")
            raise typer.Exit(2)
        try:
            items = read_path(file, fmt)
        except OSError as error:
            err_console.print(f"ingest: cannot read {file}: {error.strerror or error}", style="red",
                              markup=False, highlight=False)
            raise typer.Exit(2) from None
        failed = _run(items, batch_size, dry_run, config)
        raise typer.Exit(1 if failed else 0)


def _run(items: Iterator[Item], batch_size: int, dry_run: bool, config: Path | None) -> bool:
    from streams.producer import EventProducer, ProducerError

    producer: EventProducer | None = None
    counts: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    shown: list[Reject] = []
    problem = ""
    progress = Progress(SpinnerColumn(), TextColumn("{task.fields[n]:,} events read"), TimeElapsedColumn(),
                        console=err_console, transient=True)
    try:
        with progress:
            task = progress.add_task("ingest", n=0)
            for checked in checked_chunks(items, batch_size):
                for reject in checked.rejects:
                    rejected[reject.reason] += 1
                    if len(shown) < SHOWN_REJECTS:
                        shown.append(reject)
                for event in checked.events:
                    counts[event.type] += 1
                if checked.events and not dry_run:
                    if producer is None:
                        producer = EventProducer(load_settings(config), batch_size=batch_size)
                    producer.send(checked.events)
                progress.update(task, n=sum(counts.values()) + sum(rejected.values()))
        if producer is not None:
            producer.flush()
    except ProducerError as error:
        problem = str(error)
    sent = producer.delivered if producer is not None else 0
    console.print(_summary(counts, rejected, sent))
    for reject in shown:
        console.print(f"  {reject.where}: {reject.reason}: {reject.detail}", markup=False, highlight=False)
    if sum(rejected.values()) > len(shown):
        console.print(f"  ... and {sum(rejected.values()) - len(shown):,} more rejects")
    if problem:
        err_console.print(f"ingest: {problem}", style="red", markup=False, highlight=False)
    if dry_run:
        console.print("dry run: nothing sent")
    return bool(problem or rejected)
