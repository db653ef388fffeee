"""End to end: a simulated runaway agent session -> worker (pricing, detectors) -> notifier -> Slack and PD.

The acceptance of alert delivery: one runaway session pages once and posts one Slack message, then
resolves each once, even though the notifier is SIGKILLed between the page and the resolve.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pytest_httpserver import HTTPServer

from tests.integration.conftest import Stack
from tests.integration.test_notifier_stream import health, server, wait_for
from tests.integration.test_receivers_http import ROUTING_KEY, TOKEN, Recorder, pagerduty_api, slack_api

__all__ = ["server"]  # the fixture, shared with the notifier tests
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
# The loop runs from 300 s to 390 s: its agent_loop alert fires at about 304 s and resolves at about
# 390 s (event time), so the first 380 s page (sent before the kill) and the rest resolve (after it).
LOOP = "runaway_loop:300:90"


def simulate(stack: Stack, duration_s: int, speed: int) -> None:
    """Run ``burnwatch simulate``: paced like live sources, so the detectors' event time moves on.

    The same seed and start give the same events, so the longer second run repeats the first one's
    events (pricing drops them as duplicates by event id) and carries on.
    """
    done = stack.cli("simulate", "--start", START.isoformat(), "--duration", str(duration_s), "--speed",
                     str(speed), "--nodes", "2", "--rate", "1", "--seed", "3", "--incidents", LOOP)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def test_a_runaway_session_pages_once_and_resolves_once_across_a_notifier_sigkill(
    stack_factory: Any, server: HTTPServer, tmp_path: Path
) -> None:
    slack, pd = Recorder(), Recorder()
    slack_api(server, slack)
    pagerduty_api(server, pd)
    others = tmp_path / "other-alerts.jsonl"
    config = tmp_path / "alerting.yaml"
    config.write_text(f"""
alerting:
  receivers:
    slack: {{type: slack, channel: "#ml-spend", token_env: BW_TEST_SLACK_TOKEN,
             base_url: "{server.url_for('/api/')}"}}
    pd: {{type: pagerduty, routing_key_env: BW_TEST_PD_KEY, url: "{server.url_for('/v2/enqueue')}"}}
    file: {{type: jsonl, path: "{others}"}}
  route:
    receivers: [file]
    group_wait: 1s
    group_interval: 2s
    routes:
      - matchers: ["kind=~agent_loop|token_runaway"]
        receivers: [slack, pd]
  delivery: {{initial_backoff: 0.2s, max_backoff: 1s, jitter: 0.1s}}
""")
    # A 5 s idle lane: a source quiet for 5 s (not 30) stops holding the detectors' watermark back.
    stack = stack_factory(alerting_path=config, detectors_idle_lane_s=5, kafka_session_timeout_s=6)
    stack.env |= {"BW_TEST_SLACK_TOKEN": TOKEN, "BW_TEST_PD_KEY": ROUTING_KEY}
    stack.start_worker("w1")
    stack.start_notifier()

    def posts(threaded: bool) -> list[dict[str, Any]]:
        return [b for b in slack.bodies("chat.postMessage") if ("thread_ts" in b) == threaded]

    def pd_events(action: str) -> list[dict[str, Any]]:
        return [b for b in pd.bodies() if b["event_action"] == action]

    simulate(stack, 380, speed=60)
    wait_for(lambda: len(pd_events("trigger")) == 1 and len(posts(False)) == 1, "the page", stack)
    wait_for(lambda: health(stack, "n1")["outbox"] == 0, "an empty outbox", stack)
    time.sleep(1.5)  # the sent records reach the changelog: the kill comes between page and resolve
    assert pd_events("resolve") == [] and slack.bodies("chat.update") == []

    stack.kill_worker("n1")
    stack.start_notifier()
    simulate(stack, 600, speed=120)
    wait_for(lambda: len(pd_events("resolve")) == 1 and len(slack.bodies("chat.update")) == 1, "the resolve",
             stack)
    time.sleep(3)  # past a group interval: anything extra (a replay after the kill) would show by now

    (trigger,) = pd_events("trigger")
    assert len(pd_events("resolve")) == 1 and len(pd.bodies()) == 2, "one page, one resolve"
    assert pd_events("resolve")[0]["dedup_key"] == trigger["dedup_key"]
    assert trigger["payload"]["class"] == "agent_loop" and trigger["payload"]["group"] == "ml-platform"
    assert len(posts(False)) == 1, "one Slack message per incident"
    (edit,) = slack.bodies("chat.update")
    assert [b["thread_ts"] for b in posts(True)] == [edit["ts"]] * len(posts(True)), "updates in its thread"
    assert "RESOLVED" in edit["text"]
    # Whatever else the session raised went to the catch-all route, never to the pager.
    other_kinds = {a["kind"] for line in (others.read_text().splitlines() if others.exists() else [])
                   for a in json.loads(line)["firing"]}
    assert not other_kinds & {"agent_loop", "token_runaway"}
