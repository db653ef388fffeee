"""Every setting of a burnwatch process, in one frozen class read once at start-up.

Values come, highest priority first, from ``BURNWATCH_*`` environment variables, files in
``BURNWATCH_SECRETS_DIR`` (one file per secret, named like the field), and the YAML config file named
by ``BURNWATCH_CONFIG``. Secrets are ``SecretStr``: they print as ``**********``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from alerting.secret_fields import may_be_secret
from streams.gc_tuning import YOUNG_THRESHOLD

ENV_PREFIX = "BURNWATCH_"


class ConfigError(Exception):
    """A setting has a bad value; the message names the field, the value and the source."""


class Settings(BaseSettings):
    """burnwatch settings. Each field is also the env var ``BURNWATCH_<FIELD>`` (upper case)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="forbid",
    )

    # Kafka connection (SASL/TLS are configuration only)
    kafka_bootstrap_servers: str = "localhost:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None

    # Topics
    topic_prefix: str = ""
    topic_partitions: int = Field(default=6, ge=1, le=10_000)
    topic_replication_factor: int = Field(default=1, ge=1, le=16)

    # Worker
    app_id: str = Field(default="burnwatch", min_length=1)
    data_dir: Path = Path(".burnwatch")
    store: Literal["rocksdb", "memory"] = "rocksdb"
    web_host: str = "0.0.0.0"  # noqa: S104 - metrics and health must be reachable by Prometheus
    web_port: int = Field(default=6066, ge=1, le=65_535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    max_message_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    dedup_horizon_hours: float = Field(default=72.0, gt=0)
    # A dead worker's partitions move after this long: short, because a spend guard must keep watching.
    kafka_session_timeout_s: float = Field(default=10.0, ge=6, le=300)
    # Compression of what the faust apps produce. aiokafka compresses lz4 at level 9 (LZ4 HC, about 130
    # MB/s on priced records) and zstd at level 3 (about 380 MB/s, and smaller): zstd costs a third.
    kafka_compression: Literal["zstd", "lz4", "snappy", "gzip", "none"] = "zstd"
    # The hot agents handle what their stream buffered as one batch per partition (streams/batching.py).
    batch_max_messages: int = Field(default=100, ge=1, le=100_000)
    batch_within_s: float = Field(default=0.05, gt=0, le=10)
    # Allocations between the garbage collector's young-generation passes (Python's default: 700; 0 keeps
    # Python's). Reference counting frees the stream's short-lived objects anyway; at 700 the collector's
    # passes, and the older-generation passes they lead to, took a quarter of the detectors' CPU.
    gc_young_threshold: int = Field(default=YOUNG_THRESHOLD, ge=0, le=10_000_000)

    # Pricing and allocation
    catalog_path: Path | None = None
    allocation_path: Path | None = None
    budgets_path: Path | None = None

    # Anomaly detectors (streams/detector_agents.py)
    detectors_enabled: bool = True
    detectors_config_path: Path | None = None
    # A reporter (GPU, app, bucket) silent this long stops holding the detectors' event time back; a
    # rebuilt detector partition waits this long before it moves (and for a silent router, this long
    # past the session timeout).
    detectors_idle_lane_s: float = Field(default=30.0, gt=0)
    # The detector feed's hot loop: the compiled kernel if installed (auto), required, or never.
    detector_kernel: Literal["auto", "compiled", "python"] = "auto"
    # The router applies the inputs of detector partitions its own worker owns in place; false sends
    # every input through detector.inputs (the only way before; see docs/detectors.md).
    detectors_in_place: bool = True

    # Alert delivery (`burnwatch notifier`, its own faust app `<app_id>-notifier`)
    alerting_path: Path | None = None
    notifier_web_port: int = Field(default=6067, ge=1, le=65_535)
    # Spend tables (hourly and daily spend per scope, by event time)
    spend_tables: bool = True
    spend_lateness_hours: float = Field(default=6.0, ge=0, le=24 * 7)
    spend_publish_interval_s: float = Field(default=5.0, gt=0, le=3600)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order the sources: init args, env, secret files, then the YAML config file.

        ``BURNWATCH_SECRETS_DIR`` and ``BURNWATCH_CONFIG`` are read here, when ``Settings()`` is built,
        not when the class is defined, so a process (or a test) may set them after import.
        """
        # Secret files are named like the field (kafka_sasl_password), as Docker and k8s mount them.
        secrets = SecretsSettingsSource(
            settings_cls, secrets_dir=os.environ.get("BURNWATCH_SECRETS_DIR") or None, env_prefix=""
        )
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, secrets]
        config_file = os.environ.get("BURNWATCH_CONFIG")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    def topic(self, name: str) -> str:
        """Return the full name of a burnwatch topic (with the configured prefix)."""
        return f"{self.topic_prefix}{name}"

    def librdkafka_config(self) -> dict[str, Any]:
        """Return confluent-kafka client settings for the configured cluster (secrets included)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.kafka_bootstrap_servers,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
            conf["sasl.username"] = self.kafka_sasl_username or ""
            password = self.kafka_sasl_password
            conf["sasl.password"] = password.get_secret_value() if password else ""
        if self.kafka_ssl_cafile:
            conf["ssl.ca.location"] = str(self.kafka_ssl_cafile)
        if self.kafka_ssl_certfile:
            conf["ssl.certificate.location"] = str(self.kafka_ssl_certfile)
        if self.kafka_ssl_keyfile:
            conf["ssl.key.location"] = str(self.kafka_ssl_keyfile)
        return conf

    def masked(self) -> dict[str, Any]:
        """Return every setting as JSON-ready values, with secrets masked."""
        return self.model_dump(mode="json")


def describe_error(error: ValidationError, source: str | None = None) -> str:
    """Turn a settings validation error into lines that name each field and its bad value."""
    where = f" in {source}" if source else ""
    lines = []
    for err in error.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(settings)"
        value = err.get("input")
        shown = "<secret>" if may_be_secret(field) else value
        lines.append(f"invalid setting {field!r}{where}: {err['msg']} (got {shown!r})")
    return "\n".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read the settings once; raise ``ConfigError`` naming every bad field and value."""
    config_file = os.environ.get("BURNWATCH_CONFIG")
    if config_file and not Path(config_file).is_file():
        raise ConfigError(f"config file not found: {config_file} (from BURNWATCH_CONFIG)")
    try:
        return Settings()
    except ValidationError as error:
        source = f"{config_file} or BURNWATCH_* env" if config_file else "BURNWATCH_* env"
        raise ConfigError(describe_error(error, source)) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {config_file} is not valid YAML: {error}") from None
