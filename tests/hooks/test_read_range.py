"""``read_range``: a few bytes of a file without moving the file (a sync hook method: no async caller reads ranges).

Against the bundled server (which answers ``Range`` with ``206`` and ``416`` as dCache's pools do),
and on loopback servers scripted for what it does not do: ignore ``Range`` (``200`` with the whole
file), or answer a ``206`` that does not match the request.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_dcache import exceptions as exc
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.pipelines import steps
from tests.hooks.conftest import server_conn, sync_only
from tests.hooks.fakes import FakeServer, Recorded, Reply
from tests.hooks.test_http_behaviour import conn_for

Run = Callable[..., Any]
Conn = Callable[..., str]
DATA = os.urandom(300 * 1024 + 5)


@pytest.fixture
def alice_id(set_conn: Conn, dcache_server: Any) -> str:
    return server_conn(set_conn, dcache_server, "alice")


@pytest.fixture
def stored(alice: DCacheHook, workdir: str, tmp_path: Path) -> str:
    source = tmp_path / "data.bin"
    source.write_bytes(DATA)
    alice.upload(source, f"{workdir}/data.bin")
    return f"{workdir}/data.bin"


# ------------------------------------------------------------------------------ the bundled server


@sync_only
@pytest.mark.parametrize(("offset", "length"), [(0, 8), (1, 1), (1000, 5000), (len(DATA) - 4096, 4096)])
def test_reads_exactly_the_range(run: Run, alice_id: str, stored: str, offset: int, length: int) -> None:
    assert run(alice_id, "read_range", stored, offset, length) == DATA[offset:offset + length]


@sync_only
def test_a_range_past_the_end_is_short_and_beyond_it_empty(run: Run, alice_id: str, stored: str) -> None:
    size = len(DATA)
    assert run(alice_id, "read_range", stored, size - 3, 10) == DATA[-3:]
    assert run(alice_id, "read_range", stored, size, 8) == b""  # 416: starts at the end
    assert run(alice_id, "read_range", stored, size + 1000, 8) == b""


@sync_only
def test_empty_file_reads_as_empty(run: Run, alice_id: str, alice: DCacheHook, workdir: str,
                                   tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    alice.upload(tmp_path / "empty", f"{workdir}/empty")
    assert run(alice_id, "read_range", f"{workdir}/empty", 0, 8) == b""


@sync_only
def test_missing_file_and_directory_are_errors(run: Run, alice_id: str, workdir: str) -> None:
    with pytest.raises(exc.NotFound):
        run(alice_id, "read_range", f"{workdir}/nope", 0, 8)
    with pytest.raises(exc.Conflict, match="is a directory"):
        run(alice_id, "read_range", workdir, 0, 8)


@sync_only
@pytest.mark.parametrize(("offset", "length", "field"), [(-1, 8, "offset"), (0, 0, "length"), (0, -5, "length"),
                                                         (True, 8, "offset"), (0, 2.5, "length"), ("0", 8, "offset")])
def test_bad_arguments_name_the_field(run: Run, alice_id: str, offset: Any, length: Any, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        run(alice_id, "read_range", "/home/alice/x", offset, length)


# ------------------------------------------------------------------- servers the bundled one is not


class Counted:
    """A large chunked body made as it is sent, counting what the server got to send."""

    def __init__(self, data: bytes, copies: int) -> None:
        self.data, self.copies, self.sent = data, copies, 0

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self.copies):
            self.sent += 1
            yield self.data


@sync_only
def test_a_server_ignoring_range_is_read_only_up_to_the_range(run: Run, set_conn: Conn) -> None:
    chunk = bytes(range(256)) * 256  # 64 KiB; the whole "file" is 64 MiB, more than loopback buffers hold
    body = Counted(chunk, 1024)
    with FakeServer(lambda r: Reply(200, body=body)) as srv:
        got = run(conn_for(set_conn, srv), "read_range", "/data/big.h5", 70_000, 10)
    assert got == (chunk * 2)[70_000:70_010]
    assert body.sent < body.copies  # the client stopped reading and hung up
    (request,) = srv.requests
    assert request.header("Range") == "bytes=70000-70009"


@sync_only
def test_a_whole_file_reply_shorter_than_the_offset_is_empty(run: Run, set_conn: Conn) -> None:
    with FakeServer(lambda r: Reply(200, body=b"0123456789")) as srv:
        conn = conn_for(set_conn, srv)
        assert run(conn, "read_range", "/f", 4, 100) == b"456789"
        assert run(conn, "read_range", "/f", 50, 8) == b""


@sync_only
def test_the_range_header_survives_the_pool_redirect(run: Run, set_conn: Conn) -> None:
    def pool(req: Recorded) -> Reply:
        return Reply(206, headers={"Content-Range": "bytes 2-5/10"}, body=b"2345")

    with FakeServer(pool) as pool_srv, \
            FakeServer(lambda r: Reply(302, headers={"Location": f"{pool_srv.url}{r.path}?u=1"})) as door:
        assert run(conn_for(set_conn, door), "read_range", "/f", 2, 4) == b"2345"
    (req,) = pool_srv.requests
    assert req.header("Range") == "bytes=2-5" and req.header("Authorization") is None


@sync_only
@pytest.mark.parametrize(("headers", "body", "match"), [
    ({"Content-Range": "bytes 0-7/100"}, b"01234567", "asked for bytes from 4"),
    ({}, b"4567", "206 without a single Content-Range"),
    ({"Content-Range": "bytes 4-11/100"}, b"4567", "received 4 of 8 bytes"),
    ({"Content-Range": "bytes 4-11/100", "Content-Type": "multipart/byteranges; boundary=x"}, b"--x", "single"),
])
def test_a_206_that_is_not_the_range_asked_for_is_an_error(run: Run, set_conn: Conn, headers: dict[str, str],
                                                           body: bytes, match: str) -> None:
    with FakeServer(lambda r: Reply(206, headers=headers, body=body)) as srv, \
            pytest.raises(exc.UnexpectedResponse, match=match):
        run(conn_for(set_conn, srv), "read_range", "/f", 4, 8)


@sync_only
def test_a_206_with_more_than_asked_is_cut(run: Run, set_conn: Conn) -> None:
    with FakeServer(lambda r: Reply(206, headers={"Content-Range": "bytes 4-19/100"}, body=b"x" * 16)) as srv:
        assert run(conn_for(set_conn, srv), "read_range", "/f", 4, 8) == b"x" * 8


# ------------------------------------------------------------------------- the pipeline step using it


def test_check_hdf5_reads_the_signature_through_the_hook(alice: DCacheHook, workdir: str, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.h5", tmp_path / "bad.h5"
    good.write_bytes(steps.HDF5_SIGNATURE + os.urandom(4096))
    bad.write_bytes(b"not an HDF5 file at all")
    for f in (good, bad):
        alice.upload(f, f"{workdir}/{f.name}")
    item = steps.check_hdf5(alice, {"path": f"{workdir}/good.h5"})
    assert item["size"] == 8 + 4096 and item["checksums"].get("adler32")
    with pytest.raises(ValueError, match="no HDF5 signature"):
        steps.check_hdf5(alice, {"path": f"{workdir}/bad.h5"})
