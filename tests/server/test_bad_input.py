"""Malformed input gets a precise 4xx with a message, never a 500, and changes nothing."""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import urlsplit

import pytest
import requests


def raw_request(url: str, method: str, target: str, headers: dict[str, str] | None = None,
                body: bytes | None = None) -> tuple[int, str, bytes]:
    """Send ``target`` byte-for-byte (no client-side normalisation of '..' or '//')."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.reason, resp.read()
    finally:
        conn.close()


def basic(server, user: str = "alice") -> dict[str, str]:
    import base64

    token = base64.b64encode(f"{user}:{server.passwords[user]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


TRAVERSALS = [
    "/home/alice/../bob/x",
    "/home/alice/%2e%2e/bob/x",
    "/home/alice/%2E%2E/bob/x",
    "/home/alice/.%2e/bob/x",
    "/home/alice/./x",
    "/home/alice//x",
    "/home/alice/%2fetc%2fpasswd",
    "/home/alice/a%5c..%5cb",
    "/home/alice/nul%00byte",
    "/home/alice/ctl%0abreak",
    "/home/alice/" + "n" * 256,
    "/home/alice/%ff%fe",
]


@pytest.mark.parametrize("target", TRAVERSALS, ids=lambda t: t[12:40])
@pytest.mark.parametrize("method", ["GET", "PUT", "PROPFIND", "DELETE", "MKCOL"])
def test_path_tricks_rejected_on_door(dcache_server, target, method):
    body = b"x" if method == "PUT" else None
    status, reason, payload = raw_request(dcache_server.webdav, method, target, basic(dcache_server), body)
    assert status == 400, (status, reason)
    assert json.loads(payload)["detail"]  # the reason is spelled out
    assert reason


# dCache's frontend decodes its REST {path} once and skips empty segments (Jersey + FsPath.chroot), so
# there '//' and '%2f' are separators, not tricks: those two name /home/alice/x and /home/alice/etc/passwd.
REST_SEPARATORS = {"/home/alice//x", "/home/alice/%2fetc%2fpasswd"}


@pytest.mark.parametrize("target", TRAVERSALS, ids=lambda t: t[12:40])
def test_path_tricks_rejected_on_frontend(dcache_server, target):
    status, _, payload = raw_request(dcache_server.frontend, "GET", "/api/v1/namespace" + target,
                                     basic(dcache_server))
    if target in REST_SEPARATORS:  # no such file: 404 (test_rest_path_spellings.py has the rest)
        assert status == 404 and "No such file" in json.loads(payload)["detail"]
    else:
        assert status == 400
        assert json.loads(payload)["status"] == "400"


def test_nothing_written_by_rejected_paths(dcache_server):
    listing = requests.get(f"{dcache_server.api}/namespace/home/bob?children=true",
                           auth=dcache_server.auth("bob")).json()
    assert all(c["fileName"] != "x" for c in listing.get("children", []))


def test_overlong_path_is_414(dcache_server):
    target = "/home/alice/" + "/".join(["abcdefgh"] * 600)
    status, _, _ = raw_request(dcache_server.webdav, "GET", target, basic(dcache_server))
    assert status in (414, 400)


def test_oversized_header_is_400(dcache_server):
    status, _, _ = raw_request(dcache_server.webdav, "GET", "/", {**basic(dcache_server), "X-Big": "a" * 20000})
    assert status in (400, 431)


def test_unsupported_method_is_405_and_garbage_method_400(dcache_server):
    auth = dcache_server.auth("alice")
    r = requests.request("PATCH", f"{dcache_server.webdav}/home/alice/", auth=auth)
    assert r.status_code == 405 and "PROPFIND" in r.headers["Allow"]
    r = requests.request("BREW", f"{dcache_server.webdav}/home/alice/", auth=auth)
    assert r.status_code == 400 and "method" in r.text.lower()  # refused by the HTTP parser itself


def test_bad_depth_and_overwrite(dcache_server):
    auth = dcache_server.auth("alice")
    r = requests.request("PROPFIND", f"{dcache_server.webdav}/home/alice", headers={"Depth": "2"}, auth=auth)
    assert r.status_code == 400 and "Depth" in r.json()["detail"]
    requests.put(f"{dcache_server.webdav}/home/alice/ow", data=b"x", auth=auth)
    r = requests.request("MOVE", f"{dcache_server.webdav}/home/alice/ow", auth=auth,
                         headers={"Destination": "/home/alice/ow2", "Overwrite": "maybe"})
    assert r.status_code == 400 and "Overwrite" in r.json()["detail"]
    r = requests.request("MOVE", f"{dcache_server.webdav}/home/alice/ow", auth=auth)
    assert r.status_code == 400 and "Destination" in r.json()["detail"]
    r = requests.request("MOVE", f"{dcache_server.webdav}/home/alice/ow", auth=auth,
                         headers={"Destination": "/home/alice/../bob/stolen"})
    assert r.status_code == 400


@pytest.mark.parametrize("body", [
    b"<propfind><oops",
    b'<?xml version="1.0" encoding="no-such-codec"?><propfind xmlns="DAV:"><allprop/></propfind>',
    b'<?xml version="1.0" encoding="utf-16"?><propfind/>',
])
@pytest.mark.parametrize("method", ["PROPFIND", "PROPPATCH"])
def test_malformed_xml_bodies(dcache_server, method, body):
    """Syntax errors, unknown encodings and undecodable text are all the client's fault: 400, never 500."""
    r = requests.request(method, f"{dcache_server.webdav}/home/alice", data=body,
                         headers={"Depth": "0"}, auth=dcache_server.auth("alice"))
    assert r.status_code == 400 and f"Malformed {method}" in r.json()["detail"]


def test_bad_content_md5(dcache_server):
    auth = dcache_server.auth("alice")
    for value in ("not base64!!", "AAAA"):
        r = requests.put(f"{dcache_server.webdav}/home/alice/md5", data=b"x", auth=auth,
                         headers={"Content-MD5": value})
        assert r.status_code == 400 and "Content-MD5" in r.json()["detail"]
    assert requests.head(f"{dcache_server.webdav}/home/alice/md5", auth=auth).status_code == 404


def test_truncated_upload_stores_nothing(dcache_server):
    parts = urlsplit(dcache_server.webdav)
    head = (f"PUT /home/alice/truncated HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
            f"Authorization: {basic(dcache_server)['Authorization']}\r\n\r\n").encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(head + b"y" * 1000)
    r = requests.head(f"{dcache_server.webdav}/home/alice/truncated", auth=dcache_server.auth("alice"))
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("body", "ctype", "status", "needle"),
    [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b"[1, 2]", "application/json", 400, "JSON object"),
        (b'{"action": "explode"}', "application/json", 400, "No such action"),
        (b'{"name": "x"}', "application/json", 400, "action"),
        (b'{"action": "mkdir"}', "application/json", 400, "'name'"),
        (b'{"action": "mkdir", "name": ".."}', "application/json", 400, "'name'"),
        (b'{"action": "mkdir", "name": "a/b"}', "application/json", 400, "'name'"),
        (b'{"action": "chmod", "mode": "755"}', "application/json", 400, "'mode'"),
        (b'{"action": "chmod", "mode": 99999}', "application/json", 400, "mode"),
        (b'{"action": "mv", "destination": "../../etc"}', "application/json", 400, "traversal"),
        (b'{"action": "set-xattr", "attributes": {"a": 1}}', "application/json", 400, "'attributes'"),
        (b'{"action": "set-xattr", "attributes": {"a": "1"}, "mode": "SOMETIMES"}', "application/json", 400,
         "mode"),
        (b'{"action": "rm-xattr", "names": []}', "application/json", 400, "'names'"),
        (b'{"action": "set-label", "label": ""}', "application/json", 400, "'label'"),
        (b'{"action": "mkdir", "name": "x"}', "text/plain", 415, "application/json"),
    ],
)
def test_frontend_post_rejects(dcache_server, body, ctype, status, needle):
    auth = dcache_server.auth("alice")
    requests.put(f"{dcache_server.webdav}/home/alice/target", data=b"x", auth=auth)
    r = requests.post(f"{dcache_server.api}/namespace/home/alice/target", data=body,
                      headers={"Content-Type": ctype}, auth=auth)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]


def test_frontend_oversized_body(dcache_server):
    r = requests.post(f"{dcache_server.api}/namespace/home/alice", data=b"{" + b" " * (2 << 20) + b"}",
                      headers={"Content-Type": "application/json"}, auth=dcache_server.auth("alice"))
    assert r.status_code == 400 and "larger than" in r.json()["detail"]


@pytest.mark.parametrize("query", ["children=maybe", "offset=-1", "limit=abc", "locality=2", "offset=%C2%B2",
                                   "limit=" + "9" * 5000])
def test_frontend_bad_query(dcache_server, query):
    r = requests.get(f"{dcache_server.api}/namespace/home/alice?{query}", auth=dcache_server.auth("alice"))
    assert r.status_code == 400 and query.split("=")[0] in r.json()["detail"]


def test_frontend_ignores_unknown_query_parameters_like_dcache(dcache_server):
    r = requests.get(f"{dcache_server.api}/namespace/home/alice?bogus=true", auth=dcache_server.auth("alice"))
    assert r.status_code == 200


def test_both_credentials_is_400(dcache_server):
    r = requests.get(f"{dcache_server.webdav}/home/alice/?authz=abc", auth=dcache_server.auth("alice"))
    assert r.status_code == 400 and "Both" in r.json()["detail"]


def test_malformed_basic_is_401(dcache_server):
    r = requests.get(f"{dcache_server.webdav}/", headers={"Authorization": "Basic !!!notbase64"})
    assert r.status_code == 401
