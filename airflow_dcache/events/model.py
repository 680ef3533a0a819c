"""The one storage-event model shared by the SSE (inotify) and Kafka (billing) sources.

Both triggers turn their source's records into :class:`StorageEvent` so that filters, payloads, the
idempotency key and consumer code exist once. The contract is ``docs/event-contract.md``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "KIND_BY_MASK",
    "ONCE_PER_VERSION",
    "EventKind",
    "StorageEvent",
    "format_time",
    "kind_from_mask",
    "parse_time",
]


class EventKind(enum.StrEnum):
    """What happened to an object; names are source-neutral (contract §3)."""

    CREATED = "created"
    CLOSED_AFTER_WRITE = "closed_after_write"
    MOVED_IN = "moved_in"
    MOVED_OUT = "moved_out"
    DELETED = "deleted"
    ATTRIB = "attrib"
    MODIFIED = "modified"
    OPENED = "opened"
    ACCESSED = "accessed"
    STAGED = "staged"
    FLUSHED = "flushed"
    READ = "read"
    OVERFLOW = "overflow"


#: dCache inotify flags (``dcache-api.md`` §4.5) and the kind each one means.
KIND_BY_MASK: Mapping[str, EventKind] = {
    "IN_CREATE": EventKind.CREATED,
    "IN_CLOSE_WRITE": EventKind.CLOSED_AFTER_WRITE,
    "IN_MOVED_TO": EventKind.MOVED_IN,
    "IN_MOVED_FROM": EventKind.MOVED_OUT,
    "IN_MOVE_SELF": EventKind.MOVED_OUT,
    "IN_DELETE": EventKind.DELETED,
    "IN_DELETE_SELF": EventKind.DELETED,
    "IN_ATTRIB": EventKind.ATTRIB,
    "IN_MODIFY": EventKind.MODIFIED,
    "IN_OPEN": EventKind.OPENED,
    "IN_ACCESS": EventKind.ACCESSED,
    "IN_CLOSE_NOWRITE": EventKind.READ,
    "IN_Q_OVERFLOW": EventKind.OVERFLOW,
}

#: Kinds that happen at most once to one file version; their key is ``pnfsid:kind`` (contract §4).
ONCE_PER_VERSION: frozenset[EventKind] = frozenset(
    {
        EventKind.CREATED,
        EventKind.CLOSED_AFTER_WRITE,
        EventKind.MOVED_IN,
        EventKind.MOVED_OUT,
        EventKind.DELETED,
        EventKind.FLUSHED,
    }
)

SOURCES = ("sse", "kafka")
_set = object.__setattr__
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def kind_from_mask(mask: Iterable[str]) -> EventKind | None:
    """The kind of an inotify mask (one flag plus maybe ``IN_ISDIR``); ``None`` for management flags."""
    for flag in mask:
        kind = KIND_BY_MASK.get(flag)
        if kind is not None:
            return kind
    return None


def format_time(value: datetime | float | int) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``; numbers are epoch seconds."""
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(float(value), tz=UTC)
    elif value.tzinfo is None:
        raise ValueError("time must be timezone-aware")
    u = value.astimezone(UTC)  # field by field: strftime is the slowest part of building an event
    return (f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}."
            f"{u.microsecond // 1000:03d}Z")


def parse_time(value: str) -> datetime:
    """Inverse of :func:`format_time`; also accepts any offset-aware ISO-8601 string (billing ``date``)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (TypeError, ValueError, AttributeError):
        raise ValueError(f"time must be an ISO-8601 timestamp, got {value!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"time must carry a UTC offset, got {value!r}")
    return parsed.astimezone(UTC)


def _opt_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"event field {name!r} must be a string or null, got {value!r}")
    return value


@dataclass(frozen=True)
class StorageEvent:
    """One change of one object in dCache, whichever source reported it (contract §2).

    :param kind: what happened (:class:`EventKind` or its value).
    :param path: absolute dCache path of the object.
    :param name: its last path component.
    :param is_dir: whether the object is a directory.
    :param time: ISO-8601 UTC with milliseconds (``2026-05-14T08:21:07.512Z``).
    :param source: ``"sse"`` or ``"kafka"``.
    :param cursor: the source position: ``<channel id>#<SSE id>`` or ``<topic>:<partition>:<offset>``.
    :param size: bytes, where the source or a stat provides it.
    :param pnfsid: dCache's file id, where known; it changes when a file is overwritten.
    :param user: the user who caused the change (billing only).
    :param client_host: the client's address (billing only).
    :param protocol: the transfer protocol (billing only).
    :param mask: the raw inotify flags (SSE only).
    :param extra: source-specific plain-JSON details.
    """

    kind: EventKind
    path: str
    name: str
    is_dir: bool
    time: str
    source: str
    cursor: str
    size: int | None = None
    pnfsid: str | None = None
    user: str | None = None
    client_host: str | None = None
    protocol: str | None = None
    mask: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", EventKind(self.kind))
        except ValueError:
            allowed = ", ".join(k.value for k in EventKind)
            raise ValueError(f"event field 'kind' must be one of {allowed}; got {self.kind!r}") from None
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise ValueError(f"event field 'path' must be an absolute dCache path, got {self.path!r}")
        if self.source not in SOURCES:
            raise ValueError(f"event field 'source' must be 'sse' or 'kafka', got {self.source!r}")
        if not isinstance(self.time, str) or not _TIME.fullmatch(self.time):
            raise ValueError(f"event field 'time' must look like 2026-05-14T08:21:07.512Z, got {self.time!r}")
        if not isinstance(self.cursor, str):
            raise ValueError(f"event field 'cursor' must be a string, got {self.cursor!r}")
        if self.size is not None and (isinstance(self.size, bool) or not isinstance(self.size, int)):
            raise ValueError(f"event field 'size' must be an integer or null, got {self.size!r}")
        object.__setattr__(self, "mask", tuple(str(m) for m in self.mask))
        object.__setattr__(self, "is_dir", bool(self.is_dir))

    @classmethod
    def trusted(
        cls,
        *,
        kind: EventKind,
        path: str,
        name: str,
        time: str,
        source: str,
        cursor: str,
        size: int | None = None,
        pnfsid: str | None = None,
        user: str | None = None,
        client_host: str | None = None,
        protocol: str | None = None,
        extra: dict[str, Any],
    ) -> StorageEvent:
        """A file event (``is_dir=False``, no mask) from a mapper that already guarantees every field's form.

        ``__post_init__`` costs as much as mapping a billing record, and the Kafka trigger maps a whole
        site's billing in one process. Only a caller whose output is valid by construction may use
        this: ``kind`` an :class:`EventKind`, ``path`` absolute, ``time`` as :func:`format_time` writes
        it, ``source`` one of the sources, ``cursor`` a string, ``size`` an int (not bool) or None.
        The result is equal to, and behaves like, the same event built through the constructor.
        """
        # Attribute by attribute, as the generated __init__ does: the values stay inline in the object
        # (no separate __dict__ object), one object fewer for the cyclic GC to walk.
        event = object.__new__(cls)
        values = (kind, path, name, False, time, source, cursor, size, pnfsid, user, client_host, protocol, (), extra)
        for field_name, value in zip(_FIELD_NAMES, values, strict=True):
            _set(event, field_name, value)
        return event

    @property
    def key(self) -> str:
        """Idempotency key: one file version and one kind of change (contract §4).

        Computed once per event (the batcher, the seen-set and the payload all ask for it): the fields
        are frozen, so the cached value cannot go stale.
        """
        cached = self.__dict__.get("_key")
        if cached is None:
            cached = self._compute_key()
            object.__setattr__(self, "_key", cached)
        return cached

    def _compute_key(self) -> str:
        if self.pnfsid:
            if self.kind in ONCE_PER_VERSION:
                return f"{self.pnfsid}:{self.kind.value}"
            return f"{self.pnfsid}:{self.kind.value}@{self.time}"
        if self.source == "sse" and self.cursor:
            return f"{self.path}@{self.cursor}:{self.kind.value}"
        return f"{self.path}@{self.time}:{self.kind.value}"

    def to_payload(self) -> dict[str, Any]:
        """Plain JSON for a TriggerEvent; ``key`` is included for readers that do not import this class."""
        return {
            "kind": self.kind.value,
            "path": self.path,
            "name": self.name,
            "is_dir": self.is_dir,
            "time": self.time,
            "source": self.source,
            "cursor": self.cursor,
            "size": self.size,
            "pnfsid": self.pnfsid,
            "user": self.user,
            "client_host": self.client_host,
            "protocol": self.protocol,
            "mask": list(self.mask),
            "extra": dict(self.extra),
            "key": self.key,
        }

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> StorageEvent:
        """Rebuild and validate an event; unknown keys (and ``key``, which is recomputed) are ignored."""
        if not isinstance(data, Mapping):
            raise ValueError(f"an event must be a JSON object, got {type(data).__name__}")
        missing = [n for n in ("kind", "path", "time", "source", "cursor") if data.get(n) is None]
        if missing:
            raise ValueError(f"event field {missing[0]!r} is missing")
        path = data["path"]
        mask = data.get("mask") or ()
        extra = data.get("extra") or {}
        if not isinstance(mask, (list, tuple)):
            raise ValueError(f"event field 'mask' must be a list, got {mask!r}")
        if not isinstance(extra, Mapping):
            raise ValueError(f"event field 'extra' must be an object, got {extra!r}")
        name = data.get("name")
        if name is None and isinstance(path, str):
            name = path.rstrip("/").rsplit("/", 1)[-1]
        return cls(
            kind=data["kind"],
            path=path,
            name=str(name),
            is_dir=bool(data.get("is_dir", False)),
            time=data["time"],
            source=data["source"],
            cursor=data["cursor"],
            size=data.get("size"),
            pnfsid=_opt_str(data, "pnfsid"),
            user=_opt_str(data, "user"),
            client_host=_opt_str(data, "client_host"),
            protocol=_opt_str(data, "protocol"),
            mask=tuple(mask),
            extra=dict(extra),
        )


#: StorageEvent's fields in declaration order (what ``StorageEvent.trusted`` sets).
_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(StorageEvent))
