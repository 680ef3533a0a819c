"""WebDAV COPY within the door (Destination names this server): RFC 4918 answers, as litmus expects."""

from __future__ import annotations

import uuid

import pytest
import requests


@pytest.fixture
def d(dcache_server) -> str:
    path = f"/home/alice/lcopy-{uuid.uuid4().hex[:6]}"
    r = requests.request("MKCOL", f"{dcache_server.webdav}{path}", auth=dcache_server.auth("alice"))
    assert r.status_code == 201
    return path


def req(server, method: str, path: str, **headers: str) -> requests.Response:
    return requests.request(method, f"{server.webdav}{path}", auth=server.auth("alice"), headers=headers,
                            timeout=30)


def put(server, path: str, data: bytes) -> None:
    r = requests.put(f"{server.webdav}{path}", data=data, auth=server.auth("alice"), timeout=30)
    assert r.status_code in (201, 204), r.text


def test_copy_file_201_then_overwrite_204(dcache_server, d):
    put(dcache_server, f"{d}/src", b"one")
    assert req(dcache_server, "COPY", f"{d}/src", Destination=f"{dcache_server.webdav}{d}/dst").status_code == 201
    put(dcache_server, f"{d}/src", b"two")
    assert req(dcache_server, "COPY", f"{d}/src", Destination=f"{dcache_server.webdav}{d}/dst").status_code == 204
    assert req(dcache_server, "GET", f"{d}/dst").content == b"two"


def test_copy_onto_existing_with_overwrite_f_is_412_and_changes_nothing(dcache_server, d):
    put(dcache_server, f"{d}/src", b"new")
    put(dcache_server, f"{d}/dst", b"keep me")
    r = req(dcache_server, "COPY", f"{d}/src", Destination=f"{dcache_server.webdav}{d}/dst", Overwrite="F")
    assert r.status_code == 412
    assert req(dcache_server, "GET", f"{d}/dst").content == b"keep me"


def test_copy_into_a_missing_collection_is_409(dcache_server, d):
    put(dcache_server, f"{d}/src", b"x")
    r = req(dcache_server, "COPY", f"{d}/src", Destination=f"{dcache_server.webdav}{d}/nonesuch/dst")
    assert r.status_code == 409
    assert req(dcache_server, "PROPFIND", f"{d}/nonesuch", Depth="0").status_code == 404


def test_copy_collection_depth_infinity_and_zero(dcache_server, d):
    put(dcache_server, f"{d}/tree/a", b"a")
    put(dcache_server, f"{d}/tree/sub/b", b"b")
    r = req(dcache_server, "COPY", f"{d}/tree/", Destination=f"{dcache_server.webdav}{d}/copy/")
    assert r.status_code == 201
    assert req(dcache_server, "GET", f"{d}/copy/sub/b").content == b"b"
    r = req(dcache_server, "COPY", f"{d}/tree/", Destination=f"{dcache_server.webdav}{d}/shallow/", Depth="0")
    assert r.status_code == 201
    assert req(dcache_server, "GET", f"{d}/shallow/a").status_code == 404
    assert req(dcache_server, "PROPFIND", f"{d}/shallow/", Depth="0").status_code == 207


def test_copy_onto_itself_or_into_itself_is_refused(dcache_server, d):
    put(dcache_server, f"{d}/x/f", b"x")
    assert req(dcache_server, "COPY", f"{d}/x/f", Destination=f"{d}/x/f").status_code == 403
    assert req(dcache_server, "COPY", f"{d}/x/", Destination=f"{d}/x/inner/").status_code == 403


def test_copy_needs_read_on_source_and_write_on_target(dcache_server, d):
    put(dcache_server, f"{d}/mine", b"x")
    r = requests.request("COPY", f"{dcache_server.webdav}{d}/mine", auth=dcache_server.auth("bob"),
                         headers={"Destination": "/home/alice/stolen"})
    assert r.status_code == 403
    r = requests.request("COPY", f"{dcache_server.webdav}{d}/mine", headers={"Destination": f"{d}/anon"})
    assert r.status_code == 401


def test_bad_depth_is_400(dcache_server, d):
    put(dcache_server, f"{d}/f", b"x")
    assert req(dcache_server, "COPY", f"{d}/f", Destination=f"{d}/g", Depth="1").status_code == 400
