"""The namespace: paths → file ids and attributes, in SQLite (WAL), like dCache's Chimera.

File data never lives here; pools keep it under the file id. Every multi-step change runs in a
single transaction, so a crash leaves either the old or the new state, never a mixture.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

ROOT_ID = "0" * 36
DIR = "DIR"
REGULAR = "REGULAR"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inode (
    id TEXT PRIMARY KEY,
    parent TEXT,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    mode INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    crtime INTEGER NOT NULL,
    ctime INTEGER NOT NULL,
    mtime INTEGER NOT NULL,
    atime INTEGER NOT NULL,
    adler32 TEXT,
    md5 TEXT,
    on_disk INTEGER NOT NULL DEFAULT 1,
    on_tape INTEGER NOT NULL DEFAULT 0,
    disk_sticky INTEGER NOT NULL DEFAULT 1,
    qos_target TEXT,
    sha1 TEXT,
    sha256 TEXT,
    sha512 TEXT,
    UNIQUE (parent, name)
);
CREATE TABLE IF NOT EXISTS xattr (
    id TEXT NOT NULL REFERENCES inode(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (id, name)
);
CREATE TABLE IF NOT EXISTS pin (
    id TEXT NOT NULL REFERENCES inode(id) ON DELETE CASCADE,
    pin_id TEXT NOT NULL,
    uid INTEGER NOT NULL,
    expires_ms INTEGER,
    PRIMARY KEY (id, pin_id)
);
CREATE TABLE IF NOT EXISTS label (
    id TEXT NOT NULL REFERENCES inode(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    PRIMARY KEY (id, label)
);
CREATE INDEX IF NOT EXISTS label_by_label ON label(label, id);
"""

_COLUMNS = ("id, parent, name, type, size, mode, uid, gid, crtime, ctime, mtime, atime, adler32, md5, "
            "on_disk, on_tape, disk_sticky, qos_target, sha1, sha256, sha512")
_DIR_CACHE_SIZE = 100_000
_PLACEHOLDERS = ",".join("?" * len(_COLUMNS.split(",")))


@dataclass(frozen=True)
class Inode:
    id: str
    parent: str | None
    name: str
    type: str
    size: int
    mode: int
    uid: int
    gid: int
    crtime: int
    ctime: int
    mtime: int
    atime: int
    adler32: str | None
    md5: str | None
    on_disk: int = 1
    on_tape: int = 0
    disk_sticky: int = 1
    qos_target: str | None = None
    sha1: str | None = None
    sha256: str | None = None
    sha512: str | None = None

    @property
    def is_dir(self) -> bool:
        return self.type == DIR

    @property
    def locality(self) -> str:
        """dCache's FileLocality, from where replicas physically are."""
        if self.on_disk and self.on_tape:
            return "ONLINE_AND_NEARLINE"
        if self.on_tape:
            return "NEARLINE"
        return "ONLINE" if self.on_disk else "LOST"

    @property
    def current_qos(self) -> str:
        """What QoS policy the replicas satisfy: a sticky disk copy and/or a tape copy."""
        disk = bool(self.on_disk and self.disk_sticky)
        if disk and self.on_tape:
            return "disk+tape"
        if self.on_tape:
            return "tape"
        return "disk" if disk else "volatile"


_FIELDS = tuple(f.name for f in fields(Inode))
assert ", ".join(_FIELDS) == _COLUMNS, "Inode fields and _COLUMNS must list the same columns in the same order"


def _row(node: Inode) -> tuple[object, ...]:
    return tuple(getattr(node, name) for name in _FIELDS)


def new_pnfsid() -> str:
    """A dCache-style PNFS-ID: 36 upper-case hex characters."""
    return ("0000" + uuid.uuid4().hex).upper()


def now_ms() -> int:
    return int(time.time() * 1000)


class NamespaceDB:
    """Thin, synchronous access to the namespace tables. Callers hold no cursors across calls."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._dir_cache: dict[tuple[str | None, str], Inode] = {}
        self._dir_keys: dict[str, tuple[str | None, str]] = {}  # inode id -> its key (a dir has one name)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.executescript(_SCHEMA)
        self._migrate()
        if self.get(ROOT_ID) is None:
            t = now_ms()
            root = Inode(ROOT_ID, None, "", DIR, 512, 0o755, 0, 0, t, t, t, t, None, None)
            self._conn.execute(f"INSERT INTO inode ({_COLUMNS}) VALUES ({_PLACEHOLDERS})", _row(root))

    def close(self) -> None:
        self._conn.close()

    def _migrate(self) -> None:
        """Add columns that newer versions introduced to a namespace created by an older one."""
        have = {r[1] for r in self._conn.execute("PRAGMA table_info(inode)").fetchall()}
        for column, decl in (("on_disk", "INTEGER NOT NULL DEFAULT 1"), ("on_tape", "INTEGER NOT NULL DEFAULT 0"),
                             ("disk_sticky", "INTEGER NOT NULL DEFAULT 1"), ("qos_target", "TEXT"),
                             ("sha1", "TEXT"), ("sha256", "TEXT"), ("sha512", "TEXT")):
            if column not in have:
                self._conn.execute(f"ALTER TABLE inode ADD COLUMN {column} {decl}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several changes atomically (BEGIN IMMEDIATE … COMMIT / ROLLBACK)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- reads -------------------------------------------------------------------------------
    def get(self, inode_id: str) -> Inode | None:
        row = self._conn.execute(f"SELECT {_COLUMNS} FROM inode WHERE id=?", (inode_id,)).fetchone()
        return Inode(*row) if row else None

    def child(self, parent_id: str, name: str) -> Inode | None:
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM inode WHERE parent=? AND name=?", (parent_id, name)
        ).fetchone()
        return Inode(*row) if row else None

    def resolve(self, parts: list[str]) -> list[Inode]:
        """The inodes along ``parts`` from the root, as far as the path exists.

        Ancestors come from an in-memory cache of directories (only their type, mode and owner
        matter for traversal, and every change to those goes through this class, which evicts
        the entry); the last component is always read fresh from the database.
        """
        root = self.get(ROOT_ID) if not parts else self._dir_cache.get((None, ""))
        if root is None:
            root = self.get(ROOT_ID)
            assert root is not None
            self._remember((None, ""), root)
        chain = [root]
        for i, name in enumerate(parts):
            parent = chain[-1]
            if not parent.is_dir:
                break
            last = i == len(parts) - 1
            node = self.child(parent.id, name) if last else self._cached_dir(parent.id, name)
            if node is None:
                break
            chain.append(node)
        return chain

    def _cached_dir(self, parent_id: str, name: str) -> Inode | None:
        key = (parent_id, name)
        node = self._dir_cache.get(key)
        if node is None:
            node = self.child(parent_id, name)
            if node is not None and node.is_dir:
                self._remember(key, node)
        return node

    def _evict(self, inode_id: str) -> None:
        """Forget a directory whose name, place, mode or owner changes (or that is removed)."""
        key = self._dir_keys.pop(inode_id, None)  # O(1): deletes of files hit this on every overwrite
        if key is not None:
            self._dir_cache.pop(key, None)

    def _remember(self, key: tuple[str | None, str], node: Inode) -> None:
        if len(self._dir_cache) >= _DIR_CACHE_SIZE:
            self._dir_cache.clear()
            self._dir_keys.clear()
        self._dir_cache[key] = node
        self._dir_keys[node.id] = key

    def children(self, parent_id: str, offset: int = 0, limit: int = -1) -> list[Inode]:
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM inode WHERE parent=? ORDER BY name LIMIT ? OFFSET ?",
            (parent_id, limit, offset),
        ).fetchall()
        return [Inode(*r) for r in rows]

    def has_children(self, parent_id: str) -> bool:
        return self._conn.execute("SELECT 1 FROM inode WHERE parent=? LIMIT 1", (parent_id,)).fetchone() is not None

    def count_children(self, parent_id: str) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM inode WHERE parent=?", (parent_id,)).fetchone()[0])

    def path_of(self, inode_id: str) -> str:
        parts: list[str] = []
        node = self.get(inode_id)
        while node is not None and node.parent is not None:
            parts.append(node.name)
            node = self.get(node.parent)
        return "/" + "/".join(reversed(parts))

    def xattrs(self, inode_id: str) -> dict[str, str]:
        rows = self._conn.execute("SELECT name, value FROM xattr WHERE id=? ORDER BY name", (inode_id,))
        return dict(rows.fetchall())

    def all_labels(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT DISTINCT label FROM label ORDER BY label")]

    def labelled(self, label: str) -> list[Inode]:
        """Files carrying ``label``, in name order (the entries of dCache's label virtual directory)."""
        cols = ", ".join(f"i.{c.strip()}" for c in _COLUMNS.split(","))
        rows = self._conn.execute(f"SELECT {cols} FROM label l JOIN inode i ON i.id=l.id WHERE l.label=? "
                                  "ORDER BY i.name, i.id", (label,)).fetchall()
        return [Inode(*r) for r in rows]

    def labels(self, inode_id: str) -> list[str]:
        rows = self._conn.execute("SELECT label FROM label WHERE id=? ORDER BY label", (inode_id,))
        return [r[0] for r in rows.fetchall()]

    # -- writes ------------------------------------------------------------------------------
    def insert(
        self, parent_id: str, name: str, kind: str, *, mode: int, uid: int, gid: int, size: int = 0,
        adler32: str | None = None, digests: Mapping[str, str] | None = None, inode_id: str | None = None,
    ) -> Inode:
        """``digests``: the optional checksums in hex by column name (md5, sha1, sha256, sha512)."""
        t = now_ms()
        extra = dict(digests or {})
        node = Inode(inode_id or new_pnfsid(), parent_id, name, kind, size, mode, uid, gid, t, t, t, t,
                     adler32, extra.pop("md5", None), sha1=extra.pop("sha1", None),
                     sha256=extra.pop("sha256", None), sha512=extra.pop("sha512", None))
        if extra:
            raise ValueError(f"unknown checksum columns: {sorted(extra)}")
        self._conn.execute(f"INSERT INTO inode ({_COLUMNS}) VALUES ({_PLACEHOLDERS})", _row(node))
        self._touch_dir(parent_id, t)
        return node

    def delete(self, inode_id: str) -> None:
        self._evict(inode_id)
        node = self.get(inode_id)
        self._conn.execute("DELETE FROM inode WHERE id=?", (inode_id,))
        if node is not None and node.parent is not None:
            self._touch_dir(node.parent, now_ms())

    def rename(self, inode_id: str, new_parent: str, new_name: str) -> None:
        self._evict(inode_id)
        old = self.get(inode_id)
        t = now_ms()
        self._conn.execute(
            "UPDATE inode SET parent=?, name=?, ctime=? WHERE id=?", (new_parent, new_name, t, inode_id)
        )
        self._touch_dir(new_parent, t)
        if old is not None and old.parent is not None and old.parent != new_parent:
            self._touch_dir(old.parent, t)

    def set_mode(self, inode_id: str, mode: int) -> None:
        self._evict(inode_id)
        self._conn.execute("UPDATE inode SET mode=?, ctime=? WHERE id=?", (mode, now_ms(), inode_id))

    def set_group(self, inode_id: str, gid: int) -> None:
        self._evict(inode_id)
        self._conn.execute("UPDATE inode SET gid=?, ctime=? WHERE id=?", (gid, now_ms(), inode_id))

    def set_xattrs(self, inode_id: str, attrs: dict[str, str]) -> None:
        self._conn.executemany(
            "INSERT INTO xattr (id, name, value) VALUES (?,?,?) "
            "ON CONFLICT (id, name) DO UPDATE SET value=excluded.value",
            [(inode_id, k, v) for k, v in attrs.items()],
        )
        self._conn.execute("UPDATE inode SET ctime=? WHERE id=?", (now_ms(), inode_id))

    def remove_xattrs(self, inode_id: str, names: list[str]) -> None:
        self._conn.executemany("DELETE FROM xattr WHERE id=? AND name=?", [(inode_id, n) for n in names])
        self._conn.execute("UPDATE inode SET ctime=? WHERE id=?", (now_ms(), inode_id))

    def add_label(self, inode_id: str, label: str) -> None:
        self._conn.execute("INSERT OR IGNORE INTO label (id, label) VALUES (?,?)", (inode_id, label))

    def remove_label(self, inode_id: str, label: str) -> None:
        self._conn.execute("DELETE FROM label WHERE id=? AND label=?", (inode_id, label))

    # -- replicas, QoS and pins ----------------------------------------------------------------
    def set_replicas(self, inode_id: str, **state: int | str | None) -> None:
        """Update on_disk / on_tape / disk_sticky / qos_target; ctime changes like a setattr."""
        allowed = {"on_disk", "on_tape", "disk_sticky", "qos_target"}
        assert set(state) <= allowed, state
        sets = ", ".join(f"{k}=?" for k in state)
        self._conn.execute(f"UPDATE inode SET {sets}, ctime=? WHERE id=?", (*state.values(), now_ms(), inode_id))

    def with_qos_target(self) -> list[Inode]:
        rows = self._conn.execute(f"SELECT {_COLUMNS} FROM inode WHERE qos_target IS NOT NULL").fetchall()
        return [Inode(*r) for r in rows]

    def add_pin(self, inode_id: str, pin_id: str, uid: int, expires_ms: int | None) -> None:
        self._conn.execute(
            "INSERT INTO pin (id, pin_id, uid, expires_ms) VALUES (?,?,?,?) "
            "ON CONFLICT (id, pin_id) DO UPDATE SET expires_ms=excluded.expires_ms, uid=excluded.uid",
            (inode_id, pin_id, uid, expires_ms),
        )

    def remove_pins(self, inode_id: str, *, pin_id: str | None = None, uid: int | None = None) -> int:
        query, args = "DELETE FROM pin WHERE id=?", [inode_id]  # type: tuple[str, list[object]]
        if pin_id is not None:
            query, args = query + " AND pin_id=?", [*args, pin_id]
        if uid is not None:
            query, args = query + " AND uid=?", [*args, uid]
        return self._conn.execute(query, args).rowcount

    def pinned(self, inode_id: str, now: int) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM pin WHERE id=? AND (expires_ms IS NULL OR expires_ms > ?) LIMIT 1", (inode_id, now)
        ).fetchone()
        return row is not None

    def expire_pins(self, now: int) -> list[str]:
        """Drop expired pins; return the ids of files that lost their last pin."""
        ids = [r[0] for r in self._conn.execute(
            "SELECT DISTINCT id FROM pin WHERE expires_ms IS NOT NULL AND expires_ms <= ?", (now,)).fetchall()]
        self._conn.execute("DELETE FROM pin WHERE expires_ms IS NOT NULL AND expires_ms <= ?", (now,))
        return [i for i in ids if not self.pinned(i, now)]

    def _touch_dir(self, dir_id: str, t: int) -> None:
        self._conn.execute("UPDATE inode SET mtime=?, ctime=? WHERE id=?", (t, t, dir_id))
