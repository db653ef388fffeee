"""docker-compose.yml is a valid Compose file and wires Kafka, worker, simulator and Prometheus together.

There is no Docker engine on the test machines, so validity is checked against the vendored Compose
Specification schema (tests/fixtures/compose-spec/) plus the cross-file facts the schema cannot know.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA_FILE = ROOT / "tests" / "fixtures" / "compose-spec" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def as_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def burnwatch_settings(service: dict[str, Any]) -> dict[str, str]:
    """The service's BURNWATCH_* variables as settings field names."""
    ours = {key: value for key, value in as_env(service).items() if key.startswith(ENV_PREFIX)}
    return {key.removeprefix(ENV_PREFIX).lower(): value for key, value in ours.items()}


def test_matches_the_compose_specification_schema(compose: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_FILE.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_schema_rejects_a_broken_file(compose: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_FILE.read_text())
    broken = {**compose, "services": {**compose["services"], "worker": {"image": "x", "ports": "6066"}}}
    assert not jsonschema.Draft202012Validator(schema).is_valid(broken)


def test_has_the_four_services(services: dict[str, Any]) -> None:
    assert set(services) == {"kafka", "worker", "simulator", "prometheus"}


def test_every_service_has_an_image_or_a_build(services: dict[str, Any]) -> None:
    for name, service in services.items():
        assert "image" in service or "build" in service, name


def test_builds_use_the_dockerfile_in_deploy(services: dict[str, Any]) -> None:
    for name in ("worker", "simulator"):
        build = services[name]["build"]
        dockerfile = ROOT / build["context"] / build["dockerfile"]
        assert dockerfile == ROOT / "deploy" / "Dockerfile", name
        assert dockerfile.read_text().splitlines()[0].startswith("#")
        assert "FROM python:3.11-slim" in dockerfile.read_text()


def test_depends_on_names_existing_services(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for target in service.get("depends_on", []):
            assert target in services, f"{name} depends on unknown service {target}"
            assert target != name


def test_kafka_is_a_single_kraft_node_of_the_pinned_version(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    env = as_env(kafka)
    assert kafka["image"] == "apache/kafka:3.9.1"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@")
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", key


def test_kafka_accepts_the_largest_message_the_app_sends(services: dict[str, Any]) -> None:
    env = as_env(services["kafka"])
    assert int(env["KAFKA_MESSAGE_MAX_BYTES"]) >= Settings.model_fields["max_message_bytes"].default
    assert int(env["KAFKA_REPLICA_FETCH_MAX_BYTES"]) >= int(env["KAFKA_MESSAGE_MAX_BYTES"])


def test_every_listener_is_mapped_and_advertised_ones_are_listened_on(services: dict[str, Any]) -> None:
    env = as_env(services["kafka"])
    protocols = dict(pair.split(":") for pair in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = {item.split("://")[0]: item.split(":")[-1] for item in env["KAFKA_LISTENERS"].split(",")}
    advertised = {item.split("://")[0] for item in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    assert set(listeners) <= set(protocols)
    assert advertised <= set(listeners)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised


def test_apps_bootstrap_from_an_advertised_in_network_listener(services: dict[str, Any]) -> None:
    kafka_env = as_env(services["kafka"])
    advertised = {item.split("://")[1] for item in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for name in ("worker", "simulator"):
        bootstrap = as_env(services[name])["BURNWATCH_KAFKA_BOOTSTRAP_SERVERS"]
        assert bootstrap.startswith("kafka:"), name
        assert bootstrap in advertised, name


def test_burnwatch_env_keys_are_known_settings(services: dict[str, Any]) -> None:
    fields = set(Settings.model_fields)
    for name in ("worker", "simulator"):
        unknown = set(burnwatch_settings(services[name])) - fields
        assert not unknown, f"{name}: {unknown}"


def test_burnwatch_env_values_are_valid_settings(services: dict[str, Any]) -> None:
    for name in ("worker", "simulator"):
        Settings.model_validate(burnwatch_settings(services[name]))


def test_commands_run_the_burnwatch_cli(services: dict[str, Any]) -> None:
    assert services["worker"]["command"] == ["burnwatch", "worker"]
    assert services["simulator"]["command"] == ["burnwatch", "simulate", "--incidents", "all"]


def test_ports_are_quoted_host_container_pairs(services: dict[str, Any]) -> None:
    published = {}
    for name, service in services.items():
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: unquoted port {port!r} (YAML may read it as base 60)"
            host, container = port.split(":")
            assert host not in published, f"{name} and {published.get(host)} both publish {host}"
            published[host] = name
    assert published == {"9092": "kafka", "6066": "worker", "9090": "prometheus"}


def test_prometheus_scrapes_the_worker_metrics_port(services: dict[str, Any]) -> None:
    mounts = [volume.split(":") for volume in services["prometheus"]["volumes"]]
    config_path = next(ROOT / source for source, target, *_ in mounts if target.endswith("prometheus.yml"))
    config = yaml.safe_load(config_path.read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "burnwatch-worker"]
    assert job["metrics_path"] == "/metrics"
    web_port = as_env(services["worker"])["BURNWATCH_WEB_PORT"]
    assert job["static_configs"][0]["targets"] == [f"worker:{web_port}"]
    assert f"{web_port}:{web_port}" in services["worker"]["ports"]


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} uses undeclared volume {source}"
