"""``python -m bench.ingest_load``: the ingest server under a paced load, checked end to end on Kafka.

Starts ``burnwatch ingest-server`` as a subprocess on a fresh topic prefix, posts ``--rate`` events/s
for ``--duration`` seconds in batches (``--malformed`` percent of them malformed, plus one request with
a bad token), then reads every usage topic and ``usage.dlq`` from the start and checks that every
accepted event is there exactly once, every rejection is on the dead-letter topic, and nothing of the
unauthenticated request was written. Prints accepted/s, latency and loss; exits 1 on any loss.

The integration test (``tests/integration/test_ingest_server.py``) runs the same code for a few seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated, Any

import aiohttp
import typer
from confluent_kafka import Consumer

from bench.sigterm import stop_group, unwind_on_sigterm
from streams.admin import ensure_topics
from streams.names import COSTS_PRICED, USAGE_DLQ, USAGE_TOPICS
from streams.settings import Settings

SOURCE = "bench-gw"
TOKEN = "bench-token-" + "7f3e9a2c5b1d4e86"
BAD_TOKEN = "bench-token-" + "0000000000000000"
BASE_TIME = "2026-05-01T12:00:00Z"
SERVER_CODE = (
    "import typer\n"
    "from streams.commands.ingest_server import register\n"
    "app = typer.Typer()\n"
    "app.callback()(lambda: None)\n"
    "register(app)\n"
    "app()\n"
)


def _good(rng: random.Random, event_id: str) -> dict[str, Any]:
    kind = rng.random()
    if kind < 0.8:
        return {"type": "llm.request", "event_id": event_id, "time": BASE_TIME, "provider": "openai",
                "model": rng.choice(["gpt-4o", "gpt-4o-mini", "o3"]), "input_tokens": rng.randint(100, 9000),
                "output_tokens": rng.randint(10, 900), "app": f"app-{rng.randint(0, 19)}",
                "user": f"u{rng.randint(0, 999)}"}
    if kind < 0.95:
        return {"type": "gpu.sample", "event_id": event_id, "time": BASE_TIME, "interval_s": 15,
                "node": f"node-{rng.randint(0, 49)}", "provider": "aws", "region": "us-east-1",
                "instance_type": "p4d.24xlarge",
                "gpus": [{"index": 0, "model": "A100-SXM4-40GB", "util_pct": rng.uniform(0, 100)}]}
    return {"type": "storage.usage", "event_id": event_id, "time": BASE_TIME, "interval_s": 3600,
            "provider": "aws", "region": "us-east-1", "bucket": f"bucket-{rng.randint(0, 9)}",
            "stored_bytes": rng.randint(0, 10**12)}


def _malformed(rng: random.Random, event_id: str) -> Any:
    good = _good(rng, event_id)
    how = rng.randrange(4)
    if how == 0:
        return {**good, "time": "2026-05-01T12:00:00"}  # naive
    if how == 1:
        negative = "input_tokens" if good["type"] == "llm.request" else "interval_s"
        return {**good, negative: -1}
    if how == 2:
        return {k: v for k, v in good.items() if k != "provider"}
    return [good]  # not an object


def make_batch(rng: random.Random, prefix: str, start: int, size: int, malformed_pct: float,
               ) -> tuple[list[Any], list[str], set[int]]:
    """Return a batch, the event id of each element, and the indexes that are malformed."""
    items, ids, bad = [], [], set()
    for i in range(size):
        event_id = f"{prefix}-{start + i}"
        ids.append(event_id)
        if rng.random() * 100 < malformed_pct:
            bad.add(i)
            items.append(_malformed(rng, event_id))
        else:
            items.append(_good(rng, event_id))
    return items, ids, bad


@dataclass
class LoadResult:
    """What the client saw."""

    sent_events: int = 0
    accepted_ids: list[str] = field(default_factory=list)
    rejected: int = 0
    expected_rejected: int = 0
    unexpected: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    bad_token_status: int = 0
    bad_token_ids: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0


async def _post(session: aiohttp.ClientSession, url: str, token: str, items: list[Any]) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with session.post(url, data=json.dumps(items), headers=headers) as response:
        body = await response.json(content_type=None)
        return response.status, body


async def run_load(url: str, *, rate: float, duration_s: float, batch_size: int, malformed_pct: float,
                   seed: int = 7, concurrency: int = 16) -> LoadResult:
    """Post ``rate`` events/s for ``duration_s`` seconds, plus one request with a bad token."""
    rng = random.Random(seed)
    prefix = uuid.uuid4().hex[:8]
    result = LoadResult()
    gate = asyncio.Semaphore(concurrency)
    interval = batch_size / rate
    requests = max(1, round(duration_s * rate / batch_size))

    async def one(session: aiohttp.ClientSession, index: int) -> None:
        items, ids, bad = make_batch(rng, prefix, index * batch_size, batch_size, malformed_pct)
        result.sent_events += len(items)
        result.expected_rejected += len(bad)
        async with gate:
            while True:
                started = time.perf_counter()
                status, body = await _post(session, url, TOKEN, items)
                result.statuses[status] += 1
                if status not in (429, 503):
                    break
                await asyncio.sleep(1.0)  # the server said: retry later (event ids make it safe)
            result.latencies_s.append(time.perf_counter() - started)
        if status not in (202, 400):
            result.unexpected.append(f"HTTP {status}: {body}")
            return
        rejected = {r["index"] for r in body["rejections"]}
        if rejected != bad:
            result.unexpected.append(f"rejected {sorted(rejected)} but malformed {sorted(bad)}")
        result.rejected += body["rejected"]
        result.accepted_ids.extend(event_id for i, event_id in enumerate(ids) if i not in rejected)

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        bad_items, result.bad_token_ids, _ = make_batch(rng, prefix + "-unauth", 0, batch_size, 0)
        result.bad_token_status, _ = await _post(session, url, BAD_TOKEN, bad_items)
        begin = time.perf_counter()
        tasks = []
        for index in range(requests):
            delay = begin + index * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, index)))
        await asyncio.gather(*tasks)
        result.elapsed_s = time.perf_counter() - begin
    return result


@dataclass
class Verification:
    """What Kafka holds: each accepted id's count, dead letters, and anything of the bad-token request."""

    counts: Counter[str]
    dead_letters: list[dict[str, Any]]
    missing: list[str]
    duplicated: list[str]
    unauthenticated_written: list[str]


def read_topics(settings: Settings, result: LoadResult, timeout_s: float = 60.0) -> Verification:
    """Read every usage topic and usage.dlq from the start until all accepted ids and dead letters arrived."""
    consumer = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": f"ingest-verify-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    dlq = settings.topic(USAGE_DLQ)
    consumer.subscribe([settings.topic(name) for name in USAGE_TOPICS] + [dlq])
    counts: Counter[str] = Counter()
    dead: list[dict[str, Any]] = []
    wanted = set(result.accepted_ids)
    deadline = time.monotonic() + timeout_s
    quiet_until = None
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                done = wanted <= set(counts) and len(dead) >= result.rejected
                if done:
                    # everything expected is in: read on briefly so duplicates would show too
                    quiet_until = quiet_until or time.monotonic() + 2.0
                    if time.monotonic() >= quiet_until:
                        break
                continue
            if message.topic() == dlq:
                dead.append(json.loads(message.value()))
            else:
                counts.update(event["event_id"] for event in json.loads(message.value()))
    finally:
        consumer.close()
    return Verification(
        counts=counts,
        dead_letters=dead,
        missing=sorted(wanted - set(counts)),
        duplicated=sorted(event_id for event_id, n in counts.items() if n > 1),
        unauthenticated_written=sorted(set(result.bad_token_ids) & set(counts)),
    )


def free_port() -> int:
    """Return a free TCP port on localhost."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``burnwatch ingest-server`` in a subprocess with its own topic prefix and token file."""

    def __init__(self, bootstrap: str, workdir: Path, **env: str) -> None:
        tag = uuid.uuid4().hex[:10]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        tokens = workdir / "tokens"
        tokens.write_text(f"# bench\n{SOURCE}: {TOKEN}\n")
        self.env = {**os.environ, "BURNWATCH_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                    "BURNWATCH_TOPIC_PREFIX": f"i{tag}.", "BURNWATCH_APP_ID": f"ingest-{tag}",
                    "BURNWATCH_TOPIC_PARTITIONS": "3", "BURNWATCH_INGEST_TOKENS_FILE": str(tokens), **env}
        self.env.pop("BURNWATCH_CONFIG", None)
        self.settings = Settings(kafka_bootstrap_servers=bootstrap, topic_partitions=3,
                                 topic_prefix=self.env["BURNWATCH_TOPIC_PREFIX"])
        self.log_path = workdir / "ingest-server.log"
        self._log: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        """Create the topics, start the server and wait until /healthz says ready."""
        ensure_topics(self.settings)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER_CODE, "ingest-server", "--host", "127.0.0.1",
             "--port", str(self.port)],
            env=self.env, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ingest server exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                import urllib.request

                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"ingest server not ready in {timeout_s}s:\n{self.log()[-3000:]}")

    def stop(self) -> int | None:
        """Stop the server (SIGTERM, then SIGKILL) and return its exit code."""
        code = None if self.proc is None else stop_group(self.proc, timeout_s=30)
        if self._log is not None:
            self._log.close()
        return code

    def log(self) -> str:
        """The server's output so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def price_and_verify(server: Server, accepted_ids: list[str], timeout_s: float = 300.0) -> dict[str, int]:
    """Run a worker over the server's topics; count accepted events priced, and charges priced twice."""
    env = {**server.env, "BURNWATCH_DATA_DIR": str(server.workdir / "worker-state"),
           "BURNWATCH_WEB_PORT": str(free_port())}
    with open(server.workdir / "worker.log", "ab") as log:
        worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT, cwd=server.workdir, start_new_session=True)
        consumer = Consumer({
            "bootstrap.servers": server.settings.kafka_bootstrap_servers,
            "group.id": f"ingest-priced-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        })
        consumer.subscribe([server.settings.topic(COSTS_PRICED)])
        wanted = set(accepted_ids)
        events: set[str] = set()
        charges: Counter[str] = Counter()
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline and not wanted <= events:
                message = consumer.poll(0.5)
                if message is None or message.error():
                    continue
                for record in json.loads(message.value()):
                    events.add(record["x_EventId"])
                    charges[record["x_ChargeId"]] += 1
        finally:
            consumer.close()
            stop_group(worker, timeout_s=60)
    return {"priced_events": len(wanted & events), "not_priced": len(wanted - events),
            "charges": len(charges), "charges_priced_twice": sum(1 for n in charges.values() if n > 1)}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def main(
    bootstrap: Annotated[str, typer.Option(envvar="BURNWATCH_KAFKA_BOOTSTRAP_SERVERS")] = "localhost:9092",
    rate: Annotated[float, typer.Option(help="Events per second.")] = 2_000.0,
    duration: Annotated[float, typer.Option(help="Seconds of load.")] = 60.0,
    batch_size: Annotated[int, typer.Option(help="Events per request.")] = 100,
    malformed: Annotated[float, typer.Option(help="Percent of malformed events.")] = 5.0,
    workdir: Annotated[Path | None, typer.Option(help="Where the token file and server log go.")] = None,
) -> None:
    """Run the load, verify it on Kafka, print the figures; exit 1 on any loss or duplicate."""
    unwind_on_sigterm()  # a killed run stops its server and worker too
    import tempfile

    base = workdir or Path(tempfile.mkdtemp(prefix="ingest-load-"))
    base.mkdir(parents=True, exist_ok=True)
    server = Server(bootstrap, base)
    server.start()
    try:
        result = asyncio.run(run_load(f"{server.url}/v1/events", rate=rate, duration_s=duration,
                                      batch_size=batch_size, malformed_pct=malformed))
        check = read_topics(server.settings, result, timeout_s=120)
    finally:
        code = server.stop()
    priced = price_and_verify(server, result.accepted_ids)
    accepted = len(result.accepted_ids)
    figures = {
        "sent_events": result.sent_events,
        "target_events_per_s": rate,
        "elapsed_s": round(result.elapsed_s, 2),
        "accepted": accepted,
        "accepted_per_s": round(accepted / result.elapsed_s, 1) if result.elapsed_s else 0,
        "rejected": result.rejected,
        "expected_rejected": result.expected_rejected,
        "http_statuses": dict(result.statuses),
        "bad_token_status": result.bad_token_status,
        "latency_p50_ms": round(_pct(result.latencies_s, 0.5) * 1000, 1),
        "latency_p99_ms": round(_pct(result.latencies_s, 0.99) * 1000, 1),
        "on_kafka_once": sum(1 for event_id in result.accepted_ids if check.counts[event_id] == 1),
        "lost": len(check.missing),
        "duplicated": len(check.duplicated),
        "dead_letters": len(check.dead_letters),
        "unauthenticated_written": len(check.unauthenticated_written),
        "unexpected_answers": result.unexpected[:5],
        "server_exit_code": code,
        **priced,
    }
    typer.echo(json.dumps(figures, indent=2))
    bad = (check.missing or check.duplicated or check.unauthenticated_written or result.unexpected
           or priced["not_priced"] or priced["charges_priced_twice"]
           or result.bad_token_status != 401 or len(check.dead_letters) != result.rejected)
    raise typer.Exit(1 if bad else 0)


if __name__ == "__main__":
    typer.run(main)
