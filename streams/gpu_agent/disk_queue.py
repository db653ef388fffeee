"""A bounded, append-only queue of JSON records on local disk that survives restarts.

Layout: ``seg-<seq>.jsonl`` segment files (one JSON object per line, appended in order) and
``cursor.json``, the position of the first record not yet acknowledged. A reader ``peek``s records
from the cursor and ``ack``s the batch once Kafka has them; segments wholly behind the cursor are
deleted. Records therefore leave in the order they came, and a record stays on disk until acked.

Durability: with ``fsync=True`` every append and every cursor move is fsynced before the call returns,
so a crash or power loss loses at most the line being written; a torn last line is cut off when the
queue is opened again. A record acked but not yet recorded in the cursor when the agent dies is sent
again after the restart; it carries the same event id, so the worker counts it once.

Bound: the segments never exceed ``max_bytes`` together. When a new record would not fit, the OLDEST
segment is deleted and its unacked records are counted (``dropped``, ``on_drop``): a spend guard needs
the current burn more than the oldest part of an outage, and dropping a whole segment costs one unlink.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SEGMENT = re.compile(r"^seg-(\d{12})\.jsonl$")
CURSOR = "cursor.json"


@dataclass(frozen=True, order=True, slots=True)
class Position:
    """A place in the queue: a segment number and a byte offset in it."""

    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class Batch:
    """Records read by ``peek``: from ``start`` up to ``end``; ``lines`` counts unreadable ones too."""

    records: list[dict[str, Any]]
    start: Position
    end: Position
    lines: int


class DiskQueue:
    """A bounded on-disk FIFO of JSON objects; thread-safe (one writer and one reader)."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        segment_bytes: int = 1024 * 1024,
        fsync: bool = True,
        on_drop: Callable[[int, str], None] | None = None,
    ) -> None:
        if max_bytes < 4096:
            raise ValueError("max_bytes must be at least 4096")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        # At least four segments fit, so dropping the oldest always frees room for the active one.
        self.segment_bytes = max(1024, min(segment_bytes, max_bytes // 4))
        self.fsync = fsync
        self.on_drop = on_drop
        self.dropped = 0
        self.corrupt = 0
        self._lock = threading.Lock()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sizes: dict[int, int] = {}
        self._cursor = Position(1, 0)
        self._pending = 0
        self._open()
        self._file = open(self._path(self._active), "ab", buffering=0)  # noqa: SIM115 - closed in close()

    # --- public ---

    @property
    def pending(self) -> int:
        """Records appended and not yet acknowledged."""
        return self._pending

    @property
    def size_bytes(self) -> int:
        """Bytes the segments take on disk (acked records of the current segments included)."""
        return sum(self._sizes.values())

    def append(self, record: Mapping[str, Any]) -> bool:
        """Write ``record`` durably at the tail; return False (and count it) if it can never fit."""
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        with self._lock:
            if len(line) > self.max_bytes - 1024:
                self._count_drop(1, "too_large")
                return False
            if self._sizes[self._active] and self._sizes[self._active] + len(line) > self.segment_bytes:
                self._rotate()
            while self.size_bytes + len(line) > self.max_bytes and self._oldest != self._active:
                self._drop_oldest()
            self._file.write(line)
            if self.fsync:
                os.fsync(self._file.fileno())
            self._sizes[self._active] += len(line)
            self._pending += 1
        return True

    def peek(self, max_records: int) -> Batch:
        """Return up to ``max_records`` records from the cursor on, without removing them."""
        with self._lock:
            start = position = self._cursor
            records: list[dict[str, Any]] = []
            lines = 0
            for seq in sorted(s for s in self._sizes if s >= position.segment):
                offset = position.offset if seq == position.segment else 0
                data = self._read(seq, offset)
                for raw in data.split(b"\n")[:-1]:  # the part after the last newline is not a record yet
                    if len(records) >= max_records:
                        break
                    offset += len(raw) + 1
                    lines += 1
                    position = Position(seq, offset)
                    try:
                        doc = json.loads(raw)
                    except ValueError:
                        doc = None
                    if isinstance(doc, dict):
                        records.append(doc)
                    else:
                        self.corrupt += 1
                        log.error("gpu-agent buffer: skipping an unreadable record in segment %d", seq)
                if len(records) >= max_records:
                    break
            return Batch(records, start, position, lines)

    def ack(self, batch: Batch) -> None:
        """Mark ``batch`` as delivered: move the cursor past it and delete finished segments."""
        with self._lock:
            if batch.end <= self._cursor:
                return  # already acked, or its records were dropped meanwhile
            if batch.start == self._cursor:
                self._pending -= batch.lines
                self._cursor = batch.end
            else:
                # The oldest segment was dropped while the batch was in flight: recount from the end.
                self._cursor = batch.end
                self._pending = self._count_from(self._cursor)
            self._settle()

    def close(self) -> None:
        """Close the active segment file."""
        with self._lock:
            self._file.close()

    # --- internals ---

    def _path(self, seq: int) -> Path:
        return self.directory / f"seg-{seq:012d}.jsonl"

    @property
    def _active(self) -> int:
        return max(self._sizes)

    @property
    def _oldest(self) -> int:
        return min(self._sizes)

    def _read(self, seq: int, offset: int) -> bytes:
        with open(self._path(seq), "rb") as handle:
            handle.seek(offset)
            return handle.read()

    def _open(self) -> None:
        for entry in self.directory.iterdir():
            match = SEGMENT.match(entry.name)
            if match:
                self._sizes[int(match.group(1))] = entry.stat().st_size
        cursor = self._load_cursor()
        if not self._sizes:
            self._sizes[max(cursor.segment, 1)] = 0
            self._path(self._active).touch()
        self._repair_tail(self._active)
        if cursor.segment not in self._sizes:
            cursor = Position(self._oldest, 0) if cursor.segment < self._oldest else Position(self._active, 0)
        self._cursor = Position(cursor.segment, min(cursor.offset, self._sizes[cursor.segment]))
        self._settle()
        self._pending = self._count_from(self._cursor)

    def _load_cursor(self) -> Position:
        try:
            doc = json.loads((self.directory / CURSOR).read_text())
            return Position(int(doc["segment"]), int(doc["offset"]))
        except FileNotFoundError:
            return Position(0, 0)
        except (ValueError, KeyError, TypeError):
            log.error("gpu-agent buffer: %s is unreadable; re-sending from the oldest record", CURSOR)
            return Position(0, 0)

    def _repair_tail(self, seq: int) -> None:
        data = self._read(seq, 0)
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            os.truncate(self._path(seq), keep)
            self._sizes[seq] = keep
            self.corrupt += 1
            log.warning("gpu-agent buffer: cut a torn record (%d bytes) off segment %d",
                        len(data) - keep, seq)

    def _count_from(self, position: Position) -> int:
        return sum(
            self._read(seq, position.offset if seq == position.segment else 0).count(b"\n")
            for seq in self._sizes
            if seq >= position.segment
        )

    def _settle(self) -> None:
        """Skip the cursor over finished segments, delete the segments behind it, save the cursor."""
        cursor = self._cursor
        while cursor.segment != self._active and cursor.offset >= self._sizes[cursor.segment]:
            cursor = Position(min(s for s in self._sizes if s > cursor.segment), 0)
        self._cursor = cursor
        for seq in [s for s in self._sizes if s < self._cursor.segment]:
            self._path(seq).unlink(missing_ok=True)
            del self._sizes[seq]
        self._save_cursor()

    def _save_cursor(self) -> None:
        tmp = self.directory / f"{CURSOR}.tmp"
        with open(tmp, "w") as handle:
            json.dump({"segment": self._cursor.segment, "offset": self._cursor.offset}, handle)
            handle.flush()
            if self.fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, self.directory / CURSOR)
        if self.fsync:
            _fsync_dir(self.directory)

    def _rotate(self) -> None:
        self._file.close()
        seq = self._active + 1
        self._sizes[seq] = 0
        self._file = open(self._path(seq), "ab", buffering=0)  # noqa: SIM115 - closed on rotate or close()
        if self.fsync:
            _fsync_dir(self.directory)

    def _drop_oldest(self) -> None:
        seq = self._oldest
        offset = self._cursor.offset if seq == self._cursor.segment else 0
        lost = self._read(seq, offset).count(b"\n")
        self._path(seq).unlink(missing_ok=True)
        del self._sizes[seq]
        if self._cursor.segment == seq:
            self._cursor = Position(self._oldest, 0)
        self._pending -= lost
        self._settle()
        self._count_drop(lost, "buffer_full")

    def _count_drop(self, count: int, reason: str) -> None:
        self.dropped += count
        if self.on_drop is not None:
            self.on_drop(count, reason)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
