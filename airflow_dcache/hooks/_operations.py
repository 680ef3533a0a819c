"""Every non-streaming hook operation, written once as a sans-I/O generator.

An operation yields :class:`Call` objects and receives :class:`ResponseInfo` for each (or has the typed
error thrown into it); its return value is the result. The sync hook drives these generators with
``requests`` and the async hook with ``httpx``, so multi-step logic (``mkdir`` with parents, paging,
recursive delete, checksum fallbacks) exists exactly once.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, unquote, urljoin, urlsplit

from airflow_dcache.exceptions import (
    AlreadyExists,
    Conflict,
    DCacheConnectionError,
    NotFound,
    ServerError,
    UnexpectedResponse,
)
from airflow_dcache.hooks import _caveats, _checksums
from airflow_dcache.hooks._protocol import MACAROON_REQUEST_TYPE, ResponseInfo, parse_json
from airflow_dcache.hooks._settings import ConnectionSettings
from airflow_dcache.hooks._transfers import refuse_directory
from airflow_dcache.hooks.arguments import parse_gid, parse_mode
from airflow_dcache.hooks.models import (
    ArchivedBulkRequest,
    ArchiveInfo,
    BulkRequestInfo,
    BulkSubmission,
    BulkTarget,
    MacaroonResponse,
    NamespaceEntry,
    StageRequestInfo,
    UserInfo,
    bulk_targets,
)
from airflow_dcache.hooks.urls import (
    allowed_path,
    api_url,
    door_url,
    mask_url,
    namespace_url,
    normalize_path,
    same_origin,
    well_known_url,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """One HTTP request, described without reference to any client library."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = field(default=None, repr=False)
    # Statuses that mean "already exists" for this call (MKCOL 405, MOVE 412); mapped to AlreadyExists.
    exists_statuses: tuple[int, ...] = ()
    follow_redirects: bool = False
    # Non-2xx statuses handed back as replies instead of errors (never followed), e.g. subscribe's 303.
    ok_statuses: tuple[int, ...] = ()
    # A metadata change that dCache may allow only to the owner or a role: "on_refusal" (QoS, xattrs,
    # labels, pins on one path) is sent with a plain login first and again asserting the connection's
    # roles if that login is refused (403); "always" (a bulk request, whose targets dCache processes
    # later as the submitting identity, so a refusal never comes back to the submit) asserts them at
    # once. Reads, listings and copies ("") never carry a role.
    elevate: str = ""

    @classmethod
    def json(cls, method: str, url: str, payload: Any) -> Call:
        """JSON body with exactly ``application/json``; the frontend reads POST/PATCH bodies only then."""
        return cls(method, url, {"Content-Type": "application/json"}, json.dumps(payload).encode())


Operation = Generator[Call, ResponseInfo, T]

NAMESPACE_FLAGS = ("children", "locality", "locations", "qos", "checksum", "xattr", "labels", "optional")
QOS_KINDS = frozenset({"file", "directory"})
QOS_TARGETS = frozenset({"disk", "tape", "disk+tape", "tape+disk", "volatile"})
# java.util.concurrent.TimeUnit's names: dCache reads pin lifetime units with TimeUnit.valueOf (exact,
# upper case), so any case is accepted here and the upper-case name is sent.
_TIME_UNITS = ("NANOSECONDS", "MICROSECONDS", "MILLISECONDS", "SECONDS", "MINUTES", "HOURS", "DAYS")
LIFETIME_UNITS = frozenset(_TIME_UNITS)
BULK_ACTIVITIES = frozenset({"PIN", "UNPIN", "STAGE", "RELEASE", "DELETE", "UPDATE_QOS", "LOG_TARGET"})
EXPAND = frozenset({"NONE", "TARGETS", "ALL"})


def _json(info: ResponseInfo, call: Call) -> Any:
    return parse_json(info, call.method, call.url)


# ------------------------------------------------------------------------------------ namespace

_PROPFIND_BODY = b'<?xml version="1.0" encoding="utf-8"?><propfind xmlns="DAV:"><prop><resourcetype/></prop></propfind>'


def door_probe(s: ConnectionSettings, path: str = "/") -> Operation[int]:
    """PROPFIND depth 0: authenticated, side-effect free, and answered by the door itself (HEAD on a
    directory is not, and GET may redirect to a pool)."""
    headers = {"Depth": "0", "Content-Type": "application/xml"}
    if path == "/" and s.allowed_roots:  # a connection limited to some trees probes the first of them
        path = s.allowed_roots[0]
    info = yield Call("PROPFIND", door_url(s, path), headers, _PROPFIND_BODY)
    return info.status


def whoami(s: ConnectionSettings) -> Operation[UserInfo]:
    call = Call("GET", api_url(s, "user"), {"Accept": "application/json"})
    data = _json((yield call), call)
    if not isinstance(data, dict):
        raise UnexpectedResponse("GET /user did not return an object", method="GET", url=call.url)
    return UserInfo.from_json(data)


def stat(s: ConnectionSettings, path: str, **flags: Any) -> Operation[NamespaceEntry]:
    path = allowed_path(s, path)
    unknown = set(flags) - set(NAMESPACE_FLAGS) - {"offset", "limit"}
    if unknown:
        raise TypeError(f"unknown stat flags: {sorted(unknown)}; allowed: {NAMESPACE_FLAGS}")
    query: dict[str, Any] = {k: True for k, v in flags.items() if k in NAMESPACE_FLAGS and v}
    query.update({k: int(v) for k, v in flags.items() if k in ("offset", "limit") and v is not None})
    call = Call("GET", namespace_url(s, path, query), {"Accept": "application/json"})
    data = _json((yield call), call)
    if not isinstance(data, dict):
        raise UnexpectedResponse("namespace GET did not return an object", method="GET", url=call.url)
    return NamespaceEntry.from_json(path, data)


def stat_by_pnfsid(s: ConnectionSettings, pnfsid: str) -> Operation[NamespaceEntry]:
    """``GET /id/{pnfsid}`` (admins only on dCache: others get ``PermissionDenied``); every flag is on
    and the reply names the path, which becomes the entry's ``path``."""
    value = pnfsid.strip() if isinstance(pnfsid, str) else ""
    if not value.isalnum():
        raise ValueError(f"not a PNFS-ID: {pnfsid!r}")
    call = replace(Call("GET", api_url(s, f"id/{value}"), dict(_JSON)), elevate="on_refusal")  # admins only
    data = _json((yield call), call)
    if not isinstance(data, dict) or not isinstance(data.get("path"), str):
        raise UnexpectedResponse("GET /id did not return an object with a path", method="GET", url=call.url)
    return NamespaceEntry.from_json(normalize_path(data["path"]), data)


def list_dir(
    s: ConnectionSettings, path: str, page_size: int | None = None, **flags: Any
) -> Operation[list[NamespaceEntry]]:
    """All children, paging with ``offset``/``limit`` when ``page_size`` is set (huge directories)."""
    entries: list[NamespaceEntry] = []
    offset = 0
    while True:
        paging = {"offset": offset, "limit": page_size} if page_size else {}
        entry = yield from stat(s, path, children=True, **paging, **flags)
        if not entry.is_dir:
            raise Conflict(f"{entry.path} is not a directory", method="GET", url=namespace_url(s, path))
        page = entry.children or []
        entries.extend(page)
        if not page_size or len(page) < page_size:
            return entries
        offset += len(page)


LABEL_FLAGS = ("locality", "locations", "qos", "xattr", "labels")


def list_labels(s: ConnectionSettings) -> Operation[list[str]]:
    """``GET /labels``: every label in use (dCache returns a set; sorted here)."""
    call = Call("GET", api_url(s, "labels"), dict(_JSON))
    data = _json((yield call), call)
    if not isinstance(data, dict) or not isinstance(data.get("labels"), list):
        raise UnexpectedResponse("label list is not an object with a labels list", method="GET", url=call.url)
    return sorted(str(x) for x in data["labels"])


def labelled_files(s: ConnectionSettings, label: str, **flags: Any) -> Operation[list[NamespaceEntry]]:
    """``GET /labels/{label}``: the label's virtual directory. dCache names each file but gives no path, so
    an entry's ``path`` is its file name; its ``pnfsid`` identifies it (see ``stat_by_pnfsid``)."""
    if not isinstance(label, str) or not label.strip() or label.strip() in (".", ".."):
        raise ValueError(f"label must be a non-empty name other than '.' and '..', got {label!r}")
    unknown = set(flags) - set(LABEL_FLAGS)
    if unknown:
        raise TypeError(f"unknown label flags: {sorted(unknown)}; allowed: {LABEL_FLAGS}")
    query = {k: True for k, v in flags.items() if v}
    call = Call("GET", api_url(s, f"labels/{quote(label.strip(), safe='')}", query), dict(_JSON))
    data = _json((yield call), call)
    children = data.get("children") if isinstance(data, dict) else None
    if not isinstance(children, list):
        raise UnexpectedResponse("label directory has no children list", method="GET", url=call.url)
    return [NamespaceEntry.from_json(str(c["fileName"]), c) for c in children
            if isinstance(c, dict) and c.get("fileName")]


def exists(s: ConnectionSettings, path: str) -> Operation[bool]:
    try:
        yield from stat(s, path)
    except NotFound:
        return False
    return True


def mkdir(s: ConnectionSettings, path: str, parents: bool = True, exist_ok: bool = True) -> Operation[bool]:
    """MKCOL; on a missing parent (409, or 404 from some servers) create the parents first.

    Returns whether the directory was created. 405 means "exists": accepted with ``exist_ok`` once a stat
    confirms it is a directory, since MKCOL also answers 405 when a *file* has that name.
    """
    path = allowed_path(s, path)
    call = Call("MKCOL", door_url(s, path), exists_statuses=(405,))
    try:
        yield call
        return True
    except AlreadyExists:
        if not exist_ok:
            raise
        entry = yield from stat(s, path)
        if not entry.is_dir:
            raise AlreadyExists(
                f"{path} exists and is not a directory", status=405, method="MKCOL", url=call.url
            ) from None
        return False
    except (Conflict, NotFound):
        parent = path.rsplit("/", 1)[0] or "/"
        if not parents or parent == path or parent == "/":
            raise
    yield from mkdir(s, parent, parents=True, exist_ok=True)
    return (yield from mkdir(s, path, parents=False, exist_ok=exist_ok))


def move(s: ConnectionSettings, source: str, destination: str, overwrite: bool = False) -> Operation[None]:
    headers = {"Destination": door_url(s, destination), "Overwrite": "T" if overwrite else "F"}
    yield Call("MOVE", door_url(s, source), headers, exists_statuses=(412,))


def delete(s: ConnectionSettings, path: str, recursive: bool = False, missing_ok: bool = False,
           directory: bool = False) -> Operation[bool]:
    """Files and directory trees go through the door (so billing records each file's removal); an empty
    directory without ``recursive`` through the frontend, whose ``DELETE`` refuses a non-empty one.

    A tree is one ``DELETE`` at the door: dCache's WebDAV door removes a directory's children one by one,
    depth first, then the directory (Milton's ``DeleteHelperImpl``: dCache's directory resource is not a
    ``DeletableCollectionResource``; read in dCache 12.1 master and its Milton fork 2.7.3.0-dcache-1),
    answering 204 when all is gone and 403 at the first entry the caller may not delete. A server error
    part-way (a subdirectory it could not list ends in "Directory is not empty") is finished by the
    walk: a listing and a delete per entry, which names the entry that stays.

    ``directory``: the caller expects a directory (one it made); a file there is refused
    (``Conflict``), not deleted."""
    if directory and not recursive:
        raise ValueError("directory=True is for a recursive delete of a directory; pass recursive=True")
    path = allowed_path(s, path)
    if path == "/":
        raise ValueError("refusing to delete the root directory")
    try:
        entry = yield from stat(s, path)
        if directory and not entry.is_dir:
            raise Conflict(f"{path} is a file, not a directory: not deleted")
        if entry.is_dir and recursive:
            try:
                yield Call("DELETE", door_url(s, path))
                return True
            except ServerError:
                pass  # part of the tree may be gone: the walk deletes the rest or names what stays
        yield from _delete_entry(s, entry, recursive)
        return True
    except NotFound:
        if missing_ok:
            return False
        raise


def _delete_entry(s: ConnectionSettings, entry: NamespaceEntry, recursive: bool) -> Operation[None]:
    """Delete a known entry; children come typed from the listing, so no extra stat per child."""
    if not entry.is_dir:
        yield Call("DELETE", door_url(s, entry.path))
        return
    if recursive:
        yield from _delete_children(s, entry.path)
    yield Call("DELETE", namespace_url(s, entry.path), {"Accept": "application/json"})


def _delete_children(s: ConnectionSettings, path: str) -> Operation[None]:
    for child in (yield from list_dir(s, path)):
        with contextlib.suppress(NotFound):  # removed concurrently: the goal is reached
            yield from _delete_entry(s, child, recursive=True)


def _action(s: ConnectionSettings, path: str, payload: dict[str, Any]) -> Operation[None]:
    """Namespace POST actions answer 201 (current code) or 200 (User Guide); any 2xx is success."""
    yield replace(Call.json("POST", namespace_url(s, path), payload), elevate="on_refusal")


def set_xattr(s: ConnectionSettings, path: str, attributes: Mapping[str, Any], mode: str = "EITHER") -> Operation[None]:
    mode = mode.upper()
    if mode not in ("CREATE", "MODIFY", "EITHER"):
        raise ValueError("mode must be CREATE, MODIFY or EITHER")
    if not attributes:
        raise ValueError("no attributes given")
    payload = {"action": "set-xattr", "attributes": {str(k): str(v) for k, v in attributes.items()}}
    yield from _action(s, path, {**payload, "mode": mode})


def remove_xattr(s: ConnectionSettings, path: str, names: Iterable[str]) -> Operation[None]:
    yield from _action(s, path, {"action": "rm-xattr", "names": list(names)})


def set_labels(s: ConnectionSettings, path: str, labels: Iterable[str], replace: bool = False) -> Operation[list[str]]:
    """Add labels; with ``replace`` also remove the ones not listed. Returns the labels now set."""
    wanted = list(dict.fromkeys(str(label) for label in labels))
    current: list[str] = []
    if replace:
        current = (yield from stat(s, path, labels=True)).labels or []
        for label in current:
            if label not in wanted:
                yield from _action(s, path, {"action": "rm-label", "label": label})
    for label in wanted:
        if label not in current:
            yield from _action(s, path, {"action": "set-label", "label": label})
    return wanted


def path_labels(s: ConnectionSettings, path: str) -> Operation[list[str]]:
    """The labels of one file or directory (``labels=true`` on its namespace entry)."""
    return (yield from stat(s, path, labels=True)).labels or []


def remove_labels(s: ConnectionSettings, path: str, labels: Iterable[str]) -> Operation[list[str]]:
    """Remove labels; ones the path does not have are skipped (dCache answers 409 for them), so a
    repeated call changes nothing. Returns the labels left."""
    unwanted = set(_label_names(labels, "labels"))
    current = yield from path_labels(s, path)
    for label in current:
        if label in unwanted:
            yield from _action(s, path, {"action": "rm-label", "label": label})
    return [label for label in current if label not in unwanted]


def _label_names(labels: Iterable[str], field_name: str) -> list[str]:
    if isinstance(labels, str) or not all(isinstance(x, str) and x.strip() for x in labels):
        raise ValueError(f"{field_name}: expected a list of non-empty label names, got {labels!r}")
    return list(labels)


def chmod(s: ConnectionSettings, path: str, mode: int | str) -> Operation[None]:
    """``{"action":"chmod","mode":<int>}``: dCache lets only the owner (or a role such as admin) do it."""
    yield from _action(s, path, {"action": "chmod", "mode": parse_mode(mode)})


def chgrp(s: ConnectionSettings, path: str, gid: int | str) -> Operation[None]:
    """``{"action":"chgrp","gid":<int>}``: the owner, and only to a group it is a member of."""
    yield from _action(s, path, {"action": "chgrp", "gid": parse_gid(gid)})


def checksum(
    s: ConnectionSettings, path: str, algorithms: Iterable[str] = ("adler32", "md5")
) -> Operation[dict[str, str]]:
    """HEAD + ``Want-Digest`` (RFC 3230) and, for sha-256/sha-512, ``Want-Repr-Digest`` (RFC 9530).

    dCache answers a list with *one* digest (its preferred algorithm) in ``Digest`` or ``Repr-Digest``;
    either is read. Each algorithm still missing is asked for separately, and whatever the door does not
    report (a server speaking only one of the two RFCs) comes from the frontend's stored checksums.
    Algorithms the file does not have are simply absent from the result.
    """
    wanted = list(dict.fromkeys(_checksums.canonical_algorithm(a) for a in algorithms))
    if not wanted:
        raise ValueError("no checksum algorithm requested")
    url = door_url(s, path)
    info = yield Call("HEAD", url, _checksums.want_headers(wanted))
    digests = _checksums.digests_from_headers(info.headers)
    speaks_rfc3230 = _checksums.has_rfc3230(info.headers)
    if digests:
        for algorithm in wanted:
            if algorithm not in digests:
                info = yield Call("HEAD", url, _checksums.want_headers([algorithm]))
                digests.update(_checksums.digests_from_headers(info.headers))
                speaks_rfc3230 = speaks_rfc3230 or _checksums.has_rfc3230(info.headers)
    if not digests or (not speaks_rfc3230 and any(a not in digests for a in wanted)):
        # nothing from the door, or only Repr-Digest: what RFC 9530 cannot carry is in the namespace
        stored = (yield from stat(s, path, checksum=True)).checksums or {}
        digests = {**stored, **digests}
    return {k: v for k, v in digests.items() if k in wanted}


# ------------------------------------------------------------------------------------ QoS and pins


def set_qos(
    s: ConnectionSettings,
    path: str,
    target: str | None = None,
    policy: str | None = None,
    state: int | None = None,
) -> Operation[None]:
    """Fire-and-forget: dCache queues the transition; poll ``stat(qos=True)`` for ``target_qos``."""
    if (target is None) == (policy is None):
        raise ValueError("give exactly one of target or policy")
    payload: dict[str, Any] = {"action": "qos"}
    if target is not None:
        if target.lower() not in QOS_TARGETS:
            raise ValueError(f"QoS target must be one of {sorted(QOS_TARGETS)}")
        payload["target"] = target.lower()
    else:
        payload["policy"] = policy
        payload["state"] = int(state or 0)
    yield from _action(s, path, payload)


def lifetime_unit(unit: object, name: str = "unit") -> str:
    """A pin lifetime unit as dCache takes it: a TimeUnit name, in any case here, sent in upper case."""
    text = unit.strip().upper() if isinstance(unit, str) else None
    if text not in LIFETIME_UNITS:
        raise ValueError(f"{name} must be a time unit, one of {', '.join(_TIME_UNITS)} (any case); got {unit!r}")
    return text


def pin(s: ConnectionSettings, path: str, lifetime: float, unit: str = "SECONDS") -> Operation[None]:
    unit = lifetime_unit(unit)
    yield from _action(s, path, {"action": "pin", "lifetime": lifetime, "lifetime-unit": unit})


def unpin(s: ConnectionSettings, path: str) -> Operation[None]:
    yield from _action(s, path, {"action": "unpin"})


def _qos_kind(kind: str) -> str:
    kind = str(kind).lower()
    if kind not in QOS_KINDS:
        raise ValueError(f"kind must be one of {sorted(QOS_KINDS)}")
    return kind


def qos_classes(s: ConnectionSettings, kind: str = "file") -> Operation[list[str]]:
    """``GET /qos-management/qos/{file|directory}``: the QoS names a ``set_qos`` may ask for."""
    call = Call("GET", api_url(s, f"qos-management/qos/{_qos_kind(kind)}"), dict(_JSON))
    data = _json((yield call), call)
    if not isinstance(data, dict) or not isinstance(data.get("name"), list):
        raise UnexpectedResponse("QoS list has no 'name' list", method="GET", url=call.url)
    return [str(name) for name in data["name"]]


def qos_capability(s: ConnectionSettings, qos: str, kind: str = "file") -> Operation[dict[str, Any]]:
    """``GET /qos-management/qos/{kind}/{qos}`` → its ``backendCapability``: ``name``, ``transition``
    (the QoS it may move to) and CDMI ``metadata`` (latency, redundancy, placement)."""
    if not isinstance(qos, str) or not qos.strip():
        raise ValueError("qos must be a non-empty QoS name")
    endpoint = f"qos-management/qos/{_qos_kind(kind)}/{quote(qos.strip(), safe='+')}"
    call = Call("GET", api_url(s, endpoint), dict(_JSON))
    data = _json((yield call), call)
    capability = data.get("backendCapability") if isinstance(data, dict) else None
    if not isinstance(capability, dict):
        raise UnexpectedResponse("QoS reply has no backendCapability", method="GET", url=call.url)
    return capability


# ----------------------------------------------------------------------------------------- bulk


def request_id(value: str) -> str:
    """Accept an id or the URL the server returned; never send credentials to a URL we did not build."""
    text = value.strip().rstrip("/")
    if "://" in text or "/" in text:
        text = unquote(urlsplit(text).path.rstrip("/").rsplit("/", 1)[-1])
    if not text or "/" in text:
        raise ValueError(f"not a request id or URL: {value!r}")
    return text


def _header(info: ResponseInfo, name: str) -> str | None:
    for key, value in info.headers.items():
        if key.lower() == name:
            return value
    return None


def _stringify_arguments(arguments: Mapping[str, Any] | None) -> dict[str, str] | None:
    """The bulk service wants string values; nested objects (``diskLifetime``) are JSON strings."""
    if not arguments:
        return None
    result: dict[str, str] = {}
    for key, value in arguments.items():
        if isinstance(value, (dict, list)):
            result[key] = json.dumps(value)
        elif isinstance(value, bool):
            result[key] = "true" if value else "false"
        else:
            result[key] = str(value)
    return result


def submit_bulk_request(
    s: ConnectionSettings,
    activity: str,
    targets: Iterable[str],
    *,
    arguments: Mapping[str, Any] | None = None,
    target_prefix: str | None = None,
    expand_directories: str = "NONE",
    cancel_on_failure: bool = False,
    clear_on_success: bool = False,
    clear_on_failure: bool = False,
) -> Operation[BulkSubmission]:
    activity = activity.upper()
    if activity not in BULK_ACTIVITIES:
        raise ValueError(f"activity must be one of {sorted(BULK_ACTIVITIES)}")
    expand = expand_directories.upper()
    if expand not in EXPAND:
        raise ValueError(f"expand_directories must be one of {sorted(EXPAND)}")
    target_list = [str(t) for t in targets]
    if not target_prefix:  # targets are absolute paths: each must be inside the allowed roots
        target_list = [allowed_path(s, t) if t.startswith("/") else t for t in target_list]
    elif s.allowed_roots:
        allowed_path(s, target_prefix)
    if not target_list:
        raise ValueError("a bulk request needs at least one target")
    payload: dict[str, Any] = {
        "activity": activity,
        "target": target_list,
        "expand_directories": expand,
        "cancel_on_failure": cancel_on_failure,
        "clear_on_success": clear_on_success,
        "clear_on_failure": clear_on_failure,
    }
    if target_prefix:
        payload["target_prefix"] = target_prefix
    args = _stringify_arguments(arguments)
    if args and activity == "PIN" and "lifetimeUnit" in args:
        args["lifetimeUnit"] = lifetime_unit(args["lifetimeUnit"], "arguments['lifetimeUnit']")
    if args:
        payload["arguments"] = args
    call = replace(Call.json("POST", api_url(s, "bulk-requests"), payload), elevate="always")
    info = yield call
    # The id is in the ``request-url`` header; the javadoc's ``Location`` is accepted as a fallback.
    url = _header(info, "request-url") or _header(info, "location")
    if not url:
        raise UnexpectedResponse(
            "bulk request created but no request-url header", status=info.status, method="POST", url=call.url
        )
    rid = request_id(url)
    return BulkSubmission(id=rid, url=api_url(s, f"bulk-requests/{rid}"))


def bulk_request_status(s: ConnectionSettings, request: str) -> Operation[BulkRequestInfo]:
    """Fetch every page of targets (``nextId`` is -1 on the last page)."""
    rid = request_id(request)
    targets: list[BulkTarget] = []
    offset: int | None = None
    seen: set[int] = set()
    while True:
        call = Call("GET", api_url(s, f"bulk-requests/{rid}", {"offset": offset}), {"Accept": "application/json"})
        data = _json((yield call), call)
        if not isinstance(data, dict):
            raise UnexpectedResponse("bulk status is not an object", method="GET", url=call.url)
        targets.extend(bulk_targets(data))
        next_id = data.get("nextId")
        if not isinstance(next_id, int) or next_id < 0 or next_id in seen:
            return BulkRequestInfo.from_json(rid, data, targets)
        seen.add(next_id)
        offset = next_id


def cancel_bulk_request(s: ConnectionSettings, request: str, paths: Iterable[str] | None = None) -> Operation[None]:
    payload: dict[str, Any] = {"action": "cancel"}
    if paths is not None:
        payload["paths"] = list(paths)
    yield Call.json("PATCH", api_url(s, f"bulk-requests/{request_id(request)}"), payload)


def clear_bulk_request(s: ConnectionSettings, request: str, cancel_if_running: bool = False) -> Operation[None]:
    url = api_url(s, f"bulk-requests/{request_id(request)}", {"cancelIfRunning": cancel_if_running})
    yield Call("DELETE", url)


def list_bulk_requests(
    s: ConnectionSettings,
    status: Iterable[str] | None = None,
    owner: str | None = None,
    path: str | None = None,
) -> Operation[list[dict[str, Any]]]:
    query = {
        "status": ",".join(x.lower() for x in status) if status else None,
        "owner": owner,
        "path": path,
    }
    call = Call("GET", api_url(s, "bulk-requests", query), {"Accept": "application/json"})
    data = _json((yield call), call)
    if isinstance(data, dict):  # tolerate a wrapped list
        data = data.get("requests") or data.get("items") or []
    return [d for d in data or [] if isinstance(d, dict)]


ARCHIVE_TIME_FORMAT = "%Y/%m/%d-%H:%M:%S"  # dCache's yyyy/MM/dd-HH:mm:ss, read in the server's time zone


def _archive_time(value: datetime | str | None, name: str) -> str | None:
    """dCache reads these in the server's zone: an aware datetime is converted to this machine's local time,
    which is right when client and server share a zone (naive datetimes are sent as they are)."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, datetime):
        raise ValueError(f"{name} must be a datetime or a 'yyyy/MM/dd-HH:mm:ss' string, got {value!r}")
    if value.tzinfo is not None:
        value = value.astimezone()
    return value.strftime(ARCHIVE_TIME_FORMAT)


def _names(value: Iterable[str] | str | None) -> list[str] | None:
    """A single name may be passed as a plain string; it must not be split into characters."""
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def list_archived_bulk_requests(s: ConnectionSettings, *, owner: Iterable[str] | str | None = None,
                                activity: Iterable[str] | str | None = None, status: Iterable[str] | str | None = None,
                                before: datetime | str | None = None, after: datetime | str | None = None,
                                limit: int | None = None) -> Operation[list[dict[str, Any]]]:
    """Summaries of archived (cleared) requests, oldest first: ``uid``, ``owner``, ``activity``, ``status``,
    ``lastModified``. ``before``/``after`` bound the last modification; naive datetimes are taken as the
    server's local time, as dCache reads them."""
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    owner, activity, status = (_names(v) for v in (owner, activity, status))
    query = {
        "owner": ",".join(owner) if owner else None,
        "activity": ",".join(activity) if activity else None,
        "status": ",".join(x.lower() for x in status) if status else None,
        "before": _archive_time(before, "before"),
        "after": _archive_time(after, "after"),
        "limit": limit,
    }
    call = Call("GET", api_url(s, "bulk-requests/archived", query), {"Accept": "application/json"})
    data = _json((yield call), call)
    if not isinstance(data, list):
        raise UnexpectedResponse("archived bulk request list is not a list", method="GET", url=call.url)
    return [d for d in data if isinstance(d, dict)]


def archived_bulk_request(s: ConnectionSettings, request: str) -> Operation[ArchivedBulkRequest]:
    """An archived request's counts and initial targets. dCache may answer an unknown id with an empty
    204 instead of 404; both become :class:`NotFound`."""
    rid = request_id(request)
    call = Call("GET", api_url(s, f"bulk-requests/archived/{rid}"), {"Accept": "application/json"})
    info = yield call
    if info.status == 204 or not info.body.strip():
        raise NotFound(f"archived bulk request {rid} not found", status=404, method="GET", url=call.url)
    data = _json(info, call)
    if not isinstance(data, dict):
        raise UnexpectedResponse("archived bulk request is not an object", method="GET", url=call.url)
    return ArchivedBulkRequest.from_json(rid, data)


# ----------------------------------------------------------------------------------------- tape


def _iso(lifetime: timedelta | int | float | str | None) -> str | None:
    return None if lifetime is None else _caveats.iso_duration(lifetime)


class TapeEndpointSource(Protocol):
    """Where a hook's Tape REST API is: found through the WLCG discovery document on first use."""

    def resolve(self, s: ConnectionSettings) -> Operation[str]: ...


def _tape(s: ConnectionSettings, endpoint: TapeEndpointSource | None, relative: str) -> Operation[str]:
    """A Tape REST URL under the discovered endpoint (``/api/v1/tape`` without one).

    Called after the paths are checked, so a refused path sends nothing, not even the discovery GET.
    """
    base = (yield from endpoint.resolve(s)) if endpoint is not None else api_url(s, "tape")
    return base.rstrip("/") + "/" + relative


def stage(
    s: ConnectionSettings,
    files: Iterable[str] | Mapping[str, timedelta | int | float | str | None],
    disk_lifetime: timedelta | int | float | str | None = None,
    endpoint: TapeEndpointSource | None = None,
) -> Operation[BulkSubmission]:
    """WLCG ``POST /tape/stage``; a mapping gives each path its own disk lifetime."""
    items = files.items() if isinstance(files, Mapping) else ((f, disk_lifetime) for f in files)
    payload_files = []
    for path, lifetime in items:
        entry: dict[str, Any] = {"path": allowed_path(s, path)}
        iso = _iso(lifetime if lifetime is not None else disk_lifetime)
        if iso:
            entry["diskLifetime"] = iso
        payload_files.append(entry)
    if not payload_files:
        raise ValueError("stage needs at least one file")
    call = Call.json("POST", (yield from _tape(s, endpoint, "stage")), {"files": payload_files})
    info = yield call
    data = _json(info, call)
    rid = data.get("requestId") if isinstance(data, dict) else None
    if not rid:
        location = _header(info, "location")
        if not location:
            raise UnexpectedResponse("stage reply has no requestId", status=info.status, method="POST", url=call.url)
        rid = request_id(location)
    return BulkSubmission(id=str(rid), url=call.url.rsplit("/", 1)[0] + f"/stage/{rid}")


def stage_status(s: ConnectionSettings, request: str,
                 endpoint: TapeEndpointSource | None = None) -> Operation[StageRequestInfo]:
    rid = request_id(request)
    call = Call("GET", (yield from _tape(s, endpoint, f"stage/{rid}")), {"Accept": "application/json"})
    data = _json((yield call), call)
    if not isinstance(data, dict):
        raise UnexpectedResponse("stage status is not an object", method="GET", url=call.url)
    return StageRequestInfo.from_json(rid, data)


def cancel_stage(s: ConnectionSettings, request: str, paths: Iterable[str],
                 endpoint: TapeEndpointSource | None = None) -> Operation[None]:
    body = {"paths": [allowed_path(s, p) for p in paths]}
    yield Call.json("POST", (yield from _tape(s, endpoint, f"stage/{request_id(request)}/cancel")), body)


def delete_stage(s: ConnectionSettings, request: str, endpoint: TapeEndpointSource | None = None) -> Operation[None]:
    yield Call("DELETE", (yield from _tape(s, endpoint, f"stage/{request_id(request)}")))


def release(s: ConnectionSettings, request: str, paths: Iterable[str],
            endpoint: TapeEndpointSource | None = None) -> Operation[None]:
    body = {"paths": [allowed_path(s, p) for p in paths]}
    yield Call.json("POST", (yield from _tape(s, endpoint, f"release/{request_id(request)}")), body)


def archive_info(s: ConnectionSettings, paths: Iterable[str],
                 endpoint: TapeEndpointSource | None = None) -> Operation[list[ArchiveInfo]]:
    body = {"paths": [allowed_path(s, p) for p in paths]}
    call = Call.json("POST", (yield from _tape(s, endpoint, "archiveinfo")), body)
    data = _json((yield call), call)
    return [
        ArchiveInfo(path=str(d.get("path", "")), locality=d.get("locality"), error=d.get("error"))
        for d in data or []
        if isinstance(d, dict)
    ]


def tape_api_endpoints(s: ConnectionSettings) -> Operation[list[dict[str, Any]]]:
    """WLCG discovery, ``GET <frontend origin>/.well-known/wlcg-tape-rest-api`` (not under ``/api/v1``):
    the ``endpoints`` list, each ``{"uri", "version", "metadata"}``."""
    call = Call("GET", well_known_url(s, "wlcg-tape-rest-api"), dict(_JSON))
    data = _json((yield call), call)
    endpoints = data.get("endpoints") if isinstance(data, dict) else None
    if not isinstance(endpoints, list):
        raise UnexpectedResponse("tape REST discovery has no endpoints list", method="GET", url=call.url)
    return [e for e in endpoints if isinstance(e, dict)]


# ------------------------------------------------------------------------------------- macaroons


def mint_macaroon(s: ConnectionSettings, path: str = "/", caveats: Any = None, *,
                  activities: Iterable[str] | str | None = None, validity: timedelta | int | float | str | None = None,
                  ip: Iterable[str] | str | None = None, before: datetime | None = None,
                  max_upload: int | None = None) -> Operation[MacaroonResponse]:
    """POST to the path itself, so dCache adds the ``path:`` caveat (a macaroon for that subtree only).

    The body is sent as bytes with the exact Content-Type: dCache compares it as a string, and a
    ``charset`` parameter would make the door treat the POST as ordinary WebDAV.
    """
    body: dict[str, Any] = {}
    strings = _caveats.request_caveats(caveats, activities=activities, ip=ip, before=before, max_upload=max_upload)
    if strings:
        body["caveats"] = strings
    iso = _caveats.iso_duration(validity) if validity is not None else _caveats.builder_validity(caveats)
    if iso:
        body["validity"] = iso
    headers = {"Content-Type": MACAROON_REQUEST_TYPE, "Accept": "application/json"}
    call = Call("POST", door_url(s, path), headers, json.dumps(body).encode())
    info = yield call
    data = _json(info, call)
    if not isinstance(data, dict) or not data.get("macaroon"):
        # A door that did not recognise the request answers like WebDAV, typically with no JSON at all.
        raise UnexpectedResponse(
            "the door did not return a macaroon", status=info.status, method="POST", url=mask_url(call.url)
        )
    return MacaroonResponse.from_json(data)


def ensure_not_exists(s: ConnectionSettings, path: str) -> Operation[None]:
    """Pre-check for uploads with ``overwrite=False``; dCache has no conditional PUT we can rely on."""
    if (yield from exists(s, path)):
        raise AlreadyExists(f"{normalize_path(path)} already exists", method="PUT", url=door_url(s, path))


# ------------------------------------------------------------------------------------- byte ranges

_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


def _int_at_least(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return value


@dataclass(frozen=True)
class RangeRead:
    """``GET`` of ``length`` bytes at ``offset`` of a file: the request, written once for both hooks.

    The reply is streamed by the hook into a :class:`RangeReceiver`, which knows how much of it to
    read: a ``206`` holds the range, a ``200`` (a server that ignores ``Range``) is the whole file from
    byte 0 and is read only up to ``offset + length`` (what precedes ``offset`` is dropped, not kept).
    ``416`` (the range starts at or beyond the end of the file) reads as ``b""``, as a file read past
    its end does.
    """

    path: str
    url: str
    offset: int
    length: int

    @property
    def headers(self) -> dict[str, str]:
        # identity: a compressed reply could not be cut at a byte offset of the file
        return {"Range": f"bytes={self.offset}-{self.offset + self.length - 1}", "Accept-Encoding": "identity"}


def range_read(s: ConnectionSettings, path: str, offset: int, length: int) -> RangeRead:
    path = allowed_path(s, path)
    offset = _int_at_least(offset, "offset", 0)
    length = _int_at_least(length, "length", 1)
    return RangeRead(path, door_url(s, path), offset, length)


class RangeReceiver:
    """Judge a ranged reply's status and headers, keep the wanted bytes of its body, check it was whole.

    ``feed`` each chunk until it returns ``True`` (enough read: close the response) or the body ends;
    then ``finish`` returns the bytes.
    """

    def __init__(self, read: RangeRead, info: ResponseInfo, final_url: str) -> None:
        refuse_directory(read.path, read.url, final_url)
        self.read = read
        self.status = info.status
        self._skip = 0
        self._kept = bytearray()
        self._expected: int | None  # bytes the reply must deliver, when known
        if info.status == 206:
            content_type = (_header(info, "content-type") or "").lower()
            match = _CONTENT_RANGE_RE.match(_header(info, "content-range") or "")
            if content_type.startswith("multipart/") or match is None:
                raise self._unexpected("206 without a single Content-Range")
            first, last = int(match.group(1)), int(match.group(2))
            if first != read.offset or last < first:
                got = match.group(0).strip()
                raise self._unexpected(f"asked for bytes from {read.offset}, got Content-Range {got}")
            self._want = min(read.length, last - first + 1)
            self._expected = self._want
        elif info.status == 200:
            self._skip = read.offset
            self._want = read.length
            length = _header(info, "content-length") or ""
            known = length.isascii() and length.isdigit() and _header(info, "content-encoding") is None
            self._expected = max(0, min(int(length) - read.offset, read.length)) if known else None
        elif info.status == 416:
            self._want, self._expected = 0, 0
        else:
            raise self._unexpected(f"unexpected status {info.status} for a range read")

    @property
    def done(self) -> bool:
        return len(self._kept) >= self._want

    def feed(self, chunk: bytes) -> bool:
        if self._skip:
            dropped = min(self._skip, len(chunk))
            self._skip -= dropped
            chunk = chunk[dropped:]
        self._kept += chunk[: self._want - len(self._kept)]
        return self.done

    def finish(self) -> bytes:
        if self._expected is not None and len(self._kept) < self._expected:
            raise self._unexpected(f"received {len(self._kept)} of {self._expected} bytes")
        return bytes(self._kept)

    def _unexpected(self, message: str) -> UnexpectedResponse:
        return UnexpectedResponse(message, status=self.status, method="GET", url=mask_url(self.read.url))


# ---------------------------------------------------------------------------------- storage events

INOTIFY_FLAGS = frozenset(
    {
        "IN_ACCESS",
        "IN_ATTRIB",
        "IN_CLOSE_WRITE",
        "IN_CLOSE_NOWRITE",
        "IN_CREATE",
        "IN_DELETE",
        "IN_DELETE_SELF",
        "IN_MODIFY",
        "IN_MOVE_SELF",
        "IN_MOVED_FROM",
        "IN_MOVED_TO",
        "IN_OPEN",
        "IN_ALL_EVENTS",
        "IN_CLOSE",
        "IN_MOVE",
        "IN_MASK_ADD",
        "IN_ONESHOT",
        "IN_ONLYDIR",
    }
)
_JSON = {"Accept": "application/json"}


def events_url(s: ConnectionSettings, url: str, what: str = "channel") -> str:
    """A channel or subscription URL the server handed out, checked before credentials go to it.

    The URL is used exactly as given (dCache's ids may contain ``+`` or ``/``, so it is never rebuilt);
    it must only point at this connection's own frontend events API.
    """
    text = url.strip() if isinstance(url, str) else ""
    base = api_url(s, "events/channels/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not same_origin(text, base):
        raise ValueError(f"not a {what} URL of this connection's frontend: {mask_url(text)!r}")
    if not parts.path.startswith(urlsplit(base).path) or len(parts.path) <= len(urlsplit(base).path):
        raise ValueError(f"not a {what} URL of this connection's frontend: {mask_url(text)!r}")
    return text


def _location(info: ResponseInfo, call: Call, what: str) -> str:
    location = _header(info, "location")
    if not location:
        raise UnexpectedResponse(f"{what} has no Location header", status=info.status, method=call.method, url=call.url)
    return urljoin(call.url, location.strip())  # absolute Locations come back unchanged


def _string_list(data: Any, call: Call, what: str) -> list[str]:
    if not isinstance(data, list):
        raise UnexpectedResponse(f"{what} is not a list", method=call.method, url=call.url)
    return [str(x) for x in data]


def create_channel(s: ConnectionSettings, client_id: str | None = None) -> Operation[str]:
    """``POST /events/channels`` (201); the channel URL is the ``Location`` header, returned as given."""
    url = api_url(s, "events/channels")
    if client_id is None:
        call = Call("POST", url, dict(_JSON))
    else:
        call = Call.json("POST", url, {"client-id": str(client_id)})
    info = yield call
    return _location(info, call, "new channel")


def list_channels(s: ConnectionSettings, client_id: str | None = None) -> Operation[list[str]]:
    """Channel URLs of the caller; ``client_id=""`` lists only channels created without one."""
    call = Call("GET", api_url(s, "events/channels", {"client-id": client_id}), dict(_JSON))
    return _string_list(_json((yield call), call), call, "channel list")


def channel_timeout(s: ConnectionSettings, channel_url: str) -> Operation[int]:
    """Seconds the channel survives without a connected client before it is garbage-collected."""
    call = Call("GET", events_url(s, channel_url), dict(_JSON))
    data = _json((yield call), call)
    if not isinstance(data, dict) or not isinstance(data.get("timeout"), int):
        raise UnexpectedResponse("channel reply has no timeout", method="GET", url=call.url)
    return int(data["timeout"])


def set_channel_timeout(s: ConnectionSettings, channel_url: str, seconds: int) -> Operation[None]:
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
        raise ValueError("the channel timeout must be a whole number of seconds >= 1")
    yield Call.json("PATCH", events_url(s, channel_url), {"timeout": seconds})


def delete_channel(s: ConnectionSettings, channel_url: str) -> Operation[None]:
    yield Call("DELETE", events_url(s, channel_url))


def _subscribe(s: ConnectionSettings, channel_url: str, kind: str, selector: dict[str, Any]) -> Operation[str]:
    """201 (new) or 303 (merged into an existing watch): either way the URL is ``Location``, not followed."""
    url = events_url(s, channel_url).rstrip("/") + "/subscriptions/" + kind
    call = replace(Call.json("POST", url, selector), ok_statuses=(303,))
    info = yield call
    return _location(info, call, "subscription")


def inotify_flags(flags: Iterable[str]) -> list[str]:
    """Upper-case flag names, ``IN_`` added when missing; unknown or unsupported ones raise ``ValueError``."""
    result = []
    for flag in [flags] if isinstance(flags, str) else flags:
        name = str(flag).strip().upper()
        name = name if name.startswith("IN_") else "IN_" + name
        if name not in INOTIFY_FLAGS:
            raise ValueError(f"unknown inotify flag {flag!r}; allowed: {sorted(INOTIFY_FLAGS)}")
        result.append(name)
    return list(dict.fromkeys(result))


def subscribe_inotify(
    s: ConnectionSettings, channel_url: str, path: str, flags: Iterable[str] | None = None
) -> Operation[str]:
    """Watch ``path`` (not recursive); no ``flags`` means every event."""
    selector: dict[str, Any] = {"path": allowed_path(s, path)}
    if flags is not None:
        selector["flags"] = inotify_flags(flags)
    return (yield from _subscribe(s, channel_url, "inotify", selector))


def subscribe_metronome(
    s: ConnectionSettings,
    channel_url: str,
    *,
    delay: float | None = None,
    frequency: float | None = None,
    message: str | None = None,
    count: int | None = None,
) -> Operation[str]:
    """dCache's test source: ``message`` every ``delay`` seconds (or at ``frequency`` Hz), ``count`` times."""
    if (delay is None) == (frequency is None):
        raise ValueError("give exactly one of delay or frequency")
    selector: dict[str, Any] = {"delay": delay} if delay is not None else {"frequency": frequency}
    if message is not None:
        selector["message"] = str(message)
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError("count must be a non-negative integer")
        selector["count"] = count
    return (yield from _subscribe(s, channel_url, "metronome", selector))


def list_subscriptions(s: ConnectionSettings, channel_url: str) -> Operation[list[str]]:
    call = Call("GET", events_url(s, channel_url).rstrip("/") + "/subscriptions", dict(_JSON))
    return _string_list(_json((yield call), call), call, "subscription list")


def unsubscribe(s: ConnectionSettings, subscription_url: str) -> Operation[None]:
    yield Call("DELETE", events_url(s, subscription_url, "subscription"))


def event_stream_call(s: ConnectionSettings, channel_url: str, last_event_id: str | int | None = None) -> Call:
    """The SSE ``GET`` of a channel; with ``Last-Event-ID`` dCache replays the backlog after that event."""
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if last_event_id is not None:
        value = str(last_event_id).strip()
        if not value or any(c in value for c in "\r\n\0"):
            raise ValueError(f"not an event id: {last_event_id!r}")
        headers["Last-Event-ID"] = value
    return Call("GET", events_url(s, channel_url), headers)


def check_event_stream(info: ResponseInfo, call: Call) -> None:
    """A 2xx that is not ``text/event-stream`` (a JSON channel document, an HTML page) is no stream."""
    content_type = (_header(info, "content-type") or "").split(";")[0].strip().lower()
    if content_type != "text/event-stream":
        raise UnexpectedResponse(
            f"expected text/event-stream, got {content_type or 'no content type'}",
            status=info.status,
            method=call.method,
            url=call.url,
        )


def event_stream_broken(call: Call, read_timeout: float | None, timed_out: bool, detail: str) -> DCacheConnectionError:
    """The error of an event stream that stopped mid-way: a read timeout names the wait that ran out
    (dCache sends no keep-alives, so a quiet channel looks the same), anything else its cause."""
    if timed_out:
        message = f"no data on the event stream for {read_timeout} s"
    else:
        message = f"event stream interrupted: {mask_url(detail)}"
    return DCacheConnectionError(message, method="GET", url=mask_url(call.url))


def event_types(s: ConnectionSettings) -> Operation[list[str]]:
    """``["inotify", "metronome"]`` on dCache; ``SYSTEM`` events are not a subscribable type."""
    call = Call("GET", api_url(s, "events/eventTypes"), dict(_JSON))
    return _string_list(_json((yield call), call), call, "event type list")


EVENT_SCHEMA_PARTS = ("selector", "event")
_EVENT_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")  # never "." or "..", which URL normalisation would resolve


def event_schema(s: ConnectionSettings, event_type: str, part: str = "selector") -> Operation[dict[str, Any]]:
    """The JSON Schema a type's subscription selector (``selector``) or its events (``event``) follow.

    dCache publishes both under ``/events/eventTypes/{type}/…``, so a selector can be checked before
    subscribing and a consumer can validate what it receives.
    """
    if part not in EVENT_SCHEMA_PARTS:
        raise ValueError(f"part must be one of {EVENT_SCHEMA_PARTS}, got {part!r}")
    if not _EVENT_TYPE.fullmatch(event_type):
        raise ValueError(f"event_type must be a single name such as 'inotify', got {event_type!r}")
    call = Call("GET", api_url(s, f"events/eventTypes/{event_type}/{part}"), dict(_JSON))
    doc = _json((yield call), call)
    if not isinstance(doc, dict):
        raise UnexpectedResponse(f"{part} schema of {event_type} is not a JSON object", method=call.method,
                                 url=call.url)
    return doc
