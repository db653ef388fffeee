"""The notifier's crash safety rests on one property of its changelog: a SIGKILL keeps a prefix of it.

``streams.core.alert_group_store`` writes a step's outbox entries, a group's changed alerts and its
header, in that order, to one changelog partition, and reads a group back as of its header: right only
if what reaches the broker is always a prefix of what the process wrote to a partition (faust's
producer buffer is FIFO, and aiokafka keeps one batch in flight per partition). This checks it on the
real broker, through the notifier's own app and table, killed while thousands of writes are queued.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streams.notifier_agents import STATE_TABLE
from tests.integration.changelog_probe import PROBE_PREFIX
from tests.integration.conftest import free_port

REPO = Path(__file__).resolve().parents[2]


def landed(stack: Any, topic: str) -> int:
    """Return how many messages changelog partition 0 holds (0 before the topic exists)."""
    consumer = Consumer({"bootstrap.servers": stack.settings.kafka_bootstrap_servers,
                         "group.id": "probe-watch"})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1])
    except Exception:  # noqa: BLE001 - the topic is not made yet
        return 0
    finally:
        consumer.close()


def probes_logged(stack: Any, topic: str) -> list[int]:
    """Return the probe numbers on changelog partition 0, in the order the broker holds them."""
    consumer = Consumer({"bootstrap.servers": stack.settings.kafka_bootstrap_servers,
                         "group.id": f"test-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False})
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
        consumer.assign([TopicPartition(topic, 0, 0)])
        numbers: list[int] = []
        read = 0
        deadline = time.monotonic() + 60
        while read < high and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            read = message.offset() + 1
            key = json.loads(message.key())  # the table's keys are JSON strings
            if key.startswith(PROBE_PREFIX):
                numbers.append(int(key.removeprefix(PROBE_PREFIX)))
        assert read >= high, f"read {read} of {high} messages"
        return numbers
    finally:
        consumer.close()


def test_a_sigkilled_notifier_leaves_a_prefix_of_what_it_wrote_to_a_changelog_partition(
    stack_factory: Any, tmp_path: Path
) -> None:
    stack = stack_factory()
    topic = f"{stack.settings.app_id}-notifier-{STATE_TABLE}-changelog"
    for run, kill_after in enumerate((10_000, 40_000)):
        log_path = tmp_path / f"probe-{run}.log"
        before = landed(stack, topic)
        env = {**stack.env, "BURNWATCH_DATA_DIR": str(tmp_path / f"data-{run}"),
               "BURNWATCH_NOTIFIER_WEB_PORT": str(free_port()), "PYTHONPATH": str(REPO)}
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "tests.integration.changelog_probe"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while landed(stack, topic) < before + kill_after:  # killed with thousands more queued
                tail = log_path.read_text(errors="replace")[-3000:]
                assert proc.poll() is None, f"the probe exited {proc.returncode}:\n{tail}"
                assert time.monotonic() < deadline, f"{landed(stack, topic)} probes landed in 120 s:\n{tail}"
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        numbers = probes_logged(stack, topic)
        # every run starts again at 0: the log is the runs' prefixes, one after the other
        runs = [i for i, n in enumerate(numbers) if n == 0] + [len(numbers)]
        last = numbers[runs[-2]:]
        assert last == list(range(len(last))), "a gap or reordering in what reached the broker"
        found = re.findall(r"probes written: (\d+)", log_path.read_text(errors="replace"))
        assert len(last) >= kill_after, f"killed after {len(last)} probes landed"
        assert int(found[-1]) > len(last), "killed with none queued: the test saw no crash mid-stream"
