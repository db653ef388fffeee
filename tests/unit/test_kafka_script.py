"""deploy/kafka/kafka.sh: usage, input checks, status and the broker config it renders.

These run the script but never start a JVM; the broker's own start/stop is exercised by `make test`,
which brings it up for the integration tests.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "kafka" / "kafka.sh"


def run(*args: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "KAFKA_DATA_DIR": str(data_dir), **env}
    return subprocess.run(
        [str(SCRIPT), *args], env=full_env, capture_output=True, text=True, timeout=30, check=False
    )


def properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def test_without_a_command_it_prints_usage_and_exits_2(tmp_path: Path) -> None:
    result = run(data_dir=tmp_path)
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_unknown_command_is_named(tmp_path: Path) -> None:
    result = run("launch", data_dir=tmp_path)
    assert result.returncode == 2
    assert "unknown command launch" in result.stderr


def test_help_exits_0(tmp_path: Path) -> None:
    result = run("--help", data_dir=tmp_path)
    assert result.returncode == 0
    assert "start" in result.stdout and "KAFKA_DATA_DIR" in result.stdout


@pytest.mark.parametrize("name", ["KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "KAFKA_STOP_TIMEOUT"])
def test_non_numeric_settings_are_rejected(tmp_path: Path, name: str) -> None:
    result = run("status", data_dir=tmp_path, **{name: "90x"})
    assert result.returncode == 1
    assert f"{name} must be a whole number, got '90x'" in result.stderr


def test_same_client_and_controller_port_is_rejected(tmp_path: Path) -> None:
    result = run("status", data_dir=tmp_path, KAFKA_PORT="9555", KAFKA_CONTROLLER_PORT="9555")
    assert result.returncode == 1
    assert "both 9555" in result.stderr


def test_status_of_a_fresh_directory_is_stopped_with_exit_1(tmp_path: Path) -> None:
    result = run("status", data_dir=tmp_path / "kafka")
    assert result.returncode == 1
    assert result.stdout.strip() == "kafka: stopped"


def test_status_removes_a_stale_pid_file(tmp_path: Path) -> None:
    # Our own pid is alive but is not a Kafka broker, which is what a recycled pid looks like.
    (tmp_path / "kafka.pid").write_text(f"{os.getpid()}\n")
    result = run("status", data_dir=tmp_path)
    assert result.returncode == 1
    assert "stale pid file" in result.stdout
    assert not (tmp_path / "kafka.pid").exists()


def test_stop_when_not_running_succeeds(tmp_path: Path) -> None:
    result = run("stop", data_dir=tmp_path)
    assert result.returncode == 0
    assert "not running" in result.stdout


def test_start_without_java_says_how_to_get_it(tmp_path: Path) -> None:
    result = run("start", data_dir=tmp_path, JAVA_HOME=str(tmp_path / "no-jdk"))
    assert result.returncode == 1
    assert "java not found" in result.stderr and "JAVA_HOME" in result.stderr
    assert not (tmp_path / "kafka.pid").exists()


def test_config_is_a_single_kraft_node_for_tests(tmp_path: Path) -> None:
    result = run("config", data_dir=tmp_path, KAFKA_PORT="19192", KAFKA_CONTROLLER_PORT="19193")
    assert result.returncode == 0, result.stderr
    conf = properties(result.stdout)
    assert "@" not in "".join(value for key, value in conf.items() if key != "controller.quorum.voters")
    assert conf["process.roles"] == "broker,controller"
    assert conf["controller.quorum.voters"] == f"{conf['node.id']}@localhost:19193"
    assert conf["listeners"] == "PLAINTEXT://localhost:19192,CONTROLLER://localhost:19193"
    assert conf["advertised.listeners"] == "PLAINTEXT://localhost:19192"
    assert conf["log.dirs"] == str(tmp_path / "data")
    assert conf["offsets.topic.replication.factor"] == "1"
    assert conf["transaction.state.log.replication.factor"] == "1"
    assert conf["transaction.state.log.min.isr"] == "1"
    assert conf["group.initial.rebalance.delay.ms"] == "0"
    assert conf["num.partitions"] == "6"
    assert conf["auto.create.topics.enable"] == "true"


def test_config_accepts_the_largest_message_the_app_sends(tmp_path: Path) -> None:
    from streams.settings import Settings

    conf = properties(run("config", data_dir=tmp_path).stdout)
    assert int(conf["message.max.bytes"]) >= Settings.model_fields["max_message_bytes"].default
    assert int(conf["replica.fetch.max.bytes"]) >= int(conf["message.max.bytes"])


def test_config_has_no_duplicate_keys(tmp_path: Path) -> None:
    lines = run("config", data_dir=tmp_path).stdout.splitlines()
    keys = [line.split("=", 1)[0] for line in lines if line.strip() and not line.startswith("#")]
    assert len(keys) == len(set(keys))
