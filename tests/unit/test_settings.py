"""Settings: defaults, env, YAML file, secret files, clear errors, and secrets that never print."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from streams.settings import ConfigError, Settings, describe_error, get_settings

SECRET = "s3cr3t-Pa55word"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in list(os.environ):
        if name.upper().startswith("BURNWATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def write_config(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "burnwatch.yaml"
    path.write_text(text)
    monkeypatch.setenv("BURNWATCH_CONFIG", str(path))
    return path


def secrets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **files: str) -> Path:
    folder = tmp_path / "secrets"
    folder.mkdir()
    for name, value in files.items():
        (folder / name).write_text(value)
    monkeypatch.setenv("BURNWATCH_SECRETS_DIR", str(folder))
    return folder


def config_error() -> str:
    with pytest.raises(ConfigError) as caught:
        get_settings()
    return str(caught.value)


def test_defaults_work_with_nothing_configured() -> None:
    settings = get_settings()
    assert settings.kafka_bootstrap_servers == "localhost:9092"
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert settings.kafka_sasl_password is None
    assert (settings.topic_prefix, settings.topic_partitions, settings.topic_replication_factor) == ("", 6, 1)
    assert (settings.app_id, settings.store) == ("burnwatch", "rocksdb")
    assert settings.data_dir == Path(".burnwatch")
    assert (settings.web_port, settings.log_level) == (6066, "INFO")
    assert settings.max_message_bytes == 8 * 1024 * 1024
    assert settings.dedup_horizon_hours == 72.0
    assert settings.catalog_path is None
    assert settings.librdkafka_config() == {"bootstrap.servers": "localhost:9092",
                                            "security.protocol": "PLAINTEXT"}


def test_settings_are_read_once_and_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    first = get_settings()
    monkeypatch.setenv("BURNWATCH_TOPIC_PARTITIONS", "3")
    assert get_settings() is first
    get_settings.cache_clear()
    assert get_settings().topic_partitions == 3
    with pytest.raises(ValueError, match="frozen"):
        first.topic_partitions = 9  # type: ignore[misc]


def test_env_vars_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BURNWATCH_KAFKA_BOOTSTRAP_SERVERS", "b1:9093,b2:9093")
    monkeypatch.setenv("BURNWATCH_TOPIC_PARTITIONS", "24")
    monkeypatch.setenv("BURNWATCH_STORE", "memory")
    monkeypatch.setenv("burnwatch_topic_prefix", "staging.")
    monkeypatch.setenv("BURNWATCH_CATALOG_PATH", "/etc/burnwatch/prices.yaml")
    settings = get_settings()
    assert settings.kafka_bootstrap_servers == "b1:9093,b2:9093"
    assert settings.topic_partitions == 24
    assert settings.store == "memory"
    assert settings.topic("costs.priced") == "staging.costs.priced"
    assert settings.catalog_path == Path("/etc/burnwatch/prices.yaml")


def test_yaml_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_config(tmp_path, "topic_prefix: prod.\ntopic_partitions: 12\nweb_port: 8080\nlog_level: DEBUG\n",
                 monkeypatch)
    monkeypatch.setenv("BURNWATCH_WEB_PORT", "9090")
    settings = get_settings()
    assert (settings.topic_prefix, settings.topic_partitions, settings.log_level) == ("prod.", 12, "DEBUG")
    assert settings.web_port == 9090, "env beats the config file"


def test_secret_file_is_read_when_settings_are_built(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The secrets dir is set after streams.settings was imported, as in a test or an embedding process.
    secrets_dir(tmp_path, monkeypatch, kafka_sasl_password=SECRET + "\n")
    password = get_settings().kafka_sasl_password
    assert password is not None
    assert password.get_secret_value() == SECRET


def test_source_priority_env_then_secret_file_then_yaml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_config(tmp_path, "kafka_sasl_password: from-yaml\nkafka_sasl_username: yaml-user\n", monkeypatch)
    secrets_dir(tmp_path, monkeypatch, kafka_sasl_password="from-file", kafka_sasl_username="file-user")
    settings = Settings()
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == "from-file"
    assert settings.kafka_sasl_username == "file-user"
    monkeypatch.setenv("BURNWATCH_KAFKA_SASL_PASSWORD", "from-env")
    assert Settings().kafka_sasl_password.get_secret_value() == "from-env"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("BURNWATCH_TOPIC_PARTITIONS", "zero", "topic_partitions"),
        ("BURNWATCH_TOPIC_PARTITIONS", "0", "topic_partitions"),
        ("BURNWATCH_WEB_PORT", "70000", "web_port"),
        ("BURNWATCH_KAFKA_SECURITY_PROTOCOL", "TLS", "kafka_security_protocol"),
        ("BURNWATCH_STORE", "redis", "store"),
        ("BURNWATCH_DEDUP_HORIZON_HOURS", "-1", "dedup_horizon_hours"),
        ("BURNWATCH_GC_YOUNG_THRESHOLD", "-5", "gc_young_threshold"),
    ],
)
def test_bad_env_value_names_field_and_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, field: str
) -> None:
    monkeypatch.setenv(name, value)
    message = config_error()
    assert repr(field) in message
    assert repr(value) in message


def test_unknown_yaml_key_names_key_value_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write_config(tmp_path, "topic_prefix: prod.\ntopic_partitons: 12\n", monkeypatch)
    message = config_error()
    assert "'topic_partitons'" in message
    assert "12" in message
    assert str(path) in message


def test_every_bad_field_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_config(tmp_path, "web_port: -1\nstore: disk\n", monkeypatch)
    message = config_error()
    assert "'web_port'" in message and "-1" in message
    assert "'store'" in message and "'disk'" in message


def sasl_ssl_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BURNWATCH_KAFKA_BOOTSTRAP_SERVERS", "pkc-1.aws.confluent.cloud:9092")
    monkeypatch.setenv("BURNWATCH_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("BURNWATCH_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("BURNWATCH_KAFKA_SASL_USERNAME", "burnwatch-svc")
    monkeypatch.setenv("BURNWATCH_KAFKA_SSL_CAFILE", "/etc/ssl/ca.pem")
    secrets_dir(tmp_path, monkeypatch, kafka_sasl_password=SECRET)


def test_secrets_never_printed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sasl_ssl_env(monkeypatch, tmp_path)
    settings = get_settings()
    masked = settings.masked()
    for shown in (repr(settings), str(settings), json.dumps(masked), repr(settings.kafka_sasl_password)):
        assert SECRET not in shown
    assert masked["kafka_sasl_password"] == "**********"
    assert masked["kafka_sasl_username"] == "burnwatch-svc"
    assert masked["topic_partitions"] == 6


def test_secrets_never_in_config_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sasl_ssl_env(monkeypatch, tmp_path)
    monkeypatch.setenv("BURNWATCH_TOPIC_PARTITIONS", "zero")
    message = config_error()
    assert "topic_partitions" in message
    assert SECRET not in message


def test_bad_secret_value_is_masked_in_the_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_config(tmp_path, f"kafka_sasl_password: [{SECRET}]\n", monkeypatch)
    message = config_error()
    assert "kafka_sasl_password" in message
    assert SECRET not in message
    assert "<secret>" in message


def test_settings_and_alerting_hide_the_values_of_the_same_secret_looking_fields() -> None:
    """One list of secret-looking words: a field named like a URL or a header is masked in both."""

    class Fields(BaseModel):
        webhook_url: int
        auth_header: int
        batch_max_messages: int

    with pytest.raises(ValidationError) as caught:
        Fields.model_validate({"webhook_url": SECRET, "auth_header": SECRET, "batch_max_messages": "many"})
    message = describe_error(caught.value)
    assert SECRET not in message and message.count("<secret>") == 2
    assert "(got 'many')" in message


def test_librdkafka_config_for_sasl_ssl(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sasl_ssl_env(monkeypatch, tmp_path)
    assert get_settings().librdkafka_config() == {
        "bootstrap.servers": "pkc-1.aws.confluent.cloud:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "burnwatch-svc",
        "sasl.password": SECRET,
        "ssl.ca.location": "/etc/ssl/ca.pem",
    }


def test_librdkafka_config_with_client_certificates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BURNWATCH_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("BURNWATCH_KAFKA_SSL_CERTFILE", "/certs/client.pem")
    monkeypatch.setenv("BURNWATCH_KAFKA_SSL_KEYFILE", "/certs/client.key")
    conf = get_settings().librdkafka_config()
    assert conf["security.protocol"] == "SSL"
    assert conf["ssl.certificate.location"] == "/certs/client.pem"
    assert conf["ssl.key.location"] == "/certs/client.key"
    assert "sasl.mechanism" not in conf and "sasl.password" not in conf


def test_missing_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    monkeypatch.setenv("BURNWATCH_CONFIG", str(missing))
    with pytest.raises(ConfigError, match="config file not found") as info:
        get_settings()
    assert str(missing) in str(info.value)


def test_invalid_yaml_names_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("topic_partitions: [unclosed\n")
    monkeypatch.setenv("BURNWATCH_CONFIG", str(config))
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        get_settings()
    assert str(config) in str(info.value)


def test_misspelled_secret_key_value_is_masked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("kafka_sasl_passwd: hunter2\n")
    monkeypatch.setenv("BURNWATCH_CONFIG", str(config))
    with pytest.raises(ConfigError) as info:
        get_settings()
    assert "kafka_sasl_passwd" in str(info.value)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(("setting", "expected"), [("zstd", "zstd"), ("lz4", "lz4"), ("none", None)])
def test_the_faust_producer_compresses_as_configured(
    setting: str, expected: str | None, tmp_path: Path
) -> None:
    from streams.app import create_app

    app = create_app(Settings(kafka_compression=setting, data_dir=tmp_path))
    assert app.conf.producer_compression_type == expected
