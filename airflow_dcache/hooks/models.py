"""What the dCache hooks return and accept, parsed from dCache JSON with the quirks handled in one place.

The frontend omits null fields, uses epoch milliseconds and camelCase; callers get dataclasses with
``None`` for absent data instead of ``KeyError``. Each model keeps ``raw`` for fields we do not map, and
``to_dict()`` gives a JSON-safe value for XCom. Secrets (macaroons, pre-authorised URLs) are excluded from
``repr`` so that printing a result never leaks them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_dcache.hooks import _checksums
from airflow_dcache.hooks._settings import AuthType, ConnectionSettings, parse_site


class _XComValue:
    """``to_dict()`` for models that keep the server's ``raw`` document: everything but ``raw``."""

    def to_dict(self) -> dict[str, Any]:
        result = asdict(self)  # type: ignore[call-overload]
        result.pop("raw", None)
        return dict(result)


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


@dataclass(frozen=True)
class NamespaceEntry(_XComValue):
    """``GET /namespace/{path}`` (or one of its ``children``)."""

    path: str
    name: str
    file_type: str
    size: int | None = None
    mtime: int | None = None
    creation_time: int | None = None
    pnfsid: str | None = None
    mode: int | None = None
    nlink: int | None = None
    mime_type: str | None = None
    locality: str | None = None
    locations: list[str] | None = None
    current_qos: str | None = None
    target_qos: str | None = None
    checksums: dict[str, str] | None = None
    xattrs: dict[str, str] | None = None
    labels: list[str] | None = None
    children: list[NamespaceEntry] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_dir(self) -> bool:
        return self.file_type == "DIR"

    @property
    def is_file(self) -> bool:
        return self.file_type == "REGULAR"

    @classmethod
    def from_json(cls, path: str, data: dict[str, Any]) -> NamespaceEntry:
        name = data.get("fileName") or path.rstrip("/").rsplit("/", 1)[-1] or "/"
        children = None
        if isinstance(data.get("children"), list):
            base = path.rstrip("/")
            children = [
                cls.from_json(f"{base}/{c.get('fileName')}", c)
                for c in data["children"]
                if isinstance(c, dict) and c.get("fileName")
            ]
        xattrs = data.get("extendedAttributes")
        return cls(
            path=path,
            name=name,
            file_type=str(data.get("fileType", "")),
            size=data.get("size"),
            mtime=data.get("mtime"),
            creation_time=data.get("creationTime"),
            pnfsid=data.get("pnfsId"),
            mode=data.get("mode"),
            nlink=data.get("nlink"),
            mime_type=data.get("fileMimeType"),
            locality=data.get("fileLocality"),
            locations=_list(data["locations"]) if "locations" in data else None,
            # The User Guide spells these currentQoS/targetQoS; the code (Jackson getters) says Qos.
            current_qos=data.get("currentQos") or data.get("currentQoS"),
            target_qos=data.get("targetQos") or data.get("targetQoS"),
            checksums=_checksums.from_rest(data["checksums"]) if "checksums" in data else None,
            xattrs={str(k): str(v) for k, v in xattrs.items()} if isinstance(xattrs, dict) else None,
            labels=_list(data["labels"]) if "labels" in data else None,
            children=children,
            raw=data,
        )


@dataclass(frozen=True)
class UserInfo:
    """``GET /api/v1/user``: who the server thinks we are."""

    status: str
    username: str | None = None
    uid: int | None = None
    gids: list[int] = field(default_factory=list)
    home: str | None = None
    root: str | None = None
    roles: list[str] = field(default_factory=list)
    unasserted_roles: list[str] = field(default_factory=list)  # held, but not asserted by this login
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def authenticated(self) -> bool:
        return self.status == "AUTHENTICATED"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UserInfo:
        return cls(
            status=str(data.get("status", "")),
            username=data.get("username"),
            uid=data.get("uid"),
            gids=_list(data.get("gids")),
            home=data.get("homeDirectory"),
            root=data.get("rootDirectory"),
            roles=_list(data.get("roles")),
            unasserted_roles=_list(data.get("unassertedRoles")),
            raw=data,
        )


@dataclass(frozen=True)
class MacaroonResponse:
    """Reply of a macaroon request (§3.2). Every field carrying the token is hidden from ``repr``."""

    macaroon: str = field(repr=False)
    target: str
    base: str
    target_with_macaroon: str = field(repr=False)
    base_with_macaroon: str = field(repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MacaroonResponse:
        uri = data.get("uri") or {}
        return cls(
            macaroon=str(data["macaroon"]),
            target=str(uri.get("target", "")),
            base=str(uri.get("base", "")),
            target_with_macaroon=str(uri.get("targetWithMacaroon", "")),
            base_with_macaroon=str(uri.get("baseWithMacaroon", "")),
        )


@dataclass(frozen=True)
class BulkSubmission:
    """A created bulk or stage request: the id and the URL the server told us to use."""

    id: str
    url: str


@dataclass(frozen=True)
class BulkTarget:
    id: int | None
    target: str
    state: str
    error_type: str | None = None
    error_message: str | None = None
    submitted_at: int | None = None
    started_at: int | None = None
    finished_at: int | None = None


BULK_FINISHED = frozenset({"COMPLETED", "CANCELLED"})


@dataclass(frozen=True)
class BulkRequestInfo(_XComValue):
    """``GET /bulk-requests/{id}``, with every page of targets merged."""

    id: str
    status: str
    targets: list[BulkTarget]
    target_prefix: str | None = None
    arrived_at: int | None = None
    started_at: int | None = None
    last_modified: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.status.upper() in BULK_FINISHED

    @property
    def failed_targets(self) -> list[BulkTarget]:
        return [t for t in self.targets if t.state == "FAILED"]

    @classmethod
    def from_json(cls, request_id: str, data: dict[str, Any], targets: list[BulkTarget]) -> BulkRequestInfo:
        return cls(
            id=str(data.get("uid") or request_id),
            status=str(data.get("status", "")),
            targets=targets,
            target_prefix=data.get("targetPrefix"),
            arrived_at=data.get("arrivedAt"),
            started_at=data.get("startedAt"),
            last_modified=data.get("lastModified"),
            raw=data,
        )


@dataclass(frozen=True)
class ArchivedBulkRequest(_XComValue):
    """``GET /bulk-requests/archived/{id}``: what dCache keeps of a cleared request (counts, not targets)."""

    id: str
    status: str
    activity: str | None = None
    owner: str | None = None  # "uid:gid"
    depth: str | None = None
    target_prefix: str | None = None
    initial_targets: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # error type -> failed targets
    succeeded: int = 0
    cancelled: int = 0
    failed: int = 0
    arrived_at: int | None = None
    started_at: int | None = None
    last_modified: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, request_id: str, data: dict[str, Any]) -> ArchivedBulkRequest:
        errors = data.get("errors")
        return cls(
            id=str(data.get("uid") or request_id),
            status=str(data.get("status", "")),
            activity=data.get("activity"),
            owner=data.get("owner"),
            depth=data.get("depth"),
            target_prefix=data.get("targetPrefix"),
            initial_targets=[str(t) for t in _list(data.get("initialTargets"))],
            errors={str(k): int(v) for k, v in errors.items()} if isinstance(errors, dict) else {},
            succeeded=int(data.get("succeeded") or 0),
            cancelled=int(data.get("cancelled") or 0),
            failed=int(data.get("failed") or 0),
            arrived_at=data.get("arrivedAt"),
            started_at=data.get("startedAt"),
            last_modified=data.get("lastModified"),
            raw=data,
        )


def bulk_targets(data: dict[str, Any]) -> list[BulkTarget]:
    return [
        BulkTarget(
            id=t.get("id"),
            target=str(t.get("target", "")),
            state=str(t.get("state", "")),
            error_type=t.get("errorType"),
            error_message=t.get("errorMessage"),
            submitted_at=t.get("submittedAt"),
            started_at=t.get("startedAt"),
            finished_at=t.get("finishedAt"),
        )
        for t in _list(data.get("targets"))
        if isinstance(t, dict)
    ]


@dataclass(frozen=True)
class StagedFile:
    path: str
    state: str
    error: str | None = None
    started_at: int | None = None
    finished_at: int | None = None


STAGE_FILE_FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})


@dataclass(frozen=True)
class StageRequestInfo:
    """``GET /tape/stage/{id}``; times are epoch milliseconds as dCache sends them."""

    id: str
    files: list[StagedFile]
    created_at: int | None = None
    started_at: int | None = None
    completed_at: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        """``completedAt`` appears only at the end; fall back to every file being final."""
        return self.completed_at is not None or (
            bool(self.files) and all(f.state in STAGE_FILE_FINAL for f in self.files)
        )

    @classmethod
    def from_json(cls, request_id: str, data: dict[str, Any]) -> StageRequestInfo:
        files = [
            StagedFile(
                path=str(f.get("path", "")),
                state=str(f.get("state", "")),
                error=f.get("error"),
                started_at=f.get("startedAt"),
                finished_at=f.get("finishedAt"),
            )
            for f in _list(data.get("files"))
            if isinstance(f, dict)
        ]
        return cls(
            id=str(data.get("id") or request_id),
            files=files,
            created_at=data.get("createdAt"),
            started_at=data.get("startedAt"),
            completed_at=data.get("completedAt"),
            raw=data,
        )


@dataclass(frozen=True)
class ArchiveInfo:
    path: str
    locality: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class TransferResult:
    """Outcome of an upload, download or third-party copy; checksums are lowercase hex."""

    path: str
    size: int | None = None
    checksums: dict[str, str] = field(default_factory=dict)
    verified_by: str | None = None
    markers: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ChannelMessage:
    """One message of a storage-events channel (§4.4), as the SSE stream delivers it.

    This is the wire-level unit the hooks read; the triggers turn inotify messages into the one
    source-neutral :class:`airflow_dcache.events.model.StorageEvent` of the event contract.

    ``type`` is the SSE event name (``inotify``, ``metronome`` or ``SYSTEM``); ``id`` is the per-channel
    counter to pass back as ``last_event_id`` when reconnecting, and ``None`` for ``SYSTEM`` events, which
    dCache never replays. ``data`` is the parsed JSON: for inotify and metronome the envelope
    ``{"event": …, "subscription": url}``, for ``SYSTEM`` ``{"type": …[, "subscription": url]}``.
    """

    type: str
    id: str | None
    data: Any

    @property
    def is_system(self) -> bool:
        return self.type == "SYSTEM"

    @property
    def payload(self) -> Any:
        """The type's own payload: an object for inotify, a string for metronome (``None`` for SYSTEM)."""
        return self.data.get("event") if isinstance(self.data, dict) and not self.is_system else None

    @property
    def subscription(self) -> str | None:
        """The subscription URL that fired (or that a ``SYSTEM`` event is about); compare it whole."""
        value = self.data.get("subscription") if isinstance(self.data, dict) else None
        return str(value) if value is not None else None

    @property
    def system_type(self) -> str | None:
        """``NEW_SUBSCRIPTION``, ``SUBSCRIPTION_CLOSED``, ``EVENT_LOSS``, ``COMPETING_CLIENT``, ``SHUTDOWN``."""
        if not self.is_system or not isinstance(self.data, dict):
            return None
        value = self.data.get("type")
        return str(value) if value is not None else None

    def _inotify(self) -> dict[str, Any]:
        payload = self.payload if self.type == "inotify" else None
        return payload if isinstance(payload, dict) else {}

    @property
    def name(self) -> str | None:
        """inotify: the child's file name; ``None`` for events about the watched object itself."""
        value = self._inotify().get("name")
        return str(value) if value is not None else None

    @property
    def mask(self) -> list[str]:
        """inotify: the event flag, plus ``IN_ISDIR`` for directories; empty for other types."""
        return [str(m) for m in _list(self._inotify().get("mask"))]

    @property
    def cookie(self) -> str | None:
        """inotify: the same value on both halves (``IN_MOVED_FROM``/``IN_MOVED_TO``) of one rename."""
        value = self._inotify().get("cookie")
        return str(value) if value is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "id": self.id, "data": self.data}


__all__ = [
    "BULK_FINISHED",
    "STAGE_FILE_FINAL",
    "ArchiveInfo",
    "ArchivedBulkRequest",
    "AuthType",
    "BulkRequestInfo",
    "BulkSubmission",
    "BulkTarget",
    "ChannelMessage",
    "ConnectionSettings",
    "MacaroonResponse",
    "NamespaceEntry",
    "StageRequestInfo",
    "StagedFile",
    "TransferResult",
    "UserInfo",
    "parse_site",
]
