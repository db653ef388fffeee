"""Receivers against real local HTTP servers speaking the Slack Web API, Slack webhook, PagerDuty Events v2
and a signed-webhook consumer (pytest-httpserver; no Kafka).

Outages last ``BURNWATCH_TEST_DOWN_SECONDS`` (default 2 s in CI; the issue's variant is
``BURNWATCH_TEST_DOWN_SECONDS=30``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from alerting.config import parse_config
from alerting.delivery import Dispatcher, RetryPolicy
from alerting.model import Alert
from alerting.notification import Notification
from alerting.policy import Policy, PolicyState, Received, Tick
from alerting.receivers.base import Receiver
from alerting.receivers.factory import build_receivers
from alerting.receivers.pagerduty import PagerDutyReceiver
from alerting.receivers.runbook import RunbookReceiver
from alerting.receivers.slack import SlackReceiver, SlackWebhookReceiver
from alerting.receivers.webhook import WebhookReceiver

DOWN_S = float(os.environ.get("BURNWATCH_TEST_DOWN_SECONDS", "2"))
TOKEN, ROUTING_KEY, SECRET = "xoxb-SECRET-token-42", "PDKEY0123456789abcdef", "hmac-secret-xyz"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
FAST = RetryPolicy(
    max_retry=timedelta(seconds=DOWN_S * 4 + 20),
    initial_backoff=timedelta(milliseconds=100),
    max_backoff=timedelta(seconds=1),
    jitter=timedelta(milliseconds=100),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server() -> Iterator[HTTPServer]:
    srv = HTTPServer(host="127.0.0.1", threaded=True)
    srv.start()
    yield srv
    srv.clear()
    if srv.is_running():
        srv.stop()


class Recorder:
    """Thread-safe record of request bodies seen by a fake service."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, str], bytes]] = []

    def add(self, request: Request) -> None:
        with self.lock:
            self.requests.append((request.path, dict(request.headers), request.get_data()))

    def bodies(self, path_part: str = "") -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(b) for p, _, b in self.requests if path_part in p]


def slack_api(srv: HTTPServer, rec: Recorder, gate: Callable[[], Response | None] = lambda: None) -> None:
    counter = iter(range(1, 1_000_000))

    def handle(request: Request) -> Response:
        blocked = gate()
        if blocked is not None:
            return blocked
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return Response(
                json.dumps({"ok": False, "error": "invalid_auth"}), 200, content_type="application/json"
            )
        rec.add(request)
        body = request.get_json()
        if request.path.endswith("chat.update"):
            answer = {"ok": True, "channel": body["channel"], "ts": body["ts"], "text": body.get("text")}
        else:
            answer = {
                "ok": True,
                "channel": "C0SPEND",
                "ts": f"1700000000.{next(counter):06d}",
                "message": {"text": body.get("text")},
            }
        return Response(json.dumps(answer), 200, content_type="application/json")

    srv.expect_request("/api/chat.postMessage", method="POST").respond_with_handler(handle)
    srv.expect_request("/api/chat.update", method="POST").respond_with_handler(handle)


def pagerduty_api(srv: HTTPServer, rec: Recorder, gate: Callable[[], Response | None] = lambda: None) -> None:
    def handle(request: Request) -> Response:
        blocked = gate()
        if blocked is not None:
            return blocked
        body = request.get_json()
        if body.get("routing_key") != ROUTING_KEY or body.get("event_action") not in ("trigger", "resolve"):
            return Response(json.dumps({"status": "invalid event", "errors": ["bad"]}), 400)
        rec.add(request)
        answer = {"status": "success", "message": "Event processed", "dedup_key": body["dedup_key"]}
        return Response(json.dumps(answer), 202, content_type="application/json")

    srv.expect_request("/v2/enqueue", method="POST").respond_with_handler(handle)


def webhook_api(srv: HTTPServer, rec: Recorder, delay: Callable[[], float] = lambda: 0.0) -> None:
    def handle(request: Request) -> Response:
        time.sleep(delay())
        body, ts = request.get_data(), request.headers.get("X-Burnwatch-Timestamp", "")
        expected = (
            "sha256=" + hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        )
        if not hmac.compare_digest(expected, request.headers.get("X-Burnwatch-Signature", "")):
            return Response("bad signature", 401)
        rec.add(request)
        return Response("", 204)

    srv.expect_request("/hook", method="POST").respond_with_handler(handle)


def alert(i: int, kind: str = "token_runaway", at: datetime = T0) -> Alert:
    return Alert.firing(
        kind,
        {"session": f"s{i}"},
        severity="critical",
        summary=f"session s{i} burns tokens",
        started_at=at,
        detected_at=at,
        labels={"team": "ml"},
        cost_impact_usd=10.0 + i,
        runbook_url="https://runbooks.example/token-runaway",
        evidence={"top_contributors": [{"name": "gpt-4o", "cost_usd": 9.0 + i}]},
    )


def notification(receiver: str, i: int, transition: str = "firing", sequence: int = 1) -> Notification:
    a = alert(i)
    firing = (a,) if transition != "resolved" else ()
    resolved = (a.resolve(T0 + timedelta(minutes=5)),) if transition == "resolved" else ()
    return Notification(
        receiver=receiver,
        key=a.fingerprint,
        epoch=T0,
        sequence=sequence,
        transition=transition,
        severity="critical",
        group_labels={"team": "ml"},
        firing=firing,
        resolved=resolved,
        created_at=T0,
    )  # type: ignore[arg-type]


def dispatch(
    receivers: dict[str, Receiver], notifications: list[Notification], retry: RetryPolicy = FAST
) -> Dispatcher:
    async def main() -> Dispatcher:
        d = Dispatcher(receivers, retry=retry)
        for n in notifications:
            await d.submit(n)
        await d.join()
        await d.close()
        return d

    return asyncio.run(main())


def no_secrets(rec: Recorder) -> None:
    for _, _, body in rec.requests:
        text = body.decode()
        for secret in (TOKEN, SECRET):
            assert secret not in text
        if ROUTING_KEY in text:  # Events v2 wants it at the top level of the body, and nowhere else
            assert ROUTING_KEY not in json.dumps(
                {k: v for k, v in json.loads(text).items() if k != "routing_key"}
            )


def test_slack_posts_threads_updates_and_edits_on_resolve(server: HTTPServer) -> None:
    rec = Recorder()
    slack_api(server, rec)
    slack = SlackReceiver(
        "slack",
        token=SecretStr(TOKEN),
        channel="#spend",
        base_url=server.url_for("/api/"),
        dashboard_url="https://grafana.example/d/bw?var-team=$team",
    )
    dispatch(
        {"slack": slack},
        [
            notification("slack", 1),
            notification("slack", 1, "updated", 2),
            notification("slack", 1, "resolved", 3),
        ],
    )
    post, reply, edit = rec.requests
    assert post[0].endswith("chat.postMessage") and reply[0].endswith("chat.postMessage")
    assert edit[0].endswith("chat.update")
    first, second, third = (json.loads(r[2]) for r in rec.requests)
    assert "thread_ts" not in first and second["thread_ts"] == third["ts"] == "1700000000.000001"
    text = json.dumps(first["blocks"])
    for words in (
        "What",
        "Owner",
        "Dollar impact",
        "Since",
        "Top contributors",
        "gpt-4o",
        "$11.00",
        "runbooks.example/token-runaway|Runbook",
        "var-team=ml|Dashboard",
    ):
        assert words in text
    assert ":white_check_mark:" in json.dumps(third["blocks"])
    no_secrets(rec)


def test_slack_incoming_webhook(server: HTTPServer) -> None:
    rec = Recorder()

    def handle(request: Request) -> Response:
        rec.add(request)
        return Response("ok", 200)

    server.expect_request("/services/T0/B0/XYZ", method="POST").respond_with_handler(handle)
    hook = SlackWebhookReceiver("hook", url=SecretStr(server.url_for("/services/T0/B0/XYZ")))
    d = dispatch({"hook": hook}, [notification("hook", 1), notification("hook", 1, "resolved", 2)])
    assert d.stats["hook"].delivered == 2
    assert [b["blocks"][0]["type"] for b in rec.bodies()] == ["header", "header"]


def test_pagerduty_trigger_and_resolve_by_dedup_key(server: HTTPServer) -> None:
    rec = Recorder()
    pagerduty_api(server, rec)
    pd = PagerDutyReceiver("pd", routing_key=SecretStr(ROUTING_KEY), url=server.url_for("/v2/enqueue"))
    n = notification("pd", 1)
    result = pd.deliver(n)
    assert result.ok and result.ref == {"dedup_key": n.key}
    update = pd.deliver(notification("pd", 1, "updated", 2))
    assert update.ok and "not sent" in update.detail  # the incident is paged once; updates go to Slack
    pd.deliver(notification("pd", 1, "resolved", 3))
    trigger, resolve = rec.bodies()
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == alert(1).fingerprint
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["custom_details"]["cost_impact_usd"] == 11.0
    assert {link["text"] for link in trigger["links"]} == {"Runbook"}
    no_secrets(rec)


@pytest.mark.parametrize(("retrigger", "actions"), [
    (None, ["trigger", "resolve"]),
    (False, ["trigger", "resolve"]),
    (True, ["trigger", "trigger", "trigger", "resolve"]),
])
def test_pagerduty_updates_trigger_again_only_when_configured(
    server: HTTPServer, retrigger: bool | None, actions: list[str]
) -> None:
    rec = Recorder()
    pagerduty_api(server, rec)
    pd_config: dict[str, Any] = {
        "type": "pagerduty", "routing_key": ROUTING_KEY, "url": server.url_for("/v2/enqueue"),
    }
    if retrigger is not None:
        pd_config["retrigger_on_update"] = retrigger
    receivers = build_receivers(parse_config({"receivers": {"pd": pd_config}}))
    reminder = notification("pd", 1, "updated", 3).model_copy(update={"repeat": True})
    notes = [notification("pd", 1), notification("pd", 1, "updated", 2), reminder,
             notification("pd", 1, "resolved", 4)]
    d = dispatch(receivers, notes)
    assert [b["event_action"] for b in rec.bodies()] == actions
    assert {b["dedup_key"] for b in rec.bodies()} == {alert(1).fingerprint}
    assert d.stats["pd"].delivered == 4 and d.stats["pd"].failed == 0


def test_webhook_is_signed_and_a_bad_secret_is_refused(server: HTTPServer) -> None:
    rec = Recorder()
    webhook_api(server, rec)
    good = WebhookReceiver("hook", url=server.url_for("/hook"), secret=SecretStr(SECRET))
    bad = WebhookReceiver("hook", url=server.url_for("/hook"), secret=SecretStr("wrong"))
    assert good.deliver(notification("hook", 1)).ok
    refused = bad.deliver(notification("hook", 2))
    assert refused.status == "failed" and "401" in refused.detail
    (body,) = rec.bodies()
    assert body["key"] == alert(1).fingerprint and body["firing"][0]["cost_impact_usd"] == 11.0
    no_secrets(rec)


def gate_until(when: float, response: Response | None = None) -> Callable[[], Response | None]:
    return lambda: (response or Response("down", 503)) if time.monotonic() < when else None


@pytest.mark.parametrize("kind", ["slack", "pagerduty", "webhook"])
def test_receiver_down_then_back_delivers_every_alert_exactly_once(kind: str) -> None:
    """The service is not even listening for DOWN_S seconds (connection refused), then comes up."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    receiver: Receiver
    if kind == "slack":
        receiver = SlackReceiver(
            "r", token=SecretStr(TOKEN), channel="#c", base_url=f"{url}/api/", timeout_s=2
        )
    elif kind == "pagerduty":
        receiver = PagerDutyReceiver(
            "r", routing_key=SecretStr(ROUTING_KEY), url=f"{url}/v2/enqueue", timeout_s=2
        )
    else:
        receiver = WebhookReceiver("r", url=f"{url}/hook", secret=SecretStr(SECRET), timeout_s=2)
    rec = Recorder()
    srv = HTTPServer(host="127.0.0.1", port=port, threaded=True)
    {"slack": slack_api, "pagerduty": pagerduty_api, "webhook": webhook_api}[kind](srv, rec)  # type: ignore[operator]
    starter = threading.Timer(DOWN_S, srv.start)
    starter.start()
    try:
        started = time.monotonic()
        d = dispatch({"r": receiver}, [notification("r", i) for i in range(5)])
        assert time.monotonic() - started >= DOWN_S
    finally:
        starter.join()
        srv.stop()
    assert d.stats["r"].delivered == 5 and d.stats["r"].retries >= 1 and d.stats["r"].failed == 0
    assert len(rec.requests) == 5


def test_429_storm_is_retried_with_backoff_and_nothing_is_lost(server: HTTPServer) -> None:
    rec = Recorder()
    storm_ends = time.monotonic() + DOWN_S
    pagerduty_api(
        server,
        rec,
        gate_until(
            storm_ends, Response(json.dumps({"status": "throttled"}), 429, headers={"Retry-After": "0.2"})
        ),
    )
    slack_rec = Recorder()
    slack_api(
        server,
        slack_rec,
        gate_until(
            storm_ends,
            Response(json.dumps({"ok": False, "error": "ratelimited"}), 429, headers={"Retry-After": "1"}),
        ),
    )
    pd = PagerDutyReceiver("pd", routing_key=SecretStr(ROUTING_KEY), url=server.url_for("/v2/enqueue"))
    slack = SlackReceiver("slack", token=SecretStr(TOKEN), channel="#c", base_url=server.url_for("/api/"))
    notes = [notification(name, i) for i in range(10) for name in ("pd", "slack")]
    d = dispatch({"pd": pd, "slack": slack}, notes)
    assert d.stats["pd"].delivered == d.stats["slack"].delivered == 10
    assert d.stats["pd"].retries >= 1 and d.stats["slack"].retries >= 1
    assert sorted(b["dedup_key"] for b in rec.bodies()) == sorted(alert(i).fingerprint for i in range(10))
    assert len(slack_rec.requests) == 10


def test_slow_receiver_times_out_and_retries_without_holding_up_the_others(server: HTTPServer) -> None:
    rec, pd_rec = Recorder(), Recorder()
    slow_until = time.monotonic() + DOWN_S
    webhook_api(server, rec, delay=lambda: 1.5 if time.monotonic() < slow_until else 0.0)
    pagerduty_api(server, pd_rec)
    hook = WebhookReceiver("hook", url=server.url_for("/hook"), secret=SecretStr(SECRET), timeout_s=0.5)
    pd = PagerDutyReceiver("pd", routing_key=SecretStr(ROUTING_KEY), url=server.url_for("/v2/enqueue"))
    pd_done: list[float] = []
    started = time.monotonic()

    async def main() -> Dispatcher:
        d = Dispatcher(
            {"hook": hook, "pd": pd},
            retry=FAST,
            on_result=lambda n, r: pd_done.append(time.monotonic()) if n.receiver == "pd" else None,
        )
        for i in range(3):
            await d.submit(notification("hook", i))
            await d.submit(notification("pd", i))
        await d.join()
        await d.close()
        return d

    d = asyncio.run(main())
    assert d.stats["hook"].delivered == 3 and d.stats["hook"].retries >= 1
    assert max(pd_done) - started < 1.0  # PagerDuty went out while the webhook was timing out
    keys = [h["Idempotency-Key"] for _, h, _ in rec.requests]
    # A timed-out request may still have arrived: repeats carry the same Idempotency-Key.
    assert len(set(keys)) == 3


def test_thousand_alerts_for_one_team_through_real_servers(server: HTTPServer) -> None:
    """Acceptance: 1,000 alerts in one minute -> at most 10 Slack messages, PagerDuty within its limit."""
    slack_rec, pd_rec, hook_rec = Recorder(), Recorder(), Recorder()
    pd_times: list[float] = []
    slack_api(server, slack_rec)

    def pd_gate() -> Response | None:
        now = time.monotonic()
        pd_times.append(now)
        recent = [t for t in pd_times if t > now - 60]
        return Response("{}", 429) if len(recent) > 120 else None

    pagerduty_api(server, pd_rec, pd_gate)
    webhook_api(server, hook_rec)
    cfg = parse_config(
        {
            "receivers": {
                "slack": {
                    "type": "slack",
                    "channel": "#ml",
                    "token": TOKEN,
                    "base_url": server.url_for("/api/"),
                },
                "pd": {"type": "pagerduty", "routing_key": ROUTING_KEY, "url": server.url_for("/v2/enqueue")},
                "hook": {"type": "webhook", "url": server.url_for("/hook"), "secret": SECRET},
            },
        }
    )
    policy = Policy(cfg)
    state, notes = PolicyState(), []
    for i in range(1000):
        at = T0 + timedelta(seconds=i * 0.06)
        state, sent = policy.step(
            state, Received(alert(i, "token_runaway" if i % 3 else "agent_loop", at), at)
        )
        notes += sent
    for s in range(61, 200):
        state, sent = policy.step(state, Tick(T0 + timedelta(seconds=s)))
        notes += sent
    dispatch(build_receivers(cfg), notes)
    posts = [p for p, _, _ in slack_rec.requests if p.endswith("chat.postMessage")]
    assert 1 <= len(posts) <= 10
    assert len(pd_rec.requests) <= 120 and len(pd_times) == len(pd_rec.requests)  # never throttled
    fingerprints = {a["fingerprint"] for b in hook_rec.bodies() for a in b["firing"]}
    assert fingerprints == {
        alert(i, "token_runaway" if i % 3 else "agent_loop").fingerprint for i in range(1000)
    }


def test_runbook_http_action_dry_run_allow_list_rate_limit_and_approval(server: HTTPServer) -> None:
    rec = Recorder()

    def handle(request: Request) -> Response:
        rec.add(request)
        return Response("{}", 200)

    server.expect_request("/scale", method="POST").respond_with_handler(handle)
    host = "127.0.0.1"
    base = {
        "type": "runbook",
        "allowed_hosts": [host],
        "rate_limit": {"max_runs": 2, "per": "1h"},
        "actions": {
            "token_runaway": {
                "http": {
                    "url": server.url_for("/scale") + "?session=$session",
                    "body": {"session": "$session", "team": "$team"},
                }
            }
        },
    }
    dry = parse_config({"receivers": {"rb": base}}).receivers["rb"]
    outcomes: list[str] = []
    rb = RunbookReceiver("rb", dry, on_outcome=lambda o: outcomes.append(o.status))  # type: ignore[arg-type]
    assert rb.deliver(notification("rb", 1)).data["outcomes"][0]["status"] == "dry_run" and not rec.requests
    live = parse_config({"receivers": {"rb": {**base, "dry_run": False}}}).receivers["rb"]
    rb = RunbookReceiver("rb", live, on_outcome=lambda o: outcomes.append(o.status))  # type: ignore[arg-type]
    for i in range(4):
        rb.deliver(notification("rb", i))
    rb.deliver(notification("rb", 0, "updated", 2))  # once per alert, even when the group updates
    assert outcomes[1:] == ["executed", "executed", "rate_limited", "rate_limited"]
    assert [b["session"] for b in rec.bodies()] == ["s0", "s1"]
    gated = parse_config({"receivers": {"rb": {**base, "dry_run": False, "approval": "required"}}}).receivers[
        "rb"
    ]
    asked: list[str] = []
    rb = RunbookReceiver("rb", gated, approver=lambda plan: asked.append(plan.description) or False)  # type: ignore[arg-type, func-returns-value]
    assert rb.deliver(notification("rb", 7)).data["outcomes"][0]["status"] == "awaiting_approval"
    assert asked and "session=s7" in asked[0] and len(rec.requests) == 2
