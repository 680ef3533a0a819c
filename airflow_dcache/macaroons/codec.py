"""Macaroon V1 binary format and HMAC chain, compatible with jmacaroons (dCache) and pymacaroons.

dCache serialises with jmacaroons' V1 format: a sequence of packets, each ``LLLLkey value\\n`` where
``LLLL`` is the total packet length in four hex digits, wrapped in URL-safe base64 without padding.
The Airflow hook uses this module without the server (to attenuate a macaroon it holds), so it must
not import anything from ``airflow_dcache.server``.

The parser is deliberately stricter than jmacaroons (which silently ignores unknown packets and
short signatures): a token that is not exactly what a macaroon library writes is refused with a
:class:`MacaroonFormatError` that says where and why, so callers never see an ``IndexError``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass, field

SIGNATURE_BYTES = 32
_MAX_PACKET = 0xFFFF
_HEADER = 4
_KEY_GENERATOR = b"macaroons-key-generator"
_B64_CHARS = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
_HEX4 = re.compile(rb"[0-9a-fA-F]{4}")


class MacaroonFormatError(ValueError):
    """The token is not a well-formed V1 macaroon; ``str(err)`` says exactly what is wrong."""


@dataclass(frozen=True)
class CaveatPacket:
    """One caveat: a first-party predicate, or a third-party caveat (``vid`` set).

    ``cid`` stays as raw bytes because the HMAC chain is computed over the bytes as sent.
    """

    cid: bytes
    vid: bytes | None = None
    cl: str | None = None

    @property
    def is_third_party(self) -> bool:
        return self.vid is not None

    @property
    def text(self) -> str:
        """The predicate as text; undecodable bytes become U+FFFD as in jmacaroons' ``new String``."""
        return self.cid.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Macaroon:
    """An immutable macaroon; attenuation returns a new instance."""

    location: str
    identifier: str
    caveats: tuple[CaveatPacket, ...] = field(default_factory=tuple)
    signature: bytes = b""

    @property
    def first_party_caveats(self) -> list[str]:
        return [c.text for c in self.caveats if not c.is_third_party]

    @property
    def has_third_party_caveats(self) -> bool:
        return any(c.is_third_party for c in self.caveats)


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def derive_key(secret: bytes | str) -> bytes:
    """The root key pymacaroons and jmacaroons' String API derive from a secret, for interop."""
    return _hmac(_KEY_GENERATOR, _as_bytes(secret))


def create(secret: bytes | str, identifier: str, location: str = "") -> Macaroon:
    """Mint a caveat-free macaroon whose signature only the holder of ``secret`` can produce."""
    sig = _hmac(derive_key(secret), identifier.encode("utf-8"))
    return Macaroon(location=location, identifier=identifier, caveats=(), signature=sig)


def add_first_party_caveat(macaroon: Macaroon, predicate: str) -> Macaroon:
    """Attenuate: needs only the current signature, which is why any holder can narrow a token."""
    raw = predicate.encode("utf-8")
    return Macaroon(
        location=macaroon.location,
        identifier=macaroon.identifier,
        caveats=(*macaroon.caveats, CaveatPacket(cid=raw)),
        signature=_hmac(macaroon.signature, raw),
    )


def _chain(macaroon: Macaroon, secret: bytes | str) -> bytes:
    sig = _hmac(derive_key(secret), macaroon.identifier.encode("utf-8"))
    for caveat in macaroon.caveats:
        if caveat.vid is None:
            sig = _hmac(sig, caveat.cid)
        else:
            # Third-party binding as in libmacaroons; discharges are not checked here.
            sig = _hmac(sig, _hmac(sig, caveat.vid) + _hmac(sig, caveat.cid))
    return sig


def verify_signature(macaroon: Macaroon, secret: bytes | str) -> bool:
    """True when the HMAC chain over identifier and caveats reproduces the signature.

    Only the chain is checked: caveat meaning and third-party discharges are the caller's job.
    """
    return hmac.compare_digest(_chain(macaroon, secret), macaroon.signature)


def _packet(key: bytes, value: bytes) -> bytes:
    size = _HEADER + len(key) + 1 + len(value) + 1
    if size > _MAX_PACKET:
        raise MacaroonFormatError(f"{key.decode()} packet of {size} bytes exceeds the V1 limit of 65535")
    return b"%04x%s %s\n" % (size, key, value)


def serialize(macaroon: Macaroon) -> str:
    """V1 binary, URL-safe base64 without padding: exactly what dCache hands out."""
    if len(macaroon.signature) != SIGNATURE_BYTES:
        raise MacaroonFormatError(f"signature must be {SIGNATURE_BYTES} bytes, got {len(macaroon.signature)}")
    out = [_packet(b"location", macaroon.location.encode("utf-8"))]
    out.append(_packet(b"identifier", macaroon.identifier.encode("utf-8")))
    for caveat in macaroon.caveats:
        out.append(_packet(b"cid", caveat.cid))
        if caveat.vid is not None:
            out.append(_packet(b"vid", caveat.vid))
            if caveat.cl is not None:
                out.append(_packet(b"cl", caveat.cl.encode("utf-8")))
    out.append(_packet(b"signature", macaroon.signature))
    return base64.urlsafe_b64encode(b"".join(out)).decode("ascii").rstrip("=")


def _b64decode(token: str) -> bytes:
    if not token:
        raise MacaroonFormatError("empty token")
    if not _B64_CHARS.fullmatch(token):
        bad = [ch for ch in token if not re.fullmatch(r"[A-Za-z0-9+/_-]", ch) and ch != "="]
        if bad:
            raise MacaroonFormatError(f"not base64: unexpected character {bad[0]!r}")
        raise MacaroonFormatError("not base64: '=' padding inside the token")
    body = token.rstrip("=")
    if body != token and len(token) % 4:
        raise MacaroonFormatError("not base64: padding does not complete a 4-character group")
    if len(body) % 4 == 1:
        raise MacaroonFormatError(f"not base64: {len(body)} characters cannot encode whole bytes")
    std = body.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(std + "=" * (-len(std) % 4), validate=True)
    except binascii.Error as exc:  # pragma: no cover - the checks above leave nothing for this
        raise MacaroonFormatError(f"not base64: {exc}") from None


def _split_packets(data: bytes) -> list[tuple[int, bytes, bytes]]:
    packets: list[tuple[int, bytes, bytes]] = []
    pos = 0
    while pos < len(data):
        head = data[pos : pos + _HEADER]
        if len(head) < _HEADER:
            raise MacaroonFormatError(f"truncated: {len(head)} stray byte(s) at offset {pos}")
        if not _HEX4.fullmatch(head):
            raise MacaroonFormatError(f"bad packet length {head!r} at offset {pos}: expected 4 hex digits")
        size = int(head, 16)
        if size < _HEADER + 2:
            raise MacaroonFormatError(f"packet at offset {pos} declares impossible length {size}")
        if pos + size > len(data):
            raise MacaroonFormatError(
                f"truncated: packet at offset {pos} declares {size} bytes, only {len(data) - pos} remain"
            )
        body = data[pos + _HEADER : pos + size]
        if not body.endswith(b"\n"):
            raise MacaroonFormatError(f"packet at offset {pos} does not end with a newline")
        key, sep, value = body[:-1].partition(b" ")
        if not sep:
            raise MacaroonFormatError(f"packet at offset {pos} has no space between key and value")
        packets.append((pos, key, value))
        pos += size
    return packets


def _text(pos: int, key: bytes, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise MacaroonFormatError(f"{key.decode()} packet at offset {pos} is not UTF-8") from None


def _expect(packets: list[tuple[int, bytes, bytes]], i: int, key: bytes) -> tuple[int, bytes]:
    if i >= len(packets):
        raise MacaroonFormatError(f"truncated: missing {key.decode()} packet")
    pos, got, value = packets[i]
    if got != key:
        name = got.decode("ascii", errors="replace")
        raise MacaroonFormatError(f"expected {key.decode()} packet at offset {pos}, found {name!r}")
    return pos, value


def deserialize(token: str) -> Macaroon:
    """Parse a V1 macaroon from URL-safe or standard base64, padded or not.

    Raises :class:`MacaroonFormatError` for anything else, including trailing data after the
    signature and caveat packets in an order no macaroon library writes.
    """
    if not isinstance(token, str):
        raise MacaroonFormatError(f"token must be a string, not {type(token).__name__}")
    packets = _split_packets(_b64decode(token.strip()))
    if not packets:
        raise MacaroonFormatError("no packets")
    pos, value = _expect(packets, 0, b"location")
    location = _text(pos, b"location", value)
    pos, value = _expect(packets, 1, b"identifier")
    identifier = _text(pos, b"identifier", value)
    caveats: list[CaveatPacket] = []
    i = 2
    while i < len(packets) and packets[i][1] == b"cid":
        cid = packets[i][2]
        vid: bytes | None = None
        cl: str | None = None
        i += 1
        if i < len(packets) and packets[i][1] == b"vid":
            vid = packets[i][2]
            i += 1
            if i < len(packets) and packets[i][1] == b"cl":
                cl = _text(packets[i][0], b"cl", packets[i][2])
                i += 1
        caveats.append(CaveatPacket(cid=cid, vid=vid, cl=cl))
    pos, signature = _expect(packets, i, b"signature")
    if len(signature) != SIGNATURE_BYTES:
        raise MacaroonFormatError(
            f"signature at offset {pos} is {len(signature)} bytes, expected {SIGNATURE_BYTES}"
        )
    if i + 1 < len(packets):
        raise MacaroonFormatError(f"unexpected data after the signature at offset {packets[i + 1][0]}")
    return Macaroon(location=location, identifier=identifier, caveats=tuple(caveats), signature=signature)
