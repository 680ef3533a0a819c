"""Production dCache behaviours, scripted on loopback, run against BOTH hooks.

Each test is parametrised over the sync and async hook: they share the protocol code, and these tests
prove the two I/O layers really behave the same (redirect credentials, retries, streaming, errors).
A test of a method only the sync hook has (transfers, copies, macaroons) is marked ``sync_only``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_dcache import exceptions as exc
from airflow_dcache.hooks.models import TransferResult
from tests.hooks.conftest import sync_only
from tests.hooks.fakes import FakeServer, Recorded, Reply, lines

DATA = bytes(range(256)) * 4096 + b"tail"
ADLER = f"{zlib.adler32(DATA) & 0xFFFFFFFF:08x}"
MD5_B64 = base64.b64encode(hashlib.md5(DATA).digest()).decode()
PASSWORD = "door-password-42"


def conn_for(set_conn: Callable[..., str], server: FakeServer, **extra: Any) -> str:
    fields: dict[str, Any] = {"host": server.url, "extra": {"frontend_url": server.url, **extra}}
    if "token" not in extra and "token_file" not in extra:
        fields.update(login="alice", password=PASSWORD)
    return set_conn(**fields)


# ------------------------------------------------------------------------------ redirects to pools


@sync_only
def test_download_follows_pool_redirect_without_credentials(
    run: Callable[..., Any], set_conn: Callable[..., str], tmp_path: Path
) -> None:
    def pool(req: Recorded) -> Reply:
        digest = {"Digest": f"adler32={ADLER}"} if req.header("Want-Digest") else {}
        return Reply(200, headers=digest, body=DATA)

    with FakeServer(pool) as pool_srv:

        def door(req: Recorded) -> Reply:
            return Reply(302, headers={"Location": f"{pool_srv.url}{req.path}?dcache-http-uuid=u1"})

        with FakeServer(door) as door_srv:
            target = tmp_path / "out.bin"
            result = run(conn_for(set_conn, door_srv), "download", "/data/f.bin", target)
    assert target.read_bytes() == DATA
    assert result.verified_by == "adler32" and result.size == len(DATA)
    assert door_srv.requests[0].header("Authorization") is not None
    (pool_req,) = pool_srv.requests
    assert pool_req.path == "/data/f.bin?dcache-http-uuid=u1"
    assert pool_req.header("Authorization") is None  # never leak door credentials to a pool
    assert pool_req.header("Want-Digest") == "adler32"  # asked again, the pool answers it


@sync_only
def test_download_checksum_mismatch_leaves_no_file(
    run: Callable[..., Any], set_conn: Callable[..., str], tmp_path: Path
) -> None:
    reply = Reply(200, headers={"Digest": "adler32=00000bad"}, body=DATA)
    with FakeServer(lambda r: reply) as srv, pytest.raises(exc.ChecksumMismatch, match="adler32 mismatch"):
        run(conn_for(set_conn, srv), "download", "/f", tmp_path / "out.bin")
    assert list(tmp_path.iterdir()) == []


@sync_only
def test_download_to_stream_without_server_digest(run: Callable[..., Any], set_conn: Callable[..., str]) -> None:
    with FakeServer(lambda r: Reply(200, body=iter([DATA[:10], DATA[10:]]))) as srv:
        buf = io.BytesIO()
        result = run(conn_for(set_conn, srv), "download", "/f", buf)
    assert buf.getvalue() == DATA and result.verified_by is None
    assert result.checksums == {"adler32": ADLER}


@sync_only
def test_put_307_sends_body_to_pool_without_credentials(
    run: Callable[..., Any], set_conn: Callable[..., str], tmp_path: Path
) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(DATA)
    with (
        FakeServer(lambda r: Reply(201, headers={"Digest": f"adler32={ADLER}"})) as pool_srv,
        FakeServer(lambda r: Reply(307, headers={"Location": f"{pool_srv.url}/pool/x"})) as door_srv,
    ):
        result = run(conn_for(set_conn, door_srv), "upload", source, "/data/in.bin")
    assert result.verified_by == "adler32"
    (pool_req,) = pool_srv.requests
    assert pool_req.method == "PUT" and pool_req.body == DATA
    assert pool_req.header("Authorization") is None


# ----------------------------------------------------------------------------------- uploads


@sync_only
def test_upload_mismatch_deletes_the_bad_copy(
    run: Callable[..., Any], set_conn: Callable[..., str], tmp_path: Path
) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(DATA)

    def handler(req: Recorded) -> Reply:
        if req.method == "PUT":
            return Reply(201, headers={"Digest": "adler32=deadbeef"})
        if req.path.startswith("/api/v1/namespace"):
            return Reply(200, body=json.dumps({"fileType": "REGULAR"}).encode())
        return Reply(204)

    with FakeServer(handler) as srv, pytest.raises(exc.ChecksumMismatch):
        run(conn_for(set_conn, srv), "upload", source, "/data/in.bin")
    assert [r.method for r in srv.requests] == ["PUT", "GET", "DELETE"]
    assert srv.requests[-1].path == "/data/in.bin"


@sync_only
def test_upload_md5_sends_content_md5_and_xattrs(
    run: Callable[..., Any], set_conn: Callable[..., str], tmp_path: Path
) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(DATA)
    with FakeServer(lambda r: Reply(201, headers={"Digest": f"md5={MD5_B64}"})) as srv:
        result = run(
            conn_for(set_conn, srv), "upload", source, "/d/in.bin", checksum="md5", xattrs={"origin": "air flow"}
        )
    (put,) = srv.requests
    assert put.header("Content-MD5") == MD5_B64
    assert put.header("Want-Digest") == "adler32,md5"
    assert put.header("Content-Length") == str(len(DATA))
    assert put.path == "/d/in.bin?xattr.origin=air+flow"
    assert result.verified_by == "md5"


@sync_only
def test_upload_from_unsized_stream_is_chunked_and_verified_by_head(
    run: Callable[..., Any], set_conn: Callable[..., str]
) -> None:
    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self._buf = io.BytesIO(DATA)

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            data = self._buf.read(len(b))
            b[: len(data)] = data
            return len(data)

    def handler(req: Recorded) -> Reply:
        if req.method == "PUT":
            return Reply(201)  # no Digest on the PUT reply: the hook must ask with HEAD
        return Reply(200, headers={"Digest": f"adler32={ADLER}"})

    with FakeServer(handler) as srv:
        result = run(conn_for(set_conn, srv), "upload", io.BufferedReader(Pipe()), "/d/pipe.bin")
    put, head = srv.requests
    assert put.body == DATA and put.header("Transfer-Encoding") == "chunked"
    assert head.method == "HEAD" and head.header("Want-Digest") == "adler32"
    assert result.verified_by == "adler32" and result.size == len(DATA)


# ------------------------------------------------------------------------------------ retries


def test_idempotent_get_is_retried_on_503(run: Callable[..., Any], set_conn: Callable[..., str]) -> None:
    replies = iter([Reply(503, "busy"), Reply(502), Reply(200, body=b'{"status":"AUTHENTICATED","username":"a"}')])
    with FakeServer(lambda r: next(replies)) as srv:
        user = run(conn_for(set_conn, srv), "whoami")
    assert user.authenticated and len(srv.requests) == 3


def test_post_is_never_retried(run: Callable[..., Any], set_conn: Callable[..., str]) -> None:
    busy = Reply(503, "Server is busy (internal timeout)")
    with FakeServer(lambda r: busy) as srv, pytest.raises(exc.ServerError, match=r"busy \(internal timeout\)"):
        run(conn_for(set_conn, srv), "create_channel")
    assert len(srv.requests) == 1


def test_unreachable_server_is_a_typed_error(run: Callable[..., Any], set_conn: Callable[..., str],
                                             refused_port: int) -> None:
    conn_id = set_conn(host=f"http://127.0.0.1:{refused_port}", login="alice", password=PASSWORD,
                       extra={"retries": 0, "timeout": 2})
    with pytest.raises(exc.DCacheConnectionError):
        run(conn_id, "whoami")


# ----------------------------------------------------------------------------- error bodies


@pytest.mark.parametrize(
    ("reply", "cls", "message"),
    [
        (Reply(404, body=b'{"errors":[{"message":"File not found","status":"404"}]}'), exc.NotFound, "File not found"),
        (
            Reply(403, body=b'{"status":"403","title":"Forbidden","detail":"Permission denied"}'),
            exc.PermissionDenied,
            "Forbidden: Permission denied",
        ),
        (Reply(429, "Too Many Requests", body=b""), exc.LimitExceeded, "Too Many Requests"),
        (Reply(401, "Unauthorized", body=b"<html>login</html>"), exc.AuthenticationFailed, "Unauthorized"),
    ],
)
def test_frontend_errors_are_typed(
    run: Callable[..., Any], set_conn: Callable[..., str], reply: Reply, cls: type, message: str
) -> None:
    with FakeServer(lambda r: reply) as srv, pytest.raises(cls) as info:
        run(conn_for(set_conn, srv), "stat", "/data/x")
    assert message in str(info.value)
    assert PASSWORD not in str(info.value)


# ------------------------------------------------------------------------------ bulk and tape


@sync_only
def test_bulk_lifecycle(run: Callable[..., Any], set_conn: Callable[..., str]) -> None:
    def handler(req: Recorded) -> Reply:
        if req.method == "POST":
            return Reply(201, headers={"request-url": "http://elsewhere/api/v1/bulk-requests/b-1"})
        if req.method == "GET":
            body = {
                "uid": "b-1",
                "status": "COMPLETED",
                "nextId": -1,
                "targets": [{"id": 1, "target": "/a", "state": "COMPLETED"}],
            }
            return Reply(200, body=json.dumps(body).encode())
        return Reply(200 if req.method == "PATCH" else 204)

    with FakeServer(handler) as srv:
        conn_id = conn_for(set_conn, srv)
        sub = run(conn_id, "submit_bulk_request", "PIN", ["/a"], arguments={"lifetime": 60})
        status = run(conn_id, "bulk_request_status", sub.id)
        run(conn_id, "cancel_bulk_request", sub.id)
        run(conn_id, "clear_bulk_request", sub.url)
    assert sub.id == "b-1" and status.finished
    # The id is reused against *our* frontend, never the URL the server handed back.
    assert [(r.method, r.path.split("?")[0]) for r in srv.requests] == [
        ("POST", "/api/v1/bulk-requests"),
        ("GET", "/api/v1/bulk-requests/b-1"),
        ("PATCH", "/api/v1/bulk-requests/b-1"),
        ("DELETE", "/api/v1/bulk-requests/b-1"),
    ]
    assert srv.requests[0].header("Content-Type") == "application/json"


@sync_only
def test_tape_stage_cancel_error_from_headers(run: Callable[..., Any], set_conn: Callable[..., str]) -> None:
    def handler(req: Recorded) -> Reply:
        if req.path == "/.well-known/wlcg-tape-rest-api":
            return Reply(404)  # no discovery document: the hook uses /api/v1/tape
        if req.path == "/api/v1/tape/stage":
            return Reply(201, headers={"location": "x/tape/stage/s-9"}, body=b'{"requestId":"s-9"}')
        return Reply(400, headers={"title": "File missing from stage request", "detail": "/b"})

    with FakeServer(handler) as srv:
        conn_id = conn_for(set_conn, srv)
        sub = run(conn_id, "stage", ["/a"], disk_lifetime="P1D")
        with pytest.raises(exc.BadRequest, match="File missing from stage request: /b"):
            run(conn_id, "cancel_stage", sub.id, ["/b"])
    posted = [r for r in srv.requests if r.path == "/api/v1/tape/stage"]
    assert json.loads(posted[0].body) == {"files": [{"path": "/a", "diskLifetime": "P1D"}]}


# --------------------------------------------------------------------------- third-party copy

MARKERS = [
    "Perf Marker",
    "    Timestamp: 1715674905",
    "    State: Running",
    "    State description: Mover created",
    "    Stripe Bytes Transferred: 1000",
    "End",
    "Perf Marker",
    "    Timestamp: 1715674910",
    "    State: 10",
    "    Stripe Bytes Transferred: 2000",
    "End",
]


@sync_only
def test_copy_pull_success(run: Callable[..., Any], set_conn: Callable[..., str]) -> None:
    reply = Reply(202, headers={"Content-Type": "text/perf-marker-stream"}, body=lines(*MARKERS, "success: Created"))
    with FakeServer(lambda r: reply) as srv:
        result = run(
            conn_for(set_conn, srv),
            "copy_pull",
            "https://remote.example/f",
            "/data/f",
            remote_token="REMOTE-SECRET-TOKEN",
        )
    assert isinstance(result, TransferResult)
    assert (result.markers, result.size) == (2, 2000)
    (req,) = srv.requests
    assert req.method == "COPY" and req.header("Source") == "https://remote.example/f"
    assert req.header("TransferHeaderAuthorization") == "Bearer REMOTE-SECRET-TOKEN"
    assert req.header("Destination") is None


@sync_only
@pytest.mark.parametrize(
    ("tail", "message"),
    [(["failure: rejected GET: 404 Not Found"], "rejected GET: 404 Not Found"), ([], "ended without")],
)
def test_copy_push_failure(
    run: Callable[..., Any], set_conn: Callable[..., str], tail: list[str], message: str
) -> None:
    reply = Reply(202, body=lines(*MARKERS, *tail))
    with FakeServer(lambda r: reply) as srv, pytest.raises(exc.TransferFailed, match=message):
        run(conn_for(set_conn, srv), "copy_push", "/data/f", "https://remote.example/f")
    assert srv.requests[0].header("Destination") == "https://remote.example/f"


@sync_only
def test_copy_refused_up_front(run: Callable[..., Any], set_conn: Callable[..., str]) -> None:
    refused = Reply(400, "COPY request contains both Source and Destination headers")
    with FakeServer(lambda r: refused) as srv, pytest.raises(exc.BadRequest, match="contains both"):
        run(conn_for(set_conn, srv), "copy_pull", "https://r/f", "/data/f")


# ------------------------------------------------------------------------- macaroons and auth


@sync_only
def test_macaroon_request_wire_format(run: Callable[..., Any], set_conn: Callable[..., str]) -> None:
    minted = {
        "macaroon": "MDAxY2xvY2F0aW9uIHNlY3JldA",
        "uri": {"targetWithMacaroon": "https://d/f?authz=MDAxY2xvY2F0aW9uIHNlY3JldA"},
    }
    with FakeServer(lambda r: Reply(200, body=json.dumps(minted).encode())) as srv:
        url = run(conn_for(set_conn, srv), "presigned_url", "/data/f", ["DOWNLOAD"], 600)
    (req,) = srv.requests
    assert req.method == "POST" and req.path == "/data/f"
    assert req.header("Content-Type") == "application/macaroon-request"
    assert json.loads(req.body) == {"caveats": ["activity:DOWNLOAD"], "validity": "PT10M"}
    assert url.endswith("?authz=MDAxY2xvY2F0aW9uIHNlY3JldA")
    from airflow.sdk.log import _secrets_masker

    assert "MDAxY2xvY2F0aW9uIHNlY3JldA" not in str(_secrets_masker().redact(f"log line {url}"))


def test_token_file_is_sent_as_bearer_and_reread(
    run: Callable[..., Any], set_conn: Callable[..., str], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-access-token\n")
    with FakeServer(lambda r: Reply(200, body=b'{"status":"AUTHENTICATED"}')) as srv:
        conn_id = conn_for(set_conn, srv, token_file=str(token_file))
        run(conn_id, "whoami")
        token_file.write_text("second-access-token\n")
        run(conn_id, "whoami")
    assert [r.header("Authorization") for r in srv.requests] == [
        "Bearer first-access-token",
        "Bearer second-access-token",
    ]


@sync_only
def test_connection_test_reports_which_check_failed(run: Callable[..., Any], set_conn: Callable[..., str]) -> None:
    def door_down(req: Recorded) -> Reply:
        return Reply(401, "Unauthorized") if req.method == "PROPFIND" else Reply(200)

    with FakeServer(door_down) as srv:
        ok, message = run(conn_for(set_conn, srv), "test_connection")
    assert not ok and message.startswith("WebDAV door check failed") and "401" in message

    def anonymous(req: Recorded) -> Reply:
        return Reply(207) if req.method == "PROPFIND" else Reply(200, body=b'{"status":"ANONYMOUS"}')

    with FakeServer(anonymous) as srv:
        ok, message = run(conn_for(set_conn, srv), "test_connection")
    assert not ok and "ANONYMOUS" in message

    def frontend_down(req: Recorded) -> Reply:
        return Reply(207) if req.method == "PROPFIND" else Reply(500, "Internal Server Error")

    with FakeServer(frontend_down) as srv:
        ok, message = run(conn_for(set_conn, srv, retries=0), "test_connection")
    assert not ok and message.startswith("frontend check") and "500" in message
    assert PASSWORD not in message


@sync_only
def test_copy_answered_synchronously(run: Callable[..., Any], set_conn: Callable[..., str]) -> None:
    with FakeServer(lambda r: Reply(201, "Created")) as srv:
        result = run(conn_for(set_conn, srv), "copy_pull", "https://remote.example/f", "/data/f")
    assert result.markers == 0


@sync_only
def test_missing_tls_files_are_named(run: Callable[..., Any], set_conn: Callable[..., str], tmp_path: Path) -> None:
    conn_id = set_conn(
        host="https://127.0.0.1:9", login="a", password=PASSWORD, extra={"ca_bundle": str(tmp_path / "ca.pem")}
    )
    with pytest.raises(exc.InvalidConnection, match="ca_bundle"):
        run(conn_id, "whoami")
    ok, message = run(conn_id, "test_connection")
    assert not ok and "ca_bundle" in message


@sync_only
def test_x509_certificate_goes_to_the_door_only(
    run: Callable[..., Any], set_conn: Callable[..., str], tmp_path: Path
) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_OPTIONAL  # record whether a certificate was offered
    client = ca.issue_cert("alice@example.org")
    cert, key, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    client.cert_chain_pems[0].write_to_path(str(cert))
    client.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))

    with (
        FakeServer(lambda r: Reply(200, body=DATA), tls=server_ctx) as pool_srv,
        FakeServer(
            lambda r: Reply(302, headers={"Location": f"{pool_srv.url}/p?dcache-http-uuid=1"}), tls=server_ctx
        ) as door,
    ):
        extra = {"client_cert": str(cert), "client_key": str(key), "ca_bundle": str(ca_file), "frontend_url": door.url}
        conn_id = set_conn(host=door.url, extra=extra)
        buffer = io.BytesIO()
        run(conn_id, "download", "/data/f", buffer)
    assert buffer.getvalue() == DATA
    assert door.requests[0].peer_cert is not None and door.requests[0].header("Authorization") is None
    assert not pool_srv.requests[0].peer_cert  # the pool URL authorises itself
