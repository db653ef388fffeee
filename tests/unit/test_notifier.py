"""The notifier shell without a broker: its wiring, record parsing, metrics, and the config/silence CLIs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from alerting.config import AlertingConfigError, parse_config
from alerting.delivery import Dispatcher
from alerting.model import Alert
from alerting.notification import Notification
from alerting.receivers.base import MemoryReceiver
from alerting.receivers.factory import build_receivers
from streams.cli import app as cli_app
from streams.metrics import WorkerMetrics
from streams.notifier_agents import (
    LiveNotifier,
    parse_alerts,
    sync_metrics,
    wanted,
)
from streams.notifier_silences import SilenceFeed
from streams.notifier_worker import build_notifier, load_alerting, notifier_settings
from streams.settings import Settings, get_settings

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)


def alert(session: str = "s1") -> Alert:
    return Alert.firing("token_runaway", {"session": session}, severity="critical", summary="runaway",
                        started_at=T0, detected_at=T0, labels={"team": "ml"})


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    for var in ("BURNWATCH_CONFIG", "BURNWATCH_ALERTING_PATH", "BURNWATCH_SECRETS_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BURNWATCH_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_a_record_is_one_alert_or_an_array_of_alerts() -> None:
    one, two = alert("s1"), alert("s2")
    assert parse_alerts(one.model_dump_json().encode()) == [one]
    array = json.dumps([one.model_dump(mode="json"), two.model_dump(mode="json")]).encode()
    assert parse_alerts(array) == [one, two]
    with pytest.raises(ValidationError):
        parse_alerts(b'{"kind": "idle_gpu"}')


def test_the_notifier_is_its_own_app_with_memory_tables(tmp_path: Path) -> None:
    settings = Settings(app_id="bw", data_dir=tmp_path, notifier_web_port=7001)
    own = notifier_settings(settings)
    assert (own.app_id, own.store, own.web_port) == ("bw-notifier", "memory", 7001)
    notifier = build_notifier(settings)
    assert set(notifier.app.agents) == {"route_alerts", "notify_alerts"}
    changelogs = {t.changelog_topic.get_topic_name() for t in notifier.app.tables.values()}
    assert changelogs == {
        "bw-notifier-notifier_state_by_key-changelog",
        "bw-notifier-sent_record_by_group_id-changelog",
    }
    assert set(notifier.dispatcher.receivers) == {"console", "jsonl"}


def test_notifier_agents_tables_and_changelogs_are_documented(tmp_path: Path) -> None:
    architecture = (REPO / "docs/architecture.md").read_text(encoding="utf-8")
    notifier = build_notifier(Settings(data_dir=tmp_path))
    for name in [*notifier.app.agents, *notifier.app.tables]:
        assert f"| `{name}` |" in architecture
        assert name in (REPO / "docs/alerting.md").read_text(encoding="utf-8")
    for name in notifier.app.tables:
        assert f"`<app_id>-notifier-{name}-changelog`" in architecture


def test_without_an_alerting_file_console_and_jsonl_under_the_data_dir(tmp_path: Path) -> None:
    config = load_alerting(Settings(data_dir=tmp_path))
    assert config.route.receivers == ["console", "jsonl"]
    assert config.receivers["jsonl"].path == tmp_path / "notifications.jsonl"  # type: ignore[union-attr]


def test_a_bad_alerting_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "alerting.yaml"
    path.write_text("alerting:\n  receivers: {c: {type: console}}\n  route: {receivers: [pager]}\n")
    with pytest.raises(AlertingConfigError, match="route.receivers: unknown receiver 'pager'"):
        load_alerting(Settings(alerting_path=path))


def test_dispatcher_counters_become_metrics_once() -> None:
    metrics = WorkerMetrics()
    dispatcher = Dispatcher({"slack": MemoryReceiver("slack")})
    live = LiveNotifier(outbox={"n1": (0, "slack"), "n2": (1, "slack")})
    feed = SilenceFeed(Settings())
    copied: dict[tuple[str, str], int] = {}
    dispatcher.stats["slack"].delivered, dispatcher.stats["slack"].retries = 3, 5
    sync_metrics(dispatcher, live, feed, metrics, copied)
    sync_metrics(dispatcher, live, feed, metrics, copied)  # nothing new: nothing added
    dispatcher.stats["slack"].failed = 1
    sync_metrics(dispatcher, live, feed, metrics, copied)

    def value(name: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"receiver": "slack"})

    assert value("burnwatch_notifications_sent_total") == 3
    assert value("burnwatch_notification_retries_total") == 5
    assert value("burnwatch_notifications_failed_total") == 1
    assert value("burnwatch_notifications_pending") == 2
    assert metrics.registry.get_sample_value("burnwatch_silences_active") == 0


def test_config_show_masks_secrets(
    cli_env: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "alerting.yaml"
    path.write_text("alerting:\n  receivers:\n    pd: {type: pagerduty, routing_key_env: PD_KEY}\n"
                    "    hook: {type: webhook, url: 'https://h.example/x', secret: hook-secret-1}\n")
    monkeypatch.setenv("PD_KEY", "pd-routing-key-123")
    monkeypatch.setenv("BURNWATCH_ALERTING_PATH", str(path))
    monkeypatch.setenv("BURNWATCH_KAFKA_SASL_PASSWORD", "kafka-pass-9")
    result = cli_env.invoke(cli_app, ["config", "show"])
    assert result.exit_code == 0, result.output
    for secret in ("pd-routing-key-123", "hook-secret-1", "kafka-pass-9"):
        assert secret not in result.output
    doc = yaml.safe_load(result.output)
    assert doc["settings"]["kafka_sasl_password"] == "**********"
    assert doc["alerting"]["receivers"]["pd"]["routing_key"] == "**********"
    assert doc["alerting"]["receivers"]["hook"]["secret"] == "**********"
    as_json = json.loads(cli_env.invoke(cli_app, ["config", "show", "--json"]).output)
    assert as_json["alerting"]["route"]["receivers"] == ["pd", "hook"]


def test_config_show_refuses_a_bad_alerting_file(
    cli_env: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "alerting.yaml"
    path.write_text("alerting:\n  receivers:\n    pd: {type: pagerduty, routing_key_env: PD_KEY_UNSET}\n")
    monkeypatch.delenv("PD_KEY_UNSET", raising=False)
    monkeypatch.setenv("BURNWATCH_ALERTING_PATH", str(path))
    result = cli_env.invoke(cli_app, ["config", "show"])
    assert result.exit_code == 2
    assert "routing_key_env: environment variable PD_KEY_UNSET is not set" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["team"], "is not name=value"),
    (["team=ml", "--duration", "soon"], "is not a duration"),
    (["team=ml", "--duration", "0s"], "must be positive"),
])
def test_silence_add_checks_its_input_before_touching_kafka(
    cli_env: CliRunner, args: list[str], message: str
) -> None:
    result = cli_env.invoke(cli_app, ["silence", "add", *args, "--comment", "why"])
    assert result.exit_code == 2
    assert message in result.output


def test_pagerduty_declines_updates_unless_retriggering_and_the_notifier_never_queues_them() -> None:
    receivers = build_receivers(parse_config({"receivers": {
        "pd": {"type": "pagerduty", "routing_key": "k"},
        "pd_loud": {"type": "pagerduty", "routing_key": "k", "retrigger_on_update": True},
        "slack": {"type": "console"},
    }}))
    dispatcher = Dispatcher(receivers)

    def note(receiver: str, transition: str) -> Notification:
        return Notification(receiver=receiver, key="k", epoch=T0, sequence=2, transition=transition,
                            severity="critical", group_labels={}, created_at=T0)  # type: ignore[arg-type]

    transitions = ("firing", "updated", "resolved")
    assert [wanted(dispatcher, note("pd", t)) for t in transitions] == [True, False, True]
    assert wanted(dispatcher, note("pd_loud", "updated")) and wanted(dispatcher, note("slack", "updated"))
