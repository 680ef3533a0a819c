"""dCache Kafka billing records → storage events: a pure mapping, no I/O.

dCache publishes one JSON record per finished mover, door request, removal, flush and stage
(``dcache-api.md`` §5). This module validates one record and maps it to the shared event model,
so the Kafka trigger, the benchmark and the tests all agree on what a record means.

Which records become events (the contract, ``docs/event-contract.md`` §3):

==================================================  ======================  ========================
record                                              kind                    note
==================================================  ======================  ========================
pool ``transfer`` / door ``request``, write         ``closed_after_write``  "a file landed" (§5.2);
                                                                            both carry the pnfsid,
                                                                            so both give one key
pool ``transfer`` / door ``request``, read          ``read``
door ``remove``                                     ``deleted``             namespace delete
pool ``store``                                      ``flushed``             written to tape / HSM
pool ``restore``                                    ``staged``              staged back from tape
door ``request`` without ``moverInfo``              none                    nothing was moved
pool ``remove``, ``hit``, ``warning``               none                    replica bookkeeping
==================================================  ======================  ========================

Pool-to-pool copies and failed transfers *are* mapped (``extra.isP2p``, ``extra.status.code``):
whether they are dropped is the filter's job (``exclude_p2p`` / ``exclude_failed``, on by default).

A record that *is* valid billing JSON but maps to no event (the last two rows, or a path dCache
could not resolve such as ``"Unknown"`` or NFS's ``parent:[<id>]/name``) returns ``None``. A
record that is not valid billing JSON raises :class:`BillingRecordError` naming what is wrong;
callers count, log and skip it, they never crash on it.

Two paths, one answer. :func:`parse_billing_record` + :func:`billing_fields` are the reference: they
read any JSON and name the first thing wrong. One trigger must keep up with a whole site's billing
(>= 50,000 records/s), so :func:`billing_event` first tries a fast path that decodes, with msgspec,
only the keys the mapping reads, into types that are exactly the valid ones; a record that path does
not fully understand (a wrong type, an unknown ``msgType``, a bad date, not JSON at all) goes through
the reference path, which gives the same event, ``None`` or error as before the fast path existed.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import msgspec

from airflow_dcache.events.model import EventKind, StorageEvent

__all__ = [
    "BillingFields",
    "BillingRecordError",
    "billing_event",
    "billing_fields",
    "parse_billing_record",
    "reference_billing_event",
]

_KNOWN_TYPES = frozenset({"transfer", "request", "remove", "store", "restore", "hit", "warning"})


class BillingRecordError(ValueError):
    """The Kafka value is not a valid dCache billing record; ``str()`` says why (no record text)."""


class BillingFields(NamedTuple):
    """What one billing record says about one file, before it becomes a ``StorageEvent``.

    Kept separate from the event model so the mapping can be tested (and benchmarked) on its own;
    ``extra`` is the event's ``extra`` (see :func:`billing_fields`).
    """

    kind: str
    path: str
    name: str
    time: str
    size: int | None
    pnfsid: str | None
    user: str | None
    client_host: str | None
    protocol: str | None
    extra: dict[str, Any]


def parse_billing_record(value: bytes | str | None) -> dict[str, Any]:
    """Decode one Kafka value and check the keys every billing record has.

    :param value: the raw Kafka message value (UTF-8 JSON written by dCache's org.json serializers).
    :raises BillingRecordError: not UTF-8, not JSON, not an object, or missing/mistyped ``msgType``,
        ``date``, ``status``, or the version key (``version``, or ``VERSION`` for door records).
    """
    if value is None:
        raise BillingRecordError("empty value (tombstone)")
    try:
        doc = json.loads(value.decode("utf-8") if isinstance(value, bytes | bytearray) else value)
    except UnicodeDecodeError:
        raise BillingRecordError("value is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise BillingRecordError(f"value is not JSON ({exc.msg} at char {exc.pos})") from None
    except ValueError:
        raise BillingRecordError("value is not JSON") from None
    if not isinstance(doc, dict):
        raise BillingRecordError(f"value is a JSON {type(doc).__name__}, not an object")
    msg_type = doc.get("msgType")
    if not isinstance(msg_type, str) or msg_type not in _KNOWN_TYPES:
        raise BillingRecordError(f"msgType {msg_type!r} is not a dCache billing type")
    if doc.get("version", doc.get("VERSION")) is None:
        raise BillingRecordError("no 'version' or 'VERSION' key")
    date = doc.get("date")
    if not isinstance(date, str):
        raise BillingRecordError("date is missing or not a string")
    status = doc.get("status")
    if status is not None and (not isinstance(status, dict) or not isinstance(status.get("code", 0), int)):
        raise BillingRecordError("status is not {code:int, msg:str}")
    return doc


#: ``ISO_OFFSET_DATE_TIME`` as dCache writes it: the second, 0-9 fraction digits, ``Z`` or ``±HH:MM[:SS]``.
_OFFSET_DATE_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d(?::\d\d)?)", re.ASCII)
#: ``<local second><offset>`` → its UTC second (``YYYY-MM-DDTHH:MM:SS``). A burst of billing records shares a
#: handful of seconds, so the calendar arithmetic runs once per second and zone, not once per record.
_UTC_SECONDS: dict[str, str] = {}
_UTC_SECONDS_MAX = 4096


def _utc_millis(date: str) -> str:
    """dCache's ``ISO_OFFSET_DATE_TIME`` (any zone, 0-9 fraction digits) → ``...T..:..:..sssZ`` UTC.

    The same answer as :func:`_parse_utc_millis` for every input: a date of dCache's shape has its UTC
    second looked up (computed by that function on a miss) and its fraction truncated to milliseconds,
    as ``isoformat(timespec="milliseconds")`` does; any other text goes to that function.
    """
    match = _OFFSET_DATE_TIME.fullmatch(date)
    if match is None:
        return _parse_utc_millis(date)
    second, fraction, offset = match.groups()
    key = second + offset
    utc = _UTC_SECONDS.get(key)
    if utc is None:
        try:
            utc = _parse_utc_millis(key)[:19]
        except BillingRecordError:  # an impossible date (month 13, 24:00, ...): named as written
            return _parse_utc_millis(date)
        if len(_UTC_SECONDS) >= _UTC_SECONDS_MAX:
            _UTC_SECONDS.clear()
        _UTC_SECONDS[key] = utc
    if fraction is None:
        return utc + ".000Z"
    return f"{utc}.{fraction[:3]:0<3}Z"


def _parse_utc_millis(date: str) -> str:
    """:func:`_utc_millis` by ``datetime`` for any ISO-8601 text (the reference; names a bad date)."""
    try:
        parsed = datetime.fromisoformat(date)
    except ValueError:
        raise BillingRecordError(f"date {date[:40]!r} is not ISO-8601") from None
    if parsed.tzinfo is None:
        raise BillingRecordError(f"date {date[:40]!r} has no UTC offset")
    # isoformat (C) writes %04d years and truncates to milliseconds, like format_time; "+00:00" -> "Z".
    return parsed.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _int(doc: dict[str, Any], key: str) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BillingRecordError(f"{key} is not an integer")
    return value


def _str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BillingRecordError(f"{key} is not a string")
    return value


def _user(subject: Any) -> str | None:
    """The ``UserNamePrincipal[...]`` of a subject array (dCache writes principals as strings)."""
    if subject is None:
        return None
    if not isinstance(subject, list):
        raise BillingRecordError("subject is not an array")
    for principal in subject:
        if isinstance(principal, str) and principal.startswith("UserNamePrincipal[") and principal.endswith("]"):
            return principal[18:-1]
    return None


def _path(doc: dict[str, Any]) -> str | None:
    """The absolute namespace path: ``billingPath`` (canonical), else ``transferPath``; None if unknown."""
    for key in ("billingPath", "transferPath"):
        path = _str(doc, key)
        if path and path.startswith("/"):
            return path
    return None


def _direction(doc: dict[str, Any]) -> Any:
    """``isWrite`` of a pool ``transfer``; for a door ``request``, of its nested ``moverInfo``."""
    if doc["msgType"] == "transfer":
        return doc.get("isWrite")
    mover = doc.get("moverInfo")
    if mover is None:
        return None  # the request failed before a mover ran: nothing moved
    if not isinstance(mover, dict):
        raise BillingRecordError("moverInfo is not an object")
    return mover.get("isWrite")


def _kind(doc: dict[str, Any], msg_type: str, cell_type: str | None) -> str | None:
    if msg_type in ("transfer", "request"):
        direction = _direction(doc)
        if direction == "write":
            return "closed_after_write"
        if direction == "read":
            return "read"
        if direction is None and msg_type == "request":
            return None
        raise BillingRecordError(f"isWrite {direction!r} is neither 'write' nor 'read'")
    if msg_type == "remove":
        return "deleted" if cell_type == "door" else None  # pool remove: a replica, not the file
    if msg_type == "store":
        return "flushed"
    if msg_type == "restore":
        return "staged"
    return None  # hit, warning


def billing_fields(doc: dict[str, Any]) -> BillingFields | None:
    """Map a parsed billing record to the event fields, or ``None`` when it is not a file event.

    ``extra`` keeps dCache's own key names (contract §2): ``msgType``, ``cellName``, ``status``
    (``{code, msg}``), ``isP2p``, ``transferSize``, ``storageInfo``, ``session`` where present;
    the shared filter reads ``isP2p`` and ``status.code``.

    :param doc: a record from :func:`parse_billing_record`.
    :raises BillingRecordError: a key the mapping needs has the wrong type.
    """
    msg_type: str = doc["msgType"]
    time = _utc_millis(doc["date"])  # a bad date is a bad record, even one that maps to no event
    cell_type = _str(doc, "cellType")
    kind = _kind(doc, msg_type, cell_type)
    if kind is None:
        return None
    path = _path(doc)
    if path is None:
        return None
    status = doc.get("status") or {}
    msg = status.get("msg")
    extra: dict[str, Any] = {
        "msgType": msg_type,
        "status": {"code": status.get("code", 0), "msg": str(msg)[:500] if msg is not None else ""},
    }
    for key in ("cellName", "session", "storageInfo"):
        value = _str(doc, key)
        if value is not None:
            extra[key] = value
    mover = doc if msg_type == "transfer" else doc.get("moverInfo") or {}
    is_p2p = mover.get("isP2p", False)
    if not isinstance(is_p2p, bool):
        raise BillingRecordError("isP2p is not a boolean")
    extra["isP2p"] = is_p2p
    transfer_size = _int(mover, "transferSize")
    if transfer_size is not None:
        extra["transferSize"] = transfer_size
    info = mover.get("protocolInfo")
    if info is not None and not isinstance(info, dict):
        raise BillingRecordError("protocolInfo is not an object")
    info = info or {}
    protocol = info.get("protocol") if isinstance(info.get("protocol"), str) else None
    if msg_type == "transfer":
        client_host = info.get("host") if isinstance(info.get("host"), str) else None
    else:
        client_host = _str(doc, "client")
    user = _user(doc.get("subject"))
    if user is None and cell_type == "door":
        user = _str(doc, "owner")
    return BillingFields(
        kind=kind,
        path=path,
        name=path.rsplit("/", 1)[-1],
        time=time,
        size=_int(doc, "fileSize"),
        pnfsid=_str(doc, "pnfsid"),
        user=user,
        client_host=client_host,
        protocol=protocol,
        extra=extra,
    )


# -- the fast path ---------------------------------------------------------------------------------
#
# Each field's type is the set of values the reference path accepts without comment (``int`` excludes
# ``bool`` in msgspec, as ``_int`` does); anything else fails the decode and takes the reference path.


class _Status(msgspec.Struct, gc=False):
    code: int = 0
    msg: str | None = None


class _ProtocolInfo(msgspec.Struct, gc=False):
    protocol: str | None = None
    host: str | None = None


class _Mover(msgspec.Struct, gc=False):
    """A door request's ``moverInfo``: the keys the mapping reads from it."""

    isWrite: str | None = None  # dCache's key names
    isP2p: bool = False
    transferSize: int | None = None
    protocolInfo: _ProtocolInfo | None = None


class _Record(msgspec.Struct, gc=False):
    """The keys of one billing record the mapping reads; every other key is checked as JSON and skipped."""

    msgType: str
    date: str
    version: Any = msgspec.UNSET
    VERSION: Any = msgspec.UNSET
    status: _Status | None = None
    cellType: str | None = None
    cellName: str | None = None
    session: str | None = None
    storageInfo: str | None = None
    billingPath: str | None = None
    transferPath: str | None = None
    isWrite: str | None = None
    isP2p: bool = False
    transferSize: int | None = None
    protocolInfo: _ProtocolInfo | None = None
    moverInfo: _Mover | None = None
    client: str | None = None
    subject: list[str] | None = None
    owner: str | None = None
    fileSize: int | None = None
    pnfsid: str | None = None


_decode_record = msgspec.json.Decoder(_Record).decode
#: The fast path's answer "not sure": let the reference path decide (event, ``None`` or error).
_UNSURE: Final = object()
_WRITE_OR_READ: Final = {"write": EventKind.CLOSED_AFTER_WRITE, "read": EventKind.READ}


def _fast_event(value: bytes | str | None, cursor: str) -> StorageEvent | object | None:
    """The event of a well-typed record, ``None`` for a valid non-file record, else :data:`_UNSURE`.

    Never raises for a bad record and never decides one is bad: that is the reference path's job.
    """
    if not isinstance(value, bytes | bytearray | str):  # None (a tombstone), or nothing Kafka gives
        return _UNSURE
    try:
        # msgspec does not check the UTF-8 of keys it skips: non-ASCII bytes are decoded to str first, so
        # "not UTF-8" stays the reference's verdict.
        if not isinstance(value, str) and not value.isascii():
            value = value.decode("utf-8")
        r = _decode_record(value)
    except (UnicodeDecodeError, msgspec.DecodeError):  # ValidationError is a DecodeError
        return _UNSURE
    msg_type = r.msgType
    version = r.version if r.version is not msgspec.UNSET else r.VERSION
    if msg_type not in _KNOWN_TYPES or version is None or version is msgspec.UNSET:
        return _UNSURE
    try:
        time = _utc_millis(r.date)
    except BillingRecordError:
        return _UNSURE
    cell_type = r.cellType
    if msg_type == "transfer" or msg_type == "request":
        mover: _Record | _Mover | None = r if msg_type == "transfer" else r.moverInfo
        if mover is None:
            return None  # a door request that failed before a mover ran
        direction = mover.isWrite
        kind = _WRITE_OR_READ.get(direction)  # type: ignore[arg-type]
        if kind is None:
            return None if direction is None and msg_type == "request" else _UNSURE
    elif msg_type == "remove" and cell_type == "door":
        kind, mover = EventKind.DELETED, None
    elif msg_type == "store":
        kind, mover = EventKind.FLUSHED, None
    elif msg_type == "restore":
        kind, mover = EventKind.STAGED, None
    else:
        return None  # pool remove, hit, warning
    path = r.billingPath
    if not (path and path.startswith("/")):
        path = r.transferPath
        if not (path and path.startswith("/")):
            return None
    status = r.status
    msg = status.msg if status is not None else None
    extra: dict[str, Any] = {
        "msgType": msg_type,
        "status": {"code": status.code if status is not None else 0, "msg": msg[:500] if msg is not None else ""},
    }
    if r.cellName is not None:
        extra["cellName"] = r.cellName
    if r.session is not None:
        extra["session"] = r.session
    if r.storageInfo is not None:
        extra["storageInfo"] = r.storageInfo
    if mover is None:  # remove, store, restore: their moverInfo, else none (the reference's ``or {}``)
        mover = r.moverInfo or _Mover()
    extra["isP2p"] = mover.isP2p
    if mover.transferSize is not None:
        extra["transferSize"] = mover.transferSize
    info = mover.protocolInfo
    user = _user(r.subject)
    if user is None and cell_type == "door":
        user = r.owner
    return StorageEvent.trusted(
        kind=kind,
        path=path,
        name=path.rsplit("/", 1)[-1],
        time=time,
        source="kafka",
        cursor=cursor,
        size=r.fileSize,
        pnfsid=r.pnfsid,
        user=user,
        client_host=(info.host if info is not None else None) if msg_type == "transfer" else r.client,
        protocol=info.protocol if info is not None else None,
        extra=extra,
    )


def billing_event(value: bytes | str | None, *, cursor: str) -> StorageEvent | None:
    """One Kafka value → a ``StorageEvent`` with ``source="kafka"``, or ``None`` (not a file event).

    :param value: the raw Kafka message value.
    :param cursor: where it came from, ``"<topic>:<partition>:<offset>"``.
    :raises BillingRecordError: the value is not valid dCache billing JSON.
    """
    event = _fast_event(value, cursor)
    if event is not _UNSURE:
        return event  # type: ignore[return-value]
    return reference_billing_event(value, cursor=cursor)


def reference_billing_event(value: bytes | str | None, *, cursor: str) -> StorageEvent | None:
    """:func:`billing_event` through the reference path only (any JSON, exact errors; the tests' oracle)."""
    fields = billing_fields(parse_billing_record(value))
    if fields is None:
        return None
    return StorageEvent(
        kind=EventKind(fields.kind),
        path=fields.path,
        name=fields.name,
        is_dir=False,
        time=fields.time,
        source="kafka",
        cursor=cursor,
        size=fields.size,
        pnfsid=fields.pnfsid,
        user=fields.user,
        client_host=fields.client_host,
        protocol=fields.protocol,
        extra=fields.extra,
    )
