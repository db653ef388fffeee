"""``python -m bench.run``: priced events per second and produce-to-priced latency, worker against baseline.

One invocation builds the workload once, prices it in-process (no Kafka), then runs each phase on its
own fresh topic prefix: ``worker`` (``burnwatch worker`` as a subprocess, pricing only), ``detectors``
(the same worker with the anomaly detectors on) and ``baseline`` (the bare confluent-kafka loop of
``bench.baseline`` in a child process). In each, the same pre-serialized envelopes are produced and a
watcher process reads ``costs.priced`` (read_committed) until every event id has a priced record; the
``detectors`` phase then also waits until the worker has read all of ``costs.priced`` and
``detector.inputs`` (committed offsets at the end) before it reads the worker's CPU time. The ratio
``detectors / worker`` of CPU seconds per event is what the detectors add to the worker's per-event
cost. Results go to the terminal and to ``bench/results/bench-<UTC time>.json``.
"""

from __future__ import annotations

import cProfile
import importlib.metadata
import json
import multiprocessing as mp
import os
import platform
import pstats
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from array import array
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import Enum
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as EventFlag
from pathlib import Path
from typing import Annotated, Any

import typer
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka import libversion as librdkafka_version
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from bench.baseline import MAX_FETCH_BYTES, LoopStats, price_in_process, run_loop
from bench.sigterm import stop_group, unwind_on_sigterm
from bench.workload import Mix, Workload, build_workload, event_indices, summarize_latencies
from streams.admin import ensure_topics
from streams.commands.lag import wait_until_read
from streams.gc_tuning import YOUNG_THRESHOLD
from streams.names import COSTS_PRICED
from streams.settings import Settings

RESULTS_DIR = Path(__file__).resolve().parent / "results"
WORKER_PHASES = ("worker", "detectors")  # phases that run ``burnwatch worker``; the rest, the baseline loop
# the detectors phase ends once their event time is this close to the workload's end (a tick is sent
# every 5 s of event time; a GPU node's GPUs stand in for the node's lane, see Workload.final_event_time)
DETECTED_MARGIN_S = 60.0
REPO = Path(__file__).resolve().parents[1]
PROGRESS_EVERY_S = 1.0
HEALTH_TIMEOUT_S = 120.0
VERSIONED = ("faust-streaming", "aiokafka", "confluent-kafka", "pydantic", "pydantic-core", "rocksdict",
             "burnwatch-kernel")

console = Console(width=None if sys.stdout.isatty() else 120)  # piped output: do not wrap the table
spawn = mp.get_context("spawn")  # librdkafka clients do not survive fork


class Only(str, Enum):
    """Which Kafka phase to run."""

    worker = "worker"
    detectors = "detectors"
    baseline = "baseline"


class Sessions(str, Enum):
    """How the workload takes LLM requests from the simulator pool (``bench.workload.build_workload``)."""

    kept = "kept"
    drawn = "drawn"


class DetectorKernel(str, Enum):
    """Which ``route`` the detectors phase's worker runs (``BURNWATCH_DETECTOR_KERNEL``)."""

    compiled = "compiled"
    python = "python"


class PhaseFailed(RuntimeError):
    """A phase did not see every event priced in time, or its processor died."""


@dataclass(slots=True)
class PhaseResult:
    """One phase's figures; times are epoch seconds, rates events per second."""

    name: str
    events: int
    priced_events: int
    events_per_s: float
    wall_s: float
    produce_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_s: float | None
    events_per_cpu_s: float | None
    detail: dict[str, Any]


# --- the watcher: reads costs.priced in its own process --------------------------------------------


def watch_output(
    bootstrap: str, topic: str, events: int, timeout_s: float, ready: EventFlag, conn: Connection
) -> None:
    """Record when each event's first priced record arrives; send progress, then the receive times."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"bench-watch-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "max.partition.fetch.bytes": MAX_FETCH_BYTES,
        "fetch.max.bytes": 4 * MAX_FETCH_BYTES,
    })
    consumer.subscribe([topic], on_assign=lambda *_: ready.set())
    seen = bytearray(events)
    received = array("d", bytes(8 * events))
    count = 0
    deadline = time.time() + timeout_s
    next_report = 0.0
    try:
        while count < events and time.time() < deadline:
            messages = consumer.consume(500, timeout=0.2)
            now = time.time()
            for message in messages:
                if message.error():
                    continue
                for index in event_indices(message.value()):
                    if index < events and not seen[index]:
                        seen[index] = 1
                        received[index] = now
                        count += 1
            if now >= next_report:
                conn.send(("progress", count))
                next_report = now + PROGRESS_EVERY_S
    finally:
        consumer.close()
    conn.send(("done", count, received.tobytes()))


# --- producing ---------------------------------------------------------------------------------------


def produce_all(workload: Workload, settings: Settings, rate: float) -> tuple[array[float], float]:
    """Produce every envelope (paced to ``rate`` events/s if > 0); return send times and the flush end."""
    producer = Producer(settings.librdkafka_config() | {
        "client.id": f"{settings.app_id}-bench-producer",
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 20,
        "message.max.bytes": settings.max_message_bytes + 64 * 1024,
        "allow.auto.create.topics": False,
    })
    sent = array("d", bytes(8 * len(workload.envelopes)))
    began = time.time()
    produced_events = 0
    for number, item in enumerate(workload.envelopes):
        if rate > 0:
            wait = began + produced_events / rate - time.time()
            if wait > 0:
                time.sleep(wait)
        topic = settings.topic(item.topic)
        while True:
            sent[number] = time.time()
            try:
                producer.produce(topic, item.value, key=item.key, partition=item.partition)
                break
            except BufferError:
                producer.poll(0.1)
        produced_events += item.events
        producer.poll(0)
    remaining = producer.flush(120)
    if remaining:
        raise PhaseFailed(f"{remaining} envelope(s) not acknowledged by the broker within 120 s")
    return sent, time.time()


# --- the processors under test -----------------------------------------------------------------------


def stat_cpu(text: str) -> tuple[str, float]:
    """Return the command name and the user + system CPU seconds of a ``/proc/.../stat`` text.

    >>> name, seconds = stat_cpu("42 (rocksdb:low) S 1 42 42 0 -1 4194560 7 0 0 0 300 100 0 0 20 0 1 0")
    >>> name, seconds * os.sysconf("SC_CLK_TCK")
    ('rocksdb:low', 400.0)
    """
    name, rest = text.split(" (", 1)[1].rsplit(")", 1)
    fields = rest.split()
    return name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU seconds a process (all its threads) has used so far."""
    return stat_cpu(Path(f"/proc/{pid}/stat").read_text())[1]


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """Return the CPU seconds (user + system) a process's live threads have used, by kind of thread.

    ``main`` is the thread whose id is the process's (the worker's event loop: every stage of
    ``burnwatch_stage_cpu_seconds_total`` runs on it); ``rocksdb`` the stores' flush and compaction
    threads (named ``rocksdb:*``); ``other`` every other thread (faust's consumer thread with aiokafka's
    fetches and decoding, the web server's). A thread that has ended is in none (``cpu_seconds`` has it).

    >>> sorted(thread_cpu_seconds(os.getpid()))
    ['main', 'other', 'rocksdb']
    """
    out = {"main": 0.0, "rocksdb": 0.0, "other": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name, seconds = stat_cpu(task.joinpath("stat").read_text())
        except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
            continue
        kind = "main" if int(task.name) == pid else "rocksdb" if name.startswith("rocksdb") else "other"
        out[kind] += seconds
    return out


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WorkerProcess:
    """``burnwatch worker`` in its own process group, with its log in ``workdir``."""

    def __init__(
        self, settings: Settings, workdir: Path, profile: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.log_path = workdir / "worker.log"
        env = {key: value for key, value in os.environ.items() if not key.startswith("BURNWATCH_")}
        env |= {
            "BURNWATCH_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "BURNWATCH_TOPIC_PREFIX": settings.topic_prefix,
            "BURNWATCH_APP_ID": settings.app_id,
            "BURNWATCH_TOPIC_PARTITIONS": str(settings.topic_partitions),
            "BURNWATCH_DATA_DIR": str(workdir / "data"),
            "BURNWATCH_WEB_PORT": str(self.port),
            "BURNWATCH_WEB_HOST": "127.0.0.1",
            "BURNWATCH_LOG_LEVEL": "INFO",
            # the stages the phase's settings name, whatever the worker's defaults
            "BURNWATCH_DETECTORS_ENABLED": str(settings.detectors_enabled).lower(),
            "BURNWATCH_SPEND_TABLES": str(settings.spend_tables).lower(),
            "BURNWATCH_DETECTOR_KERNEL": settings.detector_kernel,
            "BURNWATCH_GC_YOUNG_THRESHOLD": str(settings.gc_young_threshold),
        } | (extra_env or {})
        # cProfile writes its file when the worker exits on SIGTERM (SystemExit).
        profiler = ["-m", "cProfile", "-o", str(profile.resolve())] if profile else []
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *profiler, "-m", "streams.cli", "worker"], env=env, stdout=log,
                stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True,
            )
        self.pid = self.proc.pid

    def wait_healthy(self) -> dict[str, Any]:
        """Wait until ``/health`` says ok with partitions assigned."""

        def check() -> dict[str, Any]:
            if self.proc.poll() is not None:
                raise PhaseFailed(f"worker exited {self.proc.returncode}:\n{self.log_tail()}")
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as response:
                body: dict[str, Any] = json.loads(response.read())
            if body.get("status") != "ok" or body.get("assigned_partitions", 0) < 1:
                raise ConnectionError(f"not ready: {body}")
            return body

        retrying = Retrying(retry=retry_if_exception_type(OSError), stop=stop_after_delay(HEALTH_TIMEOUT_S),
                            wait=wait_fixed(0.5), reraise=True)
        try:
            return retrying(check)
        except OSError as error:
            why = f"worker not healthy in {HEALTH_TIMEOUT_S:g}s ({error})"
            raise PhaseFailed(f"{why}:\n{self.log_tail()}") from None

    def scrape(self) -> list[Sample]:
        """Return every sample of the worker's ``/metrics`` (empty if unreachable)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return []
        return [sample for family in text_string_to_metric_families(text) for sample in family.samples]

    def metrics(self) -> tuple[dict[str, float], dict[str, float]]:
        """Return, from one scrape, the worker's ``burnwatch_*_total`` counters summed over labels and its
        CPU seconds by stage of its hot path (``burnwatch_stage_cpu_seconds``), with ``gc``: its garbage
        collector's passes (``burnwatch_gc_cpu_seconds``), within the stages and outside them; empty if
        unreachable."""
        totals: dict[str, float] = {}
        stages: dict[str, float] = {}
        for sample in self.scrape():
            if sample.name.startswith("burnwatch_") and sample.name.endswith("_total"):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
            if sample.name == "burnwatch_stage_cpu_seconds_total":
                stages[sample.labels["stage"]] = sample.value
            if sample.name == "burnwatch_gc_cpu_seconds_total":
                stages["gc"] = stages.get("gc", 0.0) + sample.value
        return totals, stages

    def detector_event_times(self) -> dict[str, float]:
        """Return the event time each detector partition of the worker has reached, by partition."""
        return {sample.labels["partition"]: sample.value for sample in self.scrape()
                if sample.name == "burnwatch_detector_event_time_seconds"}

    def alive(self) -> bool:
        """Return whether the worker is still running."""
        return self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        """Return the end of the worker's log."""
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """SIGTERM the worker's process group; SIGKILL it if it lingers."""
        stop_group(self.proc, timeout_s=90)


class BaselineProcess:
    """``bench.baseline.run_loop`` in a child process."""

    def __init__(self, settings: Settings) -> None:
        self.ready = spawn.Event()
        self.stopping = spawn.Event()
        self.receiver, sender = spawn.Pipe(duplex=False)
        self.proc = spawn.Process(target=run_loop, args=(settings, self.ready, self.stopping, sender),
                                  name="bench-baseline", daemon=True)
        self.proc.start()
        self.pid = self.proc.pid

    def wait_ready(self) -> None:
        """Wait until the loop's consumer has its partitions."""
        if not self.ready.wait(HEALTH_TIMEOUT_S):
            raise PhaseFailed(f"baseline loop got no partitions in {HEALTH_TIMEOUT_S:g}s")

    def alive(self) -> bool:
        """Return whether the loop is still running."""
        return self.proc.is_alive()

    def stop(self) -> LoopStats | None:
        """Stop the loop and return its stats."""
        self.stopping.set()
        stats = self.receiver.recv() if self.receiver.poll(60) else None
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.kill()
        return stats


# --- one phase ---------------------------------------------------------------------------------------


def phase_settings(
    bootstrap: str, partitions: int, name: str, spend_tables: bool = False, detector_kernel: str = "compiled",
    gc_young_threshold: int = YOUNG_THRESHOLD,
) -> Settings:
    """Return settings with a fresh topic prefix and app id, so no phase sees another's data.

    The worker runs the stages these settings name (``WorkerProcess``): ``worker`` pricing alone, as the
    baseline loop does, ``detectors`` with the detector stage too, and both with the spend tables when
    ``spend_tables`` (``--spend-tables``), the detector feed's ``route`` from ``detector_kernel``
    (``--detector-kernel``), its garbage collector's threshold from ``gc_young_threshold``
    (``--gc-young-threshold``). The lag a phase waits on counts only the topics its worker reads.
    """
    tag = f"{name}-{uuid.uuid4().hex[:8]}"
    return Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=f"bench-{tag}.", app_id=f"bench-{tag}",
                    topic_partitions=partitions, spend_tables=spend_tables,
                    detectors_enabled=name == "detectors", detector_kernel=detector_kernel,
                    gc_young_threshold=gc_young_threshold)


def delete_topics(settings: Settings) -> None:
    """Delete the phase's topics (its prefix, and the app's changelog and assignor topics)."""
    admin = AdminClient(settings.librdkafka_config() | {"log_level": 4})
    names = [name for name in admin.list_topics(timeout=15).topics
             if name.startswith(settings.topic_prefix) or name.startswith(settings.app_id)]
    for future in admin.delete_topics(names, operation_timeout=30).values() if names else ():
        try:
            future.result()
        except KafkaException as error:
            console.print(f"[yellow]could not delete a topic: {error}")


def run_phase(
    name: str, workload: Workload, settings: Settings, timeout_s: float, rate: float,
    worker_profile: Path | None = None,
) -> PhaseResult:
    """Start the processor and the watcher, produce the workload, and measure until all is priced.

    A worker phase whose worker reads more than the usage topics (the detectors, or the spend tables of
    ``--spend-tables``) is measured until it has read all of that too.
    """
    ensure_topics(settings)
    events = workload.events
    ready = spawn.Event()
    receiver, sender = spawn.Pipe(duplex=False)
    output_topic = settings.topic(COSTS_PRICED)
    watcher = spawn.Process(
        target=watch_output, name="bench-watcher", daemon=True,
        args=(settings.kafka_bootstrap_servers, output_topic, events, timeout_s, ready, sender),
    )
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    processor: WorkerProcess | BaselineProcess
    detail: dict[str, Any] = {"topic_prefix": settings.topic_prefix, "workdir": str(workdir)}
    watcher.start()
    if name in WORKER_PHASES:
        processor = WorkerProcess(settings, workdir, worker_profile)
    else:
        processor = BaselineProcess(settings)
    cpu_used: float | None = None
    try:
        with console.status(f"{name}: starting"):
            if isinstance(processor, WorkerProcess):
                detail["health"] = processor.wait_healthy()
            else:
                processor.wait_ready()
            if not ready.wait(HEALTH_TIMEOUT_S):
                raise PhaseFailed("the watcher got no partitions of costs.priced")
            cpu_before = cpu_seconds(processor.pid)
            threads_before = thread_cpu_seconds(processor.pid)
        with Progress(TextColumn(f"{name}: {{task.description}}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=True) as progress:
            task = progress.add_task("producing", total=events)
            sent, produced_at = produce_all(workload, settings, rate)
            progress.update(task, description="pricing")
            count, received = 0, array("d")
            while True:
                # The watcher reports every second, so check the processor on every turn, not on silence.
                if not processor.alive():
                    raise PhaseFailed(f"{name} processor died with {count:,}/{events:,} events priced")
                if not receiver.poll(5):
                    continue
                message = receiver.recv()
                count = message[1]
                progress.update(task, completed=count)
                if message[0] == "done":
                    received.frombytes(message[2])
                    break
            if isinstance(processor, WorkerProcess) and (settings.detectors_enabled or settings.spend_tables):
                stage = "detecting" if settings.detectors_enabled else "spend tables"
                progress.update(task, description=stage)
                detail["drained_after_priced_s"] = wait_drained(settings, timeout_s, processor)
            if isinstance(processor, WorkerProcess) and settings.detectors_enabled:
                detail["detected_after_priced_s"] = wait_detected(
                    processor, settings, workload.final_event_time - DETECTED_MARGIN_S, timeout_s)
                wait_drained(settings, timeout_s, processor)  # the state the last ticks saved, committed
        cpu_used = cpu_seconds(processor.pid) - cpu_before
        threads = thread_cpu_seconds(processor.pid)
        detail["thread_cpu_us_per_event"] = {
            kind: round((seconds - threads_before[kind]) / events * 1e6, 2)
            for kind, seconds in threads.items()}
        if isinstance(processor, WorkerProcess):
            detail["worker_metrics"], stage_cpu = processor.metrics()
            detail["stage_cpu_us_per_event"] = {
                stage: round(seconds / events * 1e6, 2) for stage, seconds in stage_cpu.items()}
    except BaseException:
        if isinstance(processor, WorkerProcess):
            console.print(f"[red]worker log ({processor.log_path}):[/]\n{processor.log_tail()}", markup=True)
        raise
    finally:
        stats = processor.stop()
        watcher.join(10)
        if watcher.is_alive():
            watcher.kill()
    if isinstance(stats, LoopStats):
        detail["loop"] = asdict(stats)
    if count < events:
        why = f"{name}: only {count:,} of {events:,} events were priced within {timeout_s:g}s"
        if isinstance(processor, WorkerProcess):
            why += f"\nworker log ({processor.log_path}):\n{processor.log_tail()}"
        raise PhaseFailed(why)
    if worker_profile is None:
        shutil.rmtree(workdir, ignore_errors=True)  # kept on failure or when profiling, for the worker's log
    first_sent = min(sent)
    envelope_of = workload.envelope_of
    latencies = [received[i] - sent[envelope_of[i]] for i in range(events)]
    wall = max(received) - first_sent
    return PhaseResult(
        name=name, events=events, priced_events=count, events_per_s=round(events / wall, 1),
        wall_s=round(wall, 3), produce_s=round(produced_at - first_sent, 3), **summarize_latencies(latencies),
        cpu_s=round(cpu_used, 2) if cpu_used else None,
        events_per_cpu_s=round(events / cpu_used, 1) if cpu_used else None, detail=detail,
    )


def wait_drained(settings: Settings, timeout_s: float, processor: WorkerProcess | BaselineProcess) -> float:
    """Wait until the worker has committed the end of every input topic; return the seconds it took."""
    began = time.monotonic()

    def still_running() -> None:
        if not processor.alive():
            raise PhaseFailed("the worker died before it read all of its input")

    _, read = wait_until_read(settings, "worker", timeout_s, check=still_running, poll_s=0.5)
    if not read:
        raise PhaseFailed(f"the worker's input was not all read within {timeout_s:g}s after pricing")
    return round(time.monotonic() - began, 1)


def wait_detected(processor: WorkerProcess, settings: Settings, target: float, timeout_s: float) -> float:
    """Wait until every detector partition's event time has reached ``target``; return the seconds it took.

    Reading ``detector.inputs`` to its end is not the end of the detectors' work: buckets close, and the
    LLM detectors judge them, only as event-time ticks arrive, and the router holds its first tick back
    for ``detectors_idle_lane_s`` after it starts (every reporter must have been heard from). A phase
    shorter than that would otherwise measure the bucketing without the judging.
    """
    began = time.monotonic()
    reached: dict[str, float] = {}
    while time.monotonic() - began < timeout_s:
        if not processor.alive():
            raise PhaseFailed("the worker died before its detectors reached the end of the workload")
        reached = processor.detector_event_times()
        if len(reached) == settings.topic_partitions and min(reached.values()) >= target:
            return round(time.monotonic() - began, 1)
        time.sleep(0.5)
    raise PhaseFailed(f"the detectors' event time did not reach {target:.0f} within {timeout_s:g}s "
                      f"(by partition: {reached})")


# --- reporting ---------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """Return what the figures depend on: cores, load, Python and library versions."""
    versions = {}
    for package in VERSIONED:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    versions["librdkafka"] = librdkafka_version()[0]
    return {
        "nproc": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()], "versions": versions,
    }


def detector_cost(results: dict[str, PhaseResult]) -> float | None:
    """Return the worker's CPU per event with the detectors over without them (1.25: they add 25%)."""
    worker, detectors = results.get("worker"), results.get("detectors")
    if worker is None or detectors is None or not worker.events_per_cpu_s or not detectors.events_per_cpu_s:
        return None
    return round(worker.events_per_cpu_s / detectors.events_per_cpu_s, 3)


def detector_costs(rounds: list[dict[str, PhaseResult]]) -> dict[str, Any] | None:
    """Return each round's ``detector_cost``, their median, and the rounds pooled (None: no round had both).

    On a shared machine one pair of phases moves by 10-30% from run to run; interleaved rounds
    (``--rounds``, the order reversed every other round) and their median are the figure to read.
    ``pooled`` is the detectors phases' mean CPU per event over the worker phases': the rounds weighed
    alike, however far one pair strays.

    >>> def phase(name, per_cpu_s):
    ...     return PhaseResult(name, 1, 1, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, per_cpu_s, {})
    >>> detector_costs([{"worker": phase("worker", 100.0), "detectors": phase("detectors", d)}
    ...                 for d in (50.0, 80.0, 70.0)])
    {'by_round': [2.0, 1.25, 1.429], 'median': 1.429, 'min': 1.25, 'max': 2.0, 'pooled': 1.56}
    >>> detector_costs([{"worker": phase("worker", 100.0)}]) is None
    True
    """
    priced = [(results, cost) for results in rounds if (cost := detector_cost(results)) is not None]
    if not priced:
        return None
    paired, costs = [results for results, _ in priced], [cost for _, cost in priced]
    per_event = {name: statistics.fmean(1 / (results[name].events_per_cpu_s or 1) for results in paired)
                 for name in ("worker", "detectors")}
    median = round(statistics.median(costs), 3)
    pooled = round(per_event["detectors"] / per_event["worker"], 3)
    return {"by_round": costs, "median": median, "min": min(costs), "max": max(costs), "pooled": pooled}


def phase_order(phases: list[str], number: int) -> list[str]:
    """Return the order of round ``number``'s phases (from 1): as given in odd rounds, reversed in even ones.

    A phase runs slower on a shared machine the later it comes, or the faster, as the machine's other load
    moves: in one order every round, that drift leans every round's ratio the same way. Alternated
    (worker, detectors; detectors, worker; ...), it leans half the rounds each way and the median cancels it.

    >>> [phase_order(["worker", "detectors"], number) for number in (1, 2, 3)]
    [['worker', 'detectors'], ['detectors', 'worker'], ['worker', 'detectors']]
    """
    return phases if number % 2 else phases[::-1]


def ratios(results: dict[str, PhaseResult]) -> dict[str, float]:
    """Return worker/baseline ratios of throughput and latency (when both phases ran)."""
    worker, baseline = results.get("worker"), results.get("baseline")
    if worker is None or baseline is None:
        return {}
    return {
        "events_per_s": round(worker.events_per_s / baseline.events_per_s, 3),
        "events_per_cpu_s": round(worker.events_per_cpu_s / baseline.events_per_cpu_s, 3)
        if worker.events_per_cpu_s and baseline.events_per_cpu_s else float("nan"),
        "p50": round(worker.p50_ms / baseline.p50_ms, 3) if baseline.p50_ms else float("nan"),
        "p99": round(worker.p99_ms / baseline.p99_ms, 3) if baseline.p99_ms else float("nan"),
    }


def print_table(rounds: list[dict[str, PhaseResult]], in_process: dict[str, Any]) -> None:
    """Print the figures side by side: each round's phases and ratios, then the median cost over rounds."""
    table = Table(title="burnwatch pricing benchmark", title_justify="left")
    for column in ("run", "events/s", "p50 ms", "p99 ms", "wall s", "produce s", "ev/cpu-s"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for number, results in enumerate(rounds, 1):
        tag = f" #{number}" if len(rounds) > 1 else ""
        for result in results.values():
            table.add_row(f"{result.name}{tag}", f"{result.events_per_s:,.0f}", f"{result.p50_ms:,.1f}",
                          f"{result.p99_ms:,.1f}", f"{result.wall_s:,.1f}", f"{result.produce_s:,.1f}",
                          f"{result.events_per_cpu_s:,.0f}" if result.events_per_cpu_s else "")
        if ratio := ratios(results):
            table.add_row(f"[bold]worker / baseline{tag}", f"[bold]{ratio['events_per_s']:.2f}",
                          f"{ratio['p50']:.2f}", f"{ratio['p99']:.2f}", "", "",
                          f"{ratio['events_per_cpu_s']:.2f}")
        if (cost := detector_cost(results)) is not None:
            table.add_row(f"[bold]detectors / worker{tag}", "", "", "", "", "", f"[bold]{cost:.2f}")
    costs = detector_costs(rounds)
    if costs is not None and len(costs["by_round"]) > 1:
        table.add_row(f"[bold]detectors / worker, median of {len(costs['by_round'])}", "", "", "", "", "",
                      f"[bold]{costs['median']:.2f}")
        table.add_row(f"detectors / worker, {len(costs['by_round'])} rounds pooled", "", "", "", "", "",
                      f"{costs['pooled']:.2f}")
    table.add_row("in-process (no Kafka)", f"{in_process['events_per_s']:,.0f}", "", "",
                  f"{in_process['seconds']:,.1f}", "", f"{in_process['events_per_cpu_s']:,.0f}")
    console.print(table)
    console.print(
        f"in-process split over {in_process['events']:,} events: parse+dedup {in_process['parse_s']:.1f}s, "
        f"price {in_process['price_s']:.1f}s, encode {in_process['encode_s']:.1f}s",
        highlight=False,
    )


def in_process_line(workload: Workload, limit: int, profile: bool) -> dict[str, Any]:
    """Price the first envelopes (at least ``limit`` events) with no Kafka; optionally print a profile."""
    values, total = [], 0
    for item in workload.envelopes:
        if total >= limit:
            break
        values.append(item.value)
        total += item.events
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    result = price_in_process(values)
    if profiler:
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(20)
    return result.to_dict()


def main(
    events: Annotated[int, typer.Option("--events", "-n", min=1, help="events to produce")] = 1_000_000,
    envelope_size: Annotated[int, typer.Option(min=1, help="events per batch envelope")] = 1000,
    partitions: Annotated[int, typer.Option(min=1, help="partitions of every topic")] = 6,
    timeout: Annotated[float, typer.Option(min=1, help="seconds a phase may take to price all")] = 1800.0,
    only: Annotated[list[Only] | None, typer.Option(help="run only this Kafka phase (repeatable)")] = None,
    rounds: Annotated[int, typer.Option(
        min=1, help="run the phases this many times, interleaved, the order reversed every other round "
        "(worker, detectors, baseline, baseline, detectors, worker, ...); the median of the rounds' "
        "detectors / worker is the figure to read on a shared machine")] = 2,
    rate: Annotated[float, typer.Option(min=0, help="pace production (events/s); 0: flat out")] = 0.0,
    inprocess_events: Annotated[int, typer.Option(min=1, help="events for the no-Kafka line")] = 200_000,
    profile: Annotated[bool, typer.Option(help="print a cProfile of the in-process line")] = False,
    worker_profile: Annotated[Path | None, typer.Option(help="cProfile the worker into this file")] = None,
    keep_topics: Annotated[bool, typer.Option(help="keep each phase's topics on the broker")] = False,
    seed: Annotated[int, typer.Option(help="workload seed")] = 7,
    events_per_s: Annotated[float, typer.Option(
        min=0.001, help="event-time pace of the workload (events per second of event time; 24 is the pace of "
        "the simulator pool the events are drawn from, so each entity runs at its own rate)")] = 24.0,
    sessions: Annotated[Sessions, typer.Option(
        help="LLM requests in the simulator pool's order, each pass's sessions renamed, so sessions keep "
        "their shape (kept), or drawn at random, so a session's few requests spread over the run (drawn)")
    ] = Sessions.kept,
    output: Annotated[Path, typer.Option(help="directory for the JSON result file")] = RESULTS_DIR,
    spend_tables: Annotated[bool, typer.Option(
        help="worker phases with the spend tables on, as `burnwatch worker` runs by default")] = False,
    detector_kernel: Annotated[DetectorKernel, typer.Option(
        envvar="BURNWATCH_DETECTOR_KERNEL",  # python under `make bench KERNEL=off`
        help="the detector feed's route: the compiled kernel (required) or the pure-Python code")
    ] = DetectorKernel.compiled,
    gc_young_threshold: Annotated[int, typer.Option(
        min=0, help="the worker's garbage-collector threshold (BURNWATCH_GC_YOUNG_THRESHOLD; 0: Python's)")
    ] = YOUNG_THRESHOLD,
) -> None:
    """Measure priced events per second and produce-to-priced latency: worker, baseline, in-process."""
    unwind_on_sigterm()  # a killed run stops its worker too
    began = time.monotonic()
    started_at = datetime.now(UTC)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    bootstrap = os.environ.get("BURNWATCH_KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
    try:
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=15)
    except KafkaException as error:
        console.print(f"[red]no Kafka broker at {bootstrap} ({error}); `make kafka-start` first")
        raise typer.Exit(2) from None
    with console.status(f"building {events:,} events"):
        t0 = time.perf_counter()
        workload = build_workload(events, envelope_size=envelope_size, partitions=partitions, seed=seed,
                                  start=started_at.replace(minute=0, second=0, microsecond=0),
                                  events_per_s=events_per_s, sessions=sessions.value)
        build_s = time.perf_counter() - t0
    console.print(f"workload: {events:,} events in {len(workload.envelopes):,} envelopes "
                  f"({workload.payload_bytes / 1e6:,.0f} MB) built in {build_s:.1f}s; broker {bootstrap}",
                  highlight=False)
    with console.status("pricing in-process"):
        in_process = in_process_line(workload, min(inprocess_events, events), profile)
    phases = [phase.value for phase in (only or list(Only))]
    all_rounds: list[dict[str, PhaseResult]] = []
    failures: dict[str, str] = {}
    for number in range(1, rounds + 1):
        results: dict[str, PhaseResult] = {}
        tag = f" (round {number} of {rounds})" if rounds > 1 else ""
        for name in phase_order(phases, number):
            settings = phase_settings(bootstrap, partitions, name, spend_tables=spend_tables,
                                      detector_kernel=detector_kernel.value,
                                      gc_young_threshold=gc_young_threshold)
            try:
                results[name] = run_phase(name, workload, settings, timeout, rate, worker_profile)
                stages = ", ".join(f"{stage} {us:.1f}" for stage, us in
                                   results[name].detail.get("stage_cpu_us_per_event", {}).items())
                threads = ", ".join(f"{kind} {us:.1f}" for kind, us in
                                    results[name].detail.get("thread_cpu_us_per_event", {}).items())
                console.print(f"{name}{tag}: {results[name].events_per_s:,.0f} events/s"
                              + (f"; CPU µs per event by stage: {stages}" if stages else "")
                              + (f"; by thread: {threads}" if threads else ""), highlight=False)
            except PhaseFailed as error:
                failures[f"{name}{tag}"] = str(error)
                console.print(f"[red]{name}{tag} FAILED: {error}", markup=True)
            finally:
                if not keep_topics:
                    delete_topics(settings)
        all_rounds.append(results)
    results = all_rounds[-1]
    print_table(all_rounds, in_process)
    costs = detector_costs(all_rounds)
    document = {
        "started_at": started_at.isoformat().replace("+00:00", "Z"),
        "wall_time_s": round(time.monotonic() - began, 1),
        "bootstrap": bootstrap,
        "events": events, "envelope_size": envelope_size, "envelopes": len(workload.envelopes),
        "partitions": partitions, "rate": rate or None, "seed": seed, "events_per_s": events_per_s,
        "sessions": sessions.value,
        "spend_tables": spend_tables, "detector_kernel": detector_kernel.value,
        "gc_young_threshold": gc_young_threshold,
        "mix": workload.counts, "mix_shares": Mix().weights(), "payload_bytes": workload.payload_bytes,
        "workload_build_s": round(build_s, 3),
        "machine": machine_info() | {"load_average_at_start": load_at_start},
        "results": {name: asdict(result) for name, result in results.items()},  # the last round's
        "rounds": [{name: asdict(result) for name, result in round_results.items()}
                   for round_results in all_rounds],
        "in_process": in_process,
        "ratio_worker_over_baseline": ratios(results),
        "detectors_cpu_per_event_over_worker": costs["median"] if costs else None,
        "detectors_cpu_per_event_over_worker_by_round": costs["by_round"] if costs else None,
        "detectors_cpu_per_event_over_worker_pooled": costs["pooled"] if costs else None,
        "failures": failures,
    }
    output.mkdir(parents=True, exist_ok=True)
    path = output / f"bench-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path} "
                  f"(whole run {document['wall_time_s']:.0f}s)", highlight=False)
    if failures:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
