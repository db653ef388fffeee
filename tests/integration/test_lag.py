"""``burnwatch lag`` on the real broker: unread input shows as lag, and ``--wait`` returns once it is read."""

from __future__ import annotations

import json
from pathlib import Path

from streams.admin import ensure_topics
from streams.names import USAGE_LLM
from tests.integration.conftest import Stack
from tests.support.oracle import varied_events


def lags(stack: Stack, *args: str) -> tuple[int, dict[tuple[str, str], int]]:
    result = stack.cli("lag", "--json", *args)
    rows = json.loads(result.stdout) if result.stdout.strip().startswith(b"[") else []
    return result.returncode, {(r["group"], r["topic"]): r["lag"] for r in rows}


def test_lag_counts_unread_input_and_wait_returns_once_the_worker_has_read_it(
    stack: Stack, tmp_path: Path
) -> None:
    ensure_topics(stack.settings)
    events = [e for e in varied_events(60, seed=3) if e.type == "llm.request"]
    events_file = tmp_path / "events.jsonl"
    events_file.write_text("".join(event.model_dump_json() + "\n" for event in events))
    assert stack.cli("ingest", str(events_file)).returncode == 0
    worker_group = stack.settings.app_id

    code, before = lags(stack)
    assert code == 0
    assert before[(worker_group, stack.topic(USAGE_LLM))] > 0  # nobody has read usage.llm yet
    code, _ = lags(stack, "--wait", "--timeout", "2")
    assert code == 1  # still behind: --wait says so

    stack.start_worker()
    code, after = lags(stack, "--wait", "--timeout", "120")
    assert code == 0
    assert after and set(after.values()) == {0}
