"""Durable, ordered spool of billing records that are not yet confirmed by Kafka.

An append-only SQLite table in WAL mode with ``synchronous=FULL``: every :meth:`BillingSpool.append`
is one transaction whose commit is fsynced before it returns, so a record the publisher has
spooled survives a crash, a power cut and a restart. ``seq`` is an AUTOINCREMENT key, never
reused, so the spool's order is publication order across restarts. A row is deleted only after
the broker acknowledged it (:meth:`BillingSpool.remove`); records Kafka refuses for good (too
large, say) move to ``dead`` instead of blocking everything behind them.

One connection, used by one thread at a time (the publisher's delivery thread); a lock makes
the occasional read from another thread (statistics) safe.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT    NOT NULL,
    value      BLOB    NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead (
    seq        INTEGER PRIMARY KEY,
    topic      TEXT    NOT NULL,
    value      BLOB    NOT NULL,
    created_ms INTEGER NOT NULL,
    error      TEXT    NOT NULL,
    failed_ms  INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class SpooledRecord:
    seq: int
    topic: str
    value: bytes


class BillingSpool:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")  # fsync the WAL on every commit
        self._conn.executescript(_SCHEMA)

    def append(self, topic: str, values: Sequence[bytes]) -> int:
        """Store ``values`` in order, durably; returns the ``seq`` of the last one (0 if none)."""
        if not values:
            return 0
        now = int(time.time() * 1000)
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.executemany("INSERT INTO records(topic, value, created_ms) VALUES (?, ?, ?)",
                                [(topic, sqlite3.Binary(v), now) for v in values])
                last = cur.execute("SELECT last_insert_rowid()").fetchone()[0]
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return int(last)

    def after(self, seq: int, limit: int) -> list[SpooledRecord]:
        """Up to ``limit`` records with a sequence number above ``seq``, oldest first."""
        with self._lock:
            rows = self._conn.execute("SELECT seq, topic, value FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
                                      (seq, limit)).fetchall()
        return [SpooledRecord(int(s), str(t), bytes(v)) for s, t, v in rows]

    def remove(self, seqs: Iterable[int]) -> None:
        """Forget delivered records."""
        batch = [(s,) for s in seqs]
        if not batch:
            return
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.executemany("DELETE FROM records WHERE seq = ?", batch)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def bury(self, seq: int, error: str) -> None:
        """Move a record Kafka will never accept to ``dead``, so it stops blocking the ones after it."""
        now = int(time.time() * 1000)
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.execute("INSERT OR REPLACE INTO dead(seq, topic, value, created_ms, error, failed_ms) "
                            "SELECT seq, topic, value, created_ms, ?, ? FROM records WHERE seq = ?",
                            (error, now, seq))
                cur.execute("DELETE FROM records WHERE seq = ?", (seq,))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def last_seq(self) -> int:
        """The highest sequence number ever handed out (0 for a new spool), deleted rows included."""
        with self._lock:
            row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
        return int(row[0]) if row else 0

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def dead_count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM dead").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
