"""The ``usage.dlq`` record: exact original bytes, readable text when it helps, source coordinates."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.dead_letter import (
    DEAD_LETTER_FIELDS,
    MAX_TEXT_BYTES,
    SCHEMA_VERSION,
    dead_letter_record,
    decode_original,
    encode_dead_letter,
)
from streams.core.events import REASONS, Rejection, parse_message

AT = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def record_for(rejection: Rejection, **kwargs: object) -> dict[str, object]:
    args: dict[str, object] = {"topic": "usage.llm", "partition": 2, "offset": 1234, "rejected_at": AT}
    return dead_letter_record(rejection, **{**args, **kwargs})  # type: ignore[arg-type]


def test_record_for_a_whole_message() -> None:
    (rejection,) = parse_message(b"{not json").rejections
    record = record_for(rejection, message_key=b"chat")
    assert tuple(record) == DEAD_LETTER_FIELDS
    assert record == {
        "reason": "unparseable",
        "detail": rejection.detail,
        "source_topic": "usage.llm",
        "source_partition": 2,
        "source_offset": 1234,
        "batch_index": None,
        "original_b64": "e25vdCBqc29u",
        "original_text": "{not json",
        "message_key": "chat",
        "rejected_at": "2026-03-01T12:00:00.123Z",
        "schema_version": SCHEMA_VERSION,
    }
    assert SCHEMA_VERSION == 1


def test_record_for_a_batch_element_keeps_its_index_and_element() -> None:
    bad = {"type": "llm.request", "event_id": "x", "time": "2026-03-01T12:00:00"}
    parsed = parse_message(json.dumps([{"nope": 1}, bad]).encode())
    record = record_for(parsed.rejections[1])
    assert record["batch_index"] == 1
    assert record["reason"] == "naive_timestamp"
    assert record["message_key"] is None
    assert json.loads(str(record["original_text"])) == bad
    assert json.loads(decode_original(record)) == bad


def test_rejected_at_is_converted_to_utc() -> None:
    rejection = Rejection("oversize", "too big", b"x")
    local = datetime(2026, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert record_for(rejection, rejected_at=local)["rejected_at"] == "2026-03-01T12:00:00Z"


def test_naive_rejected_at_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        record_for(Rejection("oversize", "too big", b"x"), rejected_at=datetime(2026, 3, 1))  # noqa: DTZ001


def test_unknown_reason_is_refused() -> None:
    with pytest.raises(ValueError, match="reason"):
        record_for(Rejection("bad_vibes", "?", b"x"))


def test_every_reason_is_accepted() -> None:
    for reason in REASONS:
        assert record_for(Rejection(reason, "d", b"x"))["reason"] == reason


def test_original_text_only_for_small_utf8() -> None:
    def text(raw: bytes) -> object:
        return record_for(Rejection("schema", "d", raw))["original_text"]

    assert text(b"a" * MAX_TEXT_BYTES) == "a" * MAX_TEXT_BYTES
    assert text(b"a" * (MAX_TEXT_BYTES + 1)) is None
    assert text("prix: 5 €".encode()) == "prix: 5 €"
    assert text(b"\xff\xfe{}") is None
    assert text(b"") == ""
    assert MAX_TEXT_BYTES == 4096


def test_key_that_is_not_utf8_is_still_shown() -> None:
    record = record_for(Rejection("schema", "d", b"x"), message_key=b"node-\xff")
    assert record["message_key"] == "node-\\xff"


def test_encoding_is_compact_utf8_json() -> None:
    record = record_for(Rejection("schema", "coût_négatif", "€".encode()), message_key=b"k")
    encoded = encode_dead_letter(record)
    assert b" " not in encoded
    assert "coût_négatif".encode() in encoded
    assert json.loads(encoded) == record


def test_decode_original_refuses_a_record_without_valid_base64() -> None:
    with pytest.raises(ValueError, match="original_b64"):
        decode_original({"original_b64": "not base64!"})
    with pytest.raises(ValueError, match="original_b64"):
        decode_original({})


@settings(max_examples=200, deadline=None)
@given(
    original=st.binary(max_size=6_000),
    detail=st.text(max_size=200),
    index=st.none() | st.integers(min_value=0, max_value=9_999),
    key=st.none() | st.binary(max_size=40),
    reason=st.sampled_from(REASONS),
)
def test_any_original_bytes_round_trip_through_the_encoded_record(
    original: bytes, detail: str, index: int | None, key: bytes | None, reason: str
) -> None:
    record = record_for(Rejection(reason, detail, original, index), message_key=key)
    decoded = json.loads(encode_dead_letter(record))
    assert decoded == record
    assert decode_original(decoded) == original
    assert decoded["batch_index"] == index
    if decoded["original_text"] is not None:
        assert decoded["original_text"].encode() == original
        assert len(original) <= MAX_TEXT_BYTES
