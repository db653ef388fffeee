"""The worker's stores skip RocksDB's write-ahead log, and a SIGKILL leaves each one a consistent prefix.

A real RocksDB store, opened as the worker opens it (faust's ``RocksDBOptions`` with a TTL), in a child
process killed with SIGKILL: what faust's recovery relies on is that the store's entries and its
persisted changelog offset are lost or kept together.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import rocksdict
from faust.stores.rocksdb import RocksDBOptions

from streams import rocksdb_wal
from streams.tables import encode_entries, write_entries

OFFSET_KEY = b"__faust\x00offset__"  # faust's persisted changelog offset, in the store it describes

CHILD = """
import os, signal, sys
from pathlib import Path
from faust.stores.rocksdb import RocksDBOptions
from streams import rocksdb_wal
from streams.tables import encode_entries, write_entries

rocksdb_wal.apply()
db = RocksDBOptions(ttl=3600).open(Path(sys.argv[1]))
write_entries(db, encode_entries([("i|first", 1)]))
db.put(b"__faust\\x00offset__", b"7")        # faust's offset write, after the batch it covers
db.flush()                                    # a memtable flush: what a crash keeps
write_entries(db, encode_entries([("i|second", 1)]))
db.put(b"__faust\\x00offset__", b"8")
os.kill(os.getpid(), signal.SIGKILL)          # before any flush or close
"""


def test_a_sigkill_keeps_the_entries_and_the_offset_of_the_last_flush_together(tmp_path: Path) -> None:
    path = tmp_path / "store"
    root = Path(__file__).resolve().parents[2]
    child = subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=root, check=False,
                           env={**os.environ, "PYTHONPATH": str(root)})
    assert child.returncode == -signal.SIGKILL
    db = RocksDBOptions(ttl=3600).open(path)
    try:
        assert db[OFFSET_KEY] == b"7"  # offset 8 and the batch before it are gone together
        assert db.get(b'"i|first"') == b"1"
        assert db.get(b'"i|second"') is None
    finally:
        db.close()


def test_the_worker_opens_stores_without_the_log_and_a_clean_close_keeps_everything(tmp_path: Path) -> None:
    rocksdb_wal.apply()
    rocksdb_wal.apply()  # idempotent
    path = tmp_path / "store"
    db = RocksDBOptions(ttl=3600).open(path)
    write_entries(db, encode_entries([("s|llm|app=a", {"n": 1})]))
    db.put(OFFSET_KEY, b"3")
    assert all(log.stat().st_size == 0 for log in path.glob("*.log"))  # nothing went to the log
    db.close()
    db = RocksDBOptions(ttl=3600).open(path)
    try:
        assert db.get(b'"s|llm|app=a"') == b'{"n":1}' and db[OFFSET_KEY] == b"3"
    finally:
        db.close()


def test_unlogged_write_options_skip_the_log() -> None:
    assert rocksdb_wal.unlogged().disable_wal is True
    assert rocksdict.WriteOptions().disable_wal is False
