"""``burnwatch ingest-server`` on the real broker: accepted once, rejected to the DLQ, 401 writes nothing."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.ingest_load import BAD_TOKEN, SOURCE, TOKEN, Server, read_topics, run_load


@pytest.fixture
def server(kafka_bootstrap: str, tmp_path: Path, own_topics: Callable[[str, str], None]) -> Iterator[Server]:
    s = Server(kafka_bootstrap, tmp_path)
    own_topics(s.settings.topic_prefix, s.env["BURNWATCH_APP_ID"])
    s.start()
    yield s
    s.stop()


def test_a_short_load_with_malformed_events_and_a_bad_token(server: Server) -> None:
    result = asyncio.run(run_load(f"{server.url}/v1/events", rate=1_000, duration_s=3, batch_size=50,
                                  malformed_pct=5, seed=11))
    assert result.unexpected == []
    assert result.bad_token_status == 401
    assert result.statuses[202] == len(result.latencies_s)
    assert result.expected_rejected > 0 and result.rejected == result.expected_rejected
    assert len(result.accepted_ids) == result.sent_events - result.rejected

    check = read_topics(server.settings, result, timeout_s=60)
    assert check.missing == []
    assert check.duplicated == []
    assert all(check.counts[event_id] == 1 for event_id in result.accepted_ids)
    assert check.unauthenticated_written == []
    assert len(check.dead_letters) == result.rejected
    assert {(d["source_topic"], d["source_partition"], d["message_key"]) for d in check.dead_letters} == {
        ("http", -1, SOURCE)}
    assert {d["reason"] for d in check.dead_letters} <= {"naive_timestamp", "negative_quantity", "schema",
                                                        "not_an_event"}

    with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    accepted = float(len(result.accepted_ids))
    assert f'burnwatch_ingest_events_accepted_total{{source="{SOURCE}"}} {accepted}' in metrics

    assert server.stop() == 0  # SIGTERM: a clean shutdown
    log = server.log()
    assert "missing or invalid bearer token" in log
    assert TOKEN not in log and BAD_TOKEN not in log


def test_health_openapi_and_an_unauthenticated_request(server: Server) -> None:
    with urllib.request.urlopen(f"{server.url}/healthz", timeout=5) as response:
        assert json.loads(response.read()) == {"status": "ok"}
    with urllib.request.urlopen(f"{server.url}/openapi.json", timeout=5) as response:
        spec = json.loads(response.read())
    assert set(spec["paths"]) == {"/v1/events", "/healthz", "/metrics", "/openapi.json"}
    request = urllib.request.Request(f"{server.url}/v1/events", data=b"[]", method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=5)
    assert error.value.code == 401
