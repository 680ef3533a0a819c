"""Value formatting exactly as dCache's billing serializers produce it on the JVM.

dCache builds its Kafka records with org.json and ``java.time``; consumers written against a real
dCache see these textual shapes, so the test service copies them rather than Python's defaults:

* ``date``: ``DateTimeFormatter.ISO_OFFSET_DATE_TIME`` in the JVM's zone. The fraction of a second
  is printed only as far as it is non-zero (``07.5``, ``07.512``, ``07`` for a whole second) and
  a zero offset is printed ``Z`` -- both are what ``java.time`` does.
* durations (``readActive`` ...): ``java.time.Duration.toString()`` (``PT0.83S``, ``PT1M2S``, ``PT0S``).
* doubles (``meanWriteBandwidth``): ``Double.toString`` as org.json trims it (``1.2582912E8``, ``1.5E-4``,
  ``2.5``, ``123``).
* IP addresses: ``InetAddress.getHostAddress()`` (IPv6 uncompressed, ``0:0:0:0:0:0:0:1``) and Guava's
  ``InetAddresses.toUriString`` for ``localEndpoint`` (IPv6 compressed, in brackets).
* JSON text: org.json's ``JSONObject.toString()``: no spaces, ``</`` escaped as ``<\\/``, control
  characters and U+0080..U+009F, U+2000..U+20FF as ``\\uXXXX``, other non-ASCII as UTF-8.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from json.encoder import encode_basestring as _c_quote
from typing import Any


class JavaDouble(float):
    """A number that must be written as a Java ``double`` (``Double.toString``), not as an integer."""


# -- date ------------------------------------------------------------------------------------------


def iso_offset_date_time(epoch_ms: int, tz: tzinfo | None = None) -> str:
    """``ISO_OFFSET_DATE_TIME`` of an epoch-millisecond instant in ``tz`` (default: the local zone)."""
    seconds, millis = divmod(epoch_ms, 1000)
    moment = datetime.fromtimestamp(seconds, UTC)
    local = moment.astimezone(tz) if tz is not None else moment.astimezone()
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if local.year > 9999 or local.year < 0:  # pragma: no cover - outside every realistic clock
        raise ValueError(f"year {local.year} outside ISO_OFFSET_DATE_TIME's plain range")
    if millis:
        text += "." + f"{millis:03d}".rstrip("0")
    return text + _offset_id(local.utcoffset() or timedelta(0))


def _offset_id(offset: timedelta) -> str:
    """``ZoneOffset.getId()``: ``Z`` for zero, else ``+HH:MM`` (``+HH:MM:SS`` with seconds)."""
    total = int(offset.total_seconds())
    if total == 0:
        return "Z"
    sign = "+" if total > 0 else "-"
    hours, rest = divmod(abs(total), 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{sign}{hours:02d}:{minutes:02d}"
    return text + (f":{secs:02d}" if secs else "")


# -- duration --------------------------------------------------------------------------------------


def java_duration(millis: int) -> str:
    """``Duration.ofMillis(millis).toString()`` for a non-negative duration."""
    if millis < 0:
        raise ValueError("durations in billing records are never negative")
    if millis == 0:
        return "PT0S"
    seconds, ms = divmod(millis, 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = "PT"
    if hours:
        text += f"{hours}H"
    if minutes:
        text += f"{minutes}M"
    if secs == 0 and ms == 0:
        return text
    text += str(secs)
    if ms:
        text += "." + f"{ms:03d}".rstrip("0")
    return text + "S"


# -- numbers ---------------------------------------------------------------------------------------


def java_double_to_string(value: float) -> str:
    """``Double.toString(value)`` (JDK 19+ shortest-digits rule, which Python's ``repr`` shares)."""
    if math.isnan(value) or math.isinf(value):
        raise ValueError("org.json refuses non-finite numbers")
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    assert isinstance(exponent, int)
    # repr keeps trailing zeros in ``digit_tuple``; recompute the scientific exponent from the original length.
    e10 = len(digit_tuple) + exponent - 1
    if 1e-3 <= abs(value) < 1e7:
        if e10 >= 0:
            whole = digits[: e10 + 1].ljust(e10 + 1, "0")
            frac = digits[e10 + 1 :] or "0"
        else:
            whole, frac = "0", "0" * (-e10 - 1) + digits
        return f"{sign}{whole}.{frac}"
    return f"{sign}{digits[0]}.{digits[1:] or '0'}E{e10}"


def org_json_number(value: int | float) -> str:
    """How org.json writes a number: integers plainly, doubles via ``Double.toString`` with
    trailing fractional zeros (and a dangling point) removed when there is no exponent."""
    if isinstance(value, bool):
        raise TypeError("booleans are not numbers here")
    if isinstance(value, int):
        return str(value)
    text = java_double_to_string(value)
    if "." in text and "E" not in text and "e" not in text:
        text = text.rstrip("0").rstrip(".")
    return text


# -- addresses -------------------------------------------------------------------------------------


def _parse_ip(host: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, str] | None:
    text = host.strip().removeprefix("[").removesuffix("]")
    text, _, scope = text.partition("%")
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped, ""  # Java turns ::ffff:a.b.c.d into an Inet4Address
    return addr, scope


@functools.lru_cache(maxsize=4096)
def java_host_address(host: str) -> str:
    """``InetAddress.getHostAddress()``: IPv6 as eight groups without zero compression."""
    parsed = _parse_ip(host)
    if parsed is None:
        return host
    addr, scope = parsed
    if isinstance(addr, ipaddress.IPv4Address):
        return str(addr)
    groups = ":".join(format(int(g, 16), "x") for g in addr.exploded.split(":"))
    return groups + (f"%{scope}" if scope else "")


def uri_host_port(host: str, port: int) -> str:
    """Guava ``InetAddresses.toUriString(addr) + ":" + port``: ``[::1]:2880``, ``127.0.0.1:2880``."""
    parsed = _parse_ip(host)
    if parsed is None:
        return f"{host}:{port}"
    addr, _ = parsed
    shown = f"[{addr.compressed}]" if isinstance(addr, ipaddress.IPv6Address) else str(addr)
    return f"{shown}:{port}"


# -- JSON text -------------------------------------------------------------------------------------


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r",
            "</": "<\\/"}
_SPECIAL = re.compile('</|["\\\\\x00-\x1f\x80-\x9f\u2000-\u20ff]')


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    return _ESCAPES.get(ch) or f"\\u{ord(ch):04x}"


def _quote(text: str) -> str:
    """org.json's ``JSONObject.quote``."""
    if text.isascii() and "</" not in text:
        return _c_quote(text)  # same escapes as org.json for ASCII text, in C
    return '"' + _SPECIAL.sub(_escape, text) + '"'


def to_json(value: Any) -> str:
    """org.json's compact text of ``value``; ``None`` members of a dict are left out, as org.json drops
    null values on ``put``."""
    kind = type(value)
    if kind is str:
        return _quote(value)
    if kind is dict:
        return "{" + ",".join([_quote(str(k)) + ":" + to_json(v) for k, v in value.items() if v is not None]) + "}"
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, JavaDouble):
        return org_json_number(float(value))
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return org_json_number(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, dict):
        return to_json(dict(value))
    if isinstance(value, list | tuple):
        return "[" + ",".join([to_json(v) for v in value]) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as billing JSON")


def to_json_bytes(value: Any) -> bytes:
    return to_json(value).encode("utf-8")
