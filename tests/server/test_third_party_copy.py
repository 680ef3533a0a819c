"""HTTP third-party copy (COPY with Source/Destination) between real server instances.

Instance A (site "main") and instance B (site "buffer") run as subprocesses; a tiny aiohttp server
in a thread plays a misbehaving remote (lying digests, truncated bodies, slow bodies, refusals).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import requests
from aiohttp import web

from airflow_dcache.hooks._perfmarkers import parse_perf_marker_stream
from tests.conftest import DCacheServer, start_server

PERIOD = "0.2"


# -- fixtures and helpers ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def site_a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DCacheServer]:
    server = start_server(tmp_path_factory.mktemp("tpc-a"), "--allow-insecure-macaroons",
                          "--tpc-marker-period", PERIOD, "--tpc-connect-timeout", "2")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def site_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DCacheServer]:
    server = start_server(tmp_path_factory.mktemp("tpc-b"), "--allow-insecure-macaroons", "--site", "buffer",
                          "--tpc-marker-period", PERIOD)
    yield server
    server.stop()


def basic(server: DCacheServer, user: str = "alice") -> str:
    return "Basic " + base64.b64encode(f"{user}:{server.passwords[user]}".encode()).decode()


def adler(data: bytes) -> str:
    return format(zlib.adler32(data) & 0xFFFFFFFF, "08x")


def unique(prefix: str = "f") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def put(server: DCacheServer, path: str, data: bytes, user: str = "alice") -> None:
    r = requests.put(f"{server.webdav}{path}", data=data, auth=server.auth(user), timeout=30)
    assert r.status_code in (201, 204), (r.status_code, r.reason)


def get(server: DCacheServer, path: str, user: str = "alice") -> requests.Response:
    return requests.get(f"{server.webdav}{path}", auth=server.auth(user), timeout=30)


def copy(server: DCacheServer, path: str, headers: dict[str, str], user: str | None = "alice",
         timeout: float = 60) -> requests.Response:
    auth = server.auth(user) if user else None
    return requests.request("COPY", f"{server.webdav}{path}", headers=headers, auth=auth, timeout=timeout)


def outcome(r: requests.Response) -> tuple[list, bool, str]:
    assert r.status_code == 202, (r.status_code, r.reason, r.text[:300])
    assert r.headers["Content-Type"].startswith("text/perf-marker-stream")
    markers, result = parse_perf_marker_stream(r.text)
    last = r.text.rstrip("\n").splitlines()[-1]
    assert last.startswith(("success: ", "failure: ")), r.text
    return markers, result.success, result.message


def no_partial_files(server: DCacheServer) -> None:
    leftovers = list(server.data_dir.glob("pools/*/tmp/*.part"))
    assert leftovers == []


# -- a programmable fake remote ------------------------------------------------------------------
@dataclass
class Fake:
    """An aiohttp server on its own loop in a thread; ``routes`` maps a path to a handler."""

    routes: dict[str, Callable] = field(default_factory=dict)
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    received: dict[str, bytes] = field(default_factory=dict)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path, dict(request.headers)))
        handler = self.routes.get(request.path)
        if handler is None:
            return web.Response(status=404)
        return await handler(request)


@pytest.fixture(scope="module")
def fake() -> Iterator[Fake]:
    state = Fake()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner_box: list[web.AppRunner] = []

    async def start() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", state._dispatch)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state.port = runner.addresses[0][1]
        runner_box.append(runner)

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield state
    asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def serve(data: bytes, *, digest: str | None = "correct", delay: float = 0.0, pieces: int = 1,
          truncate: bool = False) -> Callable:
    """A GET/HEAD handler for ``data`` with a true, lying or no Digest header."""

    async def handler(request: web.Request) -> web.StreamResponse:
        headers = {}
        if digest == "correct":
            headers["Digest"] = f"adler32={adler(data)}"
        elif digest is not None:
            headers["Digest"] = digest
        if request.method == "HEAD":
            return web.Response(headers=headers, content_type="application/octet-stream")
        response = web.StreamResponse(headers=headers)
        response.content_length = len(data)
        await response.prepare(request)
        step = max(1, len(data) // pieces)
        body = data[: len(data) // 2] if truncate else data
        for i in range(0, len(body), step):
            await response.write(body[i:i + step])
            if delay:
                await asyncio.sleep(delay)
        if truncate:
            request.transport.close()  # type: ignore[union-attr]
            return response
        await response.write_eof()
        return response

    return handler


def status(code: int) -> Callable:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.body_exists:
            await request.read()
        return web.Response(status=code)

    return handler


def sink(fake: Fake, name: str, *, digest: str | None = "correct") -> Callable:
    """Accept a PUT of ``name``; HEAD answers with a true, lying or no digest of what arrived."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.method == "PUT":
            fake.received[name] = await request.read()
            return web.Response(status=201)
        if request.method == "HEAD":
            if name not in fake.received:
                return web.Response(status=404)
            headers = {}
            if digest == "correct":
                headers["Digest"] = f"adler32={adler(fake.received[name])}"
            elif digest is not None:
                headers["Digest"] = digest
            return web.Response(headers=headers)
        return web.Response(status=405)

    return handler


# -- the happy paths -----------------------------------------------------------------------------
def test_pull_from_other_instance(site_a, site_b):
    data = bytes(range(256)) * 4000 + b"tail"
    name = unique()
    put(site_b, f"/home/alice/{name}", data)
    r = copy(site_a, f"/home/alice/pulled/{name}", {
        "Source": f"{site_b.webdav}/home/alice/{name}", "Credential": "none",
        "TransferHeaderAuthorization": basic(site_b),
    })
    _, ok, message = outcome(r)
    assert ok, message
    assert message == "Created"
    assert r.text.endswith("success: Created\n")
    got = get(site_a, f"/home/alice/pulled/{name}")
    assert got.status_code == 200 and got.content == data
    head = requests.head(f"{site_a.webdav}/home/alice/pulled/{name}", headers={"Want-Digest": "adler32"},
                         auth=site_a.auth("alice"), timeout=10)
    assert head.headers["Digest"] == f"adler32={adler(data)}"


def test_push_to_other_instance(site_a, site_b):
    data = b"push me " * 50_000
    name = unique()
    put(site_a, f"/home/alice/{name}", data)
    r = copy(site_a, f"/home/alice/{name}", {
        "Destination": f"{site_b.webdav}/home/alice/pushed/{name}",
        "TransferHeaderAuthorization": basic(site_b), "Want-Digest": "adler32",
    })
    _, ok, message = outcome(r)
    assert ok, message
    assert r.headers.get("Digest") == f"adler32={adler(data)}"
    assert get(site_b, f"/home/alice/pushed/{name}").content == data


def test_pull_overwrites_by_default_and_412_with_overwrite_f(site_a, site_b):
    name = unique()
    put(site_b, f"/home/alice/{name}", b"new content")
    put(site_a, f"/home/alice/{name}", b"old")
    headers = {"Source": f"{site_b.webdav}/home/alice/{name}", "TransferHeaderAuthorization": basic(site_b)}
    r = copy(site_a, f"/home/alice/{name}", dict(headers, Overwrite="F"))
    assert r.status_code == 412
    assert get(site_a, f"/home/alice/{name}").content == b"old"
    _, ok, message = outcome(copy(site_a, f"/home/alice/{name}", headers))
    assert ok, message
    assert get(site_a, f"/home/alice/{name}").content == b"new content"


def test_overwrite_f_is_412_even_without_delete_rights(site_a, site_b):
    """Overwrite: F deletes nothing, so a macaroon without DELETE still gets the precise 412."""
    name = unique()
    put(site_a, f"/home/alice/{name}", b"old")
    minted = requests.post(f"{site_a.webdav}/home/alice", data='{"caveats":["activity:UPLOAD"]}', timeout=30,
                           headers={"Content-Type": "application/macaroon-request"}, auth=site_a.auth("alice"))
    token = minted.json()["macaroon"]
    r = requests.request("COPY", f"{site_a.webdav}/home/alice/{name}", timeout=30, headers={
        "Authorization": f"Bearer {token}", "Overwrite": "F",
        "Source": f"{site_b.webdav}/home/alice/{name}", "TransferHeaderAuthorization": basic(site_b)})
    assert r.status_code == 412
    assert get(site_a, f"/home/alice/{name}").content == b"old"


def test_markers_stream_while_copying(site_a, fake):
    data = b"x" * 50_000
    fake.routes["/slow"] = serve(data, delay=0.25, pieces=5)
    with requests.request("COPY", f"{site_a.webdav}/home/alice/{unique('slow')}", stream=True, timeout=30,
                          headers={"Source": f"{fake.url}/slow"}, auth=site_a.auth("alice")) as r:
        headers_at = time.monotonic()
        assert r.status_code == 202
        assert r.headers["Content-Type"] == "text/perf-marker-stream"
        text = b"".join(r.iter_content(chunk_size=None)).decode()
        done_at = time.monotonic()
    # the remote needs >= 1 s (4 pauses of 0.25 s): the headers must come well before the end
    assert done_at - headers_at > 0.5
    markers, result = parse_perf_marker_stream(text)
    assert result.success, result.message
    assert len(markers) >= 2
    full = [m for m in markers if m.bytes_transferred is not None]
    assert full, text
    assert full[-1].remote_connections == f"tcp:127.0.0.1:{fake.port}"
    assert all(m.state == "Running" and m.stripe_status == "RUNNING" for m in full)
    counts = [m.bytes_transferred or 0 for m in full]
    assert counts == sorted(counts)
    block = text[text.index("Perf Marker"):]
    block = block[: block.index("End\n") + 4]
    pattern = (r"Perf Marker\n    Timestamp: \d+\n    State: Running\n    State description: [^\n]+\n"
               r"    Stripe Index: 0\n(    Stripe Start Time: \d+\n    Stripe Last Transferred: \d+\n"
               r"    Stripe Transfer Time: \d+\n    Stripe Bytes Transferred: \d+\n    Stripe Status: RUNNING\n)?"
               r"    Total Stripe Count: 1\n(    RemoteConnections: tcp:127\.0\.0\.1:\d+\n)?End\n")
    assert re.fullmatch(pattern, block), block
    last_full = text[text.rindex("Perf Marker"):text.rindex("End\n") + 4]
    assert re.fullmatch(pattern, last_full) and "RemoteConnections" in last_full, last_full
    assert text.endswith("success: Created\n")


# -- refusals before the 202 ---------------------------------------------------------------------
@pytest.mark.parametrize(("headers", "status", "reason"), [
    ({}, 400, "COPY request is missing both Source and Destination headers"),
    ({"Source": "http://127.0.0.1:1/a", "Destination": "http://127.0.0.1:1/b"}, 400,
     "COPY request contains both Source and Destination headers"),
    ({"Source": "http://127.0.0.1:1/a", "Credential": "gridsite"}, 400, "Credential: gridsite"),
    ({"Source": "http://127.0.0.1:1/a", "Credential": "oidc"}, 400, "Credential: oidc"),
    ({"Source": "http://127.0.0.1:1/a", "Credential": "kerberos"}, 400, "Bad Credential header"),
    ({"Source": "http://127.0.0.1:1/a", "RequireChecksumVerification": "maybe"}, 400,
     "Bad RequireChecksumVerification header"),
    ({"Source": "http://127.0.0.1:1/a", "Overwrite": "X"}, 400, "Bad Overwrite header"),
    ({"Source": "/home/alice/other"}, 400, "absolute URL"),
    ({"Source": "relative/file"}, 400, "absolute URL"),
    ({"Destination": "other/file"}, 400, "absolute URL"),
    ({"Source": "gsiftp://127.0.0.1/a"}, 400, "unsupported scheme"),
    ({"Source": "ftp://127.0.0.1/a"}, 400, "unsupported scheme"),
    ({"Source": "http://192.0.2.10/a"}, 400, "not allowed"),
    ({"Source": "https://10.1.2.3:8443/a"}, 400, "not allowed"),
    ({"Destination": "http://[2001:db8::1]/a"}, 400, "not allowed"),
    ({"Source": "http://user:pw@127.0.0.1/a"}, 400, "Credentials in the remote URL"),
    ({"Source": "http://127.0.0.1:99999/a"}, 400, "bad port"),
    ({"Source": "http://127.0.0.1:1/a", "TransferHeaderHost": "evil"}, 400, "TransferHeaderHost"),
])
def test_bad_requests(site_a, headers, status, reason):
    target = "/home/alice/bad-input" if "Destination" not in headers else "/home/alice/bad-src"
    put(site_a, "/home/alice/bad-src", b"x")
    r = copy(site_a, target, headers)
    assert r.status_code == status, (r.status_code, r.reason)
    assert reason in r.reason or reason in r.text, (r.reason, r.text)
    assert get(site_a, "/home/alice/bad-input").status_code == 404


def test_copy_to_a_path_is_a_local_webdav_copy(site_a):
    """A Destination naming this door (a path here) is a plain WebDAV COPY, not a third-party copy."""
    put(site_a, "/home/alice/local-src", b"x")
    r = copy(site_a, "/home/alice/local-src", {"Destination": "/home/alice/local-dst"})
    assert r.status_code == 201
    assert get(site_a, "/home/alice/local-dst").content == b"x"


def test_anonymous_refused(site_a, fake):
    fake.routes["/anon"] = serve(b"anon")
    r = copy(site_a, f"/home/alice/{unique()}", {"Source": f"{fake.url}/anon"}, user=None)
    assert r.status_code == 401
    assert not [s for s in fake.seen if s[1] == "/anon"]  # refused before contacting the remote


def test_pull_without_write_permission_is_403(site_a, fake):
    fake.routes["/perm"] = serve(b"perm")
    r = copy(site_a, f"/home/alice/{unique()}", {"Source": f"{fake.url}/perm"}, user="bob")
    assert r.status_code == 403
    assert not [s for s in fake.seen if s[1] == "/perm"]


def test_push_of_missing_file_is_404(site_a, fake):
    r = copy(site_a, "/home/alice/does-not-exist", {"Destination": f"{fake.url}/nowhere"})
    assert r.status_code == 404


# -- failures after the 202 ----------------------------------------------------------------------
def test_remote_404(site_a, site_b):
    target = f"/home/alice/{unique()}"
    r = copy(site_a, target, {"Source": f"{site_b.webdav}/home/alice/missing-{uuid.uuid4().hex}",
                              "TransferHeaderAuthorization": basic(site_b)})
    _, ok, _ = outcome(r)
    assert not ok
    assert r.text.rstrip("\n").splitlines()[-1].startswith("failure: rejected GET: 404 Not Found (No such file")
    assert get(site_a, target).status_code == 404


def test_remote_403(site_a, site_b):
    name = unique()
    put(site_b, f"/home/alice/{name}", b"secret")
    r = requests.post(f"{site_b.api}/namespace/home/alice/{name}", json={"action": "chmod", "mode": 0o600},
                      auth=site_b.auth("alice"), timeout=10)
    assert r.status_code in (200, 201), r.text
    target = f"/home/alice/{unique()}"
    r = copy(site_a, target, {"Source": f"{site_b.webdav}/home/alice/{name}",
                              "TransferHeaderAuthorization": basic(site_b, "bob")})
    _, ok, message = outcome(r)
    assert not ok
    assert message.startswith("rejected GET: 403 Forbidden"), message
    anonymous = copy(site_a, target, {"Source": f"{site_b.webdav}/home/alice/{name}"})
    _, ok, message = outcome(anonymous)
    assert not ok and message.startswith("rejected GET: 401 Unauthorized"), message
    assert get(site_a, target).status_code == 404


def test_remote_forbidden_status_is_reported(site_a, fake):
    fake.routes["/forbidden"] = status(403)
    target = f"/home/alice/{unique()}"
    _, ok, message = outcome(copy(site_a, target, {"Source": f"{fake.url}/forbidden"}))
    assert not ok and message == "rejected GET: 403 Forbidden"
    assert get(site_a, target).status_code == 404


def test_unreachable_port_fails_quickly(site_a, refused_port):
    port = refused_port
    started = time.monotonic()
    _, ok, message = outcome(copy(site_a, f"/home/alice/{unique()}", {"Source": f"http://127.0.0.1:{port}/x"}))
    assert not ok
    assert message == f"cannot connect to 127.0.0.1:{port}: Connection refused", message
    assert time.monotonic() - started < 15  # refused at once, not retried until a timeout


def test_connect_timeout_is_a_failure_not_a_hang(site_a):
    """A listener whose accept queue is full drops SYNs: the connect can only time out (2 s here)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue; later SYNs are dropped by the kernel
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            fillers.append(c)
        time.sleep(0.2)
        started = time.monotonic()
        _, ok, message = outcome(copy(site_a, f"/home/alice/{unique()}", {"Source": f"http://127.0.0.1:{port}/x"},
                                      timeout=30))
        elapsed = time.monotonic() - started
    finally:
        for c in fillers:
            c.close()
        listener.close()
    assert not ok
    assert message == f"connection to 127.0.0.1:{port} timed out after 2 s", message
    assert elapsed < 10


def test_checksum_mismatch_leaves_nothing(site_a, fake):
    data = b"the real bytes" * 1000
    fake.routes["/liar"] = serve(data, digest="adler32=00000001")
    target = f"/home/alice/{unique()}"
    put(site_a, target, b"previous version")
    _, ok, message = outcome(copy(site_a, target, {"Source": f"{fake.url}/liar"}))
    assert not ok
    assert message == f"checksum mismatch: remote adler32=00000001, transferred data adler32={adler(data)}"
    assert get(site_a, target).content == b"previous version"  # the old file survives untouched
    new_target = f"/home/alice/{unique()}"
    _, ok, _ = outcome(copy(site_a, new_target, {"Source": f"{fake.url}/liar",
                                                 "RequireChecksumVerification": "false"}))
    assert not ok  # a real disagreement fails even when verification is not required
    assert get(site_a, new_target).status_code == 404
    no_partial_files(site_a)


def test_missing_remote_checksum(site_a, fake):
    data = b"no digest here"
    fake.routes["/nodigest"] = serve(data, digest=None)
    target = f"/home/alice/{unique()}"
    _, ok, message = outcome(copy(site_a, target, {"Source": f"{fake.url}/nodigest"}))
    assert not ok and "did not supply an adler32 checksum" in message
    assert get(site_a, target).status_code == 404
    heads = [s for s in fake.seen if s[0] == "HEAD" and s[1] == "/nodigest"]
    assert heads and heads[-1][2].get("Want-Digest") == "adler32"
    _, ok, message = outcome(copy(site_a, target, {"Source": f"{fake.url}/nodigest",
                                                   "RequireChecksumVerification": "false"}))
    assert ok, message
    assert get(site_a, target).content == data
    no_partial_files(site_a)


def test_checksum_from_head_when_get_has_none(site_a, fake):
    data = b"digest only on HEAD"

    async def handler(request: web.Request) -> web.StreamResponse:
        headers = {"Digest": f"adler32={adler(data)}"} if request.method == "HEAD" else {}
        return web.Response(body=b"" if request.method == "HEAD" else data, headers=headers)

    fake.routes["/headdigest"] = handler
    target = f"/home/alice/{unique()}"
    _, ok, message = outcome(copy(site_a, target, {"Source": f"{fake.url}/headdigest"}))
    assert ok, message
    assert get(site_a, target).content == data


def test_truncated_body_leaves_nothing(site_a, fake):
    fake.routes["/truncated"] = serve(b"y" * 100_000, truncate=True)
    target = f"/home/alice/{unique()}"
    _, ok, message = outcome(copy(site_a, target, {"Source": f"{fake.url}/truncated"}))
    assert not ok, message
    assert get(site_a, target).status_code == 404
    no_partial_files(site_a)


def test_redirect_followed_and_credentials_stay_with_origin(site_a, fake):
    data = b"behind a redirect"
    fake.routes["/pool/file"] = serve(data)

    async def same_origin(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect("/pool/file")

    async def other_origin(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect(f"http://localhost:{fake.port}/pool/file")

    fake.routes["/door/same"] = same_origin
    fake.routes["/door/other"] = other_origin
    for door, forwarded in (("same", True), ("other", False)):
        fake.seen.clear()
        target = f"/home/alice/{unique()}"
        _, ok, message = outcome(copy(site_a, target, {"Source": f"{fake.url}/door/{door}",
                                                       "TransferHeaderAuthorization": "Bearer remote-token",
                                                       "transferheaderx-custom": "yes"}))
        assert ok, message
        assert get(site_a, target).content == data
        door_req = next(h for m, p, h in fake.seen if p == f"/door/{door}")
        pool_req = next(h for m, p, h in fake.seen if p == "/pool/file" and m == "GET")
        assert door_req["Authorization"] == "Bearer remote-token" and door_req["x-custom"] == "yes"
        assert ("Authorization" in pool_req) is forwarded


def test_redirect_to_a_forbidden_host_fails(site_a, fake):
    async def handler(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect("http://192.0.2.55/steal")

    fake.routes["/evil"] = handler
    target = f"/home/alice/{unique()}"
    _, ok, message = outcome(copy(site_a, target, {"Source": f"{fake.url}/evil"}))
    assert not ok and "192.0.2.55 is not allowed" in message


def test_push_rejected_by_remote(site_a, fake):
    name = unique()
    put(site_a, f"/home/alice/{name}", b"data")
    fake.routes["/readonly"] = status(403)
    _, ok, message = outcome(copy(site_a, f"/home/alice/{name}", {"Destination": f"{fake.url}/readonly"}))
    assert not ok and message == "rejected PUT: 403 Forbidden"


def test_push_checksum_mismatch_and_missing_checksum(site_a, fake):
    name = unique()
    data = b"pushed bytes" * 3000
    put(site_a, f"/home/alice/{name}", data)
    fake.routes["/sink-liar"] = sink(fake, "liar", digest="adler32=deadbeef")
    _, ok, message = outcome(copy(site_a, f"/home/alice/{name}", {"Destination": f"{fake.url}/sink-liar"}))
    assert not ok and message.startswith("checksum mismatch: remote adler32=deadbeef")
    assert fake.received["liar"] == data
    put_req = next(h for m, p, h in fake.seen if m == "PUT" and p == "/sink-liar")
    assert put_req["Content-Length"] == str(len(data))

    fake.routes["/sink-none"] = sink(fake, "none", digest=None)
    _, ok, message = outcome(copy(site_a, f"/home/alice/{name}", {"Destination": f"{fake.url}/sink-none"}))
    assert not ok and "did not supply an adler32 checksum" in message
    _, ok, message = outcome(copy(site_a, f"/home/alice/{name}", {"Destination": f"{fake.url}/sink-none",
                                                                   "RequireChecksumVerification": "false"}))
    assert ok, message

    fake.routes["/sink-ok"] = sink(fake, "ok")
    _, ok, message = outcome(copy(site_a, f"/home/alice/{name}", {"Destination": f"{fake.url}/sink-ok"}))
    assert ok, message


def test_push_overwrite_f_refuses_existing_remote(site_a, site_b):
    name = unique()
    put(site_a, f"/home/alice/{name}", b"mine")
    put(site_b, f"/home/alice/{name}", b"theirs")
    _, ok, message = outcome(copy(site_a, f"/home/alice/{name}", {
        "Destination": f"{site_b.webdav}/home/alice/{name}", "Overwrite": "F",
        "TransferHeaderAuthorization": basic(site_b)}))
    assert not ok and "exists and Overwrite is F" in message
    assert get(site_b, f"/home/alice/{name}").content == b"theirs"


def test_client_disconnect_abandons_pull(site_a, fake):
    fake.routes["/endless"] = serve(b"z" * 200_000, delay=0.3, pieces=20)
    target = f"/home/alice/{unique()}"
    with requests.request("COPY", f"{site_a.webdav}{target}", stream=True, timeout=30,
                          headers={"Source": f"{fake.url}/endless", "RequireChecksumVerification": "false"},
                          auth=site_a.auth("alice")) as r:
        assert r.status_code == 202
        next(r.iter_lines())
    time.sleep(1.0)
    assert get(site_a, target).status_code == 404
    deadline = time.monotonic() + 10
    while list(site_a.data_dir.glob("pools/*/tmp/*.part")) and time.monotonic() < deadline:
        time.sleep(0.2)
    no_partial_files(site_a)


# -- macaroons only, both directions -------------------------------------------------------------
def mint(server: DCacheServer, path: str, activities: str, user: str = "alice") -> str:
    body = {"caveats": [f"activity:{activities}"], "validity": "PT10M"}
    r = requests.post(f"{server.webdav}{path}", data=json.dumps(body), auth=server.auth(user), timeout=10,
                      headers={"Content-Type": "application/macaroon-request"})
    assert r.status_code == 200, (r.status_code, r.reason)
    return r.json()["macaroon"]


def test_two_instances_with_macaroons_only(start_dcache):
    a = start_dcache("--allow-insecure-macaroons", "--tpc-marker-period", PERIOD, name="main")
    b = start_dcache("--allow-insecure-macaroons", "--site", "buffer", "--tpc-marker-period", PERIOD,
                     name="buffer")
    assert b.info["site"] == "buffer"
    put(b, "/home/alice/in/source.bin", b"from buffer " * 1000)
    put(a, "/home/alice/out/local.bin", b"from main " * 1000)

    # pull into A: A's macaroon needs UPLOAD, B's needs DOWNLOAD
    mac_a = mint(a, "/home/alice/in", "UPLOAD")
    mac_b = mint(b, "/home/alice/in", "DOWNLOAD")
    pull = {"Source": f"{b.webdav}/home/alice/in/source.bin", "Credential": "none",
            "TransferHeaderAuthorization": f"Bearer {mac_b}", "Authorization": f"Bearer {mac_a}"}
    r = requests.request("COPY", f"{a.webdav}/home/alice/in/copy.bin", headers=pull, timeout=60)
    _, ok, message = outcome(r)
    assert ok, message
    assert get(a, "/home/alice/in/copy.bin").content == b"from buffer " * 1000

    # push from A: A's macaroon needs DOWNLOAD, B's needs UPLOAD
    mac_a_read = mint(a, "/home/alice/out", "DOWNLOAD")
    mac_b_write = mint(b, "/home/alice/out", "UPLOAD")
    push = {"Destination": f"{b.webdav}/home/alice/out/pushed.bin",
            "TransferHeaderAuthorization": f"Bearer {mac_b_write}", "Authorization": f"Bearer {mac_a_read}"}
    r = requests.request("COPY", f"{a.webdav}/home/alice/out/local.bin", headers=push, timeout=60)
    _, ok, message = outcome(r)
    assert ok, message
    assert get(b, "/home/alice/out/pushed.bin").content == b"from main " * 1000

    # the wrong activity is refused before anything starts
    r = requests.request("COPY", f"{a.webdav}/home/alice/out/local.bin", timeout=30,
                         headers=dict(push, Authorization=f"Bearer {mac_a}"))
    assert r.status_code == 403
    r = requests.request("COPY", f"{a.webdav}/home/alice/in/copy2.bin", timeout=30,
                         headers=dict(pull, Authorization=f"Bearer {mac_a_read}"))
    assert r.status_code == 403
    # and a macaroon of the remote without the needed activity gives the remote's refusal
    r = requests.request("COPY", f"{a.webdav}/home/alice/in/copy3.bin", timeout=60,
                         headers=dict(pull, TransferHeaderAuthorization=f"Bearer {mac_b_write}"))
    _, ok, message = outcome(r)
    assert not ok and message.startswith("rejected GET: 40"), message
    assert get(a, "/home/alice/in/copy3.bin").status_code == 404


# -- HTTPS remotes: verified with the system CAs plus --tpc-ca-bundle ------------------------------
def test_https_remote_verified_with_ca_bundle(tmp_path):
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    servers = []
    try:
        remote = start_server(tmp_path / "remote", "--site", "buffer", tls=(cert_file, key_file), ca_pem=str(ca_file))
        servers.append(remote)
        trusting = start_server(tmp_path / "trusting", "--tpc-marker-period", PERIOD, "--tpc-ca-bundle", str(ca_file))
        servers.append(trusting)
        plain = start_server(tmp_path / "plain", "--tpc-marker-period", PERIOD)
        servers.append(plain)
        data = b"over TLS " * 2000
        r = requests.put(f"{remote.webdav}/home/alice/tls.bin", data=data, auth=remote.auth("alice"),
                         verify=str(ca_file), timeout=30)
        assert r.status_code == 201
        headers = {"Source": f"{remote.webdav}/home/alice/tls.bin",
                   "TransferHeaderAuthorization": basic(remote)}
        _, ok, message = outcome(copy(trusting, "/home/alice/tls.bin", headers))
        assert ok, message
        assert get(trusting, "/home/alice/tls.bin").content == data

        _, ok, message = outcome(copy(plain, "/home/alice/tls.bin", headers))
        assert not ok
        assert message.startswith("TLS certificate of 127.0.0.1:") and "not trusted" in message, message
        assert get(plain, "/home/alice/tls.bin").status_code == 404
    finally:
        for server in servers:
            server.stop()


def test_pull_asks_for_identity_encoding_and_sends_no_extra_credentials(site_a, fake):
    fake.routes["/plain"] = serve(b"plain bytes")
    fake.seen.clear()
    _, ok, message = outcome(copy(site_a, f"/home/alice/{unique()}", {"Source": f"{fake.url}/plain"}))
    assert ok, message
    get_req = next(h for m, p, h in fake.seen if m == "GET" and p == "/plain")
    assert get_req["Accept-Encoding"] == "identity" and get_req["Want-Digest"] == "adler32"
    assert "Authorization" not in get_req  # the COPY's own credentials never reach the remote
