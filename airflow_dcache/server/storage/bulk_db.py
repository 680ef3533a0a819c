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
    error_message TEXT,
    initial INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS bulk_target_rid ON bulk_target(rid, tid);
CREATE INDEX IF NOT EXISTS bulk_request_finished ON bulk_request(status, last_modified);
CREATE TABLE IF NOT EXISTS bulk_archive (
    uid TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    activity TEXT NOT NULL,
    depth TEXT NOT NULL,
    arrived_at INTEGER NOT NULL,
    started_at INTEGER,
    last_modified INTEGER NOT NULL,
    status TEXT NOT NULL,
    target_prefix TEXT NOT NULL,
    initial_targets TEXT NOT NULL,
    errors TEXT NOT NULL,
    succeeded INTEGER NOT NULL,
    cancelled INTEGER NOT NULL,
    failed INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS bulk_archive_modified ON bulk_archive(last_modified);
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
class ArchivedRequest:
    """What dCache keeps of a cleared request (its BulkArchivedRequestInfo): counts, not targets."""

    uid: str
    owner: str  # "uid:gid", as dCache's uidGidKey
    activity: str
    depth: str
    arrived_at: int
    started_at: int | None
    last_modified: int
    status: str
    target_prefix: str
    initial_targets: list[str]
    errors: dict[str, int]  # error type -> number of targets that failed with it
    succeeded: int
    cancelled: int
    failed: int


@dataclass(frozen=True)
class ArchiveFilter:
    owners: frozenset[str] | None = None
    activities: frozenset[str] | None = None
    statuses: frozenset[str] | None = None
    before: int | None = None  # last modified at or before (epoch ms)
    after: int | None = None  # last modified at or after (epoch ms)
    limit: int = 5000


_ARCHIVE_COLUMNS = ("uid, owner, activity, depth, arrived_at, started_at, last_modified, status, target_prefix, "
                    "initial_targets, errors, succeeded, cancelled, failed")


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
        have = {r[1] for r in self._conn.execute("PRAGMA table_info(bulk_target)").fetchall()}
        if "initial" not in have:  # a bulk.db from before archiving: every stored target counts as initial
            self._conn.execute("ALTER TABLE bulk_target ADD COLUMN initial INTEGER NOT NULL DEFAULT 1")

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
        """A target found by expanding a directory (not one the client named)."""
        cur = self._conn.execute(
            "INSERT INTO bulk_target (rid, path, state, submitted_at, initial) VALUES (?,?,?,?,0)",
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

    # -- archive -----------------------------------------------------------------------------
    def archive(self, rid: str) -> bool:
        """Replace a request and its targets by its archive record, atomically (dCache archives on clear)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            row = self.get(rid)
            if row is None:
                self._conn.execute("ROLLBACK")
                return False
            initial = [r[0] for r in self._conn.execute(
                "SELECT path FROM bulk_target WHERE rid=? AND initial=1 ORDER BY tid", (rid,))]
            counts = dict(self._conn.execute(
                "SELECT state, COUNT(*) FROM bulk_target WHERE rid=? GROUP BY state", (rid,)).fetchall())
            errors = dict(self._conn.execute(
                "SELECT COALESCE(error_type, ''), COUNT(*) FROM bulk_target WHERE rid=? AND state='FAILED' "
                "GROUP BY 1 ORDER BY 1", (rid,)).fetchall())
            self._conn.execute(
                f"INSERT OR REPLACE INTO bulk_archive ({_ARCHIVE_COLUMNS}) VALUES ({','.join('?' * 14)})",
                (rid, f"{row.owner_uid}:{row.owner_gid}", row.activity, row.expand, row.arrived_at, row.started_at,
                 row.last_modified, row.status, row.target_prefix or "/", json.dumps(initial), json.dumps(errors),
                 counts.get("COMPLETED", 0) + counts.get("SKIPPED", 0), counts.get("CANCELLED", 0),
                 counts.get("FAILED", 0)))
            self._conn.execute("DELETE FROM bulk_request WHERE id=?", (rid,))
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        return True

    def finished_before(self, cutoff_ms: int) -> list[str]:
        """Ids of requests in a terminal state not modified since ``cutoff_ms``: the archiver's work."""
        rows = self._conn.execute(
            "SELECT id FROM bulk_request WHERE status IN ('COMPLETED','CANCELLED') AND last_modified<=? "
            "ORDER BY last_modified", (cutoff_ms,)).fetchall()
        return [r[0] for r in rows]

    def archived(self, uid: str) -> ArchivedRequest | None:
        r = self._conn.execute(f"SELECT {_ARCHIVE_COLUMNS} FROM bulk_archive WHERE uid=?", (uid,)).fetchone()
        if r is None:
            return None
        values = list(r)
        values[9], values[10] = json.loads(values[9]), json.loads(values[10])
        return ArchivedRequest(*values)

    def archived_list(self, flt: ArchiveFilter) -> list[dict[str, Any]]:
        """Summaries (uid, owner, activity, lastModified, status), oldest first as dCache's archive DAO sorts.

        One query for the summary columns only: the stored target lists are never decoded for a listing.
        """
        query = "SELECT uid, owner, activity, last_modified, status FROM bulk_archive WHERE 1=1"
        args: list[Any] = []
        for column, values in (("owner", flt.owners), ("UPPER(activity)", flt.activities),
                               ("UPPER(status)", flt.statuses)):
            if values:
                query += f" AND {column} IN ({','.join('?' * len(values))})"
                args += sorted(values)
        if flt.before is not None:
            query, args = query + " AND last_modified<=?", [*args, flt.before]
        if flt.after is not None:
            query, args = query + " AND last_modified>=?", [*args, flt.after]
        rows = self._conn.execute(query + " ORDER BY last_modified, uid LIMIT ?", [*args, flt.limit]).fetchall()
        return [{"uid": r[0], "owner": r[1], "activity": r[2], "lastModified": r[3], "status": r[4]} for r in rows]
