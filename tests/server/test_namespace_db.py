"""Pure storage logic of the namespace (no HTTP): path resolution and its query plan."""

from __future__ import annotations

import sqlite3

import pytest

from airflow_dcache.server.storage.namespace_db import DIR, REGULAR, ROOT_ID, NamespaceDB


def test_resolve_returns_the_chain_as_far_as_it_exists(tmp_path):
    db = NamespaceDB(tmp_path / "ns.db")
    a = db.insert(ROOT_ID, "a", DIR, mode=0o755, uid=0, gid=0)
    b = db.insert(a.id, "b", DIR, mode=0o755, uid=0, gid=0)
    f = db.insert(b.id, "f", REGULAR, mode=0o644, uid=0, gid=0)
    for i in range(50):  # siblings with similar names must not confuse the walk
        db.insert(b.id, f"f{i}", REGULAR, mode=0o644, uid=0, gid=0)
    assert [n.id for n in db.resolve(["a", "b", "f"])] == [ROOT_ID, a.id, b.id, f.id]
    assert [n.id for n in db.resolve(["a", "x", "f"])] == [ROOT_ID, a.id]
    assert [n.id for n in db.resolve([])] == [ROOT_ID]
    assert [n.id for n in db.resolve(["a", "b", "f", "deeper"])] == [ROOT_ID, a.id, b.id, f.id]


def test_directory_cache_follows_changes(tmp_path):
    """Traversal uses cached directories; every change to one must be visible at once."""
    db = NamespaceDB(tmp_path / "ns.db")
    a = db.insert(ROOT_ID, "a", DIR, mode=0o755, uid=0, gid=0)
    b = db.insert(a.id, "b", DIR, mode=0o755, uid=0, gid=0)
    db.insert(b.id, "f", REGULAR, mode=0o644, uid=0, gid=0)
    assert db.resolve(["a", "b", "f"])[1].mode == 0o755  # now cached
    db.set_mode(a.id, 0o700)
    assert db.resolve(["a", "b", "f"])[1].mode == 0o700
    db.set_group(a.id, 42)
    assert db.resolve(["a", "b", "f"])[1].gid == 42
    db.rename(a.id, ROOT_ID, "renamed")
    assert len(db.resolve(["a", "b", "f"])) == 1
    assert len(db.resolve(["renamed", "b", "f"])) == 4
    db.delete(db.resolve(["renamed", "b", "f"])[3].id)
    db.delete(b.id)
    again = db.insert(db.resolve(["renamed"])[1].id, "b", REGULAR, mode=0o644, uid=0, gid=0)
    chain = db.resolve(["renamed", "b", "f"])
    assert [n.id for n in chain] == [ROOT_ID, chain[1].id, again.id]  # a file now: the walk stops there


def test_optional_checksums_are_stored_and_older_namespaces_gain_their_columns(tmp_path):
    path = tmp_path / "ns.db"
    db = NamespaceDB(path)
    f = db.insert(ROOT_ID, "f", REGULAR, mode=0o644, uid=0, gid=0, adler32="0000abcd",
                  digests={"md5": "aa", "sha256": "bb"})
    assert (db.get(f.id).md5, db.get(f.id).sha256, db.get(f.id).sha1) == ("aa", "bb", None)
    with pytest.raises(ValueError, match="unknown checksum columns"):
        db.insert(ROOT_ID, "g", REGULAR, mode=0o644, uid=0, gid=0, digests={"crc32": "1"})
    db.close()
    old = sqlite3.connect(path)  # a namespace written before SHA checksums existed
    for column in ("sha1", "sha256", "sha512"):
        old.execute(f"ALTER TABLE inode DROP COLUMN {column}")
    old.commit()
    old.close()
    db = NamespaceDB(path)
    node = db.get(f.id)
    assert node is not None and (node.adler32, node.md5, node.sha256) == ("0000abcd", "aa", None)
    g = db.insert(ROOT_ID, "g", REGULAR, mode=0o644, uid=0, gid=0, digests={"sha512": "cc", "sha1": "dd"})
    assert (db.get(g.id).sha512, db.get(g.id).sha1, db.get(f.id).name) == ("cc", "dd", "f")
    db.close()
