"""``/api/v1/labels``: the labels in use and each label's virtual directory, as dCache's LabelsResources."""

from __future__ import annotations

import uuid

import pytest
import requests


def label_file(server, user: str, path: str, label: str) -> None:
    auth = server.auth(user)
    assert requests.put(f"{server.webdav}{path}", data=b"x" * 10, auth=auth).status_code in (201, 204)
    r = requests.post(f"{server.api}/namespace{path}", json={"action": "set-label", "label": label}, auth=auth)
    assert r.status_code == 201, r.text


def test_labels_and_their_virtual_directories(dcache_server, alice):
    tag = f"run-{uuid.uuid4().hex[:6]}"
    base = f"/home/alice/lb-{uuid.uuid4().hex[:6]}"
    alice.request("MKCOL", f"{dcache_server.webdav}{base}")
    for name in ("b.h5", "a.h5"):
        label_file(dcache_server, "alice", f"{base}/{name}", tag)
    label_file(dcache_server, "alice", f"{base}/other.h5", f"{tag}-other")
    assert {tag, f"{tag}-other"} <= set(alice.get(f"{dcache_server.api}/labels").json()["labels"])
    doc = alice.get(f"{dcache_server.api}/labels/{tag}", params={"locality": "true", "labels": "true"}).json()
    assert list(doc) == ["children"]
    assert [c["fileName"] for c in doc["children"]] == ["a.h5", "b.h5"]
    child = doc["children"][0]
    assert child["sourcePath"] == "a.h5" and child["fileType"] == "REGULAR" and child["size"] == 10
    assert child["fileLocality"] == "ONLINE" and child["labels"] == [tag]
    page = alice.get(f"{dcache_server.api}/labels/{tag}", params={"offset": "1", "limit": "5"}).json()
    assert [c["fileName"] for c in page["children"]] == ["b.h5"]


def test_a_label_never_shows_files_the_caller_cannot_reach(dcache_server, alice):
    tag = f"shared-{uuid.uuid4().hex[:6]}"
    private = f"/home/alice/priv-{uuid.uuid4().hex[:6]}"
    alice.request("MKCOL", f"{dcache_server.webdav}{private}")
    label_file(dcache_server, "alice", f"{private}/secret.dat", tag)
    assert alice.post(f"{dcache_server.api}/namespace{private}", json={"action": "chmod", "mode": 0o700}
                      ).status_code == 201
    label_file(dcache_server, "bob", f"/home/bob/{tag}.dat", tag)
    bob = requests.get(f"{dcache_server.api}/labels/{tag}", auth=dcache_server.auth("bob")).json()
    assert [c["fileName"] for c in bob["children"]] == [f"{tag}.dat"]  # alice's file is behind a 0700 dir
    # carol's root is /home/carol: she sees no file with the label, which looks exactly like no such label
    carol = requests.get(f"{dcache_server.api}/labels/{tag}", auth=dcache_server.auth("carol"))
    assert carol.status_code == 404 and carol.json()["detail"] == f"No such file or directory: /{tag}"
    assert tag not in requests.get(f"{dcache_server.api}/labels", auth=dcache_server.auth("carol")).json()["labels"]
    hidden = f"hidden-{uuid.uuid4().hex[:6]}"
    label_file(dcache_server, "alice", f"{private}/also-secret.dat", hidden)
    assert requests.get(f"{dcache_server.api}/labels/{hidden}", auth=dcache_server.auth("bob")).status_code == 404
    assert hidden not in requests.get(f"{dcache_server.api}/labels", auth=dcache_server.auth("bob")).json()["labels"]
    assert hidden in alice.get(f"{dcache_server.api}/labels").json()["labels"]
    everyone = alice.get(f"{dcache_server.api}/labels/{tag}").json()
    assert sorted(c["fileName"] for c in everyone["children"]) == ["secret.dat", f"{tag}.dat"]


@pytest.mark.parametrize(("url", "status", "needle"), [
    ("/labels?limit=-1", 400, "can not be less than zero"),
    ("/labels?offset=x", 400, "must be an integer value"),
    ("/labels?offset=%C2%B2", 400, "must be an integer value"),
    ("/labels?limit=99999999999999999999", 400, "must be an integer value"),
    ("/labels/no-such-label-anywhere", 404, "No such file or directory"),
    ("/labels/a/b", 404, "No such file or directory"),
])
def test_bad_label_requests(dcache_server, alice, url, status, needle):
    r = alice.get(f"{dcache_server.api}{url}")
    assert r.status_code == status and needle in r.json()["detail"]


def test_anonymous_is_refused(dcache_server):
    assert requests.get(f"{dcache_server.api}/labels").status_code == 401


def test_labels_with_odd_names_and_empty_pages(dcache_server, alice):
    tag = f"a/b c-{uuid.uuid4().hex[:6]}"
    label_file(dcache_server, "alice", f"/home/alice/odd-{uuid.uuid4().hex[:6]}.dat", tag)
    quoted = requests.utils.quote(tag, safe="")
    assert [c["fileName"][:4] for c in alice.get(f"{dcache_server.api}/labels/{quoted}").json()["children"]] == ["odd-"]
    assert alice.get(f"{dcache_server.api}/labels/{quoted}", params={"limit": "0"}).json() == {"children": []}
    assert alice.get(f"{dcache_server.api}/labels/{quoted}", params={"offset": "5"}).json() == {"children": []}
