"""The checksum algorithms dCache knows, under each of the names its interfaces use for them.

One table, because the same algorithm is spelt four ways: the namespace column (``sha256``), the
RFC 3230 token in ``Want-Digest``/``Digest`` (``sha-256``), the Java enum name in the frontend's JSON
(``SHA256``) and the numeric type in dCache's checksum-mismatch messages (``5:``). ADLER32 is always
computed; the others only when an upload asks for them, as a dCache pool does.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from airflow_dcache.server.storage.namespace_db import Inode


@dataclass(frozen=True)
class Algorithm:
    key: str  # namespace column and hashlib name
    token: str  # RFC 3230 / RFC 9530 name
    enum: str  # dCache's ChecksumType enum name in REST JSON
    type_code: int  # dCache's ChecksumType number, as in "expected=[2:…]"

    def header_value(self, hex_value: str) -> str:
        """The value as a ``Digest`` header carries it: adler32 in hex, the others base64 of the bytes."""
        if self.key == "adler32":
            return hex_value
        return base64.b64encode(bytes.fromhex(hex_value)).decode("ascii")

    def new(self) -> hashlib._Hash:
        return hashlib.new(self.key)


ADLER32 = Algorithm("adler32", "adler32", "ADLER32", 1)
MD5 = Algorithm("md5", "md5", "MD5_TYPE", 2)
SHA1 = Algorithm("sha1", "sha", "SHA1", 4)
SHA256 = Algorithm("sha256", "sha-256", "SHA256", 5)
SHA512 = Algorithm("sha512", "sha-512", "SHA512", 6)

ALL: tuple[Algorithm, ...] = (ADLER32, MD5, SHA1, SHA256, SHA512)
OPTIONAL: tuple[Algorithm, ...] = (MD5, SHA1, SHA256, SHA512)  # computed at upload only when asked for
BY_TOKEN = {a.token: a for a in ALL} | {"sha-1": SHA1}  # RFC 3230 says "sha"; accept the common alias


def stored(node: Inode) -> dict[Algorithm, str]:
    """The checksums a file has, as hex, strongest last (adler32 first)."""
    return {a: value for a in ALL if (value := getattr(node, a.key))}


def optional_for_tokens(tokens: Iterable[str]) -> list[Algorithm]:
    """The non-default algorithms named among RFC 3230 tokens (unknown names are ignored, as dCache does)."""
    wanted = {BY_TOKEN[t] for t in tokens if t in BY_TOKEN}
    return [a for a in OPTIONAL if a in wanted]
