"""Persistent bulk requests and their targets (SQLite), so requests survive a restart."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_dcache.server.storage.namespace_db import now_ms

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bulk_request (
    id TEXT PRIMARY KEY,
    owner_uid INTEGER NOT NULL,
    owner_gid INTEGER NOT NULL,
    login TEXT NOT NULL,
    activity TEXT NOT NULL,
    arguments TEXT NOT NULL,
    target_prefix TEXT NOT NULL,
    expand TEXT NOT NULL,
    cancel_on_failure INTEGER NOT NULL,
    clear_on_success INTEGER NOT NULL,
    clear_on_failure INTEGER NOT NULL,
    status TEXT NOT NULL,
    arrived_at INTEGER NOT NULL,
    started_at INTEGER,
    last_modified INTEGER NOT NULL,
    kind TEXT NOT NULL DEFAULT 'bulk'
);
CREATE TABLE IF NOT EXISTS bulk_target (
    tid INTEGER PRIMARY KEY AUTOINCREMENT,
    rid TEXT NOT NULL REFERENCES bulk_request(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    state TEXT NOT NULL,
    submitted_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    error_type TEXT,
    error_message TEXT
);
CREATE INDEX IF NOT EXISTS bulk_target_rid ON bulk_target(rid, tid);
"""

_REQUEST_COLUMNS = ("id, owner_uid, owner_gid, login, activity, arguments, target_prefix, expand, "
                    "cancel_on_failure, clear_on_success, clear_on_failure, status, arrived_at, started_at, "
                    "last_modified, kind")
_TARGET_COLUMNS = "tid, rid, path, state, submitted_at, started_at, finished_at, error_type, error_message"


@dataclass(frozen=True)
class BulkRequestRow:
    id: str
    owner_uid: int
    owner_gid: int
    login: str
    activity: str
    arguments: str
    target_prefix: str
    expand: str
    cancel_on_failure: int
    clear_on_success: int
    clear_on_failure: int
    status: str
    arrived_at: int
    started_at: int | None
    last_modified: int
    kind: str

    @property
    def args(self) -> dict[str, str]:
        return dict(json.loads(self.arguments))


@dataclass(frozen=True)
class BulkTargetRow:
    tid: int
    rid: str
    path: str
    state: str
    submitted_at: int
    started_at: int | None
    finished_at: int | None
    error_type: str | None
    error_message: str | None


class BulkDB:
    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        self._conn.close()

    def insert(self, row: dict[str, Any], paths: list[str]) -> None:
        t = now_ms()
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            cols = _REQUEST_COLUMNS.split(", ")
            self._conn.execute(f"INSERT INTO bulk_request ({_REQUEST_COLUMNS}) VALUES ({','.join('?' * len(cols))})",
                               [row[c] for c in cols])
            self._conn.executemany(
                "INSERT INTO bulk_target (rid, path, state, submitted_at) VALUES (?,?,?,?)",
                [(row["id"], p, "CREATED", t) for p in paths])
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def get(self, rid: str) -> BulkRequestRow | None:
        r = self._conn.execute(f"SELECT {_REQUEST_COLUMNS} FROM bulk_request WHERE id=?", (rid,)).fetchone()
        return BulkRequestRow(*r) if r else None

    def requests(self, *, owner_uid: int | None = None, statuses: list[str] | None = None,
                 kind: str | None = None) -> list[BulkRequestRow]:
        query, args = f"SELECT {_REQUEST_COLUMNS} FROM bulk_request WHERE 1=1", []  # type: tuple[str, list[Any]]
        if owner_uid is not None:
            query, args = query + " AND owner_uid=?", [*args, owner_uid]
        if statuses:
            query += f" AND status IN ({','.join('?' * len(statuses))})"
            args += statuses
        if kind is not None:
            query, args = query + " AND kind=?", [*args, kind]
        rows = self._conn.execute(query + " ORDER BY arrived_at, id", args).fetchall()
        return [BulkRequestRow(*r) for r in rows]

    def count_unfinished(self, owner_uid: int) -> int:
        return int(self._conn.execute(
            "SELECT COUNT(*) FROM bulk_request WHERE owner_uid=? AND status NOT IN ('COMPLETED','CANCELLED')",
            (owner_uid,)).fetchone()[0])

    def set_status(self, rid: str, status: str, *, started: bool = False) -> None:
        t = now_ms()
        if started:
            self._conn.execute("UPDATE bulk_request SET status=?, started_at=COALESCE(started_at, ?), "
                               "last_modified=? WHERE id=?", (status, t, t, rid))
        else:
            self._conn.execute("UPDATE bulk_request SET status=?, last_modified=? WHERE id=?", (status, t, rid))

    def delete(self, rid: str) -> None:
        self._conn.execute("DELETE FROM bulk_request WHERE id=?", (rid,))

    def targets(self, rid: str, offset: int = 0, limit: int = -1) -> list[BulkTargetRow]:
        rows = self._conn.execute(
            f"SELECT {_TARGET_COLUMNS} FROM bulk_target WHERE rid=? AND tid>=? ORDER BY tid LIMIT ?",
            (rid, offset, limit)).fetchall()
        return [BulkTargetRow(*r) for r in rows]

    def add_target(self, rid: str, path: str, state: str = "CREATED") -> int:
        cur = self._conn.execute("INSERT INTO bulk_target (rid, path, state, submitted_at) VALUES (?,?,?,?)",
                                 (rid, path, state, now_ms()))
        return int(cur.lastrowid or 0)

    def update_target(self, tid: int, state: str, *, error: tuple[str, str] | None = None) -> None:
        t = now_ms()
        if state == "RUNNING":
            self._conn.execute("UPDATE bulk_target SET state=?, started_at=? WHERE tid=?", (state, t, tid))
        elif state in ("COMPLETED", "FAILED", "CANCELLED", "SKIPPED"):
            err_type, err_msg = error or (None, None)
            self._conn.execute(
                "UPDATE bulk_target SET state=?, started_at=COALESCE(started_at, ?), finished_at=?, "
                "error_type=?, error_message=? WHERE tid=?", (state, t, t, err_type, err_msg, tid))
        else:
            self._conn.execute("UPDATE bulk_target SET state=? WHERE tid=?", (state, tid))

    def cancel_targets(self, rid: str, paths: list[str] | None = None) -> int:
        t = now_ms()
        query = ("UPDATE bulk_target SET state='CANCELLED', finished_at=? WHERE rid=? "
                 "AND state IN ('CREATED','READY','RUNNING')")
        args: list[Any] = [t, rid]
        if paths is not None:
            query += f" AND path IN ({','.join('?' * len(paths))})"
            args += paths
        return self._conn.execute(query, args).rowcount
