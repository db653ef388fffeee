"""Fixtures for tests against the real local Kafka broker (``deploy/kafka/kafka.sh``).

Each test gets its own topic prefix and app id, so tests never see each other's data on the shared
broker. The broker must be running: ``make test`` starts it. A missing broker fails the tests, it
never skips them. ``make test`` keeps the broker's data (``.kafka``) between runs, so at its end a
test session deletes the topics its stacks made (never another session's).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from bench.sigterm import stop_group, unwind_on_sigterm
from streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP = os.environ.get("BURNWATCH_TEST_BOOTSTRAP", "localhost:9092")


def pytest_configure(config: pytest.Config) -> None:
    # a run sent SIGTERM (a CI time limit) tears its fixtures down: their workers stop, not orphaned
    unwind_on_sigterm(KeyboardInterrupt)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.kafka)


MADE: list[tuple[str, str]] = []  # every Stack's topic prefix and app id (its topics start with one)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    try:
        admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
        admin.list_topics(timeout=15)
    except Exception as error:  # noqa: BLE001 - any failure means no broker
        pytest.fail(f"no Kafka broker at {BOOTSTRAP} ({error}); start it with deploy/kafka/kafka.sh start")
    yield BOOTSTRAP
    prefixes = tuple(prefix for made in MADE for prefix in made)
    ours = sorted(name for name in admin.list_topics(timeout=15).topics if name.startswith(prefixes))
    for name, future in admin.delete_topics(ours, operation_timeout=60).items() if ours else ():
        try:
            future.result()
        except KafkaException as error:  # a topic that stays is only clutter on the broker
            print(f"could not delete the test topic {name}: {error}", file=sys.stderr)


@pytest.fixture
def own_topics() -> Callable[[str, str], None]:
    """Return a function that names topics (a prefix and an app id) for the session to delete at its end."""
    return lambda prefix, app_id: MADE.append((prefix, app_id))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Stack:
    """One isolated burnwatch deployment on the shared broker: its env, settings and processes."""

    def __init__(self, bootstrap: str, tmp: Path, **overrides: Any) -> None:
        tag = uuid.uuid4().hex[:10]
        self.tmp = tmp
        self.env = {
            **os.environ,
            "BURNWATCH_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "BURNWATCH_TOPIC_PREFIX": f"t{tag}.",
            "BURNWATCH_APP_ID": f"bw-{tag}",
            "BURNWATCH_TOPIC_PARTITIONS": "3",
            "BURNWATCH_LOG_LEVEL": "INFO",
        }
        self.env.pop("BURNWATCH_CONFIG", None)
        for key, value in overrides.items():
            self.env[f"BURNWATCH_{key.upper()}"] = str(value)
        self.settings = Settings(
            kafka_bootstrap_servers=bootstrap,
            topic_prefix=self.env["BURNWATCH_TOPIC_PREFIX"],
            app_id=self.env["BURNWATCH_APP_ID"],
            topic_partitions=int(self.env["BURNWATCH_TOPIC_PARTITIONS"]),
        )
        self.workers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        MADE.append((self.settings.topic_prefix, self.settings.app_id))

    def topic(self, name: str) -> str:
        return self.settings.topic(name)

    def cli(
        self, *args: str, input_bytes: bytes | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "streams.cli", *args],
            env=self.env, input=input_bytes, capture_output=True, timeout=timeout, check=False, cwd=self.tmp,
        )

    def start_worker(self, name: str = "w1") -> int:
        return self.start_process(name, "worker", port_env="BURNWATCH_WEB_PORT")

    def start_notifier(self, name: str = "n1") -> int:
        return self.start_process(name, "notifier", port_env="BURNWATCH_NOTIFIER_WEB_PORT")

    def start_process(self, name: str, command: str, port_env: str) -> int:
        """Run ``burnwatch <command>`` as ``name`` (its health port in ``port_env``); wait until healthy.

        ``kill_worker``, ``wait_healthy`` and ``log`` take the same name, whatever the command.
        """
        port = free_port()
        env = {**self.env, port_env: str(port), "BURNWATCH_DATA_DIR": str(self.tmp / f"data-{name}")}
        log = open(self.tmp / f"worker-{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", command],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp, start_new_session=True,
        )
        self.workers[name] = (proc, port)
        self.wait_healthy(name)
        return port

    def wait_healthy(self, name: str, timeout: float = 90) -> dict[str, Any]:
        proc, port = self.workers[name]
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"worker {name} exited {proc.returncode}:\n{self.log(name)[-4000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    body = json.loads(resp.read())
                    if body.get("status") == "ok" and body.get("assigned_partitions", 0) > 0:
                        return body
                    last = body
            except Exception as error:  # noqa: BLE001 - not up yet
                last = error
            time.sleep(0.5)
        tail = self.log(name)[-4000:]
        raise AssertionError(f"worker {name} not healthy in {timeout}s (last: {last}):\n{tail}")

    def metrics(self, name: str = "w1") -> str:
        _, port = self.workers[name]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    def log(self, name: str) -> str:
        return (self.tmp / f"worker-{name}.log").read_text(errors="replace")

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc, _ = self.workers.pop(name)
        os.killpg(proc.pid, sig)
        proc.wait(timeout=60)

    def stop_all(self) -> None:
        for name in list(self.workers):
            stop_group(self.workers.pop(name)[0], timeout_s=30)

    def producer(self) -> Producer:
        return Producer({"bootstrap.servers": self.settings.kafka_bootstrap_servers,
                         "enable.idempotence": True, "message.max.bytes": 10_000_000})

    def consume(self, name: str, *, until: Any, timeout: float = 60, raw: bool = False) -> list[Any]:
        """Read records (envelopes split) from the start of topic ``name`` until ``until(records)``.

        ``raw``: the messages as they are, ``(partition, key, value)``, instead of their records.
        """
        consumer = Consumer({
            "bootstrap.servers": self.settings.kafka_bootstrap_servers,
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        })
        consumer.subscribe([self.topic(name)])
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and not until(records):
                message = consumer.poll(0.5)
                if message is None or message.error():
                    continue
                if raw:
                    records.append((message.partition(), message.key(), message.value()))
                    continue
                doc = json.loads(message.value())
                records.extend(doc if isinstance(doc, list) else [doc])
        finally:
            consumer.close()
        return records


@pytest.fixture
def stack(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(kafka_bootstrap, tmp_path)
    yield s
    s.stop_all()


@pytest.fixture
def stack_factory(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Any]:
    made: list[Stack] = []

    def make(**overrides: Any) -> Stack:
        s = Stack(kafka_bootstrap, tmp_path, **overrides)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop_all()
