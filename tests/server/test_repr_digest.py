"""RFC 9530 ``Want-Repr-Digest``/``Repr-Digest`` beside RFC 3230, as dCache 12.0 answers them, over real HTTP.

dCache offers only sha-256 and sha-512 through RFC 9530, as an RFC 8941 byte sequence
(``sha-256=:<base64>:``), and never checks an upload against a digest the client sends in
``Repr-Digest``/``Content-Digest``. ``--digest-headers`` makes a server answer one kind only.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import uuid

import pytest
import requests

DATA = os.urandom(70_000)
BYTE_SEQUENCE = re.compile(r"^(sha-256|sha-512)=:[A-Za-z0-9+/]+=*:$")


def b64(algorithm: str, data: bytes = DATA) -> str:
    return base64.b64encode(hashlib.new(algorithm, data).digest()).decode()


def _home(server) -> str:
    path = f"{server.webdav}/home/alice/rd-{uuid.uuid4().hex[:8]}"
    assert requests.request("MKCOL", path, auth=server.auth("alice"), timeout=10).status_code == 201
    return path


@pytest.fixture
def home(dcache_server) -> str:
    return _home(dcache_server)


def test_head_and_get_answer_repr_digest_as_a_structured_byte_sequence(alice, home):
    assert alice.put(f"{home}/f", data=DATA, headers={"Want-Repr-Digest": "sha-256=10, sha-512=2"}).status_code == 201
    head = alice.head(f"{home}/f", headers={"Want-Repr-Digest": "sha-256=10"})
    assert BYTE_SEQUENCE.match(head.headers["Repr-Digest"])
    assert head.headers["Repr-Digest"] == f"sha-256=:{b64('sha256')}:"
    get = alice.get(f"{home}/f", headers={"Want-Repr-Digest": "sha-512=7, sha-256=1"})
    assert get.content == DATA and get.headers["Repr-Digest"] == f"sha-512=:{b64('sha512')}:"


def test_repr_digest_never_carries_adler32_or_md5(alice, home):
    """dCache maps only SHA256/SHA512 to RFC 9530; adler32 (always stored) is RFC 3230 only."""
    assert alice.put(f"{home}/f", data=DATA, headers={"Want-Digest": "md5"}).status_code == 201
    r = alice.head(f"{home}/f", headers={"Want-Repr-Digest": "adler32=10, md5=9"})
    assert r.status_code == 200 and "Repr-Digest" not in r.headers


def test_client_sent_repr_digest_or_content_digest_is_not_verified_on_upload(alice, home):
    """dCache's door reads Content-MD5 only; a wrong Repr-Digest/Content-Digest does not fail the PUT."""
    wrong = f"sha-256=:{b64('sha256', b'other data')}:"
    r = alice.put(f"{home}/f", data=DATA, headers={"Repr-Digest": wrong, "Content-Digest": wrong})
    assert r.status_code == 201
    assert alice.get(f"{home}/f").content == DATA


def test_rfc3230_only_server_ignores_want_repr_digest(start_dcache):
    server = start_dcache("--digest-headers", "rfc3230", name="rfc3230")
    home = _home(server)
    auth = server.auth("alice")
    r = requests.put(f"{home}/f", data=DATA, auth=auth, timeout=10,
                     headers={"Want-Repr-Digest": "sha-256=10", "Want-Digest": "adler32"})
    assert r.status_code == 201 and "Repr-Digest" not in r.headers and r.headers["Digest"].startswith("adler32=")
    head = requests.head(f"{home}/f", auth=auth, timeout=10, headers={"Want-Repr-Digest": "sha-256=10"})
    assert "Repr-Digest" not in head.headers  # not understood, so sha-256 was not computed either
    assert "Digest" not in requests.head(f"{home}/f", auth=auth, timeout=10,
                                         headers={"Want-Digest": "sha-256"}).headers


def test_rfc9530_only_server_ignores_want_digest(start_dcache):
    server = start_dcache("--digest-headers", "rfc9530", name="rfc9530")
    home = _home(server)
    auth = server.auth("alice")
    r = requests.put(f"{home}/f", data=DATA, auth=auth, timeout=10,
                     headers={"Want-Repr-Digest": "sha-256=10", "Want-Digest": "md5"})
    assert r.status_code == 201 and "Digest" not in r.headers
    assert r.headers["Repr-Digest"] == f"sha-256=:{b64('sha256')}:"
    head = requests.head(f"{home}/f", auth=auth, timeout=10, headers={"Want-Digest": "adler32"})
    assert head.status_code == 200 and "Digest" not in head.headers and "Repr-Digest" not in head.headers
