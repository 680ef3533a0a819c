"""Digest headers, REST checksum lists and local hashing must agree on one canonical form."""

from __future__ import annotations

import base64
import hashlib
import zlib

import pytest

from airflow_dcache.hooks._checksums import (
    StreamingChecksum,
    canonical_algorithm,
    compare,
    digests_from_headers,
    from_rest,
    md5_base64,
    parse_digest_header,
    to_hex,
)

DATA = b"hello dCache\n" * 1000
MD5 = hashlib.md5(DATA).digest()
ADLER = f"{zlib.adler32(DATA) & 0xFFFFFFFF:08x}"


def test_digest_header_with_base64_padding() -> None:
    header = f"adler32={ADLER},md5={base64.b64encode(MD5).decode()}"
    assert parse_digest_header(header) == {"adler32": ADLER, "md5": MD5.hex()}


def test_digest_header_spacing_case_and_junk() -> None:
    assert parse_digest_header(" ADLER32=0AE07809 , bogus, =x, sha=") == {"adler32": "0ae07809"}
    assert parse_digest_header(None) == {}
    assert parse_digest_header("adler32=ae07809") == {"adler32": "0ae07809"}  # zero-padded


def test_sha_names() -> None:
    sha256 = hashlib.sha256(DATA).digest()
    header = f"sha-256={base64.b64encode(sha256).decode()},SHA={base64.b64encode(hashlib.sha1(DATA).digest()).decode()}"
    assert parse_digest_header(header) == {"sha-256": sha256.hex(), "sha": hashlib.sha1(DATA).hexdigest()}


def test_repr_digest_and_header_case() -> None:
    sha256 = hashlib.sha256(DATA).digest()
    headers = {"repr-digest": f"sha-256=:{base64.b64encode(sha256).decode()}:", "DIGEST": f"adler32={ADLER}"}
    assert digests_from_headers(headers) == {"sha-256": sha256.hex(), "adler32": ADLER}


def test_rest_checksums_use_enum_names_and_hex() -> None:
    items = [{"type": "ADLER32", "value": ADLER}, {"type": "MD5_TYPE", "value": MD5.hex().upper()}]
    assert from_rest(items) == {"adler32": ADLER, "md5": MD5.hex()}
    assert from_rest(None) == {}


@pytest.mark.parametrize(
    ("name", "canonical"),
    [("SHA1", "sha"), ("sha-1", "sha"), ("SHA256", "sha-256"), ("MD5_TYPE", "md5"), ("Adler32", "adler32")],
)
def test_algorithm_names(name: str, canonical: str) -> None:
    assert canonical_algorithm(name) == canonical


def test_to_hex_accepts_hex_md5_too() -> None:
    assert to_hex("md5", MD5.hex()) == to_hex("md5", base64.b64encode(MD5).decode()) == MD5.hex()


def test_streaming_checksum_matches_one_shot() -> None:
    hasher = StreamingChecksum(("adler32", "md5", "sha-256"))
    for i in range(0, len(DATA), 777):
        hasher.update(DATA[i : i + 777])
    assert hasher.size == len(DATA)
    assert hasher.hexdigests() == {"adler32": ADLER, "md5": MD5.hex(), "sha-256": hashlib.sha256(DATA).hexdigest()}


def test_empty_adler32_is_one() -> None:
    assert StreamingChecksum().hexdigests() == {"adler32": "00000001"}


def test_unknown_algorithm() -> None:
    with pytest.raises(ValueError):
        StreamingChecksum(("crc64",))


def test_content_md5_is_base64() -> None:
    assert md5_base64(MD5.hex()) == base64.b64encode(MD5).decode()


def test_compare_prefers_the_strongest_shared_algorithm_and_needs_overlap() -> None:
    # a corrupted transfer whose adler32 happens to collide is still caught by the stronger hash
    assert compare({"adler32": "a", "md5": "b"}, {"md5": "c", "adler32": "a"}) == ("md5", "b", "c")
    assert compare({"adler32": "a", "sha-256": "s", "md5": "m"}, {"sha-256": "s", "md5": "m", "adler32": "a"}) \
        == ("sha-256", "s", "s")
    assert compare({"md5": "b"}, {"md5": "c"}) == ("md5", "b", "c")
    assert compare({"adler32": "a"}, {"md5": "b"}) is None
