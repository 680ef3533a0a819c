"""Reading and attenuating macaroons that dCache minted, on pymacaroons (the client side).

pymacaroons reads and writes dCache's V1 tokens byte for byte, so the hooks use it to look inside a
minted macaroon (who, until when, which activities and paths) and to narrow it before handing it on.
Its V1 parser is lax with damaged input, though: it accepts a truncated or missing signature, keeps
caveats found after the signature, and fails with ``IndexError`` or a late ``UnicodeDecodeError`` on
some malformed tokens (``tests/macaroons/test_pymacaroons_gaps.py`` shows each case). :func:`parse_token`
therefore wraps it with the checks it lacks: V1 only, a 32-byte signature, UTF-8 caveats, and the token
must re-serialise to exactly the bytes received. The bundled server, which must refuse hostile bearer
tokens with dCache's precise reasons, keeps the strict :mod:`airflow_dcache.macaroons.codec`.

Nothing here verifies a signature: only dCache holds the secret. The token itself is a credential and
is never part of a :class:`MacaroonInfo`, its ``repr`` or its ``to_dict()``.
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pymacaroons
from pymacaroons.exceptions import MacaroonDeserializationException
from pymacaroons.serializers.binary_serializer import BinarySerializer
from pymacaroons.utils import raw_b64decode

from airflow_dcache.macaroons import caveats as cv

_SIGNATURE_HEX = 64
_PARSE_ERRORS = (MacaroonDeserializationException, ValueError, TypeError, IndexError, struct.error, binascii.Error)


def _refuse(why: str) -> ValueError:
    return ValueError(f"macaroon: {why}")


def parse_token(token: str) -> pymacaroons.Macaroon:
    """Deserialise a dCache macaroon with pymacaroons, refusing what pymacaroons would let through.

    :param token: the macaroon as dCache hands it out (URL-safe base64, padded or not, surrounding
        whitespace ignored).
    :raises ValueError: naming the ``macaroon`` and what is wrong with it (never the token itself).
    """
    if not isinstance(token, str):
        raise _refuse(f"expected a string, got {type(token).__name__}")
    text = token.strip()
    if not text:
        raise _refuse("empty token")
    try:
        raw = raw_b64decode(text)
        macaroon = pymacaroons.Macaroon.deserialize(text)
    except _PARSE_ERRORS as exc:
        raise _refuse(f"not a macaroon ({type(exc).__name__})") from None
    if macaroon.version != pymacaroons.MACAROON_V1:
        raise _refuse("not in the V1 format dCache writes")
    if len(macaroon.signature_bytes or b"") != _SIGNATURE_HEX:
        raise _refuse("signature missing or not 32 bytes (truncated token?)")
    try:
        for caveat in macaroon.caveats:
            caveat.caveat_id.encode()
        canonical = BinarySerializer().serialize_raw(macaroon)
    except (UnicodeDecodeError, TypeError, ValueError):
        raise _refuse("a caveat or field is not UTF-8 text") from None
    if canonical != raw:
        raise _refuse("does not re-serialise to the bytes received (data after the signature, or damaged)")
    return macaroon


@dataclass(frozen=True)
class MacaroonInfo:
    """What a minted macaroon allows, read from its caveats (the signature is not checked).

    Fields hold the caveats as dCache combines them: the earliest ``before``, the last ``activity``
    set (each must be a subset of the one before), ``path`` and ``root`` caveats in order (dCache
    concatenates them), every ``ip`` caveat (ANDed; alternatives within one are ORed), the smallest
    ``max-upload``.
    """

    location: str
    identifier: str
    caveats: tuple[str, ...]
    third_party_caveats: int = 0

    def _values(self, key: str) -> list[str]:
        return [value for key_, value in (cv.parse_caveat(c) for c in self.caveats) if key_ == key]

    @property
    def iid(self) -> str | None:
        """dCache's issuer id (the first caveat of every macaroon it mints)."""
        values = self._values(cv.IID)
        return values[0] if values else None

    @property
    def username(self) -> str | None:
        """The user every request made with this macaroon is evaluated as (from ``id:uid;gids;name``)."""
        values = self._values(cv.ID)
        return values[0].split(";", 2)[-1] if values else None

    @property
    def expires(self) -> datetime | None:
        """The earliest ``before:`` instant (UTC), or None when the macaroon carries none."""
        instants = [cv.parse_instant(v) for v in self._values(cv.BEFORE)]
        return min(instants) if instants else None

    @property
    def activities(self) -> frozenset[str] | None:
        """Activities allowed, with ``READ_METADATA`` implied as dCache does; None means unrestricted."""
        values = self._values(cv.ACTIVITY)
        if not values:
            return None
        names = {n.strip() for n in values[-1].split(",") if n.strip()}
        if names and names != {"READ_METADATA"}:
            names.add("READ_METADATA")
        return frozenset(names)

    @property
    def paths(self) -> tuple[str, ...]:
        """The ``path:`` caveats in order; dCache reads each later one relative to the previous."""
        return tuple(self._values(cv.PATH))

    @property
    def roots(self) -> tuple[str, ...]:
        """The ``root:`` (chroot) caveats in order."""
        return tuple(self._values(cv.ROOT))

    @property
    def ip(self) -> tuple[tuple[str, ...], ...]:
        """One tuple of alternative subnets per ``ip:`` caveat; a client must match every tuple."""
        return tuple(tuple(s.strip() for s in v.split(",")) for v in self._values(cv.IP))

    @property
    def max_upload(self) -> int | None:
        """The smallest ``max-upload:`` in bytes, or None."""
        sizes = [int(v) for v in self._values(cv.MAX_UPLOAD)]
        return min(sizes) if sizes else None

    def expired(self, now: datetime | None = None) -> bool:
        """True once the earliest ``before:`` has passed.

        :param now: the instant to compare with (timezone-aware); defaults to the current time.
        """
        expires = self.expires
        return expires is not None and (now or datetime.now(UTC)) >= expires

    def allows(self, activity: str) -> bool:
        """Whether the ``activity`` caveats permit ``activity`` (namespace permissions still apply).

        :param activity: one of dCache's activity names, e.g. ``"DOWNLOAD"``.
        """
        allowed = self.activities
        return allowed is None or activity.strip().upper() in allowed

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary for logs or XCom: caveats only, never the token or its signature."""
        expires = self.expires
        activities = self.activities
        return {
            "location": self.location,
            "identifier": self.identifier,
            "caveats": list(self.caveats),
            "third_party_caveats": self.third_party_caveats,
            "username": self.username,
            "expires": cv.format_instant(expires) if expires else None,
            "activities": sorted(activities) if activities is not None else None,
            "paths": list(self.paths),
            "max_upload": self.max_upload,
        }


def inspect_macaroon(token: str) -> MacaroonInfo:
    """Read a dCache macaroon's caveats without the secret.

    :param token: the macaroon, e.g. ``MacaroonResponse.macaroon``.
    :raises ValueError: the token is malformed, or carries a caveat dCache refuses (unknown key), so it
        could never be used.
    """
    macaroon = parse_token(token)
    first_party = tuple(c.caveat_id for c in macaroon.caveats if c.first_party())
    for caveat in first_party:
        try:
            cv.parse_caveat(caveat)
        except cv.CaveatError as exc:
            raise _refuse(f"caveat {caveat!r} is one dCache refuses ({exc})") from None
    return MacaroonInfo(
        location=macaroon.location,
        identifier=macaroon.identifier,
        caveats=first_party,
        third_party_caveats=len(macaroon.caveats) - len(first_party),
    )


def _check_activity_subset(current: MacaroonInfo, caveat: str) -> None:
    """dCache rejects a macaroon whose later ``activity:`` names anything the previous one did not."""
    previous = current._values(cv.ACTIVITY)
    if not previous:
        return
    allowed = {n.strip() for n in previous[-1].split(",")}
    wanted = {n.strip() for n in caveat.partition(":")[2].split(",")}
    extra = sorted(wanted - allowed)
    if extra:
        raise ValueError(
            f"activity: {','.join(extra)} not in the macaroon's activities {sorted(allowed)}; "
            "dCache would reject the whole macaroon ('attempt to enlarge activity set')"
        )


def attenuate_macaroon(token: str, caveats: Iterable[str]) -> str:
    """Narrow a macaroon locally (no secret, no request) by appending first-party caveats.

    :param token: the macaroon to narrow.
    :param caveats: caveat strings to append, e.g. from ``CaveatBuilder.for_attenuation()``; each key
        is checked, and a later ``activity:`` must be a subset of the token's current one.
    :returns: the narrowed macaroon, serialised as dCache writes it.
    :raises ValueError: naming the caveat or the ``macaroon`` that is wrong.
    """
    macaroon = parse_token(token)
    info = inspect_macaroon(token)
    for caveat in caveats:
        try:
            key, _ = cv.parse_caveat(caveat)
        except cv.CaveatError as exc:
            raise ValueError(f"bad caveat {caveat!r}: {exc}") from None
        if key == cv.ACTIVITY:
            _check_activity_subset(info, caveat)
        if key in (cv.IID, cv.ID):
            raise ValueError(f"{key}: only dCache sets this caveat; adding it breaks the macaroon")
        macaroon.add_first_party_caveat(caveat)
        info = MacaroonInfo(info.location, info.identifier, (*info.caveats, caveat), info.third_party_caveats)
    return str(macaroon.serialize())
