"""The shared sans-I/O operations, driven with scripted replies: exactly what goes on the wire."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from airflow_dcache import exceptions as exc
from airflow_dcache.hooks import _operations as ops
from airflow_dcache.hooks import _transfers as tx
from airflow_dcache.hooks._protocol import ResponseInfo
from airflow_dcache.hooks._settings import AuthType, ConnectionSettings
from airflow_dcache.hooks.models import MacaroonResponse

S = ConnectionSettings(
    door_url="https://door:2880", frontend_url="https://door:3880", auth_type=AuthType.BASIC, login="alice"
)
API = "https://door:3880/api/v1"

Reply = ResponseInfo | exc.DCacheError | Callable[[ops.Call], ResponseInfo | exc.DCacheError]


def ok(status: int = 200, body: Any = None, headers: dict[str, str] | None = None) -> ResponseInfo:
    raw = b"" if body is None else json.dumps(body).encode()
    return ResponseInfo(status, "OK", headers or {}, raw)


def err(cls: type[exc.DCacheError], status: int) -> exc.DCacheError:
    return cls("scripted", status=status)


def drive(operation: ops.Operation[Any], replies: list[Reply]) -> tuple[Any, list[ops.Call]]:
    """Run an operation like a hook does, answering each call with the next scripted reply."""
    calls: list[ops.Call] = []
    pending = list(replies)
    try:
        call = next(operation)
        while True:
            calls.append(call)
            assert pending, f"unexpected extra call {call}"
            reply = pending.pop(0)
            if callable(reply) and not isinstance(reply, exc.DCacheError):
                reply = reply(call)
            call = operation.throw(reply) if isinstance(reply, exc.DCacheError) else operation.send(reply)
    except StopIteration as stop:
        assert not pending, f"unused replies: {pending}"
        return stop.value, calls


def test_whoami() -> None:
    user, calls = drive(ops.whoami(S), [ok(body={"status": "AUTHENTICATED", "username": "alice", "uid": 1000})])
    assert calls[0].method == "GET" and calls[0].url == f"{API}/user"
    assert user.authenticated and user.username == "alice" and user.gids == []


def test_stat_sends_only_true_flags() -> None:
    body = {"fileType": "REGULAR", "size": 3, "currentQoS": "disk", "checksums": [{"type": "ADLER32", "value": "1"}]}
    entry, calls = drive(ops.stat(S, "/data/f", qos=True, checksum=True, xattr=False), [ok(body=body)])
    assert calls[0].url == f"{API}/namespace/data/f?qos=true&checksum=true"
    assert entry.current_qos == "disk" and entry.checksums == {"adler32": "00000001"} and entry.is_file


def test_stat_rejects_unknown_flags() -> None:
    with pytest.raises(TypeError):
        drive(ops.stat(S, "/x", recursive=True), [])


def test_list_dir_pages_until_short_page() -> None:
    def page(*names: str) -> ResponseInfo:
        return ok(body={"fileType": "DIR", "children": [{"fileName": n, "fileType": "REGULAR"} for n in names]})

    entries, calls = drive(ops.list_dir(S, "/d", page_size=2), [page("a", "b"), page("c", "d"), page("e")])
    assert [e.path for e in entries] == ["/d/a", "/d/b", "/d/c", "/d/d", "/d/e"]
    assert [c.url.split("?")[1] for c in calls] == [
        "children=true&offset=0&limit=2",
        "children=true&offset=2&limit=2",
        "children=true&offset=4&limit=2",
    ]


def test_list_dir_on_a_file_is_a_conflict() -> None:
    with pytest.raises(exc.Conflict):
        drive(ops.list_dir(S, "/f"), [ok(body={"fileType": "REGULAR"})])


def test_exists() -> None:
    assert drive(ops.exists(S, "/x"), [ok(body={"fileType": "DIR"})])[0] is True
    assert drive(ops.exists(S, "/x"), [err(exc.NotFound, 404)])[0] is False
    with pytest.raises(exc.PermissionDenied):
        drive(ops.exists(S, "/x"), [err(exc.PermissionDenied, 403)])


def test_mkdir_creates_missing_parents_top_down() -> None:
    created, calls = drive(
        ops.mkdir(S, "/a/b/c"),
        [err(exc.Conflict, 409), err(exc.Conflict, 409), ok(201), ok(201), ok(201)],
    )
    assert created is True
    assert [(c.method, c.url) for c in calls] == [
        ("MKCOL", "https://door:2880/a/b/c"),
        ("MKCOL", "https://door:2880/a/b"),
        ("MKCOL", "https://door:2880/a"),
        ("MKCOL", "https://door:2880/a/b"),
        ("MKCOL", "https://door:2880/a/b/c"),
    ]


def test_mkdir_existing_directory_is_fine_but_a_file_is_not() -> None:
    exists = exc.AlreadyExists("exists", status=405)
    assert drive(ops.mkdir(S, "/a"), [exists, ok(body={"fileType": "DIR"})])[0] is False
    with pytest.raises(exc.AlreadyExists, match="not a directory"):
        drive(ops.mkdir(S, "/a"), [exists, ok(body={"fileType": "REGULAR"})])
    with pytest.raises(exc.AlreadyExists):
        drive(ops.mkdir(S, "/a", exist_ok=False), [exists])


def test_mkdir_without_parents_reports_the_missing_parent() -> None:
    with pytest.raises(exc.Conflict):
        drive(ops.mkdir(S, "/a/b", parents=False), [err(exc.Conflict, 409)])


def test_move_headers() -> None:
    _, calls = drive(ops.move(S, "/a/x", "/b/y z", overwrite=False), [ok(201)])
    assert calls[0].method == "MOVE"
    assert calls[0].headers == {"Destination": "https://door:2880/b/y%20z", "Overwrite": "F"}
    assert calls[0].exists_statuses == (412,)


def test_delete_file_goes_through_the_door() -> None:
    deleted, calls = drive(ops.delete(S, "/f"), [ok(body={"fileType": "REGULAR"}), ok(204)])
    assert deleted and (calls[1].method, calls[1].url) == ("DELETE", "https://door:2880/f")


def test_delete_recursive_is_one_door_delete() -> None:
    """dCache's door removes a tree child by child (Milton): one request instead of a walk."""
    deleted, calls = drive(ops.delete(S, "/d", recursive=True), [ok(body={"fileType": "DIR"}), ok(204)])
    assert deleted
    assert [(c.method, c.url.split("?")[0]) for c in calls] == [
        ("GET", f"{API}/namespace/d"), ("DELETE", "https://door:2880/d")]
    # without recursive an empty directory goes to the frontend, which refuses a non-empty one
    _, calls = drive(ops.delete(S, "/d"), [ok(body={"fileType": "DIR"}), ok(200, {"status": "success"})])
    assert (calls[1].method, calls[1].url) == ("DELETE", f"{API}/namespace/d")
    with pytest.raises(exc.PermissionDenied):  # the door's 403 at an entry the caller may not delete
        drive(ops.delete(S, "/d", recursive=True), [ok(body={"fileType": "DIR"}), err(exc.PermissionDenied, 403)])


def test_a_door_tree_delete_stopped_by_a_server_error_is_finished_by_the_walk() -> None:
    listing = [{"fileName": "f", "fileType": "REGULAR"}, {"fileName": "s", "fileType": "DIR"}]
    replies: list[Reply] = [
        ok(body={"fileType": "DIR"}),  # stat /d
        err(exc.ServerError, 500),  # the door's tree delete: "Directory is not empty" part-way
        ok(body={"fileType": "DIR", "children": listing}),
        ok(204),  # DELETE /d/f (door)
        ok(body={"fileType": "DIR", "children": [{"fileName": "gone", "fileType": "REGULAR"}]}),
        err(exc.NotFound, 404),  # /d/s/gone vanished meanwhile: fine
        ok(200, {"status": "success"}),  # DELETE /d/s (frontend)
        ok(200, {"status": "success"}),  # DELETE /d (frontend)
    ]
    deleted, calls = drive(ops.delete(S, "/d", recursive=True), replies)
    assert deleted
    deletes = [c.url for c in calls if c.method == "DELETE"]
    assert deletes == [
        "https://door:2880/d",
        "https://door:2880/d/f",
        "https://door:2880/d/s/gone",
        f"{API}/namespace/d/s",
        f"{API}/namespace/d",
    ]


def test_delete_a_known_directory_refuses_a_file() -> None:
    deleted, calls = drive(ops.delete(S, "/d", recursive=True, directory=True),
                           [ok(body={"fileType": "DIR"}), ok(204)])
    assert deleted and [c.method for c in calls] == ["GET", "DELETE"]
    assert drive(ops.delete(S, "/gone", recursive=True, directory=True, missing_ok=True),
                 [err(exc.NotFound, 404)])[0] is False
    with pytest.raises(exc.Conflict, match="not a directory"):  # a file where a directory was expected: kept
        drive(ops.delete(S, "/f", recursive=True, directory=True), [ok(body={"fileType": "REGULAR"})])
    with pytest.raises(ValueError, match="recursive"):  # not silently ignored
        drive(ops.delete(S, "/d", directory=True), [])


def test_delete_missing() -> None:
    assert drive(ops.delete(S, "/x", missing_ok=True), [err(exc.NotFound, 404)])[0] is False
    with pytest.raises(exc.NotFound):
        drive(ops.delete(S, "/x"), [err(exc.NotFound, 404)])
    with pytest.raises(ValueError):
        drive(ops.delete(S, "/"), [])


def payload(call: ops.Call) -> Any:
    assert call.headers["Content-Type"] == "application/json"
    return json.loads(call.body or b"")


def test_namespace_actions() -> None:
    _, calls = drive(ops.set_xattr(S, "/f", {"a": 1}, mode="create"), [ok(201)])
    assert payload(calls[0]) == {"action": "set-xattr", "attributes": {"a": "1"}, "mode": "CREATE"}
    _, calls = drive(ops.set_qos(S, "/f", "DISK+TAPE"), [ok(201)])
    assert payload(calls[0]) == {"action": "qos", "target": "disk+tape"}
    _, calls = drive(ops.set_qos(S, "/f", policy="gold", state=2), [ok(201)])
    assert payload(calls[0]) == {"action": "qos", "policy": "gold", "state": 2}
    _, calls = drive(ops.pin(S, "/f", 2, "hours"), [ok(201)])
    assert payload(calls[0]) == {"action": "pin", "lifetime": 2, "lifetime-unit": "HOURS"}
    _, calls = drive(ops.unpin(S, "/f"), [ok(200)])
    assert payload(calls[0]) == {"action": "unpin"}
    assert calls[0].url == f"{API}/namespace/f"


@pytest.mark.parametrize(
    "operation",
    [
        lambda: ops.set_qos(S, "/f", "floppy"),
        lambda: ops.set_qos(S, "/f"),
        lambda: ops.pin(S, "/f", 1, "WEEKS"),
        lambda: ops.set_xattr(S, "/f", {}),
        lambda: ops.set_xattr(S, "/f", {"a": "b"}, mode="sometimes"),
    ],
)
def test_bad_action_arguments(operation: Callable[[], ops.Operation[None]]) -> None:
    with pytest.raises(ValueError):
        drive(operation(), [])


def test_set_labels_replace_removes_and_adds() -> None:
    _, calls = drive(
        ops.set_labels(S, "/f", ["keep", "new"], replace=True),
        [ok(body={"fileType": "REGULAR", "labels": ["keep", "old"]}), ok(201), ok(201)],
    )
    assert [payload(c) for c in calls[1:]] == [
        {"action": "rm-label", "label": "old"},
        {"action": "set-label", "label": "new"},
    ]


def test_checksum_asks_again_for_each_missing_algorithm() -> None:
    md5_b64 = "rFb0uPrFc5zNtFd30xO+zw=="
    result, calls = drive(
        ops.checksum(S, "/f"),
        [
            ResponseInfo(200, "OK", {"Digest": f"md5={md5_b64}"}),
            ResponseInfo(200, "OK", {"Digest": "adler32=0ae07809"}),
        ],
    )
    assert [(c.method, c.headers) for c in calls] == [
        ("HEAD", {"Want-Digest": "adler32,md5"}),
        ("HEAD", {"Want-Digest": "adler32"}),
    ]
    assert result == {"adler32": "0ae07809", "md5": base64.b64decode(md5_b64).hex()}


def test_checksum_falls_back_to_stored_checksums() -> None:
    rest = ok(body={"fileType": "REGULAR", "checksums": [{"type": "ADLER32", "value": "0ae07809"}]})
    result, calls = drive(ops.checksum(S, "/f", ["adler32", "sha-256"]), [ResponseInfo(200, "OK", {}), rest])
    assert result == {"adler32": "0ae07809"} and "checksum=true" in calls[1].url
    with pytest.raises(ValueError):
        drive(ops.checksum(S, "/f", []), [])


def test_bulk_submit_reads_request_url_header() -> None:
    header = {"request-url": "https://door:3880/api/v1/bulk-requests/5f0e7c1e-9a7c"}
    sub, calls = drive(
        ops.submit_bulk_request(S, "pin", ["/a", "/b"], arguments={"lifetime": 5, "lifetimeUnit": "MINUTES"}),
        [ok(201, None, header)],
    )
    assert sub.id == "5f0e7c1e-9a7c" and sub.url == f"{API}/bulk-requests/5f0e7c1e-9a7c"
    body = payload(calls[0])
    assert body["activity"] == "PIN" and body["target"] == ["/a", "/b"]
    assert body["arguments"] == {"lifetime": "5", "lifetimeUnit": "MINUTES"}


def test_bulk_submit_falls_back_to_location_and_fails_without_either() -> None:
    sub, _ = drive(
        ops.submit_bulk_request(S, "DELETE", ["/a"]), [ok(201, None, {"Location": f"{API}/bulk-requests/x1"})]
    )
    assert sub.id == "x1"
    with pytest.raises(exc.UnexpectedResponse):
        drive(ops.submit_bulk_request(S, "DELETE", ["/a"]), [ok(201)])


def test_bulk_stage_arguments_are_json_strings() -> None:
    _, calls = drive(
        ops.submit_bulk_request(S, "STAGE", ["/a"], arguments={"diskLifetime": {"/a": "P1D"}}),
        [ok(201, None, {"request-url": f"{API}/bulk-requests/r"})],
    )
    assert payload(calls[0])["arguments"] == {"diskLifetime": '{"/a": "P1D"}'}


@pytest.mark.parametrize("kwargs", [{"activity": "COPY", "targets": ["/a"]}, {"activity": "PIN", "targets": []}])
def test_bulk_submit_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        drive(ops.submit_bulk_request(S, **kwargs), [])


def test_bulk_status_merges_pages() -> None:
    def page(next_id: int, *ids: int) -> ResponseInfo:
        targets = [{"id": i, "target": f"/t{i}", "state": "FAILED" if i == 3 else "COMPLETED"} for i in ids]
        return ok(body={"uid": "r1", "status": "COMPLETED", "nextId": next_id, "targets": targets})

    status, calls = drive(ops.bulk_request_status(S, f"{API}/bulk-requests/r1"), [page(3, 1, 2), page(-1, 3)])
    assert [c.url for c in calls] == [f"{API}/bulk-requests/r1", f"{API}/bulk-requests/r1?offset=3"]
    assert status.finished and [t.id for t in status.targets] == [1, 2, 3]
    assert [t.target for t in status.failed_targets] == ["/t3"]


def test_bulk_cancel_clear_list() -> None:
    _, calls = drive(ops.cancel_bulk_request(S, "r1", ["/a"]), [ok(200)])
    assert calls[0].method == "PATCH" and payload(calls[0]) == {"action": "cancel", "paths": ["/a"]}
    _, calls = drive(ops.clear_bulk_request(S, "r1", cancel_if_running=True), [ok(204)])
    assert (calls[0].method, calls[0].url) == ("DELETE", f"{API}/bulk-requests/r1?cancelIfRunning=true")
    items, calls = drive(ops.list_bulk_requests(S, ["QUEUED", "started"]), [ok(body=[{"id": "r1"}, "junk"])])
    assert items == [{"id": "r1"}] and calls[0].url.endswith("bulk-requests?status=queued%2Cstarted")


def test_request_id_never_trusts_foreign_urls() -> None:
    assert ops.request_id("https://evil.example/api/v1/bulk-requests/abc/") == "abc"
    with pytest.raises(ValueError):
        ops.request_id("   ")


def test_tape_stage_and_status() -> None:
    sub, calls = drive(
        ops.stage(S, {"/a": "P2D", "b": None}, disk_lifetime=3600),
        [ok(201, {"requestId": "s1"}, {"location": f"{API}/tape/stage/s1"})],
    )
    assert sub.id == "s1" and calls[0].url == f"{API}/tape/stage"
    assert payload(calls[0]) == {
        "files": [{"path": "/a", "diskLifetime": "P2D"}, {"path": "/b", "diskLifetime": "PT1H"}]
    }
    body = {
        "id": "s1",
        "createdAt": 1,
        "files": [{"path": "/a", "state": "COMPLETED"}, {"path": "/b", "state": "FAILED", "error": "x"}],
    }
    info, _ = drive(ops.stage_status(S, "s1"), [ok(body=body)])
    assert info.finished and info.files[1].error == "x"
    info, _ = drive(ops.stage_status(S, "s1"), [ok(body={"id": "s1", "files": [{"path": "/a", "state": "STARTED"}]})])
    assert not info.finished


def test_tape_cancel_release_delete_archiveinfo() -> None:
    _, calls = drive(ops.cancel_stage(S, "s1", ["/a"]), [ok(200)])
    assert calls[0].url == f"{API}/tape/stage/s1/cancel" and payload(calls[0]) == {"paths": ["/a"]}
    _, calls = drive(ops.release(S, "s1", ["/a"]), [ok(200)])
    assert calls[0].url == f"{API}/tape/release/s1"
    _, calls = drive(ops.delete_stage(S, "s1"), [ok(200)])
    assert (calls[0].method, calls[0].url) == ("DELETE", f"{API}/tape/stage/s1")
    infos, calls = drive(
        ops.archive_info(S, ["/a", "/x"]),
        [ok(200, [{"path": "/a", "locality": "DISK_AND_TAPE"}, {"path": "/x", "error": "no such file"}])],
    )
    assert [(i.path, i.locality, i.error) for i in infos] == [
        ("/a", "DISK_AND_TAPE", None),
        ("/x", None, "no such file"),
    ]


MINTED = {
    "macaroon": "MDAxY2xvY2F0aW9u",
    "uri": {
        "targetWithMacaroon": "https://door:2880/data/f?authz=MDAxY2xvY2F0aW9u",
        "baseWithMacaroon": "https://door:2880/?authz=MDAxY2xvY2F0aW9u",
        "target": "https://door:2880/data/f",
        "base": "https://door:2880/",
    },
}


def test_mint_macaroon_request_is_exactly_what_dcache_matches() -> None:
    result, calls = drive(
        ops.mint_macaroon(S, "/data/f", activities=["DOWNLOAD"], validity="PT15M", ip="192.0.2.0/24"),
        [ok(200, MINTED)],
    )
    call = calls[0]
    assert (call.method, call.url) == ("POST", "https://door:2880/data/f")
    assert call.headers["Content-Type"] == "application/macaroon-request"  # no charset
    assert json.loads(call.body or b"") == {
        "caveats": ["activity:DOWNLOAD", "ip:192.0.2.0/24"],
        "validity": "PT15M",
    }
    assert isinstance(result, MacaroonResponse)
    assert result.target_with_macaroon.endswith("?authz=MDAxY2xvY2F0aW9u")
    assert "MDAxY2xv" not in repr(result)


def test_mint_with_empty_body_and_non_json_reply() -> None:
    _, calls = drive(ops.mint_macaroon(S), [ok(200, MINTED)])
    assert calls[0].body == b"{}" and calls[0].url == "https://door:2880/"
    with pytest.raises(exc.UnexpectedResponse):
        drive(ops.mint_macaroon(S), [ResponseInfo(200, "OK", {}, b"<html/>")])


def test_copy_request_headers() -> None:
    request = tx.copy_request(
        S,
        "/data/in",
        "https://remote.example/f",
        direction="pull",
        remote_token="REMOTE-TOKEN",
        remote_headers={"SciTag": "65"},
        require_checksum=False,
        overwrite=False,
    )
    assert request.method == "COPY" and request.url == "https://door:2880/data/in"
    assert request.headers == {
        "Source": "https://remote.example/f",
        "Credential": "none",
        "Overwrite": "F",
        "RequireChecksumVerification": "false",
        "Want-Digest": "adler32",
        "TransferHeaderAuthorization": "Bearer REMOTE-TOKEN",
        "TransferHeaderSciTag": "65",
    }
    assert "REMOTE-TOKEN" in tx.copy_secrets(request)
    push = tx.copy_request(S, "/data/out", "https://r/f", direction="push", remote_token="Basic abc")
    assert push.headers["Destination"] == "https://r/f"
    assert push.headers["TransferHeaderAuthorization"] == "Basic abc"


@pytest.mark.parametrize("kwargs", [{"remote_url": "/local/path"}, {"credential": "kerberos"}])
def test_copy_request_validation(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"remote_url": "https://r/f", **kwargs}
    with pytest.raises(ValueError):
        tx.copy_request(S, "/x", args.pop("remote_url"), direction="pull", **args)


def test_copy_result_failure_raises_with_remote_message() -> None:
    from airflow_dcache.hooks._perfmarkers import PerfMarkerParser

    request = tx.copy_request(S, "/x", "https://r/f?authz=SECRET", direction="pull")
    parser = PerfMarkerParser()
    parser.feed("failure: rejected GET: 404 Not Found")
    with pytest.raises(exc.TransferFailed, match="rejected GET: 404 Not Found") as info:
        tx.copy_result(request, parser, {})
    assert "SECRET" not in str(info.value)
