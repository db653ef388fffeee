"""``python -m bench.feed``: the stream's detector path in process, Python and compiled feeds side by side.

The same simulated events as ``bench.detectors`` (every incident kind), parsed and priced in process,
then the path the stream runs on their cost records, stage by stage, as ``route_detector_inputs`` and
``detect_anomalies`` run it (runs of ``--run-records`` records, groups hashed to ``--partitions``
partitions, a tick whenever the ``Watermark`` moves):

- ``route``: ``route_runs``, each partition's inputs as one JSON message (``plain``: the kernel's
  packed LLM requests as their lists), and the
  ``Watermark`` (``latest_by_lane``), the router in ``price_usage``;
- ``decode``: each partition's messages read back (``from_json``), in ``detect_anomalies``;
- ``apply``: ``PartitionDetectors.apply`` (bucketing, every detector step, ticks, state documents);
- ``encode``: the table entries written as JSON, as ``BatchLoggedTable.put_batch`` does.

A worker that owns a group's partition applies its inputs in place (``BURNWATCH_DETECTORS_IN_PLACE``):
it skips the JSON and ``decode``; the stages here are the path through
the topic, which every input of another worker's partition still takes.

Each stage is timed in CPU seconds of this process, the fastest of ``--repeat`` passes, once with each
feed (``detector_kernel.load_feed``: ``python``, then ``compiled`` if the kernel is installed), and
printed per event with the ratio compiled / python, and the whole path over parse + price (the issue's
budget: 0.25). Only ``route`` runs other code in the two feeds; the other rows show the noise.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable
from typing import Annotated, Any

import typer
from pydantic_core import from_json, to_json
from rich.console import Console
from rich.table import Table

from bench.detectors import (
    BUDGET,
    Duration,
    GcYoungThreshold,
    JsonOut,
    Nodes,
    Rate,
    Repeat,
    Seed,
    best_of,
    prepared,
)
from streams.agents import ROUTE_RECORDS
from streams.core.catalog import default_catalog
from streams.core.detector_feed import PartitionDetectors, Watermark, plain, tick
from streams.core.detector_kernel import Feed, KernelMissing, load_feed
from streams.core.events import EVENT_ADAPTER
from streams.core.pricing import Pricer
from streams.gc_tuning import YOUNG_THRESHOLD
from streams.tables import encode_entries

STAGES = ("route", "decode", "apply", "encode")
console = Console()


SOURCE = "usage.llm:0"


def path_stages(
    feed: Feed, runs: list[list[dict[str, Any]]], partitions: int
) -> dict[str, Callable[[], Any]]:
    """Return the four stages as passes over ``runs``; each feeds on the last pass of the one before."""
    out: dict[str, Any] = {}

    def partition_of(key: str) -> int:
        return zlib.crc32(key.encode()) % partitions

    def route() -> None:
        watermark = Watermark(idle_source_s=0.0, lanes=feed.latest_by_lane)
        messages: list[list[list[bytes]]] = []
        first = 0  # one usage message per record, offsets running on across runs as in a partition
        for run in runs:
            sent: list[list[bytes]] = [[] for _ in range(partitions)]
            offsets = [(offset, 1) for offset in range(first, first + len(run))]
            first += len(run)
            lanes: dict[str, float] = {}
            for partition, items in feed.route_runs(run, partition_of, source=SOURCE, messages=offsets,
                                                    lanes=lanes).items():
                sent[partition].append(to_json(items, fallback=plain))
            event_time = watermark.observe(run, lanes=lanes)
            if event_time is not None:
                for partition in sent:
                    partition.append(to_json([tick(event_time)]))
            messages.append(sent)
        out["messages"] = messages

    def decode() -> None:
        out["items"] = [
            [[item for message in partition for item in from_json(message)] for partition in run]
            for run in out["messages"]
        ]

    def apply() -> None:
        detectors = [PartitionDetectors(partition, llm_bucketer=feed.llm_bucketer,
                                        idle_gpu_quiet=feed.idle_gpu_quiet)
                     for partition in range(partitions)]
        tables: list[dict[str, Any]] = [{} for _ in range(partitions)]
        entries = []
        for run in out["items"]:
            for partition, items in enumerate(run):
                table = tables[partition]
                done = detectors[partition].apply(items, lambda keys, t=table: [key in t for key in keys])
                table.update(done.entries)
                entries.append(done.entries)
        out["entries"] = entries

    def encode() -> None:  # as ``BatchLoggedTable.put_batch`` encodes a batch's entries
        for entries in out["entries"]:
            encode_entries(entries)

    return {"route": route, "decode": decode, "apply": apply, "encode": encode}


def measure(events: list[dict[str, Any]], repeat: int, run_records: int, partitions: int) -> dict[str, Any]:
    """Time parse + price once, then the path's stages with each feed; return µs per event."""
    payloads = [json.dumps(e, separators=(",", ":")).encode() for e in events]
    pricer = Pricer(default_catalog())
    parse_price_s, priced = best_of(
        repeat, lambda: [pricer.price(EVENT_ADAPTER.validate_json(p)) for p in payloads])
    records = [record for batch in priced for record in batch]
    runs = [records[i:i + run_records] for i in range(0, len(records), run_records)]
    feeds = [load_feed("python")]
    try:
        feeds.append(load_feed("compiled"))
    except KernelMissing as error:
        console.print(f"[yellow]{error}: the Python feed only[/yellow]", highlight=False)
    n = len(events)
    per: dict[str, dict[str, float]] = {feed.kind: {} for feed in feeds}
    for stage in STAGES:  # the feeds interleaved stage by stage, so drift hits both alike
        for feed in feeds:
            passes = path_stages(feed, runs, partitions)
            for before in STAGES[:STAGES.index(stage)]:
                passes[before]()
            seconds, _ = best_of(repeat, passes[stage])
            per[feed.kind][stage] = seconds / n * 1e6
    parse_price = parse_price_s / n * 1e6
    return {
        "events": n,
        "records": len(records),
        "parse_price_us_per_event": round(parse_price, 2),
        "us_per_event": {kind: {k: round(v, 2) for k, v in stages.items()} for kind, stages in per.items()},
        "path_over_parse_price": {
            kind: round(sum(stages.values()) / parse_price, 3) for kind, stages in per.items()},
        "budget": BUDGET,
    }


def main(
    seed: Seed = 7,
    duration: Duration = 1800.0,
    nodes: Nodes = 6,
    rate: Rate = 10.0,
    repeat: Repeat = 3,
    run_records: Annotated[int, typer.Option(
        help="records routed at once, as the stream's runs")] = ROUTE_RECORDS,
    partitions: Annotated[int, typer.Option(help="detector.inputs partitions")] = 6,
    json_out: JsonOut = None,
    gc_young_threshold: GcYoungThreshold = YOUNG_THRESHOLD,
) -> None:
    """Print µs per event of each stage of the detector path, Python and compiled side by side."""
    began = time.monotonic()
    events, setup = prepared(seed, duration, nodes, rate, repeat, gc_young_threshold)
    result = measure(events, repeat, run_records, partitions)
    result["setup"] = setup | {"run_records": run_records, "partitions": partitions}
    kinds = list(result["us_per_event"])
    table = Table(title=f"detector path in process ({result['events']:,} events, {result['records']:,} "
                        f"records; parse + price {result['parse_price_us_per_event']:.1f} µs / event)")
    table.add_column("stage")
    for kind in kinds:
        table.add_column(f"{kind} µs / event", justify="right")
    if len(kinds) == 2:
        table.add_column("compiled / python", justify="right")
    rows = [*STAGES, "path"]
    for stage in rows:
        values = [result["us_per_event"][kind].get(stage) if stage != "path"
                  else sum(result["us_per_event"][kind].values()) for kind in kinds]
        cells = [f"{value:.1f}" for value in values]
        if len(values) == 2:
            cells.append(f"{values[1] / values[0]:.2f}")
        table.add_row(stage, *cells)
    ratios = ", ".join(f"{kind} {value:.2f}" for kind, value in result["path_over_parse_price"].items())
    took = time.monotonic() - began
    table.caption = f"path / (parse + price): {ratios} (budget {BUDGET:.2f}); {took:.0f} s"
    console.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    typer.run(main)
