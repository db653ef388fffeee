"""Ingest server: tokens, limits, and the HTTP contract with an in-memory publisher (no Kafka)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from streams.core.dead_letter import decode_original
from streams.core.events import Event
from streams.ingest_server.app import create_app
from streams.ingest_server.auth import TokenError, TokenStore, load_tokens, parse_token_file
from streams.ingest_server.limits import Limits, RateLimiter, TokenBucket
from streams.ingest_server.openapi import build_openapi
from streams.ingest_server.publish import PublishError

GOOD = "gw-eu-token-5f2a9c81d7e34b06"
OTHER = "gw-us-token-0c3b7e19a4f25d68"
BAD = "not-a-real-token-4e1d2c3b4a59"
T = "2026-05-01T12:00:00Z"


def llm(i: int, **extra: Any) -> dict[str, Any]:
    return {"type": "llm.request", "event_id": f"e{i}", "time": T, "provider": "openai", "model": "gpt-4o",
            "input_tokens": 100 + i, "output_tokens": 10, "app": f"app{i % 3}", **extra}


class MemoryPublisher:
    """The Publisher protocol in memory: keeps what would have gone to Kafka."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.dead_letters: list[tuple[bytes, bytes]] = []
        self.fail = False
        self.started = False

    async def start(self) -> None:
        self.started = True

    def ready(self) -> bool:
        return self.started

    async def publish(self, events: Sequence[Event], dead_letters: Sequence[tuple[bytes, bytes]]) -> None:
        if self.fail:
            raise PublishError("broker down")
        self.events.extend(events)
        self.dead_letters.extend(dead_letters)

    async def close(self) -> None:
        self.started = False


TOKENS = TokenStore({"gw-eu": SecretStr(GOOD), "gw-us": SecretStr(OTHER)})


Body = Callable[[TestClient, MemoryPublisher], Awaitable[None]]


def serve(body: Body, limits: Limits | None = None) -> MemoryPublisher:
    publisher = MemoryPublisher()

    async def main() -> None:
        app = create_app(TOKENS, limits or Limits(), publisher)
        async with TestClient(TestServer(app)) as client:
            await body(client, publisher)

    asyncio.run(main())
    return publisher


def auth(token: str = GOOD) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


# --- tokens ------------------------------------------------------------------------------------


def test_token_file_and_env_json_are_merged(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# sources\n\ngw-eu: {GOOD}\n")
    store = load_tokens(path, {"BURNWATCH_INGEST_TOKENS": json.dumps({"gw-us": OTHER})})
    assert store.sources == ["gw-eu", "gw-us"]
    assert store.authenticate(f"Bearer {OTHER}") == "gw-us"
    assert store.authenticate(f"bearer {GOOD}") == "gw-eu"
    assert load_tokens(None, {"BURNWATCH_INGEST_TOKENS_FILE": str(path)}).sources == ["gw-eu"]


@pytest.mark.parametrize("header", [None, "", GOOD, f"Basic {GOOD}", f"Bearer {GOOD[:-1]}", f"Bearer {GOOD}x",
                                    "Bearer ", f"Bearer {BAD}", "Bearer ünïcode"])
def test_anything_but_an_exact_bearer_token_is_refused(header: str | None) -> None:
    assert TOKENS.authenticate(header) is None


def test_token_errors_name_the_source_never_the_token(tmp_path: Path) -> None:
    cases = [
        {"gw": SecretStr("short-tok")},
        {"a": SecretStr(GOOD), "b": SecretStr(GOOD)},
        {"bad source!": SecretStr(GOOD)},
        {"gw": SecretStr(GOOD + " with space")},
    ]
    for tokens in cases:
        with pytest.raises(TokenError) as error:
            TokenStore(tokens)
        assert GOOD not in str(error.value) and "short-tok" not in str(error.value)
    with pytest.raises(TokenError, match="no ingest tokens"):
        TokenStore({})
    with pytest.raises(TokenError, match="line 2") as error:
        parse_token_file(f"gw: {GOOD}\n{BAD}\n")
    assert BAD not in str(error.value)
    with pytest.raises(TokenError, match="not valid JSON") as error:
        load_tokens(None, {"BURNWATCH_INGEST_TOKENS": f'{{"gw": "{GOOD}"'})
    assert GOOD not in str(error.value)
    assert GOOD not in repr(TOKENS) and GOOD not in str(load_tokens(None, {"BURNWATCH_INGEST_TOKENS":
                                                                          json.dumps({"gw": GOOD})}))


# --- limits ------------------------------------------------------------------------------------


def test_token_bucket_refills_at_its_rate_up_to_the_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=100, burst=200, clock=lambda: now[0])
    assert bucket.take(200) == 0
    assert bucket.take(50) == pytest.approx(0.5)
    now[0] = 0.25
    assert bucket.take(25) == 0
    now[0] = 100.0  # a long pause refills only up to the burst
    assert bucket.take(200) == 0 and bucket.take(1) > 0


def test_rate_limiter_keeps_one_bucket_per_source_and_rounds_retry_after_up() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=10, burst=20, clock=lambda: now[0])
    assert limiter.retry_after("a", 20) == 0
    assert limiter.retry_after("a", 15) == 2  # 15 more at 10/s: 1.5 s, rounded up
    assert limiter.retry_after("b", 20) == 0
    now[0] = 2.0
    assert limiter.retry_after("a", 15) == 0


def test_limits_reject_a_burst_smaller_than_a_request() -> None:
    with pytest.raises(ValueError, match="burst"):
        Limits(max_events=1000, burst=999)


# --- the HTTP contract -------------------------------------------------------------------------


def test_one_event_an_array_and_cloudevents_are_accepted() -> None:
    async def body(client: TestClient, publisher: MemoryPublisher) -> None:
        one = await client.post("/v1/events", data=json.dumps(llm(1)), headers=auth())
        assert one.status == 202 and await one.json() == {"accepted": 1, "rejected": 0, "rejections": []}
        many = await client.post("/v1/events", data=json.dumps([llm(2), llm(3)]), headers=auth())
        assert (await many.json())["accepted"] == 2
        ce = {"specversion": "1.0", "id": "ce-1", "type": "dev.burnwatch.llm.request", "source": "/gw",
              "time": T, "data": {k: v for k, v in llm(4).items() if k not in ("event_id", "time", "type")}}
        single = await client.post("/v1/events", data=json.dumps(ce), headers={
            **auth(), "Content-Type": "application/cloudevents+json; charset=utf-8"})
        assert single.status == 202
        batch = [{**ce, "id": "ce-2"}, {**ce, "id": "ce-3"}]
        res = await client.post("/v1/events", data=json.dumps(batch), headers={
            **auth(), "Content-Type": "application/cloudevents-batch+json"})
        assert (await res.json())["accepted"] == 2

    publisher = serve(body)
    assert [e.event_id for e in publisher.events] == ["e1", "e2", "e3", "ce-1", "ce-2", "ce-3"]
    assert publisher.dead_letters == []


def test_rejections_are_reported_by_index_and_dead_lettered_with_the_source() -> None:
    bad_time = llm(2, time="2026-05-01T12:00:00")
    negative = llm(3, input_tokens=-5)

    async def body(client: TestClient, publisher: MemoryPublisher) -> None:
        payload = json.dumps([llm(1), bad_time, negative, "x"])
        res = await client.post("/v1/events", data=payload, headers=auth())
        assert res.status == 202
        doc = await res.json()
        assert (doc["accepted"], doc["rejected"]) == (1, 3)
        assert [(r["index"], r["reason"]) for r in doc["rejections"]] == [
            (1, "naive_timestamp"), (2, "negative_quantity"), (3, "not_an_event")]
        garbage = await client.post("/v1/events", data=b"{not json", headers=auth())
        assert garbage.status == 400  # nothing accepted
        [rejection] = (await garbage.json())["rejections"]
        assert (rejection["index"], rejection["reason"]) == (None, "unparseable")
        assert rejection["detail"].startswith("not JSON")

    publisher = serve(body)
    assert [e.event_id for e in publisher.events] == ["e1"]
    records = [json.loads(value) for _, value in publisher.dead_letters]
    assert {key for key, _ in publisher.dead_letters} == {b"gw-eu"}
    positions = [(r["source_topic"], r["source_partition"], r["source_offset"]) for r in records]
    assert positions == [("http", -1, -1)] * 4
    assert json.loads(decode_original(records[0])) == bad_time
    assert decode_original(records[3]) == b"{not json"


def test_401_touches_nothing_and_tokens_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    async def body(client: TestClient, publisher: MemoryPublisher) -> None:
        for headers in (auth(BAD), {"Content-Type": "application/json"}, auth(f"{GOOD} ")):
            res = await client.post("/v1/events", data=json.dumps(llm(1)), headers=headers)
            if headers.get("Authorization", "").endswith(" "):
                assert res.status == 202  # surrounding blanks are not part of the token
                continue
            assert res.status == 401
            assert res.headers["WWW-Authenticate"].startswith("Bearer")
        assert publisher.events[0].event_id == "e1" and len(publisher.events) == 1
        metrics = await (await client.get("/metrics")).text()
        assert 'burnwatch_ingest_requests_total{code="401",source="unauthenticated"} 2.0' in metrics

    with caplog.at_level(logging.DEBUG):
        publisher = serve(body)
    assert len(publisher.events) == 1 and publisher.dead_letters == []
    text = "\n".join(f"{r.getMessage()} {r.args}" for r in caplog.records)
    assert "missing or invalid bearer token" in text
    assert GOOD not in text and BAD not in text


def test_413_over_the_size_limit_whether_or_not_the_length_is_announced() -> None:
    limits = Limits(max_body_bytes=4096, max_events=100, burst=100)
    big = json.dumps([llm(i) for i in range(60)]).encode()
    assert len(big) > 4096

    async def chunks() -> Any:
        for start in range(0, len(big), 1000):
            yield big[start:start + 1000]

    async def body(client: TestClient, publisher: MemoryPublisher) -> None:
        announced = await client.post("/v1/events", data=big, headers=auth())
        assert announced.status == 413
        chunked = await client.post("/v1/events", data=chunks(), headers=auth())
        assert chunked.status == 413

    publisher = serve(body, limits)
    assert publisher.events == [] and publisher.dead_letters == []


def test_429_with_retry_after_over_the_per_source_rate() -> None:
    limits = Limits(max_events=10, rate_per_s=1, burst=10)

    async def body(client: TestClient, publisher: MemoryPublisher) -> None:
        first = await client.post("/v1/events", data=json.dumps([llm(i) for i in range(10)]), headers=auth())
        assert first.status == 202
        more = json.dumps([llm(i) for i in range(10, 15)])
        second = await client.post("/v1/events", data=more, headers=auth())
        assert second.status == 429
        assert int(second.headers["Retry-After"]) >= 4
        other = await client.post("/v1/events", data=json.dumps(llm(99)), headers=auth(OTHER))
        assert other.status == 202  # another source has its own bucket

    publisher = serve(body, limits)
    assert len(publisher.events) == 11


def test_415_and_503_and_healthz() -> None:
    async def body(client: TestClient, publisher: MemoryPublisher) -> None:
        res = await client.post("/v1/events", data="x", headers={**auth(), "Content-Type": "text/plain"})
        assert res.status == 415
        assert (await client.get("/healthz")).status == 200
        publisher.fail = True
        res = await client.post("/v1/events", data=json.dumps(llm(1)), headers=auth())
        assert res.status == 503 and res.headers["Retry-After"]
        publisher.started = False
        health = await client.get("/healthz")
        assert health.status == 503 and (await health.json())["status"] == "unavailable"

    publisher = serve(body)
    assert publisher.events == []


def test_openapi_is_valid_and_describes_every_route() -> None:
    served: dict[str, Any] = {}
    routes: set[tuple[str, str]] = set()

    async def body(client: TestClient, publisher: MemoryPublisher) -> None:
        res = await client.get("/openapi.json")
        assert res.status == 200
        served.update(await res.json())
        for route in client.app.router.routes():
            if route.method != "HEAD":
                routes.add((route.method.lower(), route.resource.canonical))

    serve(body)
    assert served == json.loads(json.dumps(build_openapi(Limits())))
    assert served["openapi"].startswith("3.1")
    described = {(method, path) for path, item in served["paths"].items() for method in item}
    assert described == routes
    post = served["paths"]["/v1/events"]["post"]
    assert {"202", "400", "401", "413", "415", "429", "503"} <= set(post["responses"])
    assert set(post["requestBody"]["content"]) == {
        "application/json", "application/cloudevents+json", "application/cloudevents-batch+json"}
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(served)


def test_openapi_event_schemas_accept_a_real_event() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    doc = build_openapi()
    schema = {"$ref": "#/components/schemas/UsageEvent", "components": doc["components"]}
    jsonschema.validate(llm(1), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**llm(1), "input_tokens": -1}, schema)


def test_the_command_refuses_a_bad_token_config_without_printing_the_token(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from streams.commands.ingest_server import register

    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    path = tmp_path / "tokens"
    path.write_text("gw-eu: short-secret\n")
    result = CliRunner().invoke(app, ["ingest-server", "--tokens-file", str(path)],
                                env={"BURNWATCH_INGEST_TOKENS": json.dumps({"gw-us": GOOD})})
    assert result.exit_code == 2
    assert "gw-eu" in result.output and "at least 16" in result.output
    assert "short-secret" not in result.output and GOOD not in result.output
    result = CliRunner().invoke(app, ["ingest-server", "--rate", "10", "--burst", "5"],
                                env={"BURNWATCH_INGEST_TOKENS": json.dumps({"gw-us": GOOD})})
    assert result.exit_code == 2 and "burst" in result.output
    assert "ingest-server" in CliRunner().invoke(app, ["--help"]).output
