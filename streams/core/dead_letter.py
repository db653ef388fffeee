"""The dead-letter record published on ``usage.dlq`` for every rejected message or batch element.

A record keeps the original bytes exactly (base64), so a fixed producer or an operator can replay
them, and a readable copy for people tailing the topic. ``docs/events.md`` describes the format.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

from streams.core.costs import iso_utc
from streams.core.events import REASONS, Rejection

SCHEMA_VERSION = 1
MAX_TEXT_BYTES = 4096

DEAD_LETTER_FIELDS = (
    "reason",
    "detail",
    "source_topic",
    "source_partition",
    "source_offset",
    "batch_index",
    "original_b64",
    "original_text",
    "message_key",
    "rejected_at",
    "schema_version",
)


def _text_or_none(raw: bytes) -> str | None:
    if len(raw) > MAX_TEXT_BYTES:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def dead_letter_record(
    rejection: Rejection,
    *,
    topic: str,
    partition: int,
    offset: int,
    rejected_at: datetime,
    message_key: bytes | None = None,
) -> dict[str, Any]:
    """Build the ``usage.dlq`` record for one rejection of the message at ``topic[partition]@offset``.

    ``batch_index`` is the element's position in a batch envelope, or ``None`` when the whole message
    was rejected. ``original_text`` is set only for UTF-8 originals of at most ``MAX_TEXT_BYTES``;
    ``original_b64`` always holds the exact bytes. A key that is not UTF-8 is shown with backslash
    escapes.

    >>> from datetime import UTC
    >>> rejection = Rejection("unparseable", "not JSON", b"{oops", None)
    >>> at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    >>> record = dead_letter_record(rejection, topic="usage.llm", partition=3, offset=42,
    ...                             rejected_at=at, message_key=b"chat")
    >>> record["original_b64"], record["original_text"], record["message_key"], record["rejected_at"]
    ('e29vcHM=', '{oops', 'chat', '2026-01-02T03:04:05Z')
    """
    if rejection.reason not in REASONS:
        raise ValueError(f"unknown rejection reason {rejection.reason!r}; expected one of {REASONS}")
    if rejected_at.tzinfo is None or rejected_at.utcoffset() is None:
        raise ValueError("rejected_at must be timezone-aware")
    return {
        "reason": rejection.reason,
        "detail": rejection.detail,
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "batch_index": rejection.index,
        "original_b64": base64.b64encode(rejection.original).decode("ascii"),
        "original_text": _text_or_none(rejection.original),
        "message_key": None if message_key is None else message_key.decode("utf-8", "backslashreplace"),
        "rejected_at": iso_utc(rejected_at),
        "schema_version": SCHEMA_VERSION,
    }


def encode_dead_letter(record: dict[str, Any]) -> bytes:
    """Serialise a dead-letter record as compact UTF-8 JSON (the ``usage.dlq`` message value).

    >>> encode_dead_letter({"reason": "oversize", "batch_index": None})
    b'{"reason":"oversize","batch_index":null}'
    """
    # Non-ASCII stays readable for people tailing the topic; every value is valid Unicode by construction.
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def decode_original(record: dict[str, Any]) -> bytes:
    """Return the exact original bytes of a dead-letter record (for replay or inspection).

    >>> decode_original({"original_b64": "e29vcHM="})
    b'{oops'
    """
    try:
        return base64.b64decode(record["original_b64"], validate=True)
    except (binascii.Error, KeyError, TypeError) as error:
        raise ValueError(f"dead-letter record has no valid original_b64: {error}") from None
