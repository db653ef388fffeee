"""``burnwatch simulate``: synthetic GPU, LLM and storage traffic with injected incidents."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from streams.commands.common import CONFIG_OPTION, err_console, load_settings
from streams.core.simulation import INCIDENT_KINDS, Simulation, SimulationConfig, parse_incidents

CHUNK_EVENTS = 1000
MIN_SLEEP_S = 0.02
TRUTH_OPTION = typer.Option(None, "--truth", help="Write the incidents' ground truth (JSON) here.")


def parse_start(text: str | None) -> datetime:
    """Parse ``--start`` (ISO 8601; no offset means UTC); ``None`` is now."""
    if text is None:
        return datetime.now(UTC)
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def paced(
    timed: Iterable[tuple[float, dict[str, Any]]], speed: float, before_sleep: Callable[[float], None]
) -> Iterator[tuple[float, dict[str, Any]]]:
    """Yield ``(offset_s, event)`` no sooner than simulated time allows at ``speed`` times wall time.

    ``before_sleep(offset_s)`` runs before each pause, so the caller can send what it holds instead
    of keeping it back while idle. ``speed <= 0`` never waits.
    """
    began = time.monotonic()
    for offset, event in timed:
        if speed > 0:
            delay = began + offset / speed - time.monotonic()
            if delay > MIN_SLEEP_S:
                before_sleep(offset)
                time.sleep(max(0.0, began + offset / speed - time.monotonic()))
        yield offset, event


def _progress(duration: float) -> Progress:
    return Progress(
        TextColumn("[bold]simulating[/bold]"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} sim s"),
        TextColumn("{task.fields[events]:,} events"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command."""

    @app.command()
    def simulate(
        nodes: int = typer.Option(4, min=0, help="GPU nodes (8 GPUs each; g5.12xlarge has 4)."),
        rate: float = typer.Option(20.0, min=0, help="LLM requests per simulated second."),
        speed: float = typer.Option(
            60.0, min=0, help="Simulated seconds per wall-clock second when producing (0: no pacing)."
        ),
        duration: float = typer.Option(3600.0, min=1, help="Simulated seconds to run."),
        seed: int = typer.Option(7, help="Random seed: the same seed and start give the same events."),
        incidents: str = typer.Option(
            "all",
            help=f"all | none | comma list of kind[:offset_s:duration_s[:intensity[:entity]]]; "
            f"kinds: {', '.join(INCIDENT_KINDS)}.",
        ),
        start: str | None = typer.Option(
            None, help="Simulated start, ISO 8601 (no offset = UTC); default now."
        ),
        dry_run: bool = typer.Option(
            False, "--dry-run", help="Print JSON lines to stdout (unpaced) instead of producing to Kafka."
        ),
        truth: Path | None = TRUTH_OPTION,
        batch_size: int = typer.Option(1000, min=1, help="Events per Kafka message (batch envelope)."),
        config: Path | None = CONFIG_OPTION,
    ) -> None:
        """Generate realistic usage traffic with injected incidents, into Kafka or as JSON lines."""
        try:
            specs = parse_incidents(incidents, duration)
            sim_config = SimulationConfig(
                start=parse_start(start), duration_s=duration, seed=seed, nodes=nodes, rate=rate,
                incidents=specs,
            )
            sim = Simulation(sim_config)
        except ValueError as error:
            err_console.print(f"simulate: {error}", style="red", markup=False, highlight=False)
            raise typer.Exit(2) from None
        if truth is not None:
            truth.write_text(json.dumps(sim.truth_document(), indent=2) + "\n", encoding="utf-8")
        if dry_run:
            write = sys.stdout.write
            for event in sim.events():
                write(json.dumps(event, separators=(",", ":")) + "\n")
            return
        _produce(sim, speed, batch_size, config)


def _produce(sim: Simulation, speed: float, batch_size: int, config: Path | None) -> None:
    from streams.producer import EventProducer, ProducerError

    settings = load_settings(config)
    counts: Counter[str] = Counter()
    interrupted = False
    try:
        producer = EventProducer(settings, batch_size=batch_size)
        with _progress(sim.config.duration_s) as progress:
            task = progress.add_task("simulate", total=sim.config.duration_s, events=0)
            chunk: list[dict[str, Any]] = []

            def send(offset: float, *, now: bool = False) -> None:
                producer.send(chunk)
                chunk.clear()
                if now:
                    producer.emit_pending()
                progress.update(task, completed=offset, events=sum(counts.values()))

            try:
                for offset, event in paced(sim.timed_events(), speed, lambda at: send(at, now=True)):
                    chunk.append(event)
                    counts[event["type"]] += 1
                    if len(chunk) >= CHUNK_EVENTS:
                        send(offset)
            except KeyboardInterrupt:
                interrupted = True
            send(sim.config.duration_s)
        producer.flush()
    except ProducerError as error:
        err_console.print(f"simulate: {error}", style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    parts = ", ".join(f"{n:,} {kind}" for kind, n in sorted(counts.items()))
    stopped = " (interrupted)" if interrupted else ""
    err_console.print(f"sent {producer.delivered:,} events{stopped}: {parts}", markup=False, highlight=False)
    if interrupted:
        raise typer.Exit(130)
