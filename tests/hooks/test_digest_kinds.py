"""The hooks read checksums from ``Digest`` (RFC 3230) or ``Repr-Digest`` (RFC 9530), whichever the server speaks.

Three real servers: dCache 12 style (both), one that ignores ``Want-Repr-Digest`` (dCache before 12.0)
and one that ignores ``Want-Digest`` (``--digest-headers``). The access log shows which calls were made.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from airflow_dcache.hooks._checksums import digests_from_headers, parse_repr_digest, want_headers
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.testing.server import DCacheTestServer, start_server, stop_process

DATA = os.urandom(40_000)
SHA256 = hashlib.sha256(DATA).hexdigest()
SHA512 = hashlib.sha512(DATA).hexdigest()
ADLER = f"{zlib.adler32(DATA) & 0xFFFFFFFF:08x}"


@pytest.fixture(scope="module", params=["both", "rfc3230", "rfc9530"])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, DCacheTestServer, Path]]:
    base = tmp_path_factory.mktemp(f"digests-{request.param}")
    log = base / "access.jsonl"
    srv = start_server(base, "--digest-headers", request.param, "--access-log", str(log))
    try:
        yield request.param, srv, log
    finally:
        stop_process(srv.process)


def _upload(srv: DCacheTestServer, mode: str) -> str:
    """A file stored with adler32, sha-256 and sha-512, asked for in the form this server understands."""
    path = f"/home/alice/dk-{uuid.uuid4().hex[:8]}"
    headers = ({"Want-Digest": "sha-256,sha-512"} if mode == "rfc3230"
               else {"Want-Repr-Digest": "sha-256=9, sha-512=8"})
    auth = ("alice", srv.passwords["alice"])
    assert requests.put(srv.webdav + path, data=DATA, headers=headers, auth=auth, timeout=10).status_code == 201
    return path


def _conn(monkeypatch: pytest.MonkeyPatch, srv: DCacheTestServer) -> str:
    conn_id = f"dk_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", srv.connection_json("alice"))
    return conn_id


def _mark(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def _methods(log: Path, start: int) -> list[str]:
    return [json.loads(line)["method"] for line in log.read_text().splitlines()[start:] if line.strip()]


def test_sync_hook_gets_sha256_and_adler32_whatever_the_server_speaks(server, monkeypatch) -> None:
    mode, srv, log = server
    path = _upload(srv, mode)
    with DCacheHook(_conn(monkeypatch, srv)) as hook:
        sha = hook.checksum(path, ["sha-256"])
        start = _mark(log)
        both = hook.checksum(path, ["sha-256", "adler32"])
    assert sha == {"sha-256": SHA256}
    assert both == {"sha-256": SHA256, "adler32": ADLER}
    methods = _methods(log, start)
    # a server without RFC 3230 cannot say adler32 in a header: the namespace (one GET) fills it in
    assert ("GET" in methods) == (mode == "rfc9530"), methods


def test_parse_repr_digest_is_a_structured_dictionary() -> None:
    b64 = "X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="
    hexed = "5f8f04f6a3a892aaabbddb6cf273894493773960d4a325b105fee46eef4304f1"
    assert parse_repr_digest(f"sha-256=:{b64}:") == {"sha-256": hexed}
    assert parse_repr_digest(f"sha-512=:bm90:;x=1, sha-256=:{b64}:") == {"sha-512": "6e6f74", "sha-256": hexed}
    assert parse_repr_digest("sha-256=10, adler32=:***:, =:AA==:") == {}  # not byte sequences: skipped
    assert parse_repr_digest(None) == {}
    headers = {"Digest": "adler32=0badf00d,sha-256=" + "A" * 44, "repr-digest": f"sha-256=:{b64}:"}
    assert digests_from_headers(headers) == {"adler32": "0badf00d", "sha-256": hexed}  # RFC 9530 wins


def test_want_headers_ask_rfc9530_only_for_what_dcache_offers_there() -> None:
    assert want_headers(["adler32", "md5"]) == {"Want-Digest": "adler32,md5"}
    assert want_headers(["SHA512", "adler32", "sha256"]) == {"Want-Digest": "sha-512,adler32,sha-256",
                                                             "Want-Repr-Digest": "sha-512=10, sha-256=9"}


def test_sha256_upload_is_verified_whatever_the_server_speaks(server, monkeypatch) -> None:
    """An upload asks with both headers, so a dCache 12 door answering only ``Repr-Digest`` still
    returns the stored sha-256 for the hook to compare."""
    import io

    _, srv, _ = server
    path = f"/home/alice/up-{uuid.uuid4().hex[:8]}"
    with DCacheHook(_conn(monkeypatch, srv)) as hook:
        result = hook.upload(io.BytesIO(DATA), path, checksum="sha-256")
        stored = hook.checksum(path, ["sha-256"])
    assert result.verified_by in ("sha-256", "adler32"), result
    assert stored == {"sha-256": SHA256}
