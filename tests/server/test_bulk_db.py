"""Bulk request storage: which requests the archiver may take, and what an archive record keeps."""

from __future__ import annotations

import json

from airflow_dcache.server.storage.bulk_db import ArchiveFilter, BulkDB


def request(rid: str, status: str, modified: int) -> dict:
    return {"id": rid, "owner_uid": 1000, "owner_gid": 1000, "login": "{}", "activity": "PIN",
            "arguments": json.dumps({}), "target_prefix": "/", "expand": "TARGETS", "cancel_on_failure": 0,
            "clear_on_success": 0, "clear_on_failure": 0, "status": status, "arrived_at": modified,
            "started_at": modified, "last_modified": modified, "kind": "bulk"}


def test_only_finished_requests_older_than_the_cutoff_are_archivable(tmp_path):
    db = BulkDB(tmp_path / "bulk.db")
    db.insert(request("old-done", "COMPLETED", 1_000), ["/a"])
    db.insert(request("old-cancelled", "CANCELLED", 2_000), ["/b"])
    db.insert(request("old-running", "STARTED", 1_000), ["/c"])
    db.insert(request("new-done", "COMPLETED", 9_000), ["/d"])
    assert db.finished_before(5_000) == ["old-done", "old-cancelled"]
    db.add_target("old-done", "/a/child", "COMPLETED")  # found by expansion: counted, not listed
    db.update_target(db.targets("old-done")[0].tid, "FAILED", error=("CacheException", "boom"))
    assert db.archive("old-done") and not db.archive("old-done")  # a second archive is a no-op
    info = db.archived("old-done")
    assert info is not None and info.initial_targets == ["/a"] and info.errors == {"CacheException": 1}
    assert (info.succeeded, info.failed, info.owner) == (1, 1, "1000:1000")
    assert db.get("old-done") is None and db.targets("old-done") == []
    assert db.archived_list(ArchiveFilter()) == [
        {"uid": "old-done", "owner": "1000:1000", "activity": "PIN", "lastModified": 1_000, "status": "COMPLETED"}]
    db.close()
