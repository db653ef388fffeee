"""Alerting config: defaults, secrets from env and files, errors naming the field, masking, docs example."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from alerting.config import AlertingConfigError, load_config, parse_config
from alerting.receivers.factory import build_receivers

REPO = Path(__file__).resolve().parents[2]
TOKEN, ROUTING_KEY, HOOK_SECRET = "xoxb-TOKEN-123", "R0UTINGKEY0123456789", "whsec-abc-987"
ENV = {"SLACK_TOKEN": TOKEN, "PD_KEY": ROUTING_KEY, "HOOK_SECRET": HOOK_SECRET}


def error_of(data: dict[str, Any], env: dict[str, str] | None = None) -> str:
    with pytest.raises(AlertingConfigError) as info:
        parse_config(data, env=ENV if env is None else env)
    return str(info.value)


def test_nothing_configured_means_console_and_jsonl_with_documented_timing() -> None:
    cfg = parse_config({})
    assert set(cfg.receivers) == {"console", "jsonl"} and cfg.route.receivers == ["console", "jsonl"]
    assert cfg.timing_for("critical").group_wait == timedelta(seconds=5)
    assert cfg.timing_for("warning").repeat_interval == timedelta(hours=4)
    assert cfg.delivery.max_retry == timedelta(hours=24)
    assert [r.name for r in cfg.inhibit_rules] == [
        "budget-exceeded-mutes-its-lower-thresholds",
        "budget-exceeded-mutes-its-forecast",
        "telemetry-gap-mutes-idle-gpu",
    ]


def test_secrets_come_from_env_or_files_and_never_print(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "pd").write_text(ROUTING_KEY + "\n")
    cfg = parse_config(
        {
            "receivers": {
                "slack": {"type": "slack", "channel": "#spend", "token_env": "SLACK_TOKEN"},
                "pd": {"type": "pagerduty", "routing_key_file": str(tmp_path / "pd")},
                "hook": {"type": "webhook", "url": "https://hooks.example/x", "secret_env": "HOOK_SECRET"},
            }
        },
        env=ENV,
    )
    assert cfg.receivers["pd"].routing_key.get_secret_value() == ROUTING_KEY  # type: ignore[union-attr]
    with caplog.at_level(logging.DEBUG):
        receivers = build_receivers(cfg)
        logging.getLogger("test").info("config %s receivers %s", cfg, receivers)
    shown = " ".join([repr(cfg), str(cfg.masked()), repr(receivers), caplog.text])
    for secret in (TOKEN, ROUTING_KEY, HOOK_SECRET):
        assert secret not in shown
    assert "**********" in str(cfg.masked())


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        (
            {"receivers": {"pd": {"type": "pagerduty", "routing_key_env": "NOPE"}}},
            "receivers.pd.pagerduty",
            "routing_key_env: environment variable NOPE is not set",
        ),
        ({"receivers": {"s": {"type": "slack", "channel": "#c"}}}, "receivers.s.slack", "token: required"),
        (
            {
                "receivers": {
                    "s": {"type": "slack", "channel": "#c", "token_env": "SLACK_TOKEN", "token": "x"}
                }
            },
            "receivers.s.slack",
            "token: set only one of token, token_env",
        ),
        (
            {"receivers": {"s": {"type": "slack", "channel": "#c", "token_file": "/nonexistent/t"}}},
            "receivers.s.slack",
            "token_file: secret file /nonexistent/t does not exist",
        ),
        ({"receivers": {"h": {"type": "webhook", "url": "ftp://x"}}}, "receivers.h.webhook", "url:"),
        (
            {"receivers": {"h": {"type": "webhook", "url": "https://x", "timeout_s": 0}}},
            "receivers.h.webhook.timeout_s",
            "greater than 0",
        ),
        ({"receivers": {"h": {"type": "carrier-pigeon"}}}, "receivers.h", "tag 'carrier-pigeon'"),
        (
            {
                "receivers": {"c": {"type": "console"}},
                "route": {"receivers": ["c"], "routes": [{"receivers": ["pd"]}]},
            },
            "alerting",
            "route.routes.0.receivers: unknown receiver 'pd'",
        ),
        (
            {"route": {"receivers": ["console"], "routes": [{"matchers": ["team"]}]}},
            "route.routes.0.matchers.0",
            "not name=value",
        ),
        ({"route": {"receivers": ["console"], "group_wait": "soon"}}, "route.group_wait", "not a duration"),
        (
            {"delivery": {"fallback_receiver": "pager"}},
            "alerting",
            "delivery.fallback_receiver: unknown receiver",
        ),
        (
            {"teams": {"ml": {"receivers": ["nope"]}}},
            "alerting",
            "teams.ml.receivers: unknown receiver 'nope'",
        ),
        (
            {"maintenance_windows": [{"name": "w", "weekdays": ["sat"]}]},
            "maintenance_windows.0",
            "a weekly window needs all three",
        ),
        (
            {
                "receivers": {
                    "rb": {
                        "type": "runbook",
                        "actions": {"idle_gpu": {"http": {"url": "https://evil.example/x"}}},
                        "allowed_hosts": ["k8s.internal"],
                    }
                }
            },
            "receivers.rb.runbook",
            "actions.idle_gpu.http.url: host 'evil.example' is not in allowed_hosts",
        ),
        (
            {
                "receivers": {
                    "rb": {"type": "runbook", "actions": {"idle_gpu": {"command": {"argv": ["rm", "-rf"]}}}}
                }
            },
            "receivers.rb.runbook",
            "'rm' is not in allowed_commands",
        ),
        (
            {
                "receivers": {
                    "rb": {
                        "type": "runbook",
                        "actions": {"gpu_melted": {"command": {"argv": ["x"]}}},
                        "allowed_commands": ["x"],
                    }
                }
            },
            "receivers.rb.runbook",
            "unknown alert kind",
        ),
        (
            {
                "receivers": {
                    "pd": {
                        "type": "pagerduty",
                        "routing_key_env": "PD_KEY",
                        "severity_map": {"fatal": "error"},
                    }
                }
            },
            "receivers.pd.pagerduty",
            "severity_map: unknown severities ['fatal']",
        ),
    ],
)
def test_malformed_config_fails_naming_the_field(data: dict[str, Any], field: str, words: str) -> None:
    message = error_of(data)
    assert f"at {field}:" in message
    assert words in message


def test_errors_never_echo_a_secret_value() -> None:
    message = error_of({"receivers": {"s": {"type": "slack", "channel": "", "token": TOKEN}}})
    assert "receivers.s.slack.channel" in message and TOKEN not in message


def test_load_config_reads_the_alerting_section_and_reports_the_file(tmp_path: Path) -> None:
    path = tmp_path / "burnwatch.yaml"
    path.write_text("alerting:\n  route:\n    group_wait: nope\n")
    with pytest.raises(AlertingConfigError, match=r"in .*burnwatch.yaml at route.group_wait"):
        load_config(path)
    with pytest.raises(AlertingConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_with_teams_adds_team_default_routes_after_explicit_ones() -> None:
    cfg = parse_config({"receivers": {"c": {"type": "console"}, "ml": {"type": "console"}}}).with_teams(
        {"ml-platform": ["ml"]}
    )
    route = cfg.effective_route()
    assert route.routes[-1].receivers == ["ml"] and str(route.routes[-1].matchers[0]) == 'team="ml-platform"'
    with pytest.raises(AlertingConfigError, match="teams.web.receivers"):
        cfg.with_teams({"web": ["nobody"]})


def test_the_docs_example_is_valid(tmp_path: Path) -> None:
    text = (REPO / "docs/alerting.md").read_text(encoding="utf-8")
    example = re.search(r"```yaml\n(alerting:\n.*?)```", text, re.S)
    assert example, "docs/alerting.md has no full ```yaml alerting: example"
    path = tmp_path / "burnwatch.yaml"
    path.write_text(example.group(1))
    env = {
        "SLACK_BOT_TOKEN": TOKEN,
        "PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
        "ALERT_WEBHOOK_SECRET": HOOK_SECRET,
        "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/X",
    }
    cfg = load_config(path, env=env)
    assert {"slack", "pagerduty", "webhook", "runbook"} <= {r.type for r in cfg.receivers.values()}
    assert set(build_receivers(cfg)) == set(cfg.receivers)


def test_an_error_names_the_field_and_its_value_unless_the_value_may_be_a_secret() -> None:
    bad_timeout = error_of({"receivers": {"pd": {"type": "pagerduty", "routing_key_env": "PD_KEY",
                                                 "timeout_s": -1}}})
    assert "at receivers.pd.pagerduty.timeout_s: Input should be greater than 0 (got -1)" in bad_timeout
    hook = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"
    for receiver in ({"type": "slack_webhook", "url": hook, "timeout_s": "soon"},
                     {"type": "slack_webhook", "url": 12345},
                     {"type": "slack_webhook", "url": "ftp://" + hook[8:]},
                     {"type": "slack", "channel": "#spend", "token": ["xoxb-SECRET"]}):
        message = error_of({"receivers": {"h": receiver}})
        assert "receivers.h." in message
        assert "SECRET" not in message and "12345" not in message, message
    assert "(got 'soon')" in error_of({"receivers": {"h": {"type": "slack_webhook", "url": hook,
                                                            "timeout_s": "soon"}}})
