"""The notifier on the real broker: one page and one Slack thread per incident, across a SIGKILL; silences.

Alert records are produced on ``alerts`` directly, as the budget and detector agents write them (the
detector agent is being wired separately; the record is the same ``Alert``). Fake Slack Web API and
PagerDuty Events v2 servers are the ones the receiver tests use.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from alerting.model import Alert
from streams.names import ALERTS
from tests.integration.conftest import Stack
from tests.integration.test_receivers_http import ROUTING_KEY, TOKEN, Recorder, pagerduty_api, slack_api

FAST_POLICY = """
  route:
    receivers: [{receivers}]
    group_by: [team, kind]
    group_wait: 1s
    group_interval: 2s
  delivery: {{initial_backoff: 0.2s, max_backoff: 1s, jitter: 0.1s}}
"""


@pytest.fixture
def server() -> Any:
    srv = HTTPServer(host="127.0.0.1", threaded=True)
    srv.start()
    yield srv
    srv.clear()
    if srv.is_running():
        srv.stop()


def health(stack: Stack, name: str) -> dict[str, Any]:
    import urllib.request

    _, port = stack.workers[name]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
        body: dict[str, Any] = json.loads(resp.read())
        return body


def wait_for(check: Callable[[], bool], what: str, stack: Stack, timeout: float = 45) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{stack.log('n1')[-3000:]}")


def produce(stack: Stack, *alerts: Alert) -> None:
    producer = stack.producer()
    for a in alerts:
        producer.produce(stack.topic(ALERTS), key=a.fingerprint.encode(), value=a.model_dump_json().encode())
    assert producer.flush(30) == 0


def runaway(cost: float, detected: datetime, started: datetime, team: str = "ml") -> Alert:
    return Alert.firing(
        "token_runaway", {"session": f"sess-{team}"}, severity="critical",
        summary=f"runaway session of {team}", started_at=started, detected_at=detected,
        labels={"team": team}, cost_impact_usd=cost,
    )


def test_one_page_and_one_slack_thread_per_incident_across_a_sigkill(
    stack_factory: Any, server: HTTPServer, tmp_path: Path
) -> None:
    slack, pd = Recorder(), Recorder()
    slack_down = {"now": True, "refused": 0}

    def gate() -> Response | None:
        if slack_down["now"]:
            slack_down["refused"] += 1
            return Response("unavailable", 503)
        return None

    slack_api(server, slack, gate)
    pagerduty_api(server, pd)
    config = tmp_path / "alerting.yaml"
    config.write_text(f"""
alerting:
  receivers:
    slack: {{type: slack, channel: "#spend", token_env: BW_TEST_SLACK_TOKEN,
             base_url: "{server.url_for('/api/')}"}}
    pd: {{type: pagerduty, routing_key_env: BW_TEST_PD_KEY, url: "{server.url_for('/v2/enqueue')}"}}
""" + FAST_POLICY.format(receivers="slack, pd"))
    stack = stack_factory(alerting_path=config, kafka_session_timeout_s=6)
    stack.env |= {"BW_TEST_SLACK_TOKEN": TOKEN, "BW_TEST_PD_KEY": ROUTING_KEY}
    stack.start_notifier()

    def posts(threaded: bool) -> list[dict[str, Any]]:
        return [b for b in slack.bodies("chat.postMessage") if ("thread_ts" in b) == threaded]

    def pd_events(action: str) -> list[dict[str, Any]]:
        return [b for b in pd.bodies() if b["event_action"] == action]

    started = datetime.now(UTC) - timedelta(minutes=10)
    produce(stack, runaway(10.0, started + timedelta(minutes=1), started))
    # Slack is down when the incident starts: its message waits in the outbox, retried, while PagerDuty
    # pages. The notifier dies with it there; Slack comes back; the restarted notifier delivers it.
    wait_for(lambda: len(pd_events("trigger")) == 1 and slack_down["refused"] >= 2, "the page", stack)
    assert health(stack, "n1")["outbox"] == 1
    time.sleep(1.5)
    stack.kill_worker("n1")
    slack_down["now"] = False
    stack.start_notifier()
    wait_for(lambda: len(posts(False)) == 1, "the Slack message from the outbox", stack)
    # The session keeps burning: an update, in the Slack thread only (PagerDuty was paged once).
    produce(stack, runaway(60.0, started + timedelta(minutes=2), started))
    wait_for(lambda: len(posts(True)) == 1, "the update", stack)
    # Every decided notification delivered and recorded before the kill (the record write is the only
    # window left, and PagerDuty's dedup_key covers it there).
    wait_for(lambda: health(stack, "n1")["outbox"] == 0, "an empty outbox", stack)
    time.sleep(1.5)

    stack.kill_worker("n1")
    stack.start_notifier()
    ended = started + timedelta(minutes=4)
    produce(stack, runaway(60.0, ended, started).resolve(ended))
    wait_for(lambda: len(pd_events("resolve")) == 1 and len(slack.bodies("chat.update")) == 1, "the resolve",
             stack)
    time.sleep(5)  # two group intervals: anything extra (a replay after the kill) would show by now

    assert len(posts(False)) == 1, "one Slack message per incident"
    assert len(posts(True)) == 1, "one thread update (10 -> 60 USD)"
    assert len(slack.bodies("chat.update")) == 1, "the message edited once, on resolve"
    assert posts(True)[0]["thread_ts"] == slack.bodies("chat.update")[0]["ts"]
    assert len(pd_events("trigger")) == 1, "one page: no update and no restart triggers it again"
    assert len(pd_events("resolve")) == 1
    assert len(pd.bodies()) == 2
    assert len({b["dedup_key"] for b in pd.bodies()}) == 1, "one PagerDuty incident"
    assert pd_events("trigger")[0]["payload"]["custom_details"]["cost_impact_usd"] == 10.0
    metrics = stack.metrics("n1")
    assert 'burnwatch_notifications_sent_total{receiver="pd"}' in metrics


def test_a_silence_added_with_the_cli_stops_notifications(
    stack_factory: Any, tmp_path: Path
) -> None:
    out = tmp_path / "notifications.jsonl"
    config = tmp_path / "alerting.yaml"
    config.write_text(f"""
alerting:
  receivers:
    file: {{type: jsonl, path: "{out}"}}
""" + FAST_POLICY.format(receivers="file"))
    stack = stack_factory(alerting_path=config)
    stack.start_notifier()

    def sent(team: str) -> list[dict[str, Any]]:
        lines = out.read_text().splitlines() if out.exists() else []
        return [n for n in map(json.loads, lines) if n["group_labels"]["team"] == team]

    added = stack.cli("silence", "add", "team=ml", "kind=~token_.*", "--duration", "1h", "--author", "tester",
                      "--comment", "load test of the ml gateway")
    assert added.returncode == 0, added.stderr.decode()
    silence_id = added.stdout.decode().strip()
    listed = stack.cli("silence", "list", "--json")
    assert [s["id"] for s in json.loads(listed.stdout)] == [silence_id]
    time.sleep(5)  # the promise: within 5 s every notifier applies it

    started = datetime.now(UTC) - timedelta(minutes=5)
    produce(stack, runaway(30.0, started, started, team="ml"), runaway(30.0, started, started, team="web"))
    wait_for(lambda: len(sent("web")) == 1, "the unsilenced team's page", stack)
    time.sleep(5)  # past the silenced group's wait and two of its intervals
    assert sent("ml") == [], "the silenced alert was notified"

    expired = stack.cli("silence", "expire", silence_id)
    assert expired.returncode == 0, expired.stderr.decode()
    wait_for(lambda: len(sent("ml")) == 1, "the alert once its silence expired", stack)
    assert [n["transition"] for n in sent("ml") + sent("web")] == ["firing", "firing"]
    assert stack.cli("silence", "list", "--json").stdout.strip() == b"[]"


def burst_alert(i: int, at: datetime) -> Alert:
    kind = "token_runaway" if i % 3 else "agent_loop"
    return Alert.firing(
        kind, {"session": f"burst-{i}"}, severity="critical", summary=f"session burst-{i} burns tokens",
        started_at=at, detected_at=at + timedelta(seconds=i * 0.05), labels={"team": "ml"},
        cost_impact_usd=1.0 + i / 100,
    )


def slack_count(body: dict[str, Any]) -> int:
    """The number of firing alerts a Slack message reports, read from its header."""
    head = body["blocks"][0]["text"]["text"]
    found = re.search(r"update: (\d+) firing|still firing: (\d+)|\] (\d+) \S+ alerts", head)
    if found is None:  # a single alert's own summary
        return 1
    return int(next(g for g in found.groups() if g))


def test_a_thousand_alerts_in_a_minute_make_few_slack_messages_and_pages_within_the_limit(
    stack_factory: Any, server: HTTPServer, tmp_path: Path
) -> None:
    """Acceptance: 1,000 alerts of one team within a minute, through the notifier on the broker."""
    slack, pd = Recorder(), Recorder()
    pd_times: list[float] = []

    def pd_limit() -> Response | None:  # PagerDuty's ~120 events per minute per integration key
        now = time.monotonic()
        pd_times.append(now)
        return Response("{}", 429) if len([t for t in pd_times if t > now - 60]) > 120 else None

    slack_api(server, slack)
    pagerduty_api(server, pd, pd_limit)
    out = tmp_path / "notifications.jsonl"
    config = tmp_path / "alerting.yaml"
    # The critical defaults (5 s wait, 1 min interval) with a shorter interval: the test is under a minute.
    config.write_text(f"""
alerting:
  receivers:
    slack: {{type: slack, channel: "#spend", token_env: BW_TEST_SLACK_TOKEN,
             base_url: "{server.url_for('/api/')}"}}
    pd: {{type: pagerduty, routing_key_env: BW_TEST_PD_KEY, url: "{server.url_for('/v2/enqueue')}"}}
    file: {{type: jsonl, path: "{out}"}}
  route:
    receivers: [slack, pd, file]
    group_by: [team, kind]
    group_interval: 8s
""")
    stack = stack_factory(alerting_path=config)
    stack.env |= {"BW_TEST_SLACK_TOKEN": TOKEN, "BW_TEST_PD_KEY": ROUTING_KEY}
    stack.start_notifier()

    started = datetime.now(UTC) - timedelta(seconds=60)
    alerts = [burst_alert(i, started) for i in range(1000)]
    produce(stack, *alerts)
    expected = {a.fingerprint for a in alerts}

    def delivered_fingerprints() -> set[str]:
        lines = out.read_text().splitlines() if out.exists() else []
        return {a["fingerprint"] for n in map(json.loads, lines) for a in n["firing"]}

    def threads() -> dict[str, list[dict[str, Any]]]:
        by_thread: dict[str, list[dict[str, Any]]] = {}
        for i, body in enumerate(slack.bodies("chat.postMessage")):
            # The fake Slack numbers its answers' ts in post order; replies name their root's ts.
            by_thread.setdefault(body.get("thread_ts", f"1700000000.{i + 1:06d}"), []).append(body)
        return by_thread

    def slack_accounts_for_all() -> bool:
        return sum(slack_count(msgs[-1]) for msgs in threads().values()) == 1000

    wait_for(lambda: delivered_fingerprints() == expected and slack_accounts_for_all(), "every alert", stack,
             timeout=50)
    wait_for(lambda: health(stack, "n1")["outbox"] == 0, "an empty outbox", stack)

    messages = slack.bodies("chat.postMessage")
    assert 2 <= len(messages) <= 10, f"{len(messages)} Slack messages for 1,000 alerts"
    assert len([m for m in messages if "thread_ts" not in m]) == 2, "one thread per (team, kind) group"
    events = pd.bodies()
    assert [e["event_action"] for e in events] == ["trigger", "trigger"], "one page per group"
    assert max(len([t for t in pd_times if s <= t < s + 60]) for s in pd_times) <= 120
    assert len(pd_times) == len(events), "PagerDuty never throttled the notifier"
