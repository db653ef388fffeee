"""Per-entity detector state as plain JSON: what the stream keeps in a table, keyed by entity.

State is a ``dict`` of JSON types only (str, int, float, bool, None, list, dict with str keys), so it
round-trips through a changelog topic as JSON and nothing is ever unpickled. Times are epoch seconds.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

State = dict[str, Any]
STATE_VERSION = 1
MAX_STATE_BYTES = 2048


class StateError(ValueError):
    """A state document that is not JSON-safe, too new, or not a detector's state."""


def to_dict(state: State) -> dict[str, Any]:
    """Return a deep, JSON-safe copy of ``state`` stamped with the state version.

    >>> to_dict({"n": 1, "w": [1.5, None]})
    {'n': 1, 'w': [1.5, None], '_v': 1}
    """
    doc: dict[str, Any] = _check(state, "state")
    doc["_v"] = STATE_VERSION
    return doc


def stamped(state: State) -> dict[str, Any]:
    """Return a shallow copy of ``state`` stamped with the state version, to be serialized at once.

    ``to_dict`` without the deep check: for the stream's saves, where every changed state is written
    once per batch and the detectors' own states are JSON-safe by construction (the contract and eval
    tests round-trip them); a state that is not fails ``from_dict`` on restore, which drops it.

    >>> stamped({"n": 1, "w": [1.5]})
    {'n': 1, 'w': [1.5], '_v': 1}
    """
    return {**state, "_v": STATE_VERSION}


def from_dict(doc: dict[str, Any]) -> State:
    """Rebuild a state from ``to_dict`` output (or its JSON); reject unknown versions.

    >>> from_dict(to_dict({"n": 1}))
    {'n': 1, '_v': 1}
    """
    if not isinstance(doc, dict) or doc.get("_v", STATE_VERSION) != STATE_VERSION:
        raise StateError(f"not a version-{STATE_VERSION} detector state")
    checked: State = _check(doc, "state")
    return checked


def encode(state: State) -> bytes:
    """Serialize a state to compact JSON bytes (the table value)."""
    return json.dumps(to_dict(state), separators=(",", ":"), allow_nan=False).encode()


def decode(data: bytes) -> State:
    """Parse bytes written by ``encode``."""
    return from_dict(json.loads(data))


def size_bytes(state: State) -> int:
    """Return the encoded size of ``state`` (what the 2 KB per entity budget is measured on).

    >>> size_bytes({"n": 1})
    14
    """
    return len(encode(state))


def ts(moment: datetime) -> float:
    """Return epoch seconds of an aware datetime (how state stores times)."""
    return moment.timestamp()


def at(seconds: float) -> datetime:
    """Return the aware UTC datetime of epoch ``seconds``.

    >>> at(0.0).isoformat()
    '1970-01-01T00:00:00+00:00'
    """
    return datetime.fromtimestamp(seconds, tz=UTC)


def _check(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise StateError(f"{where}: {value} is not a finite number")
        return value
    if isinstance(value, (list, tuple)):
        return [_check(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise StateError(f"{where}: key {key!r} is not a string")
            out[key] = _check(item, f"{where}.{key}")
        return out
    raise StateError(f"{where}: {type(value).__name__} is not JSON-safe")
