from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core.event_files import (
    ReadError,
    Record,
    detect_format,
    read_bytes,
    read_csv,
    read_path,
    read_text,
    to_csv,
    to_jsonl,
)
from streams.core.events import EVENT_ADAPTER
from streams.core.simulation import Simulation, SimulationConfig, default_incidents


@lru_cache(maxsize=1)
def sample_events() -> tuple[dict[str, Any], ...]:
    sim = Simulation(SimulationConfig(start=datetime(2026, 5, 1, tzinfo=UTC), duration_s=240, nodes=5, rate=1,
                                      incidents=default_incidents(240)))
    return tuple(sim.events())


def models(items: list[Any]) -> list[Any]:
    assert all(isinstance(i, Record) for i in items), [i for i in items if isinstance(i, ReadError)][:3]
    return [EVENT_ADAPTER.validate_python(i.event) for i in items]


def originals(events: list[dict[str, Any]]) -> list[Any]:
    return [EVENT_ADAPTER.validate_python(e) for e in events]


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_simulated_events_round_trip_through_every_format(fmt: str) -> None:
    events = list(sample_events())
    text = {"jsonl": to_jsonl(events), "json": json.dumps(events), "csv": to_csv(events)}[fmt]
    assert detect_format(None, text) == fmt
    items = list(read_text(text))
    assert models(items) == originals(events)
    if fmt != "csv":  # JSON keeps the dicts exactly; CSV keeps the values as strings
        assert [i.event for i in items] == events


def test_csv_has_one_row_per_gpu_and_groups_them_back() -> None:
    events = [e for e in sample_events() if e["type"] == "gpu.sample"][:3]
    text = to_csv(events)
    assert len(text.strip().splitlines()) == 1 + sum(len(e["gpus"]) for e in events)
    items = list(read_csv(text))
    assert [len(i.event["gpus"]) for i in items] == [len(e["gpus"]) for e in events]
    assert items[0].event["labels"] == events[0]["labels"]
    assert items[0].event["gpus"][0]["labels"] == events[0]["gpus"][0]["labels"]


def test_csv_gpu_rows_are_grouped_by_event_id_even_when_interleaved() -> None:
    text = (
        "type,event_id,time,interval_s,node,provider,gpu.index,gpu.model,gpu.util_pct\n"
        "gpu.sample,a,2026-01-01T00:00:00Z,15,n1,aws,0,A10G,10\n"
        "gpu.sample,b,2026-01-01T00:00:00Z,15,n2,aws,0,A10G,20\n"
        "gpu.sample,a,2026-01-01T00:00:00Z,15,n1,aws,1,A10G,30\n"
    )
    events = models(list(read_csv(text)))
    assert [(e.event_id, [g.util_pct for g in e.gpus]) for e in events] == [("a", [10, 30]), ("b", [20])]


def test_csv_reports_conflicting_node_columns_and_extra_cells() -> None:
    text = (
        "type,event_id,node,gpu.index\n"
        "gpu.sample,a,n1,0\n"
        "gpu.sample,a,n2,1\n"
        "llm.request,x,,,surplus\n"
    )
    items = list(read_csv(text))
    errors = [i for i in items if isinstance(i, ReadError)]
    assert [e.where for e in errors] == ["row 2", "row 3"]
    assert "node" in errors[0].detail and "header" in errors[1].detail
    (record,) = [i for i in items if isinstance(i, Record)]
    assert len(record.event["gpus"]) == 1


def test_jsonl_lines_with_envelopes_and_junk_are_reported_per_line() -> None:
    text = '{"type": "llm.request"}\n\n[{"a": 1}, 2]\nnot json\n"a string"\n'
    items = list(read_text(text, "jsonl"))
    assert [(type(i).__name__, i.where) for i in items] == [
        ("Record", "line 1"),
        ("Record", "line 3, element 1"),
        ("ReadError", "line 3, element 2"),
        ("ReadError", "line 4"),
        ("ReadError", "line 5"),
    ]


def test_json_file_that_holds_json_lines_is_read_as_lines() -> None:
    items = list(read_text('{"a": 1}\n{"b": 2}\n', "json"))
    assert [i.event for i in items] == [{"a": 1}, {"b": 2}]


def test_bad_utf8_spoils_only_its_own_line() -> None:
    items = list(read_bytes(b'{"a": 1}\n\xff\xfe{\n{"b": 2}\n', "jsonl"))
    assert [type(i).__name__ for i in items] == ["Record", "ReadError", "Record"]


def test_read_path_detects_by_extension_and_streams_jsonl(tmp_path: Path) -> None:
    events = list(sample_events())[:20]
    (tmp_path / "a.jsonl").write_text(to_jsonl(events))
    (tmp_path / "b.csv").write_text(to_csv(events))
    (tmp_path / "c.json").write_text(json.dumps(events, indent=2))
    (tmp_path / "d.txt").write_text(json.dumps(events[0], indent=2))
    for name in ("a.jsonl", "b.csv", "c.json"):
        assert models(list(read_path(tmp_path / name))) == originals(events)
    assert models(list(read_path(tmp_path / "d.txt"))) == originals(events[:1])
    with pytest.raises(OSError):
        read_path(tmp_path / "missing.csv")


def test_cloudevents_pass_through_untouched() -> None:
    ce = {"specversion": "1.0", "id": "c1", "type": "dev.burnwatch.llm.request", "source": "/gw",
          "time": "2026-01-01T00:00:00Z", "data": {"provider": "openai", "model": "gpt-4o"}}
    (item,) = read_text(json.dumps(ce))
    assert isinstance(item, Record) and item.event == ce


label_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(0, len(sample_events()) - 1),
    labels=st.dictionaries(
        st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=10), label_text, max_size=4
    ),
    fmt=st.sampled_from(["jsonl", "json", "csv"]),
)
def test_labels_with_any_text_round_trip(index: int, labels: dict[str, str], fmt: str) -> None:
    event = dict(sample_events()[index]) | {"labels": labels}
    text = {"jsonl": to_jsonl([event]), "json": json.dumps([event]), "csv": to_csv([event])}[fmt]
    assert models(list(read_text(text, fmt))) == originals([event])


@settings(max_examples=200)
@given(st.binary(max_size=400), st.sampled_from([None, "jsonl", "json", "csv"]))
def test_junk_bytes_never_raise(data: bytes, fmt: str | None) -> None:
    items = list(read_bytes(data, fmt))
    assert all(isinstance(i, (Record, ReadError)) for i in items)
    assert all(isinstance(i.event, dict) for i in items if isinstance(i, Record))


@settings(max_examples=200)
@given(st.text(max_size=400), st.sampled_from([None, "jsonl", "json", "csv"]))
def test_junk_text_never_raises(text: str, fmt: str | None) -> None:
    assert all(isinstance(i, (Record, ReadError)) for i in read_text(text, fmt))


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, '{"a": ' * 50_000, "1" * 5_000, "a,b\n" + "x" * 200_000 + ",y\n", "\x00,\x00\n\x00"],
)
def test_pathological_inputs_become_errors(text: str) -> None:
    items = list(read_text(text))
    assert all(isinstance(i, (Record, ReadError)) for i in items)
