"""``python -m bench.in_place``: the detectors' in-place path over ``make bench``'s workload, in process.

``bench.run``'s ``detectors / worker`` is the issue's budget, but its phases move by 10-20% from one run
to the next on a shared machine, more than most single changes to the detector path. This harness
runs the same path without Kafka, so such a change shows: the workload ``bench.run`` produces (the
same builder, seed, pace and envelopes of ``--envelope-size`` events), parsed and priced once, then
per run (a usage partition's envelopes of at least ``--run-records`` records together, ``ROUTE_RECORDS``
as the pricing agent runs its stages) what a worker that owns every ``detector.inputs`` partition does with it
(``streams/detector_agents.py``, in place):

- ``route``: ``route_runs`` (``route``'s inputs, no JSON, each group's to its partition, the kernel's
  LLM requests kept as Rust values), and the
  ``Watermark`` (replay's clock: event time only), whose ticks go to every partition after the inputs;
- ``apply``: ``PartitionDetectors.apply`` per partition, with its lookups of seen inputs in the
  partition's RocksDB store (opened as the worker opens them: faust's options, the dedup horizon's TTL,
  no write-ahead log, ``streams/rocksdb_wal.py``);
- ``save``: the table entries written as ``BatchLoggedTable.put_batch`` writes them: encoded, stored in
  one RocksDB write, and made into the changelog message (not sent: Kafka is ``bench.run``'s).

Each pass starts from empty detectors and stores; the fastest of ``--repeat`` passes counts (CPU
time), and the figures are µs per event beside parse + price; ``--profile FILE`` adds a cProfile of
one more pass (what docs/detectors.md's breakdowns of the path come from). What the stream adds on top (the
changelog's send and compression, faust's work per step) is in ``bench.run`` only.

On a machine too noisy for CPU times, count instructions instead: ``valgrind --tool=callgrind python -m
bench.in_place --events 20000 --repeat 1`` minus the same with ``--repeat 0`` (the workload built and
priced, no pass) is the path's instructions over 20,000 events (docs/detectors.md, sixteenth round).
"""

from __future__ import annotations

import cProfile
import json
import pstats
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from faust.stores.rocksdb import RocksDBOptions
from rich.console import Console
from rich.table import Table

from bench.detectors import GcYoungThreshold, JsonOut, Repeat
from bench.run import DetectorKernel
from bench.workload import build_workload
from streams.agents import ROUTE_RECORDS
from streams.core.catalog import default_catalog
from streams.core.detector_feed import PartitionDetectors, Watermark, tick
from streams.core.detector_kernel import load_feed
from streams.core.events import parse_message
from streams.core.pricing import Pricer
from streams.gc_tuning import YOUNG_THRESHOLD, tune_collector
from streams.group_partitions import GroupPartitions
from streams.rocksdb_wal import open_unlogged
from streams.settings import Settings
from streams.tables import batch_message, encode_entries, stored_keys, write_entries

STAGES = ("route", "apply", "save")
console = Console()


@dataclass
class Run:
    """A run of one usage partition's envelopes, as the router gets it: their priced records, and each
    envelope's offset and record count (the stream's ``messages``)."""

    source: str
    messages: list[tuple[int, int]] = field(default_factory=list)
    records: list[Any] = field(default_factory=list)


def priced_runs(events: int, envelope_size: int, partitions: int, events_per_s: float, seed: int,
                run_records: int = ROUTE_RECORDS) -> tuple[list[Run], float]:
    """Build ``bench.run``'s workload and price it; return its runs and parse + price CPU seconds.

    A usage partition's envelopes join a run until it holds ``run_records`` records, as the pricing
    agent's stages take them (``streams/agents.py``); a run is routed when it is full, the partial ones last.
    """
    workload = build_workload(events, envelope_size=envelope_size, partitions=partitions, seed=seed,
                              events_per_s=events_per_s)
    pricer = Pricer(default_catalog())
    offsets: dict[str, int] = {}
    filling: dict[str, Run] = {}
    runs: list[Run] = []
    began = time.process_time()
    for envelope in workload.envelopes:
        source = f"{envelope.topic}:{envelope.partition}"
        offset = offsets[source] = offsets.get(source, -1) + 1
        records = pricer.price_many(parse_message(envelope.value).events)
        run = filling.setdefault(source, Run(source))
        run.messages.append((offset, len(records)))
        run.records += records
        if len(run.records) >= run_records:
            runs.append(filling.pop(source))
    seconds = time.process_time() - began
    return runs + list(filling.values()), seconds


def one_pass(runs: list[Run], partitions: int, kernel: DetectorKernel = DetectorKernel.compiled
             ) -> dict[str, float]:
    """Run the in-place path over ``runs`` once from empty detectors.

    Return CPU seconds per stage, the inputs applied and the table entries written.
    """
    feed = load_feed(kernel.value)
    partition_of = GroupPartitions(partitions)
    watermark = Watermark(lanes=feed.latest_by_lane)
    detectors = [PartitionDetectors(p, llm_bucketer=feed.llm_bucketer, idle_gpu_quiet=feed.idle_gpu_quiet)
                 for p in range(partitions)]
    seconds = dict.fromkeys(STAGES, 0.0)
    applied = entries = 0
    with tempfile.TemporaryDirectory(prefix="burnwatch-in-place-") as work:
        options = RocksDBOptions(ttl=int(Settings().dedup_horizon_hours * 3600))
        stores = [open_unlogged(options, Path(work) / str(p)) for p in range(partitions)]  # as the worker
        for run in runs:
            began = time.process_time()
            lanes: dict[str, float] = {}
            local = feed.route_runs(run.records, partition_of, source=run.source, messages=run.messages,
                                    lanes=lanes)
            event_time = watermark.observe(run.records, lanes=lanes)
            if event_time is not None:
                for partition in range(partitions):
                    local.setdefault(partition, []).append(tick(event_time))
            routed_at = time.process_time()
            done = []
            for partition, items in local.items():
                db = stores[partition]
                step = detectors[partition].apply(items, lambda keys, db=db: stored_keys(db, keys))
                applied += step.applied
                done.append((db, step.entries))
            applied_at = time.process_time()
            for db, written in done:
                encoded = encode_entries(written)
                write_entries(db, encoded)
                batch_message(encoded)
                entries += len(written)
            saved_at = time.process_time()
            seconds["route"] += routed_at - began
            seconds["apply"] += applied_at - routed_at
            seconds["save"] += saved_at - applied_at
        for db in stores:
            db.close()
    return {**seconds, "applied": applied, "entries": entries}


def main(
    events: Annotated[int, typer.Option("--events", "-n", min=1, help="events of the workload")] = 200_000,
    envelope_size: Annotated[int, typer.Option(min=1, help="events per envelope (a usage message)")] = 1000,
    run_records: Annotated[int, typer.Option(
        min=1, help="records of a run (a usage partition's envelopes routed together)")] = ROUTE_RECORDS,
    partitions: Annotated[int, typer.Option(min=1, help="partitions of every topic")] = 6,
    events_per_s: Annotated[float, typer.Option(min=0.001, help="event-time pace, as bench.run")] = 24.0,
    seed: Annotated[int, typer.Option(help="workload seed")] = 7,
    repeat: Repeat = 3,
    kernel: Annotated[DetectorKernel, typer.Option(help="the detector feed")] = DetectorKernel.compiled,
    json_out: JsonOut = None,
    gc_young_threshold: GcYoungThreshold = YOUNG_THRESHOLD,
    profile: Annotated[Path | None, typer.Option(
        help="write a cProfile of one more pass here, and print its top functions")] = None,
) -> None:
    """Print µs per event of the in-place detector path's stages, beside parse + price."""
    runs, pricing_s = priced_runs(events, envelope_size, partitions, events_per_s, seed, run_records)
    tune_collector(gc_young_threshold)
    if repeat <= 0:  # the baseline of an instruction count: the same process with no pass (module docs)
        console.print(f"{events:,} events built and priced ({pricing_s / events * 1e6:.2f} µs per event); "
                      "no pass")
        return
    passes = [one_pass(runs, partitions, kernel) for _ in range(repeat)]
    best = passes[-1] | {stage: min(figures[stage] for figures in passes) for stage in STAGES}
    per = {stage: best[stage] / events * 1e6 for stage in STAGES}
    result = {
        "events": events, "envelope_size": envelope_size, "run_records": run_records, "runs": len(runs),
        "partitions": partitions, "kernel": kernel.value,
        "pricing_us_per_event": round(pricing_s / events * 1e6, 2),
        "us_per_event": {stage: round(value, 2) for stage, value in per.items()},
        "path_us_per_event": round(sum(per.values()), 2),
        "inputs_applied_per_event": round(best["applied"] / events, 3),
        "entries_per_event": round(best["entries"] / events, 3),
    }
    table = Table(title=f"in-place detector path ({events:,} events, envelopes of {envelope_size:,}, "
                        f"{len(runs):,} runs of up to {run_records:,} records, {kernel.value} feed)")
    table.add_column("stage")
    table.add_column("µs / event", justify="right")
    for stage, value in per.items():
        table.add_row(stage, f"{value:.2f}")
    table.add_row("[bold]path", f"[bold]{result['path_us_per_event']:.2f}")
    table.add_row("parse + price (once)", f"{result['pricing_us_per_event']:.2f}")
    table.caption = (f"{result['inputs_applied_per_event']} inputs applied and "
                     f"{result['entries_per_event']} table entries per event")
    console.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if profile is not None:  # after the timed passes: the profiler's own cost is in none of them
        cProfile.runctx("one_pass(runs, partitions, kernel)", globals(),
                        {"runs": runs, "partitions": partitions, "kernel": kernel}, str(profile))
        pstats.Stats(str(profile)).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    typer.run(main)
