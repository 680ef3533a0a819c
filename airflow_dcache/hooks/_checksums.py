"""Checksums as dCache speaks them (RFC 3230 ``Digest``, RFC 9530 ``Repr-Digest``, REST JSON).

Every form is normalised to lowercase hex so that a value from a header, a REST listing and a local
computation can be compared with ``==``: adler32 is hex on the wire already, md5/sha are base64.

dCache 12.0 answers ``Want-Repr-Digest`` with ``Repr-Digest: sha-256=:<base64>:`` for sha-256 and
sha-512 only, and when a request carries both ``Want-*`` headers it reads *only* ``Want-Repr-Digest``
(``Checksums.digestType``). So a client asks RFC 9530 only for those two algorithms and keeps RFC 3230
``Want-Digest`` for the rest; older dCache ignores ``Want-Repr-Digest`` and answers ``Digest``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Iterable, Mapping

# RFC 3230 token -> hashlib name; adler32 is handled by zlib.
_HASHLIB = {"md5": "md5", "sha": "sha1", "sha-1": "sha1", "sha-256": "sha256", "sha-512": "sha512"}
# REST JSON enum names (ChecksumType) -> RFC 3230 token.
_REST_NAMES = {
    "ADLER32": "adler32",
    "MD5_TYPE": "md5",
    "MD5": "md5",
    "SHA1": "sha",
    "SHA256": "sha-256",
    "SHA512": "sha-512",
    "MD4_TYPE": "md4",
}
SUPPORTED = ("adler32", *_HASHLIB)
#: The algorithms dCache offers through RFC 9530 ``Repr-Digest``.
REPR_ALGORITHMS = ("sha-256", "sha-512")


def canonical_algorithm(name: str) -> str:
    """``SHA-1``/``sha1``/``SHA1`` all name one algorithm; use the RFC 3230 token as the key."""
    key = name.strip()
    if key.upper() in _REST_NAMES:
        return _REST_NAMES[key.upper()]
    key = key.lower()
    return {"sha1": "sha", "sha-1": "sha", "sha256": "sha-256", "sha512": "sha-512"}.get(key, key)


def to_hex(algorithm: str, value: str) -> str:
    """Normalise a wire value: adler32 stays hex (zero-padded), others are base64 or already hex."""
    algorithm = canonical_algorithm(algorithm)
    value = value.strip().strip(":")  # Repr-Digest wraps base64 in colons
    if algorithm == "adler32":
        return value.lower().zfill(8)
    expected = {"md5": 16, "md4": 16, "sha": 20, "sha-256": 32, "sha-512": 64}.get(algorithm)
    if expected is not None and len(value) == expected * 2:
        try:
            bytes.fromhex(value)
            return value.lower()
        except ValueError:
            pass
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), validate=True).hex()
    except (binascii.Error, ValueError):
        return value.lower()


def parse_digest_header(value: str | None) -> dict[str, str]:
    """Parse ``Digest: adler32=5ae07809,md5=rFb0uPrFc5zNtFd30xO+zw==`` (base64 may end in ``=``)."""
    result: dict[str, str] = {}
    if not value:
        return result
    for item in value.split(","):
        algorithm, sep, raw = item.strip().partition("=")
        if not sep or not algorithm.strip() or not raw.strip():
            continue
        key = canonical_algorithm(algorithm)
        result[key] = to_hex(key, raw)
    return result


def parse_repr_digest(value: str | None) -> dict[str, str]:
    """Parse an RFC 9530 ``Repr-Digest``/``Content-Digest`` (an RFC 8941 dictionary of byte sequences).

    ``sha-256=:X48E9q…=:, sha-512=:…:;p=1`` → ``{"sha-256": "<hex>", …}``. Member parameters are
    dropped; a member whose value is not a ``:base64:`` byte sequence is skipped, not guessed at.
    """
    result: dict[str, str] = {}
    for member in (value or "").split(","):
        key, sep, raw = member.strip().partition("=")
        raw = raw.split(";", 1)[0].strip()
        if not sep or not key.strip() or len(raw) < 2 or raw[0] != ":" or raw[-1] != ":":
            continue
        algorithm = canonical_algorithm(key)
        try:
            result[algorithm] = base64.b64decode(raw[1:-1], validate=True).hex()
        except (binascii.Error, ValueError):
            continue
    return result


def digests_from_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Checksums a response reports in ``Digest`` and/or ``Repr-Digest`` (names are case-insensitive).

    Either kind alone is enough; when both name the same algorithm the RFC 9530 value wins, as the
    newer, unambiguous (typed byte sequence) form.
    """
    rfc3230: dict[str, str] = {}
    rfc9530: dict[str, str] = {}
    for name, value in headers.items():
        if name.lower() == "digest":
            rfc3230.update(parse_digest_header(value))
        elif name.lower() == "repr-digest":
            rfc9530.update(parse_repr_digest(value))
    return {**rfc3230, **rfc9530}


def has_rfc3230(headers: Mapping[str, str]) -> bool:
    """Whether a response carries an RFC 3230 ``Digest`` (so the server speaks the older form too)."""
    return any(name.lower() == "digest" for name in headers)


def want_headers(algorithms: Iterable[str]) -> dict[str, str]:
    """``Want-Digest`` for every algorithm plus ``Want-Repr-Digest`` for those RFC 9530 can carry in dCache.

    Preferences follow the given order (first is most wanted): RFC 9530 weights 10, 9, … and plain
    RFC 3230 tokens (dCache breaks their ties strongest first). A list with neither sha-256 nor
    sha-512 sends no ``Want-Repr-Digest``, since dCache 12 would then answer it instead of
    ``Want-Digest`` and have nothing to say.
    """
    names = list(dict.fromkeys(canonical_algorithm(a) for a in algorithms))
    headers = {"Want-Digest": ",".join(names)} if names else {}
    repr_names = [n for n in names if n in REPR_ALGORITHMS]
    if repr_names:
        headers["Want-Repr-Digest"] = ", ".join(f"{n}={10 - i}" for i, n in enumerate(repr_names))
    return headers


def from_rest(items: Iterable[Mapping[str, str]] | None) -> dict[str, str]:
    """``[{"type":"ADLER32","value":"5ae07809"}]`` → ``{"adler32": "5ae07809"}``."""
    result: dict[str, str] = {}
    for item in items or ():
        kind, value = item.get("type"), item.get("value")
        if kind and value:
            key = canonical_algorithm(kind)
            result[key] = to_hex(key, value)
    return result


class StreamingChecksum:
    """Hash data as it passes through a stream, so verification never needs a second read."""

    def __init__(self, algorithms: Iterable[str] = ("adler32",)) -> None:
        self._adler: int | None = None
        self._hashes: dict[str, hashlib._Hash] = {}
        self.size = 0
        for name in algorithms:
            key = canonical_algorithm(name)
            if key == "adler32":
                self._adler = 1
            elif key in _HASHLIB:
                self._hashes[key] = hashlib.new(_HASHLIB[key])
            else:
                raise ValueError(f"unsupported checksum algorithm {name!r}")

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._adler is not None:
            self._adler = zlib.adler32(chunk, self._adler)
        for h in self._hashes.values():
            h.update(chunk)

    def hexdigests(self) -> dict[str, str]:
        result = {key: h.hexdigest() for key, h in self._hashes.items()}
        if self._adler is not None:
            result["adler32"] = f"{self._adler & 0xFFFFFFFF:08x}"
        return result


def md5_base64(hexdigest: str) -> str:
    """``Content-MD5`` wants base64 of the raw bytes, not hex."""
    return base64.b64encode(bytes.fromhex(hexdigest)).decode("ascii")


def compare(local: Mapping[str, str], remote: Mapping[str, str]) -> tuple[str, str, str] | None:
    """Return ``(algorithm, local, remote)`` for the strongest algorithm both sides have, else ``None``."""
    for algorithm in ("sha-512", "sha-256", "sha", "md5", "adler32"):
        if algorithm in local and algorithm in remote:
            return algorithm, local[algorithm], remote[algorithm]
    return None
