"""Read usage events from files: JSON lines, a JSON array or object, or CSV.

Every reader yields, in file order, a ``Record`` (an event dict and where it came from) or a
``ReadError`` (where, and why that part could not be read); junk never raises. Nothing is validated
here: a record is a plain dict for ``parse_message``-style validation downstream.

Formats (``detect_format``): ``.jsonl``/``.ndjson`` are JSON lines, ``.json`` is JSON, ``.csv`` is CSV;
otherwise the content decides (``[`` is JSON, a ``{`` line that parses alone is JSON lines, a
multi-line ``{`` document is JSON, anything else CSV). A JSON-lines line may hold an array (a batch
envelope, as ``burnwatch tail`` prints them); its elements become records.

CSV layout: one column per event field; an empty cell means the field is absent. ``labels.<key>``
columns become the event's labels. A ``gpu.sample`` is one row per GPU: the node-level columns are
repeated on each row, the GPU's fields are ``gpu.<field>`` columns (``gpu.labels.<key>`` for its
labels), and rows with the same ``event_id`` are grouped back into one event, in the order the rows
come; node-level cells that differ between a sample's rows are reported as errors. Values stay strings
(the event models convert ``"12"``, ``"0.5"``, ``"true"``). ``to_csv`` writes this layout.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMATS = ("jsonl", "json", "csv")
GPU_PREFIX = "gpu."
LABELS_PREFIX = "labels."
FIRST_COLUMNS = ("type", "event_id", "time")
_BLANK = "\ufeff \t\r\n"


@dataclass(frozen=True, slots=True)
class Record:
    """One event object as read, not yet validated, and where it was (``line 3``, ``row 2``...)."""

    where: str
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ReadError:
    """A part of the input that is not an event object, and why."""

    where: str
    detail: str


Item = Record | ReadError


def detect_format(name: str | None, head: str) -> str:
    r"""Pick ``jsonl``, ``json`` or ``csv`` from the file name's extension, else from the content.

    >>> detect_format("usage.ndjson", ""), detect_format(None, '[{"a": 1}]'), detect_format("-", '{"a": 1}')
    ('jsonl', 'json', 'jsonl')
    >>> detect_format(None, '{\n  "a": 1\n}'), detect_format(None, "type,event_id\n")
    ('json', 'csv')
    """
    suffix = Path(name).suffix.lower() if name and name != "-" else ""
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".json", ".csv"):
        return suffix[1:]
    text = head.lstrip(_BLANK)
    if text[:1] == "[":
        return "json"
    if text[:1] == "{":
        try:
            json.loads(text.split("\n", 1)[0])
        except (ValueError, RecursionError):
            return "json"
        return "jsonl"
    return "csv"


def _objects(doc: Any, where: str) -> Iterator[Item]:
    if isinstance(doc, dict):
        yield Record(where, doc)
    elif isinstance(doc, list):
        for index, element in enumerate(doc, 1):
            yield from _element(element, f"{where}, element {index}")
    else:
        yield ReadError(where, f"expected a JSON object or array, got {type(doc).__name__}")


def _element(element: Any, where: str) -> Iterator[Item]:
    if isinstance(element, dict):
        yield Record(where, element)
    else:
        yield ReadError(where, f"expected a JSON object, got {type(element).__name__}")


def read_jsonl(lines: Iterable[str | bytes]) -> Iterator[Item]:
    """Read JSON lines; blank lines are skipped.

    >>> [type(i).__name__ for i in read_jsonl(['{"a": 1}', '', 'oops', '[{"b": 2}, 3]'])]
    ['Record', 'ReadError', 'Record', 'ReadError']
    """
    for number, line in enumerate(lines, 1):
        where = f"line {number}"
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                yield ReadError(where, f"not UTF-8: {error}")
                continue
        if not line.strip(_BLANK):
            continue
        try:
            doc = json.loads(line.lstrip("\ufeff"))
        except (ValueError, RecursionError) as error:
            yield ReadError(where, f"not JSON: {error}")
            continue
        if isinstance(doc, list):
            for index, element in enumerate(doc, 1):
                yield from _element(element, f"{where}, element {index}")
        else:
            yield from _element(doc, where)


def read_json(text: str) -> Iterator[Item]:
    """Read one JSON document: an event object or an array of them (a file of JSON lines also works).

    >>> [i.where for i in read_json('[{"a": 1}, {"b": 2}]')]
    ['element 1', 'element 2']
    """
    try:
        doc = json.loads(text.lstrip("\ufeff"))
    except json.JSONDecodeError as error:
        if error.msg == "Extra data":  # several documents: JSON lines under a .json name
            yield from read_jsonl(text.splitlines())
        else:
            yield ReadError("document", f"not JSON: {error}")
        return
    except (ValueError, RecursionError) as error:
        yield ReadError("document", f"not JSON: {error}")
        return
    if isinstance(doc, list):
        for index, element in enumerate(doc, 1):
            yield from _element(element, f"element {index}")
    else:
        yield from _element(doc, "document")


def _nest(row: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a CSV row into event-level fields and GPU fields, nesting ``labels.`` columns."""
    event: dict[str, Any] = {}
    gpu: dict[str, Any] = {}
    for column, value in row.items():
        if value == "" or value is None:
            continue
        target = event
        name = column
        if name.startswith(GPU_PREFIX):
            target, name = gpu, name[len(GPU_PREFIX):]
        if name.startswith(LABELS_PREFIX) and len(name) > len(LABELS_PREFIX):
            target.setdefault("labels", {})[name[len(LABELS_PREFIX):]] = value
        else:
            target[name] = value
    return event, gpu


@dataclass(slots=True)
class _Sample:
    position: int
    where: str
    event: dict[str, Any]


def read_csv(text: str) -> Iterator[Item]:
    r"""Read CSV rows into event dicts, grouping a ``gpu.sample``'s per-GPU rows by ``event_id``.

    >>> text = "type,event_id,node,gpu.index,gpu.util_pct,labels.team\n"
    >>> text += "gpu.sample,g1,n1,0,90,ml\ngpu.sample,g1,n1,1,80,ml\n"
    >>> [(r.event["node"], r.event["labels"], len(r.event["gpus"])) for r in read_csv(text)]
    [('n1', {'team': 'ml'}, 2)]
    """
    out: list[Item] = []
    samples: dict[str, _Sample] = {}
    try:
        reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""))
        header = next(reader, None)
        if header is None:
            return
        for number, cells in enumerate(reader, 1):
            where = f"row {number}"
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(header):
                out.append(ReadError(where, f"{len(cells)} cells but the header has {len(header)} columns"))
                continue
            event, gpu = _nest(dict(zip(header, cells, strict=False)))
            if event.get("type") != "gpu.sample" and not gpu:
                out.append(Record(where, event))
                continue
            key = str(event.get("event_id", f"\0{number}"))
            sample = samples.get(key)
            if sample is None:
                event["gpus"] = [gpu] if gpu else []
                samples[key] = _Sample(len(out), where, event)
                out.append(Record(where, event))
                continue
            differs = sorted(k for k in (set(event) | set(sample.event)) - {"gpus"}
                             if event.get(k) != sample.event.get(k))
            if differs:
                detail = f"node-level columns {differs} differ from {sample.where} of sample {key!r}"
                out.append(ReadError(where, detail))
            elif gpu:
                sample.event["gpus"].append(gpu)
    except csv.Error as error:
        out.append(ReadError("csv", f"unreadable CSV: {error}"))
    yield from out


def read_text(text: str, fmt: str | None = None, name: str | None = None) -> Iterator[Item]:
    """Read events from text in ``fmt`` (``None``: detected from ``name`` and the content)."""
    fmt = fmt or detect_format(name, text[:65_536])
    if fmt == "jsonl":
        return read_jsonl(text.splitlines())
    if fmt == "json":
        return read_json(text)
    if fmt == "csv":
        return read_csv(text)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def read_bytes(data: bytes, fmt: str | None = None, name: str | None = None) -> Iterator[Item]:
    """Read events from raw bytes (UTF-8; a bad JSON line is one error, not the whole input)."""
    head = data[:65_536].decode("utf-8", errors="replace")
    fmt = fmt or detect_format(name, head)
    if fmt == "jsonl":
        return read_jsonl(data.splitlines())
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        return iter([ReadError("file", f"not UTF-8: {error}")])
    return read_text(text, fmt, name)


def read_path(path: str | Path, fmt: str | None = None) -> Iterator[Item]:
    """Read events from a file, or standard input for ``-``; JSON-lines files are streamed.

    Raises ``OSError`` when the file cannot be opened.
    """
    if str(path) == "-":
        return read_bytes(sys.stdin.buffer.read(), fmt, None)
    name = str(path)
    if (fmt or detect_format(name, "")) == "jsonl" and Path(name).suffix.lower() in (".jsonl", ".ndjson"):
        handle = open(name, "rb")  # closed by the generator below

        def stream() -> Iterator[Item]:
            with handle:
                yield from read_jsonl(handle)

        return stream()
    return read_bytes(Path(name).read_bytes(), fmt, name)


# --- writing (the same layouts) -------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _flat(fields: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    row: dict[str, str] = {}
    for name, value in fields.items():
        if name == "labels" and isinstance(value, Mapping):
            for key, label in value.items():
                row[f"{prefix}{LABELS_PREFIX}{key}"] = _cell(label)
        else:
            row[f"{prefix}{name}"] = _cell(value)
    return row


def csv_rows(events: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, str]]:
    """Flatten events into CSV rows (``gpu.sample``: one row per GPU), columns named as ``read_csv`` reads."""
    for event in events:
        gpus = event.get("gpus")
        if event.get("type") == "gpu.sample" and isinstance(gpus, list) and gpus:
            base = _flat({k: v for k, v in event.items() if k != "gpus"})
            for gpu in gpus:
                yield base | _flat(gpu, GPU_PREFIX)
        else:
            yield _flat(event)


def to_csv(events: Iterable[Mapping[str, Any]]) -> str:
    """Write events as CSV text in the layout ``read_csv`` reads.

    >>> to_csv([{"type": "llm.request", "event_id": "a", "labels": {"team": "ml"}}]).splitlines()
    ['type,event_id,labels.team', 'llm.request,a,ml']
    """
    rows = list(csv_rows(events))
    columns = [c for c in FIRST_COLUMNS if any(c in row for row in rows)]
    for row in rows:
        columns += [c for c in row if c not in columns]
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, columns)  # "\r\n" endings make it quote cells holding a bare "\r"
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def to_jsonl(events: Iterable[Mapping[str, Any]]) -> str:
    """Write events as JSON lines (datetimes as ISO 8601 ending in ``Z``)."""
    return "".join(json.dumps(e, separators=(",", ":"), default=_cell) + "\n" for e in events)
