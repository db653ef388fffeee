"""``python -m bench.budget_alert``: seconds from producing the event that crosses 80 % to its alert.

Runs ``burnwatch worker`` with one budget per round (each on its own app), produces traffic that brings
the budget to about 65 %, then one burst message whose middle event crosses 80 %. The figure is the
alert record's Kafka timestamp minus the moment the burst was handed to the producer (both on this
machine's clock), and also when a consumer received it. The budgets issue asks for at most 5 s.
Results go to the terminal and to ``bench/results/budget-alert-<UTC time>.json``.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from confluent_kafka import Consumer, Producer
from rich.console import Console
from rich.table import Table

from bench.run import RESULTS_DIR, WorkerProcess, delete_topics, phase_settings
from streams.admin import ensure_topics
from streams.core.catalog import default_catalog
from streams.core.events import EVENT_ADAPTER
from streams.core.pricing import Pricer
from streams.names import ALERTS, USAGE_LLM
from streams.settings import Settings

console = Console()
PRE_EVENTS = 200
BURST_EVENTS = 100
TARGET_PCT = 80.0
LIMIT_S = 5.0


def llm_event(app: str, now: datetime) -> dict[str, Any]:
    """Return one LLM request of the round's app (the same size each: a known cost)."""
    return {"type": "llm.request", "event_id": uuid.uuid4().hex, "time": now.isoformat(),
            "provider": "openai", "model": "gpt-4o", "input_tokens": 4000, "output_tokens": 800,
            "app": app, "user": "bench", "session": f"s-{app}", "labels": {"team": "bench"}}


def event_cost(event: dict[str, Any]) -> float:
    """Price one event in-process with the shipped catalog (the worker uses the same)."""
    records = Pricer(default_catalog()).price(EVENT_ADAPTER.validate_python(event))
    return sum(r["EffectiveCost"] for r in records)


def budgets_file(path: Path, rounds: int, amount: float) -> None:
    """Write one daily budget per round, scoped to the round's app."""
    budgets = [{"id": f"bench-{i}", "scope": {"app": f"bench-app-{i}"}, "period": "day",
                "amount_usd": round(amount, 6)} for i in range(rounds)]
    path.write_text(yaml.safe_dump({"burn_interval_s": 1, "budgets": budgets}))


def wait_alert(consumer: Consumer, budget_id: str, timeout_s: float) -> tuple[float, float] | None:
    """Return (alert Kafka timestamp, local receive time) of the budget's 80 % alert, epoch seconds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None or message.error():
            continue
        alert = json.loads(message.value())
        if (alert.get("kind") == "budget_threshold" and alert.get("labels", {}).get("budget") == budget_id
                and alert["labels"].get("threshold_pct") == "80" and alert.get("status") == "firing"):
            return message.timestamp()[1] / 1000, time.time()
    return None


def main(
    rounds: Annotated[int, typer.Option(min=1, help="budgets crossed, one burst each")] = 5,
    partitions: Annotated[int, typer.Option(min=1, help="partitions of every topic")] = 6,
    output: Annotated[Path, typer.Option(help="directory for the JSON result file")] = RESULTS_DIR,
) -> None:
    """Measure how long after the crossing event a budget's 80 % alert reaches the alerts topic."""
    bootstrap = os.environ.get("BURNWATCH_KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
    # the worker as deployed: every stage on, as `burnwatch worker` runs by default
    settings: Settings = phase_settings(bootstrap, partitions, "alert", spend_tables=True).model_copy(
        update={"detectors_enabled": True})
    per_event = event_cost(llm_event("x", datetime.now(UTC)))
    # pre-traffic at ~65 %, the burst's middle event crosses 80 %
    amount = (PRE_EVENTS + BURST_EVENTS / 2) * per_event / (TARGET_PCT / 100)
    started_at = datetime.now(UTC)
    figures: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-alert-") as tmp:
        workdir = Path(tmp)
        budgets_file(workdir / "budgets.yaml", rounds, amount)
        ensure_topics(settings)
        budgets_env = {"BURNWATCH_BUDGETS_PATH": str(workdir / "budgets.yaml")}
        worker = WorkerProcess(settings, workdir, extra_env=budgets_env)
        consumer = Consumer(settings.librdkafka_config() | {
            "group.id": f"bench-alert-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "latest"})
        try:
            worker.wait_healthy()
            consumer.subscribe([settings.topic(ALERTS)])
            consumer.poll(1.0)  # join the group before the first burst
            producer = Producer(settings.librdkafka_config() | {"enable.idempotence": True, "linger.ms": 0})
            topic = settings.topic(USAGE_LLM)
            for i in range(rounds):
                app = f"bench-app-{i}"
                pre = [llm_event(app, datetime.now(UTC)) for _ in range(PRE_EVENTS)]
                producer.produce(topic, key=app.encode(), value=json.dumps(pre).encode())
                producer.flush(30)
                time.sleep(2.0)  # the budget reaches ~65 %, its 50 % alert goes out
                burst = [llm_event(app, datetime.now(UTC)) for _ in range(BURST_EVENTS)]
                payload = json.dumps(burst).encode()
                sent = time.time()
                producer.produce(topic, key=app.encode(), value=payload)
                producer.flush(30)
                got = wait_alert(consumer, f"bench-{i}", timeout_s=60)
                if got is None:
                    console.print(f"[red]round {i}: no 80 % alert within 60 s[/]")
                    continue
                figures.append({"alert_timestamp_s": round(got[0] - sent, 3),
                                "received_s": round(got[1] - sent, 3)})
        finally:
            consumer.close()
            worker.stop()
            delete_topics(settings)
    report(figures, rounds, started_at, output)


def report(figures: list[dict[str, float]], rounds: int, started_at: datetime, output: Path) -> None:
    """Print and save the measured figures."""
    table = Table(title="budget alert latency: crossing event produced -> 80 % alert (limit 5 s)")
    for column in ("figure", "median s", "max s", "rounds"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    summary: dict[str, Any] = {}
    for name in ("alert_timestamp_s", "received_s"):
        values = [f[name] for f in figures]
        if values:
            summary[name] = {"median": statistics.median(values), "max": max(values)}
            table.add_row(name, f"{statistics.median(values):.3f}", f"{max(values):.3f}",
                          f"{len(values)}/{rounds}")
    console.print(table)
    within = len(figures) == rounds and max(f["alert_timestamp_s"] for f in figures) <= LIMIT_S
    document = {"started_at": started_at.isoformat(), "rounds": rounds, "figures": figures,
                "summary": summary, "limit_s": LIMIT_S, "within_limit": within}
    output.mkdir(parents=True, exist_ok=True)
    path = output / f"budget-alert-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"wrote {path}", highlight=False)


if __name__ == "__main__":
    typer.run(main)
