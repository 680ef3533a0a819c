"""Emulated tape and QoS over HTTP: transitions, locality, staging on read, pins, restarts."""

from __future__ import annotations

import os
import time
import uuid

import pytest
import requests

FAST = ("--allow-insecure-macaroons", "--tape-flush-delay", "0.2", "--tape-stage-delay", "0.2")


@pytest.fixture
def tape_server(start_dcache):
    return start_dcache(*FAST, name="tape")


def wait_for(fn, timeout: float = 15.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def qos_state(server, path: str, user: str = "alice") -> dict:
    r = requests.get(f"{server.api}/namespace{path}?qos=true&locality=true&locations=true",
                     auth=server.auth(user))
    assert r.status_code == 200, r.text
    return r.json()


def settled(server, path: str, qos: str):
    def check():
        doc = qos_state(server, path)
        return doc if doc["currentQos"] == qos and "targetQos" not in doc else None

    return wait_for(check)


def upload(server, name: str, data: bytes | None = None) -> tuple[str, bytes]:
    data = data if data is not None else os.urandom(10_000)
    path = f"/home/alice/{name}-{uuid.uuid4().hex[:6]}"
    assert requests.put(f"{server.webdav}{path}", data=data, auth=server.auth("alice")).status_code == 201
    return path, data


def set_qos(server, path: str, target: str, user: str = "alice") -> requests.Response:
    return requests.post(f"{server.api}/namespace{path}", json={"action": "qos", "target": target},
                         auth=server.auth(user))


def test_new_file_is_disk_online(tape_server):
    path, _ = upload(tape_server, "new")
    doc = qos_state(tape_server, path)
    assert doc["currentQos"] == "disk" and doc["fileLocality"] == "ONLINE"
    assert doc["locations"] == ["main-pool1"]


def test_disk_to_disk_plus_tape_to_tape_and_back(tape_server):
    path, data = upload(tape_server, "cycle")
    r = set_qos(tape_server, path, "disk+tape")
    assert r.status_code == 201 and r.json() == {"status": "success"}
    doc = qos_state(tape_server, path)
    assert doc.get("targetQos") == "disk+tape"  # reported while the flush runs
    doc = settled(tape_server, path, "disk+tape")
    assert doc["fileLocality"] == "ONLINE_AND_NEARLINE"

    assert set_qos(tape_server, path, "tape").status_code == 201
    doc = settled(tape_server, path, "tape")
    assert doc["fileLocality"] == "NEARLINE" and doc["locations"] == []

    # a read stages the file back (the credential may stage), then serves it
    r = requests.get(f"{tape_server.webdav}{path}", auth=tape_server.auth("alice"))
    assert r.status_code == 200 and r.content == data
    assert qos_state(tape_server, path)["fileLocality"] == "ONLINE_AND_NEARLINE"

    assert set_qos(tape_server, path, "disk+tape").status_code == 201
    settled(tape_server, path, "disk+tape")


def test_read_of_nearline_file_without_stage_activity_is_403(tape_server):
    path, _ = upload(tape_server, "nostage")
    set_qos(tape_server, path, "tape")
    settled(tape_server, path, "tape")
    mint = requests.post(f"{tape_server.webdav}{path}", data='{"caveats":["activity:DOWNLOAD"]}',
                         headers={"Content-Type": "application/macaroon-request"}, auth=tape_server.auth("alice"))
    token = mint.json()["macaroon"]
    r = requests.get(f"{tape_server.webdav}{path}", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403 and "STAGE" in r.json()["detail"]
    assert qos_state(tape_server, path)["fileLocality"] == "NEARLINE"


def test_pin_stages_and_unpin_releases(tape_server):
    path, _ = upload(tape_server, "pin")
    set_qos(tape_server, path, "tape")
    settled(tape_server, path, "tape")
    r = requests.post(f"{tape_server.api}/namespace{path}", json={"action": "pin", "lifetime": 60,
                                                                   "lifetime-unit": "MINUTES"},
                      auth=tape_server.auth("alice"))
    assert r.status_code == 201
    wait_for(lambda: qos_state(tape_server, path)["fileLocality"] == "ONLINE_AND_NEARLINE")
    assert qos_state(tape_server, path)["currentQos"] == "tape"  # a pinned cached copy is not disk QoS
    r = requests.post(f"{tape_server.api}/namespace{path}", json={"action": "unpin"}, auth=tape_server.auth("alice"))
    assert r.status_code == 201
    wait_for(lambda: qos_state(tape_server, path)["fileLocality"] == "NEARLINE")


def test_pin_expires(tape_server):
    path, _ = upload(tape_server, "expire")
    set_qos(tape_server, path, "tape")
    settled(tape_server, path, "tape")
    requests.post(f"{tape_server.api}/namespace{path}", json={"action": "pin", "lifetime": 1},
                  auth=tape_server.auth("alice"))
    wait_for(lambda: qos_state(tape_server, path)["fileLocality"] == "ONLINE_AND_NEARLINE")
    wait_for(lambda: qos_state(tape_server, path)["fileLocality"] == "NEARLINE", timeout=10)


def test_transition_resumes_after_restart(start_dcache):
    server = start_dcache("--tape-flush-delay", "2", name="resume")
    path, _ = upload(server, "resume")
    assert set_qos(server, path, "disk+tape").status_code == 201
    server.restart()
    doc = settled(server, path, "disk+tape")
    assert doc["fileLocality"] == "ONLINE_AND_NEARLINE"


def test_default_qos_tape_flushes_new_files(start_dcache):
    server = start_dcache(*FAST, "--default-qos", "tape", name="default-tape")
    path, data = upload(server, "auto")
    settled(server, path, "tape")
    assert requests.get(f"{server.webdav}{path}", auth=server.auth("alice")).content == data


def test_propfind_srm_properties(tape_server):
    path, _ = upload(tape_server, "srm")
    set_qos(tape_server, path, "tape")
    settled(tape_server, path, "tape")
    body = ('<propfind xmlns="DAV:" xmlns:s="http://srm.lbl.gov/StorageResourceManager"><prop>'
            "<s:AccessLatency/><s:RetentionPolicy/><s:FileLocality/></prop></propfind>")
    r = requests.request("PROPFIND", f"{tape_server.webdav}{path}", data=body, headers={"Depth": "0"},
                         auth=tape_server.auth("alice"))
    assert b"NEARLINE</" in r.content and b"CUSTODIAL" in r.content


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"action": "qos", "target": "floppy"}, 400, "Unknown QoS"),
        ({"action": "qos"}, 400, "'target'"),
        ({"action": "qos", "target": 3}, 400, "'target'"),
        ({"action": "qos", "policy": "gold", "state": 0}, 400, "policies"),
        ({"action": "pin", "lifetime": -1}, 400, "lifetime"),
        ({"action": "pin", "lifetime": 5, "lifetime-unit": "WEEKS"}, 400, "lifetime-unit"),
    ],
)
def test_qos_bad_input(tape_server, body, status, needle):
    path, _ = upload(tape_server, "bad")
    r = requests.post(f"{tape_server.api}/namespace{path}", json=body, auth=tape_server.auth("alice"))
    assert r.status_code == status and needle in r.json()["detail"]


def test_disallowed_transition_and_directory(tape_server):
    path, _ = upload(tape_server, "trans")
    set_qos(tape_server, path, "tape")
    settled(tape_server, path, "tape")
    r = set_qos(tape_server, path, "disk")
    assert r.status_code == 400 and "not supported" in r.json()["detail"]
    r = set_qos(tape_server, "/home/alice", "tape")
    assert r.status_code == 400 and "directories" in r.json()["detail"]


def test_qos_change_needs_ownership(tape_server):
    path, _ = upload(tape_server, "owner")
    assert set_qos(tape_server, path, "tape", user="bob").status_code == 403


def test_qos_management_resources(tape_server):
    auth = tape_server.auth("alice")
    doc = requests.get(f"{tape_server.api}/qos-management/qos/file", auth=auth).json()
    assert doc == {"name": ["disk", "tape", "disk+tape", "volatile"], "message": "successful", "status": "200"}
    cap = requests.get(f"{tape_server.api}/qos-management/qos/file/disk", auth=auth).json()
    assert cap["backendCapability"]["transition"] == ["tape", "disk+tape"]
    assert cap["backendCapability"]["metadata"]["cdmi_latency_provided"] == "100"
    tape = requests.get(f"{tape_server.api}/qos-management/qos/directory/tape", auth=auth).json()
    assert tape["backendCapability"]["transition"] == ["disk"]
    assert requests.get(f"{tape_server.api}/qos-management/qos/file/gold", auth=auth).status_code == 404
    assert requests.get(f"{tape_server.api}/qos-management/qos/file").status_code == 401
    r = requests.get(f"{tape_server.api}/qos-management/namespace/home/alice", auth=auth)
    assert r.status_code == 400 and "deprecated" in r.json()["detail"]


def test_lookup_by_pnfsid_is_admin_only(tape_server):
    path, _ = upload(tape_server, "byid")
    pnfsid = qos_state(tape_server, path)["pnfsId"]
    assert requests.get(f"{tape_server.api}/id/{pnfsid}", auth=tape_server.auth("alice")).status_code == 403
    doc = requests.get(f"{tape_server.api}/id/{pnfsid}", auth=tape_server.auth("admin"),
                       headers={"Roles": "admin"}).json()
    assert doc["path"] == path and doc["fileName"] == path.rsplit("/", 1)[1] and "checksums" in doc


def test_third_party_push_of_tape_only_file_stages_it_first(tape_server, start_dcache):
    path, data = upload(tape_server, "tpc-tape")
    set_qos(tape_server, path, "tape")
    settled(tape_server, path, "tape")
    target = start_dcache("--allow-insecure-macaroons", "--site", "buffer", name="buffer")
    mint = requests.post(f"{target.webdav}/home/alice", data='{"caveats":["activity:UPLOAD"]}',
                         headers={"Content-Type": "application/macaroon-request"}, auth=target.auth("alice"))
    remote = f"{target.webdav}/home/alice/pushed.bin"
    r = requests.request("COPY", f"{tape_server.webdav}{path}", auth=tape_server.auth("alice"), headers={
        "Destination": remote, "Credential": "none",
        "TransferHeaderAuthorization": f"Bearer {mint.json()['macaroon']}"}, timeout=60)
    assert r.status_code == 202
    assert r.text.rstrip().endswith("success: Created"), r.text
    assert requests.get(remote, auth=target.auth("alice")).content == data
