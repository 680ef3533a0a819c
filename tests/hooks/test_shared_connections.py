"""Connections are reused: a third-party copy's macaroon hook sends over its site hook's pool, and a reply
read only in part (a copy's final line, a range read's bytes) is read to its end so its connection
goes back to the pool. Against the bundled server; new connections are counted at urllib3's ``connect``.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3.connection

from airflow_dcache.exceptions import PermissionDenied
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.transfers.tpc import ThirdPartyCopy, macaroon_hook


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The number of TCP connections opened so far (in a one-element list)."""
    count = [0]
    for cls in (urllib3.connection.HTTPConnection, urllib3.connection.HTTPSConnection):
        def connect(self: urllib3.connection.HTTPConnection, _real: Any = cls.connect) -> None:
            count[0] += 1
            _real(self)

        monkeypatch.setattr(cls, "connect", connect)
    yield count


def test_copies_reuse_the_site_hooks_connections(alice: DCacheHook, workdir: str, connects: list[int]) -> None:
    for i in range(4):
        alice.upload(io.BytesIO(b"data %d " % i * 100), f"{workdir}/src-{i}.h5")
    copier = ThirdPartyCopy(alice, alice)
    copier.copy(f"{workdir}/src-0.h5", f"{workdir}/dst-0.h5")  # the pool is warm from here on
    warm = connects[0]
    for i in range(1, 4):
        result = copier.copy(f"{workdir}/src-{i}.h5", f"{workdir}/dst-{i}.h5")
        assert result is not None
        assert alice.read_range(f"{workdir}/dst-{i}.h5", 0, 6) == b"data %d" % i
    assert connects[0] == warm, f"{connects[0] - warm} new connection(s) for 3 copies and 3 range reads"


def test_a_shared_hook_has_its_own_credential_and_cookies(alice: DCacheHook, workdir: str,
                                                          connects: list[int]) -> None:
    alice.upload(io.BytesIO(b"x" * 100), f"{workdir}/f.h5")
    macaroon = alice.mint_macaroon(f"{workdir}/f.h5", activities=["DOWNLOAD"], validity=300, mask=False).macaroon
    alice.get_conn().cookies.set("session", "of-alice")
    narrow = macaroon_hook(alice, macaroon, mask=False)
    with narrow:
        assert narrow.get_conn() is not alice.get_conn() and not narrow.get_conn().cookies
        assert narrow.read_range(f"{workdir}/f.h5", 0, 4) == b"xxxx"
        # the macaroon is for DOWNLOAD of that one file: the shared connection does not widen it
        with pytest.raises(PermissionDenied):
            narrow.upload(io.BytesIO(b"y"), f"{workdir}/other.h5")
    before = connects[0]
    assert alice.read_range(f"{workdir}/f.h5", 0, 2) == b"xx"  # closing the shared hook left the pool open
    assert connects[0] == before


def test_a_client_certificate_connection_never_carries_the_shared_hooks_requests(
        set_conn: Any, dcache_tls_server: Any, connects: list[int]) -> None:
    """Over TLS, a connection opened with the site hook's client certificate authenticates as its owner:
    the macaroon hook gets connections of its own (urllib3 keys pools by client certificate), and reuses those."""
    conn_id = set_conn(host=dcache_tls_server.webdav, extra={
        "frontend_url": dcache_tls_server.frontend, "auth_type": "x509", "ca_bundle": dcache_tls_server.ca_pem,
        "client_cert": dcache_tls_server.info["alice_client_pem"]})
    path = f"/home/alice/shared-{uuid.uuid4().hex[:8]}.bin"
    with DCacheHook(conn_id) as alice:
        alice.upload(io.BytesIO(b"z" * 100), path)
        macaroon = alice.mint_macaroon(path, activities=["DOWNLOAD"], validity=300, mask=False).macaroon
        with macaroon_hook(alice, macaroon, mask=False) as narrow:
            before = connects[0]
            assert narrow.read_range(path, 0, 3) == b"zzz"
            assert connects[0] == before + 1  # not alice's certificate connection
            assert narrow.read_range(path, 3, 3) == b"zzz"
            assert connects[0] == before + 1  # its own, reused
            with pytest.raises(PermissionDenied):  # the macaroon's rights, not the certificate's
                narrow.upload(io.BytesIO(b"y"), f"{path}.other")
        assert alice.exists(path)
