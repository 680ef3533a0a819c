"""Checksums beyond adler32 over real HTTP: which ones an upload computes, and how each interface reports them.

dCache computes adler32 for every upload and MD5/SHA-1/SHA-256/SHA-512 only when the PUT asks for them
with ``Want-Digest`` or ``Want-Repr-Digest``; reads answer with stored values only.
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
import xml.etree.ElementTree as ET
import zlib

import pytest

DATA = os.urandom(150_000) + b"tail"


def b64(algorithm: str) -> str:
    return base64.b64encode(hashlib.new(algorithm, DATA).digest()).decode()


def adler() -> str:
    return format(zlib.adler32(DATA) & 0xFFFFFFFF, "08x")


@pytest.fixture
def home(dcache_server, alice):
    url = f"{dcache_server.webdav}/home/alice/ck-{uuid.uuid4().hex[:8]}"
    assert alice.request("MKCOL", url).status_code == 201
    return url


@pytest.mark.parametrize(("token", "algorithm"), [("sha-256", "sha256"), ("sha-512", "sha512"), ("sha", "sha1"),
                                                  ("md5", "md5")])
def test_put_computes_what_want_digest_names(alice, home, token, algorithm):
    r = alice.put(f"{home}/f", data=DATA, headers={"Want-Digest": token})
    assert r.status_code == 201
    assert r.headers["Digest"] == f"{token}={b64(algorithm)}"
    for method in (alice.head, alice.get):
        got = method(f"{home}/f", headers={"Want-Digest": token})
        assert got.headers["Digest"] == f"{token}={b64(algorithm)}"


def test_reads_answer_only_with_stored_checksums(alice, home):
    assert alice.put(f"{home}/f", data=DATA).status_code == 201  # adler32 only, as a pool does by default
    r = alice.head(f"{home}/f", headers={"Want-Digest": "sha-256"})
    assert r.status_code == 200 and "Digest" not in r.headers
    r = alice.head(f"{home}/f", headers={"Want-Digest": "sha-512, adler32;q=0.1"})
    assert r.headers["Digest"] == f"adler32={adler()}"


def test_q_values_then_strongest_first(alice, home):
    assert alice.put(f"{home}/f", data=DATA, headers={"Want-Digest": "md5, sha, sha-256"}).status_code == 201
    assert alice.head(f"{home}/f", headers={"Want-Digest": "adler32,md5,sha,sha-256"}).headers["Digest"] \
        == f"sha-256={b64('sha256')}"
    assert alice.head(f"{home}/f", headers={"Want-Digest": "sha-256;q=0.3, md5;q=0.9"}).headers["Digest"] \
        == f"md5={b64('md5')}"
    assert alice.head(f"{home}/f", headers={"Want-Digest": "sha-256;q=0, adler32"}).headers["Digest"] \
        == f"adler32={adler()}"


def test_want_repr_digest_is_rfc_9530_and_wins_over_want_digest(alice, home):
    r = alice.put(f"{home}/f", data=DATA, headers={"Want-Repr-Digest": "sha-512=3, sha-256=9"})
    assert r.status_code == 201
    assert r.headers["Repr-Digest"] == f"sha-256=:{b64('sha256')}:" and "Digest" not in r.headers
    both = alice.head(f"{home}/f", headers={"Want-Repr-Digest": "sha-512=10", "Want-Digest": "adler32"})
    assert both.headers["Repr-Digest"] == f"sha-512=:{b64('sha512')}:" and "Digest" not in both.headers
    # RFC 9530 covers only sha-256 and sha-512 in dCache: md5 there is ignored, never computed
    r = alice.put(f"{home}/g", data=DATA, headers={"Want-Repr-Digest": "md5=10"})
    assert r.status_code == 201 and "Repr-Digest" not in r.headers
    assert "Digest" not in alice.head(f"{home}/g", headers={"Want-Digest": "md5"}).headers


def test_frontend_and_propfind_list_every_stored_checksum(dcache_server, alice, home):
    assert alice.put(f"{home}/f", data=DATA, headers={"Want-Digest": "md5,sha,sha-512"}).status_code == 201
    rel = home.split("/home/alice/", 1)[1]
    doc = alice.get(f"{dcache_server.api}/namespace/home/alice/{rel}/f?checksum=true").json()
    assert doc["checksums"] == [
        {"type": "ADLER32", "value": adler()},
        {"type": "MD5_TYPE", "value": hashlib.md5(DATA).hexdigest()},
        {"type": "SHA1", "value": hashlib.sha1(DATA).hexdigest()},
        {"type": "SHA512", "value": hashlib.sha512(DATA).hexdigest()},
    ]
    body = ('<?xml version="1.0"?><propfind xmlns="DAV:" xmlns:d="http://www.dcache.org/2013/webdav">'
            "<prop><d:Checksums/></prop></propfind>")
    r = alice.request("PROPFIND", f"{home}/f", data=body, headers={"Depth": "0", "Content-Type": "application/xml"})
    value = ET.fromstring(r.content).findtext(".//{http://www.dcache.org/2013/webdav}Checksums")
    assert value == f"md5={b64('md5')},sha={b64('sha1')},sha-512={b64('sha512')},adler32={adler()}"


def test_content_md5_mismatch_names_every_computed_type_and_stores_nothing(alice, home):
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    r = alice.put(f"{home}/f", data=DATA, headers={"Content-MD5": wrong, "Want-Digest": "sha-512,sha-256,sha"})
    assert r.status_code == 400
    actual = (f"actual=[1:{adler()}, 2:{hashlib.md5(DATA).hexdigest()}, 4:{hashlib.sha1(DATA).hexdigest()}, "
              f"5:{hashlib.sha256(DATA).hexdigest()}, 6:{hashlib.sha512(DATA).hexdigest()}])")
    assert r.reason.endswith(actual) and r.json()["detail"].endswith(actual)  # the whole text, not cut short
    assert alice.head(f"{home}/f").status_code == 404


def test_unanswerable_want_repr_digest_falls_back_to_want_digest(alice, home):
    r = alice.put(f"{home}/f", data=DATA, headers={"Want-Repr-Digest": "md5=10"})
    assert r.headers["Digest"] == f"adler32={adler()}" and "Repr-Digest" not in r.headers  # PUT's default
    both = alice.head(f"{home}/f", headers={"Want-Repr-Digest": "sha-256=5", "Want-Digest": "adler32"})
    assert both.headers["Digest"] == f"adler32={adler()}" and "Repr-Digest" not in both.headers


def test_want_repr_digest_preferences_are_clamped_and_parameters_ignored(alice, home):
    assert alice.put(f"{home}/f", data=DATA, headers={"Want-Digest": "sha-256,sha-512"}).status_code == 201
    r = alice.head(f"{home}/f", headers={"Want-Repr-Digest": "sha-256=99, sha-512=10"})
    assert r.headers["Repr-Digest"] == f"sha-512=:{b64('sha512')}:"  # 99 counts as 10; ties go to the stronger
    r = alice.head(f"{home}/f", headers={"Want-Repr-Digest": "sha-512=-3;x=1, sha-256=2;q"})
    assert r.headers["Repr-Digest"] == f"sha-256=:{b64('sha256')}:"

