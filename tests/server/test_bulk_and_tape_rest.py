"""Bulk requests and the WLCG tape REST API over HTTP, including a restart in the middle."""

from __future__ import annotations

import os
import time
import uuid

import pytest
import requests

FAST = ("--tape-flush-delay", "0.1", "--tape-stage-delay", "0.3")


@pytest.fixture
def server(start_dcache):
    return start_dcache(*FAST, name="bulk")


def wait_for(fn, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def make_files(server, n: int, *, tape: bool = False) -> list[str]:
    base = f"/home/alice/b-{uuid.uuid4().hex[:6]}"
    auth = server.auth("alice")
    paths = []
    for i in range(n):
        path = f"{base}/f{i}"
        assert requests.put(f"{server.webdav}{path}", data=os.urandom(1000), auth=auth).status_code == 201
        paths.append(path)
    if tape:
        for path in paths:
            requests.post(f"{server.api}/namespace{path}", json={"action": "qos", "target": "tape"}, auth=auth)
        for path in paths:
            wait_for(lambda p=path: locality(server, p) == "NEARLINE")
    return paths


def locality(server, path: str) -> str:
    return requests.get(f"{server.api}/namespace{path}?locality=true", auth=server.auth("alice")).json()[
        "fileLocality"]


def submit(server, body: dict, user: str = "alice") -> requests.Response:
    return requests.post(f"{server.api}/bulk-requests", json=body, auth=server.auth(user))


def finished(server, url: str, user: str = "alice") -> dict:
    def check():
        doc = requests.get(url, auth=server.auth(user)).json()
        return doc if doc["status"] in ("COMPLETED", "CANCELLED") else None

    return wait_for(check)


def test_bulk_pin_stages_files(server):
    paths = make_files(server, 3, tape=True)
    r = submit(server, {"activity": "PIN", "target": paths, "arguments": {"lifetime": 1, "lifetimeUnit": "HOURS"}})
    assert r.status_code == 201 and r.content == b""
    url = r.headers["request-url"]
    assert "Location" not in r.headers and url.startswith(server.api + "/bulk-requests/")
    doc = finished(server, url)
    assert doc["uid"] == url.rsplit("/", 1)[1] and doc["nextId"] == -1
    assert [t["state"] for t in doc["targets"]] == ["COMPLETED"] * 3
    assert all(isinstance(t["finishedAt"], int) and t["finishedAt"] > 1e12 for t in doc["targets"])  # ms
    assert all(locality(server, p) == "ONLINE_AND_NEARLINE" for p in paths)


def test_bulk_stage_of_disk_only_file_fails_target(server):
    paths = make_files(server, 1)
    doc = finished(server, submit(server, {"activity": "STAGE", "target": paths}).headers["request-url"])
    t = doc["targets"][0]
    assert t["state"] == "FAILED" and t["errorMessage"] == "Cannot stage DISK only files"
    assert t["errorType"] == "diskCacheV111.util.CacheException"


def test_bulk_update_qos_and_delete_with_expansion(server):
    paths = make_files(server, 2)
    folder = paths[0].rsplit("/", 1)[0]
    doc = finished(server, submit(server, {"activity": "UPDATE_QOS", "target": [folder], "expandDirectories": "TARGETS",
                                           "arguments": {"targetQos": "disk+tape"}}).headers["request-url"])
    states = {t["target"]: t["state"] for t in doc["targets"]}
    assert states[folder] == "SKIPPED" and all(states[p] == "COMPLETED" for p in paths)
    assert all(locality(server, p) == "ONLINE_AND_NEARLINE" for p in paths)
    doc = finished(server, submit(server, {"activity": "DELETE", "target": paths}).headers["request-url"])
    assert all(t["state"] == "COMPLETED" for t in doc["targets"])
    assert requests.head(f"{server.webdav}{paths[0]}", auth=server.auth("alice")).status_code == 404


def test_bulk_list_cancel_clear_and_ownership(server):
    paths = make_files(server, 2, tape=True)
    url = submit(server, {"activity": "STAGE", "target": paths}).headers["request-url"]
    rid = url.rsplit("/", 1)[1]
    listing = requests.get(f"{server.api}/bulk-requests", auth=server.auth("alice")).json()
    assert any(x["id"] == rid and x["activity"] == "STAGE" and x["owner"] == "1000:1000" for x in listing)
    assert requests.get(url, auth=server.auth("bob")).status_code == 403
    assert requests.patch(url, json={"action": "cancel"}, auth=server.auth("alice")).status_code == 200
    doc = finished(server, url)
    assert doc["status"] == "CANCELLED"
    assert requests.patch(url, json={"action": "pause"}, auth=server.auth("alice")).status_code == 400
    assert requests.delete(url, auth=server.auth("alice")).status_code == 204
    assert requests.get(url, auth=server.auth("alice")).status_code == 404


def test_bulk_request_survives_restart(start_dcache):
    server = start_dcache("--tape-flush-delay", "0.1", "--tape-stage-delay", "3", name="bulk-restart")
    paths = make_files(server, 2, tape=True)
    url = submit(server, {"activity": "PIN", "target": paths}).headers["request-url"]
    rid = url.rsplit("/", 1)[1]
    server.restart()
    doc = finished(server, f"{server.api}/bulk-requests/{rid}")
    assert doc["status"] == "COMPLETED" and all(t["state"] == "COMPLETED" for t in doc["targets"])


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"activity": "PIN", "target": []}, "request contains no targets."),
        ({"activity": "FLY", "target": ["/x"]}, "activity must be one of"),
        ({"target": ["/x"]}, "activity must be one of"),
        ({"activity": "PIN", "target": ["/x"], "expand_directories": "SOME"}, "expand_directories"),
        ({"activity": "PIN", "target": ["/x"], "clearOnSuccess": True, "clear_on_success": True}, "more than once"),
        ({"activity": "PIN", "target": ["/x"], "colour": "blue"}, "unsupported arguments"),
        ({"activity": "PIN", "target": [1, 2]}, "target must be"),
        ({"activity": "RELEASE", "target": ["/x"]}, "RELEASE requires"),
        ({"activity": "UPDATE_QOS", "target": ["/x"], "arguments": {"targetQos": "gold"}}, "Unknown QoS"),
        ({"activity": "PIN", "target": ["/x"], "arguments": {"lifetime": "soon"}}, "lifetime"),
        ({"activity": "PIN", "target": ["/x"], "cancelOnFailure": "maybe"}, "cancel_on_failure"),
        # too many targets is 413 since dCache 11.2.4/12.0: tests/server/test_limits.py
    ],
)
def test_bulk_bad_requests(server, body, needle):
    r = submit(server, body)
    assert r.status_code == 400 and needle in r.json()["detail"], r.text


def test_bulk_anonymous_401(server):
    assert requests.post(f"{server.api}/bulk-requests", json={}).status_code == 401


def test_wlcg_discovery(server):
    doc = requests.get(f"{server.frontend}/.well-known/wlcg-tape-rest-api").json()
    assert doc["sitename"] == "main" and doc["endpoints"][0]["uri"] == f"{server.api}/tape"
    assert doc["endpoints"][0]["version"] == "v1"


def test_tape_stage_status_release_archiveinfo(server):
    paths = make_files(server, 2, tape=True)
    auth = server.auth("alice")
    r = requests.post(f"{server.api}/tape/stage", auth=auth,
                      json={"files": [{"path": paths[0], "diskLifetime": "PT1H"}, {"path": paths[1]}]})
    assert r.status_code == 201
    rid = r.json()["requestId"]
    assert r.headers["location"] == f"{server.api}/tape/stage/{rid}"

    def done():
        doc = requests.get(f"{server.api}/tape/stage/{rid}", auth=auth).json()
        return doc if "completedAt" in doc else None

    doc = wait_for(done)
    assert doc["id"] == rid and [f["state"] for f in doc["files"]] == ["COMPLETED", "COMPLETED"]
    assert doc["createdAt"] <= doc["startedAt"] <= doc["completedAt"]
    info = requests.post(f"{server.api}/tape/archiveinfo", json={"paths": [*paths, "/no/such"]}, auth=auth).json()
    assert info[0] == {"path": paths[0], "locality": "DISK_AND_TAPE"}
    assert "error" in info[2]
    r = requests.post(f"{server.api}/tape/release/{rid}", json={"paths": paths}, auth=auth)
    assert r.status_code == 200 and r.content == b""
    wait_for(lambda: all(locality(server, p) == "NEARLINE" for p in paths))
    assert requests.delete(f"{server.api}/tape/stage/{rid}", auth=auth).status_code == 200
    assert requests.get(f"{server.api}/tape/stage/{rid}", auth=auth).status_code == 404


def test_tape_stage_cancel_unknown_path_uses_headers(server):
    paths = make_files(server, 1, tape=True)
    auth = server.auth("alice")
    rid = requests.post(f"{server.api}/tape/stage", json={"files": [{"path": paths[0]}]}, auth=auth).json()[
        "requestId"]
    r = requests.post(f"{server.api}/tape/stage/{rid}/cancel", json={"paths": ["/not/in/request"]}, auth=auth)
    assert r.status_code == 400 and r.headers["title"] == "File missing from stage request"
    assert requests.post(f"{server.api}/tape/stage/{rid}/cancel", json={"paths": paths}, auth=auth).status_code == 200


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"files": []}, "'files'"),
        ({"files": [{"path": ""}]}, "files[0].path"),
        ({"files": [{"path": "/a", "diskLifetime": 5}]}, "diskLifetime"),
        ({"files": [{"path": "/a"}], "extra": 1}, "only 'files'"),
        ({"files": [{"path": "/a", "diskLifetime": "P1W"}]}, "diskLifetime"),
    ],
)
def test_tape_stage_bad_input(server, body, needle):
    r = requests.post(f"{server.api}/tape/stage", json=body, auth=server.auth("alice"))
    assert r.status_code == 400 and needle in r.json()["detail"], r.text


def test_archiveinfo_bad_input(server):
    r = requests.post(f"{server.api}/tape/archiveinfo", json={"paths": "nope"}, auth=server.auth("alice"))
    assert r.status_code == 400 and "'paths'" in r.json()["detail"]
