"""Result models: tolerant of omitted (null) fields, JSON-safe for XCom, and secret-free in ``repr``."""

from __future__ import annotations

import json

from airflow_dcache.hooks.models import (
    ArchivedBulkRequest,
    BulkRequestInfo,
    MacaroonResponse,
    NamespaceEntry,
    StageRequestInfo,
    TransferResult,
    UserInfo,
    bulk_targets,
)


def test_namespace_entry_with_children_and_all_flags() -> None:
    data = {
        "fileType": "DIR",
        "pnfsId": "0000ABCD",
        "mtime": 1715674867490,
        "children": [
            {"fileName": "a.root", "fileType": "REGULAR", "size": 3, "fileLocality": "NEARLINE"},
            {"fileName": "sub", "fileType": "DIR"},
            {"fileType": "REGULAR"},  # nameless: skipped rather than producing a bogus path
        ],
        "extendedAttributes": {"n": 1},
        "labels": ["x"],
        "locations": ["pool_a"],
        "currentQos": "disk",
        "targetQos": "tape",
    }
    entry = NamespaceEntry.from_json("/data/", data)
    assert entry.is_dir and entry.name == "data"
    assert [(c.path, c.is_file) for c in entry.children or []] == [("/data/a.root", True), ("/data/sub", False)]
    assert entry.children and entry.children[0].locality == "NEARLINE"
    assert entry.xattrs == {"n": "1"} and entry.labels == ["x"] and entry.locations == ["pool_a"]
    assert (entry.current_qos, entry.target_qos) == ("disk", "tape")
    json.dumps(entry.to_dict())  # XCom-safe


def test_namespace_entry_minimal_and_root() -> None:
    entry = NamespaceEntry.from_json("/", {"fileType": "DIR"})
    assert entry.name == "/" and entry.children is None and entry.checksums is None and entry.labels is None


def test_user_info_anonymous() -> None:
    user = UserInfo.from_json({"status": "ANONYMOUS"})
    assert not user.authenticated and user.username is None and user.gids == [] and user.roles == []


def test_macaroon_response_repr_hides_tokens() -> None:
    minted = MacaroonResponse.from_json(
        {"macaroon": "SECRETMAC", "uri": {"targetWithMacaroon": "https://d/f?authz=SECRETMAC", "target": "https://d/f"}}
    )
    assert "SECRETMAC" not in repr(minted) and minted.target == "https://d/f" and minted.base == ""


def test_bulk_info_and_stage_info() -> None:
    data = {"uid": "r", "status": "STARTED", "targets": [{"id": 1, "target": "/a", "state": "RUNNING"}, "junk"]}
    info = BulkRequestInfo.from_json("r", data, bulk_targets(data))
    assert not info.finished and [t.state for t in info.targets] == ["RUNNING"]
    json.dumps(info.to_dict())
    assert StageRequestInfo.from_json("s", {"id": "s", "completedAt": 5, "files": []}).finished
    assert not StageRequestInfo.from_json("s", {"files": []}).finished


def test_transfer_result_to_dict() -> None:
    assert TransferResult("/a", 1, {"adler32": "00000001"}, "adler32").to_dict() == {
        "path": "/a",
        "size": 1,
        "checksums": {"adler32": "00000001"},
        "verified_by": "adler32",
        "markers": 0,
    }


def test_archived_bulk_request_parsing_and_to_dict() -> None:
    doc = {"uid": "r1", "status": "COMPLETED", "activity": "PIN", "owner": "1000:1000", "depth": "NONE",
           "initialTargets": ["/a"], "errors": {"CacheException": 2}, "succeeded": 3, "failed": 2,
           "arrivedAt": 1, "lastModified": 5, "unmapped": True}
    info = ArchivedBulkRequest.from_json("fallback", doc)
    assert (info.id, info.errors, info.cancelled, info.started_at) == ("r1", {"CacheException": 2}, 0, None)
    out = info.to_dict()
    assert "raw" not in out and out["initial_targets"] == ["/a"]
    json.dumps(out)  # XCom-safe
    assert ArchivedBulkRequest.from_json("fallback", {"errors": "junk"}).id == "fallback"
