"""``python -m bench.detectors``: what the detector stage costs per event, against parse + price.

The issue's budget: the detectors add at most 25% to the per-event cost. This harness times, in one
process and without Kafka, the three stages over the same simulated events (the eval's simulator
scenario: every incident kind, 6 nodes, 10 LLM requests a second): ``parse`` (JSON bytes to a validated
event), ``price`` (event to FOCUS cost records) and ``detectors`` (``DetectorRunner.feed``: buckets,
every detector step, ticks and expiry). Each stage runs over all events ``--repeat`` times and the
pass with the least CPU time counts (CPU time: other work on a shared machine stretches wall time).
It prints microseconds per event and the ratio ``detectors / (parse + price)``; ``--profile`` adds a
cProfile of one detector pass; ``--json FILE`` writes the figures.
"""

from __future__ import annotations

import cProfile
import json
import platform
import pstats
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from detectors.runner import DetectorRunner
from streams.commands.eval import scenario
from streams.core.catalog import default_catalog
from streams.core.events import EVENT_ADAPTER
from streams.core.pricing import Pricer
from streams.gc_tuning import YOUNG_THRESHOLD, tune_collector

BUDGET = 0.25
console = Console()

# The simulation and timing options of the in-process harnesses (this one and bench.feed)
Seed = Annotated[int, typer.Option(help="simulation seed")]
Duration = Annotated[float, typer.Option(help="simulated seconds")]
Nodes = Annotated[int, typer.Option(help="GPU nodes")]
Rate = Annotated[float, typer.Option(help="LLM requests per second")]
Repeat = Annotated[int, typer.Option(help="passes per stage; the fastest counts")]
JsonOut = Annotated[Path | None, typer.Option("--json", help="write the figures here")]
GcYoungThreshold = Annotated[int, typer.Option(
    min=0, help="the garbage collector's young threshold, as the worker sets it (0: Python's)")]


def prepared(
    seed: int, duration_s: float, nodes: int, rate: float, repeat: int, gc_young_threshold: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Return the simulated events and the run's setup, with the collector set as the worker sets it."""
    events = simulated_events(seed, duration_s, nodes, rate)
    tune_collector(gc_young_threshold)
    return events, {"seed": seed, "duration_s": duration_s, "nodes": nodes, "rate": rate, "repeat": repeat,
                    "gc_young_threshold": gc_young_threshold}


def simulated_events(seed: int, duration_s: float, nodes: int, rate: float) -> list[dict[str, Any]]:
    """Return the eval simulator's events (every incident kind at intensity 1), in time order."""
    return list(scenario(seed, 1.0, duration_s=duration_s, nodes=nodes, rate=rate).events())


def best_of(repeat: int, run: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``run`` ``repeat`` times; return the least CPU time of a pass and the last result.

    CPU time of this process, not wall time: on a shared machine other work stretches the wall clock.
    """
    best, result = float("inf"), None
    for _ in range(repeat):
        began = time.process_time()
        result = run()
        best = min(best, time.process_time() - began)
    return best, result


def measure(events: list[dict[str, Any]], repeat: int, profile: Path | None = None) -> dict[str, Any]:
    """Time parse, price and the detector stage over ``events``; return the per-event figures."""
    payloads = [json.dumps(e, separators=(",", ":")).encode() for e in events]
    pricer = Pricer(default_catalog())
    parse_s, parsed = best_of(repeat, lambda: [EVENT_ADAPTER.validate_json(p) for p in payloads])
    price_s, priced = best_of(repeat, lambda: [pricer.price(e) for e in parsed])
    extras = [
        (
            e.get("node"),
            {e["event_id"]: e["prompt_hash"]} if e.get("prompt_hash") else None,
        )
        for e in events
    ]

    def detect() -> DetectorRunner:
        runner = DetectorRunner()
        for records, (node, hashes) in zip(priced, extras, strict=True):
            runner.feed(records, node=node, prompt_hashes=hashes)
        runner.finish()
        return runner

    detect_s, runner = best_of(repeat, detect)
    if profile is not None:
        cProfile.runctx("detect()", globals(), {"detect": detect}, str(profile))
    n = len(events)
    per = {"parse": parse_s / n * 1e6, "price": price_s / n * 1e6, "detectors": detect_s / n * 1e6}
    return {
        "events": n,
        "records": sum(len(r) for r in priced),
        "findings": len(runner.findings),
        "us_per_event": {k: round(v, 2) for k, v in per.items()},
        "ratio_detectors_over_parse_price": round(per["detectors"] / (per["parse"] + per["price"]), 3),
        "budget": BUDGET,
    }


def main(
    seed: Seed = 7,
    duration: Duration = 3600.0,
    nodes: Nodes = 6,
    rate: Rate = 10.0,
    repeat: Repeat = 3,
    profile: Annotated[Path | None, typer.Option(help="write a cProfile of one detector pass here")] = None,
    json_out: JsonOut = None,
    gc_young_threshold: GcYoungThreshold = YOUNG_THRESHOLD,
) -> None:
    """Print µs per event of parse, price and the detector stage, and the detector ratio."""
    events, setup = prepared(seed, duration, nodes, rate, repeat, gc_young_threshold)
    result = measure(events, repeat, profile)
    result["setup"] = setup
    result["python"] = platform.python_version()
    table = Table(title=f"detector stage cost ({result['events']:,} events, {result['records']:,} records)")
    for column in ("stage", "µs / event"):
        table.add_column(column)
    for stage, value in result["us_per_event"].items():
        table.add_row(stage, f"{value:.1f}")
    ratio = result["ratio_detectors_over_parse_price"]
    table.add_row("detectors / (parse + price)", f"{ratio:.2f} (budget {BUDGET:.2f})")
    console.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if profile is not None:
        pstats.Stats(str(profile)).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    typer.run(main)
