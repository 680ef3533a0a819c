"""Path traversal: every encoding of ``..`` and friends, on every method that takes a path.

carol is chrooted to /home/carol (her "/" is that directory); alice has a file outside it. A variant
"escapes" if carol reads, creates, lists, moves or copies anything outside her root. Each
(variant x method) is its own test: 0 escapes, 0 x 5xx.
"""

from __future__ import annotations

import socket
import uuid
from urllib.parse import urlsplit

import pytest
import requests

SECRET = b"alice's data outside carol's root"
MARKER = f"alice-only-{uuid.uuid4().hex[:8]}"  # a name in alice's home: seeing it anywhere is an escape

# Raw request targets, sent byte for byte (requests would normalise some of them).
VARIANTS = [
    "/../alice/secret.txt",
    "/../../home/alice/secret.txt",
    "/%2e%2e/alice/secret.txt",
    "/%2E%2E/alice/secret.txt",
    "/.%2e/alice/secret.txt",
    "/%2e./alice/secret.txt",
    "/%252e%252e/alice/secret.txt",
    "/..%2falice%2fsecret.txt",
    "/%2e%2e%2falice%2fsecret.txt",
    "/..%5calice%5csecret.txt",
    "/..\\alice\\secret.txt",
    "/sub/../../alice/secret.txt",
    "/./../alice/secret.txt",
    "//../alice/secret.txt",
    "/..;/alice/secret.txt",
    "/%c0%ae%c0%ae/alice/secret.txt",
    "/%e0%80%ae%e0%80%ae/alice/secret.txt",
    "/..%00/alice/secret.txt",
    "/%00../alice/secret.txt",
    "/...//alice/secret.txt",
    "/..%u2216alice/secret.txt",
    "/%2e%2e%u2215alice/secret.txt",
]


@pytest.fixture(scope="module")
def setup(dcache_server):
    alice = dcache_server.auth("alice")
    r = requests.put(f"{dcache_server.webdav}/home/alice/secret.txt", data=SECRET, auth=alice)
    assert r.status_code in (201, 204)
    requests.put(f"{dcache_server.webdav}/home/alice/{MARKER}", data=b"m", auth=alice)
    carol = dcache_server.auth("carol")
    requests.request("MKCOL", f"{dcache_server.webdav}/sub", auth=carol)
    requests.put(f"{dcache_server.webdav}/mine.txt", data=b"carol", auth=carol)
    return dcache_server


def raw_request(server, method: str, target: str, headers: dict[str, str] | None = None,
                body: bytes = b"", base: str | None = None) -> tuple[int, bytes]:
    """One HTTP/1.1 request with the target exactly as given; returns (status, body)."""
    url = urlsplit(base or server.webdav)
    import base64

    user, password = server.auth("carol")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {url.netloc}", "Connection: close",
             "Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(),
             f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            piece = sock.recv(65536)
            if not piece:
                break
            chunks.append(piece)
    response = b"".join(chunks)
    status = int(response.split(b" ", 2)[1])
    return status, response


def no_escape(status: int, response: bytes) -> None:
    assert status < 500, (status, response[:300])
    assert SECRET not in response
    assert MARKER.encode() not in response, response[:300]


def alice_file_intact(server) -> None:
    r = requests.get(f"{server.webdav}/home/alice/secret.txt", auth=server.auth("alice"))
    assert r.status_code == 200 and r.content == SECRET


@pytest.mark.parametrize("target", VARIANTS)
def test_get(setup, target):
    no_escape(*raw_request(setup, "GET", target))


@pytest.mark.parametrize("target", VARIANTS)
def test_put(setup, target):
    status, response = raw_request(setup, "PUT", target, body=b"overwritten by carol")
    assert status < 500, response[:200]
    alice_file_intact(setup)
    no_escape(status, response)


@pytest.mark.parametrize("target", VARIANTS)
def test_propfind(setup, target):
    status, response = raw_request(setup, "PROPFIND", target.rsplit("/", 1)[0] + "/", {"Depth": "1"})
    no_escape(status, response)


@pytest.mark.parametrize("target", VARIANTS)
def test_move_destination(setup, target):
    name = f"/mv-{uuid.uuid4().hex[:6]}"
    requests.put(f"{setup.webdav}{name}", data=b"m", auth=setup.auth("carol"))
    status, response = raw_request(setup, "MOVE", name, {"Destination": f"{setup.webdav}{target}", "Overwrite": "T"})
    assert status < 500, response[:300]
    alice_file_intact(setup)
    r = requests.get(f"{setup.webdav}/home/alice/", auth=setup.auth("alice"))
    assert name[1:] not in r.text


@pytest.mark.parametrize("target", VARIANTS)
def test_copy_destination(setup, target):
    status, response = raw_request(setup, "COPY", "/mine.txt", {"Destination": target, "Overwrite": "T"})
    assert status < 500, response[:300]
    alice_file_intact(setup)


@pytest.mark.parametrize("target", VARIANTS)
def test_copy_source_path_escape(setup, target):
    status, response = raw_request(setup, "COPY", target, {"Destination": "/copied-from-escape.txt"})
    no_escape(status, response)
    r = requests.get(f"{setup.webdav}/copied-from-escape.txt", auth=setup.auth("carol"))
    assert r.content != SECRET


@pytest.mark.parametrize("target", VARIANTS)
def test_namespace_get(setup, target):
    api = urlsplit(setup.api)
    status, response = raw_request(setup, "GET", f"{api.path}/namespace{target}?children=true",
                                   base=f"{api.scheme}://{api.netloc}")
    no_escape(status, response)


@pytest.mark.parametrize("target", VARIANTS)
def test_namespace_delete(setup, target):
    api = urlsplit(setup.api)
    status, response = raw_request(setup, "DELETE", f"{api.path}/namespace{target}", base=f"{api.scheme}://{api.netloc}")
    assert status < 500, response[:300]
    alice_file_intact(setup)


@pytest.mark.parametrize("destination", ["../alice/stolen", "../../home/alice/stolen", "/../alice/stolen",
                                         "%2e%2e/alice/stolen", "sub/../../alice/stolen"])
def test_namespace_mv_destination(setup, destination):
    name = f"nsmv-{uuid.uuid4().hex[:6]}"
    requests.put(f"{setup.webdav}/{name}", data=b"m", auth=setup.auth("carol"))
    r = requests.post(f"{setup.api}/namespace/{name}", json={"action": "mv", "destination": destination},
                      auth=setup.auth("carol"))
    assert r.status_code < 500
    assert requests.head(f"{setup.webdav}/home/alice/stolen", auth=setup.auth("alice")).status_code == 404
