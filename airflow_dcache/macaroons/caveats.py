"""dCache's caveat vocabulary, its time formats, and a client-side builder for caveat lists.

Shared by the server (which parses) and the Airflow hook (which builds), so it imports nothing from
``airflow_dcache.server``. The time helpers follow Java's ``Instant.parse`` and ``Duration.parse``
because dCache uses those, and a value Java refuses must be refused here too.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

IID = "iid"
ID = "id"
BEFORE = "before"
ROOT = "root"
HOME = "home"
PATH = "path"
IP = "ip"
ACTIVITY = "activity"
MAX_UPLOAD = "max-upload"
KNOWN_KEYS: frozenset[str] = frozenset({IID, ID, BEFORE, ROOT, HOME, PATH, IP, ACTIVITY, MAX_UPLOAD})

ACTIVITY_NAMES: tuple[str, ...] = (
    "LIST", "DOWNLOAD", "MANAGE", "UPLOAD", "DELETE", "READ_METADATA", "UPDATE_METADATA", "STAGE",
)
"""In the order of dCache's ``Activity`` enum, which is the order dCache writes them in."""


class CaveatError(ValueError):
    """A caveat string dCache would refuse; the message is dCache's own wording."""


def parse_caveat(text: str) -> tuple[str, str]:
    """Split ``key:value`` at the first ':' and check the key, as dCache's ``Caveat`` does."""
    key, sep, value = text.partition(":")
    if not sep:
        raise CaveatError("Missing ':'")
    if key not in KNOWN_KEYS:
        raise CaveatError(f"Unknown caveat {key}")
    return key, value


# --- Java time formats -------------------------------------------------------------------------

_INSTANT = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2})(?::(\d{2}))?)",
    re.ASCII,
)
_DURATION = re.compile(
    r"([-+]?)P(?:([-+]?\d+)D)?(T(?:([-+]?\d+)H)?(?:([-+]?\d+)M)?(?:([-+]?\d+)(?:[.,](\d{0,9}))?S)?)?",
    re.IGNORECASE | re.ASCII,
)


def parse_instant(text: str) -> datetime:
    """Parse like Java's ``Instant.parse`` (ISO-8601, seconds required, Z or offset); UTC result.

    Raises ``ValueError`` with Java's ``Text '...' could not be parsed`` wording.
    """
    m = _INSTANT.fullmatch(text)
    if not m:
        raise ValueError(f"Text '{text}' could not be parsed")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac = (m.group(7) or "").ljust(6, "0")[:6]
    leap = second == 60  # Java accepts a leap second and folds it into the next second
    try:
        when = datetime(year, month, day, hour, minute, 59 if leap else second, int(frac or 0), tzinfo=UTC)
        if m.group(9):
            sign = 1 if m.group(9) == "+" else -1
            hh, mm, ss = int(m.group(10)), int(m.group(11)), int(m.group(12) or 0)
            if hh > 18 or mm > 59 or ss > 59:
                raise ValueError("offset out of range")
            when -= sign * timedelta(hours=hh, minutes=mm, seconds=ss)
        return when + timedelta(seconds=1) if leap else when
    except (ValueError, OverflowError):
        raise ValueError(f"Text '{text}' could not be parsed") from None


def format_instant(when: datetime) -> str:
    """UTC with millisecond precision and ``Z``, the form dCache writes in ``before:`` caveats."""
    if when.tzinfo is None:
        raise ValueError("before: datetime must be timezone-aware")
    utc = when.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_duration(text: str) -> timedelta:
    """Parse like Java's ``Duration.parse``: ``PnDTnHnMn.nS`` only, so weeks/months/years fail.

    Raises ``ValueError("Text cannot be parsed to a Duration")``, Java's message.
    """
    m = _DURATION.fullmatch(text)
    error = ValueError("Text cannot be parsed to a Duration")
    if not m or (m.group(3) and m.group(3).upper() == "T") or not any(m.group(i) for i in (2, 4, 5, 6)):
        raise error
    try:
        days, hours, minutes = (int(m.group(i) or 0) for i in (2, 4, 5))
        seconds = timedelta(0)
        if m.group(6):
            whole = int(m.group(6))
            nanos = int((m.group(7) or "").ljust(9, "0"))
            sign = -1 if m.group(6).startswith("-") else 1
            seconds = timedelta(seconds=whole) + sign * timedelta(microseconds=nanos // 1000)
        total = timedelta(days=days, hours=hours, minutes=minutes) + seconds
        return -total if m.group(1) == "-" else total
    except (OverflowError, ValueError):  # beyond timedelta, or more digits than int() takes
        raise error from None


def format_duration(duration: timedelta) -> str:
    """Java ``Duration.toString`` for a non-negative duration, e.g. ``PT168H`` or ``PT15M``."""
    if duration < timedelta(0):
        raise ValueError("validity: duration must not be negative")
    total_us = duration // timedelta(microseconds=1)
    hours, rest = divmod(total_us, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    secs, micros = divmod(rest, 1_000_000)
    out = "PT" + (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if secs or micros or out == "PT":
        out += str(secs) + (f".{micros:06d}".rstrip("0") if micros else "") + "S"
    return out


# --- ip subnets, as dCache's Subnet/IPMatcher read them ----------------------------------------

Subnet = tuple[bytes, int]
"""Network address bytes (4 or 16) and prefix length."""


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """IPv4 inside an IPv4-compatible (::a.b.c.d) or 6to4 (2002::/16) address, as Guava finds it."""
    raw = addr.packed
    if raw[:12] == bytes(12) and not (raw[12:15] == bytes(3) and raw[15] in (0, 1)):
        return ipaddress.IPv4Address(raw[12:])
    if raw[:2] == b"\x20\x02":
        return ipaddress.IPv4Address(raw[2:6])
    return None


def _prefix_length(text: str) -> int | None:
    if "." in text:  # a dotted netmask; Java counts its trailing zero bits
        try:
            value = int(ipaddress.IPv4Address(text))
        except ValueError:
            return None
        return 32 - ((value & -value).bit_length() - 1 if value else 32)
    digits = text[1:] if text[:1] in "+-" else text
    return int(text) if digits.isascii() and digits.isdigit() and len(digits) <= 10 else None


def parse_subnet(spec: str) -> Subnet | None:
    """One element of an ``ip:`` caveat as dCache's ``Subnet.create`` reads it, or None if invalid.

    Besides plain addresses and CIDR it takes dotted netmasks, maps IPv4-mapped/compatible/6to4
    IPv6 onto IPv4, and refuses 2001:db8::/32 and Teredo 2001:0::/32 as dCache does.
    """
    parts = spec.split("/")
    while parts and not parts[-1]:
        parts.pop()  # Java's String.split drops trailing empty strings
    if not parts:
        return None
    try:
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(parts[0])
    except ValueError:
        return None
    written_v6 = isinstance(addr, ipaddress.IPv6Address)
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        else:
            if addr.packed[:2] == b"\x20\x01" and addr.packed[2:4] in (b"\x0d\xb8", b"\x00\x00"):
                return None
            addr = _embedded_ipv4(addr) or addr
    bits = addr.max_prefixlen
    if len(parts) == 1:
        return addr.packed, bits
    mask = _prefix_length(parts[1])
    if mask is None:
        return None
    if written_v6 and bits == 32:
        mask = 32 if mask == 128 else mask & 0x1F
    return (addr.packed, mask) if 0 <= mask <= bits else None


def subnet_contains(subnet: Subnet, client: bytes) -> bool:
    """IPMatcher.match: a /0 matches every client of either family."""
    network, mask = subnet
    if mask == 0:
        return True
    if len(network) != len(client):
        return False
    shift = len(client) * 8 - mask
    return int.from_bytes(network, "big") >> shift == int.from_bytes(client, "big") >> shift


# --- client-side builder -----------------------------------------------------------------------


def _check_path(field: str, path: str) -> str:
    if not isinstance(path, str) or not path:
        raise ValueError(f"{field}: path must be a non-empty string")
    if any(ord(ch) < 0x20 for ch in path):
        raise ValueError(f"{field}: path must not contain control characters")
    if ".." in path.split("/"):
        raise ValueError(f"{field}: path must not contain '..' (dCache clamps it, hiding mistakes)")
    return path


def _check_subnet(spec: str) -> str:
    if not isinstance(spec, str) or not spec.strip() or "," in spec:
        raise ValueError(f"ip: {spec!r} is not a single address or subnet")
    if parse_subnet(spec.strip()) is None:
        raise ValueError(
            f"ip: {spec!r} is not an address or subnet dCache accepts "
            "(2001:db8::/32 documentation and Teredo addresses are refused too)"
        )
    return spec.strip()


class CaveatBuilder:
    """Fluent builder for the caveats a client asks for, or adds itself when attenuating.

    Each call appends one caveat, and dCache ANDs caveats together: two ``ip()`` calls need a
    client in both sets, so pass alternatives to a single call. A later ``activities()`` must be a
    subset of an earlier one, or dCache rejects the whole macaroon.
    """

    def __init__(self) -> None:
        self._caveats: list[str] = []
        self._validity: timedelta | None = None

    def activities(self, *names: str | Iterable[str]) -> CaveatBuilder:
        flat: list[str] = []
        for name in names:
            flat.extend([name] if isinstance(name, str) else list(name))
        if not flat:
            raise ValueError("activity: at least one activity is required")
        chosen: set[str] = set()
        for name in flat:
            value = getattr(name, "value", name)
            upper = str(value).strip().upper()
            if upper not in ACTIVITY_NAMES:
                raise ValueError(f"activity: unknown activity {name!r}; expected one of {ACTIVITY_NAMES}")
            chosen.add(upper)
        self._caveats.append(f"{ACTIVITY}:" + ",".join(a for a in ACTIVITY_NAMES if a in chosen))
        return self

    def path(self, path: str) -> CaveatBuilder:
        self._caveats.append(f"{PATH}:{_check_path(PATH, path)}")
        return self

    def root(self, path: str) -> CaveatBuilder:
        self._caveats.append(f"{ROOT}:{_check_path(ROOT, path)}")
        return self

    def ip(self, *subnets: str) -> CaveatBuilder:
        if not subnets:
            raise ValueError("ip: at least one address or subnet is required")
        self._caveats.append(f"{IP}:" + ",".join(_check_subnet(s) for s in subnets))
        return self

    def before(self, when: datetime) -> CaveatBuilder:
        if not isinstance(when, datetime) or when.tzinfo is None:
            raise ValueError("before: expected a timezone-aware datetime")
        self._caveats.append(f"{BEFORE}:{format_instant(when)}")
        return self

    def validity(self, duration: timedelta) -> CaveatBuilder:
        if not isinstance(duration, timedelta) or duration <= timedelta(0):
            raise ValueError("validity: expected a positive timedelta")
        self._validity = duration
        return self

    def max_upload(self, size: int) -> CaveatBuilder:
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(f"max-upload: expected a positive number of bytes, got {size!r}")
        self._caveats.append(f"{MAX_UPLOAD}:{size}")
        return self

    def build(self) -> list[str]:
        """The caveats to send in a mint request; ``validity`` travels separately."""
        return list(self._caveats)

    @property
    def validity_iso(self) -> str | None:
        """The ``validity`` value for a mint request, e.g. ``PT15M``."""
        return format_duration(self._validity) if self._validity is not None else None

    def request_body(self) -> dict[str, object]:
        """The JSON object for ``POST`` with ``Content-Type: application/macaroon-request``."""
        body: dict[str, object] = {"caveats": self.build()}
        if self._validity is not None:
            body["validity"] = self.validity_iso
        return body

    def for_attenuation(self, now: datetime | None = None) -> list[str]:
        """Caveats to add locally: no server computes expiry, so validity becomes a ``before:``."""
        caveats = self.build()
        if self._validity is not None:
            start = now or datetime.now(UTC)
            caveats.append(f"{BEFORE}:{format_instant(start + self._validity)}")
        return caveats
