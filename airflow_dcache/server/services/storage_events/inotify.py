"""The ``inotify`` event type: watches on namespace objects, fed by the service event bus.

A watch is on an object (inode id), not on a path, so it follows the object when it is moved.
Watches are indexed by inode id: an event looks up the watches of its parent directory (child
events) and of the object itself (self events) in two dict lookups, whatever the number of
channels, and its payload is encoded once per kind, not once per channel.

The right to watch is checked again at delivery, not only at subscription: after ``chmod 700`` of a
watched directory (or of one above it), a ``chgrp`` or a move out of reach, the subscriber's events
stop, as a new subscription and a PROPFIND would be refused. dCache checks only the macaroon's
READ_METADATA restriction at delivery; mode bits are checked here too so names of files in a
directory the subscriber can no longer list never leak. Each subscription caches its verdict
against a permission generation that every chmod, chgrp (events with ``access_changed``) and move
increments, so the namespace is consulted once per subscription after such a change, not once per
event; an upload's IN_ATTRIB or an xattr change leaves the cached verdicts alone.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from typing import Any

from airflow_dcache.server.services import permissions as perm
from airflow_dcache.server.services.activity import Activity
from airflow_dcache.server.services.errors import (
    BadRequest,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    ServiceError,
)
from airflow_dcache.server.services.events import NamespaceEvent
from airflow_dcache.server.services.login import Login
from airflow_dcache.server.services.namespace import Entry, NamespaceService
from airflow_dcache.server.services.storage_events import flags as fl
from airflow_dcache.server.services.storage_events.channel import Channel, Subscription

PATH_PATTERN = r"^/(.*[^/])?$"
_PATH_RE = re.compile(PATH_PATTERN, re.DOTALL)
MAX_PATH = 4096
_SELECTOR_KEYS = ("path", "flags")
_IO_KINDS = frozenset({"IN_ACCESS", "IN_MODIFY"})
_MOVER_END = frozenset({"IN_CLOSE_WRITE", "IN_CLOSE_NOWRITE", "IN_DELETE_SELF"})
_IO_STATE_LIMIT = 100_000  # objects tracked by the IN_ACCESS/IN_MODIFY limiter before pruning
_MOVES = frozenset({"IN_MOVED_FROM", "IN_MOVED_TO", "IN_MOVE_SELF"})
_IGNORED = json.dumps({"mask": ["IN_IGNORED"]}, separators=(",", ":"))
_OVERFLOW = json.dumps({"mask": ["IN_Q_OVERFLOW"]}, separators=(",", ":"))


class InotifySelector:
    """A validated selector: the path as given, the selected events and the modifiers."""

    __slots__ = ("events", "modifiers", "path")

    def __init__(self, path: str, events: int, modifiers: frozenset[str]) -> None:
        self.path = path
        self.events = events
        self.modifiers = modifiers

    @classmethod
    def parse(cls, doc: dict[str, Any]) -> InotifySelector:
        unknown = [k for k in doc if k not in _SELECTOR_KEYS]
        if unknown:
            raise BadRequest(f"Bad selector: Unrecognized field \"{unknown[0][:64]}\" "
                             f"(known fields: {', '.join(_SELECTOR_KEYS)})")
        path = doc.get("path")
        if path is None:
            raise BadRequest("Bad selector: Missing required field 'path'")
        if not isinstance(path, str):
            raise BadRequest("Bad selector: Field 'path' must be a string")
        if len(path) > MAX_PATH:
            raise BadRequest(f"Bad selector: path longer than {MAX_PATH} characters")
        if not _PATH_RE.match(path) or "\x00" in path:
            raise BadRequest(f"Bad selector: path {path[:200]!r} does not match {PATH_PATTERN}")
        raw = doc.get("flags")
        if raw is None:
            return cls(path, fl.ALL_EVENTS, frozenset())
        if not isinstance(raw, list) or not all(isinstance(f, str) for f in raw):
            raise BadRequest("Bad selector: Field 'flags' must be an array of strings")
        events = 0
        modifiers: set[str] = set()
        unsupported: list[str] = []
        for name in raw:
            if name in fl.EVENT_BITS:
                events |= fl.EVENT_BITS[name]
            elif name in fl.COMPOSITES:
                events |= fl.COMPOSITES[name]
            elif name in fl.MODIFIERS:
                modifiers.add(name)
            elif name in fl.UNSUPPORTED:
                if name not in unsupported:
                    unsupported.append(name)
            else:
                raise BadRequest(f"Bad selector: Unknown flag: {name[:64]}")
        if unsupported:
            raise BadRequest(f"Bad selector: Unsupported flags: {', '.join(unsupported)}")
        return cls(path, events, frozenset(modifiers))


def subscription_id(inode_id: str) -> str:
    """The base64 form of the PNFS-ID bytes; the URL-safe alphabet keeps it usable in a route."""
    return base64.urlsafe_b64encode(bytes.fromhex(inode_id)).decode().rstrip("=")


def move_cookie(bus_cookie: str) -> str:
    """Both halves of a move share the bus cookie; shown like dCache's: base64 of a 16-byte hash."""
    digest = hashlib.blake2b(bus_cookie.encode(), digest_size=16).digest()
    return base64.b64encode(digest).decode().rstrip("=")


class InotifySubscription(Subscription):
    event_type = "inotify"

    def __init__(self, channel: Channel, sid: str, url: str, source: InotifySource, inode_id: str,
                 selector: InotifySelector) -> None:
        super().__init__(channel, sid, url)
        self.source = source
        self.inode_id = inode_id
        self.path = selector.path
        self.mask = selector.events
        self.oneshot = fl.IN_ONESHOT in selector.modifiers
        self.onlydir = fl.IN_ONLYDIR in selector.modifiers
        self.allowed_generation = source.generation  # the subscription check just passed
        self.allowed = True

    def update(self, selector: InotifySelector) -> None:
        """A second selector for the same object: replace the flags, or add with IN_MASK_ADD."""
        add = fl.IN_MASK_ADD in selector.modifiers
        self.mask = (self.mask | selector.events) if add else selector.events
        self.oneshot = (self.oneshot and add) or fl.IN_ONESHOT in selector.modifiers
        self.onlydir = (self.onlydir and add) or fl.IN_ONLYDIR in selector.modifiers
        self.path = selector.path

    def selector(self) -> dict[str, Any]:
        names = fl.mask_names(self.mask)
        if self.oneshot:
            names.append(fl.IN_ONESHOT)
        if self.onlydir:
            names.append(fl.IN_ONLYDIR)
        return {"path": self.path, "flags": names}

    def release(self) -> None:
        self.source.unwatch(self)

    def on_overflow(self) -> None:
        if not self.closed:
            self.channel.deliver(self, _OVERFLOW)

    def ignore(self) -> None:
        """The watch ends (object deleted, IN_ONESHOT fired): IN_IGNORED, then SUBSCRIPTION_CLOSED."""
        if not self.closed:
            self.channel.deliver(self, _IGNORED)
            self.channel.close_subscription(self)


class _Target:
    """Where an event happened, with the absolute path computed at most once and only if needed."""

    __slots__ = ("_path", "db", "event")

    def __init__(self, event: NamespaceEvent, db: Any) -> None:
        self.event = event
        self.db = db
        self._path: str | None = None

    @property
    def path(self) -> str:
        if self._path is None:
            ev = self.event
            if ev.parent_id is None:
                self._path = "/"
            else:
                parent = self.db.path_of(ev.parent_id)
                self._path = parent.rstrip("/") + "/" + ev.name
        return self._path


class InotifySource:
    description = "notification of namespace activity, modelled after inotify(7)"

    def __init__(self, namespace: NamespaceService, *, io_suppression: float = 10.0) -> None:
        self.ns = namespace
        self.io_suppression = io_suppression
        self.watches: dict[str, dict[InotifySubscription, None]] = {}
        self.generation = 0  # bumped by every change that may alter who may see what
        self._io: dict[str, tuple[str, float]] = {}  # inode → (last IN_ACCESS/IN_MODIFY, when)

    # -- subscribing -----------------------------------------------------------------------------
    def subscribe(self, channel: Channel, login: Login, doc: dict[str, Any],
                  channel_url: str) -> tuple[Subscription, bool]:
        selector = InotifySelector.parse(doc)
        entry = self._lookup(login, selector.path)
        if fl.IN_ONLYDIR in selector.modifiers and not entry.inode.is_dir:
            raise BadRequest(f"Failed condition: IN_ONLYDIR with {entry.inode.type} target")
        sid = subscription_id(entry.inode.id)
        existing = channel.subscriptions.get(("inotify", sid))
        if isinstance(existing, InotifySubscription):
            existing.update(selector)
            return existing, False
        sub = InotifySubscription(channel, sid, f"{channel_url}/subscriptions/inotify/{sid}", self,
                                  entry.inode.id, selector)
        self.watches.setdefault(entry.inode.id, {})[sub] = None
        channel.add_subscription(sub)
        return sub, True

    def _lookup(self, login: Login, path: str) -> Entry:
        """Resolve as the caller; a directory needs LIST permission, a file READ_DATA (Inotify.lookup)."""
        try:
            entry = self.ns.stat(login, path)
            if entry.inode.is_dir:
                perm.require_activity(login, Activity.LIST, path)
                perm.require_mode(login, entry.inode, perm.READ | perm.EXECUTE, path)
            else:
                perm.require_activity(login, Activity.DOWNLOAD, path)
                perm.require_mode(login, entry.inode, perm.READ, path)
        except NotFound:
            raise BadRequest(f"Not found: Problem with path: {path}") from None
        except (PermissionDenied, NotAuthenticated):
            raise PermissionDenied("Permission denied: Not allowed.") from None
        return entry

    def may_deliver(self, sub: InotifySubscription) -> bool:
        """Whether the channel owner may still watch the object, as a new subscription would check."""
        if sub.allowed_generation != self.generation:
            sub.allowed_generation = self.generation
            sub.allowed = self._still_allowed(sub.channel.login, sub.inode_id)
        return sub.allowed

    def _still_allowed(self, login: Login, inode_id: str) -> bool:
        root = login.root.rstrip("/") or "/"
        try:
            ns_path = self.ns.db.path_of(inode_id)
            if root != "/" and not (ns_path == root or ns_path.startswith(root + "/")):
                return False
            self._lookup(login, self.ns.user_path(login, ns_path))
        except (ServiceError, KeyError, ValueError):
            return False
        return True

    def unwatch(self, sub: InotifySubscription) -> None:
        watchers = self.watches.get(sub.inode_id)
        if watchers is not None:
            watchers.pop(sub, None)
            if not watchers:
                del self.watches[sub.inode_id]

    # -- delivering ------------------------------------------------------------------------------
    def on_event(self, ev: NamespaceEvent) -> None:
        kind = ev.kind
        if ev.access_changed or kind in _MOVES:
            self.generation += 1  # before delivery: this very event is filtered by the new rights
        bit = fl.EVENT_BITS.get(kind)
        if bit is None:
            return
        watches = self.watches
        parent_watchers = None
        if kind not in fl.SELF_ONLY and ev.parent_id is not None:
            parent_watchers = watches.get(ev.parent_id)
        self_watchers = watches.get(ev.inode_id) if kind not in fl.CHILD_ONLY else None
        if not (parent_watchers or self_watchers):
            return
        if kind in _IO_KINDS and self._suppressed(ev.inode_id, kind):
            return
        if kind in _MOVER_END:
            self._io.pop(ev.inode_id, None)
        target = _Target(ev, self.ns.db)
        isdir = ["IN_ISDIR"] if ev.is_dir else []
        if parent_watchers:
            doc: dict[str, Any] = {"name": ev.name}
            if ev.cookie is not None:
                doc["cookie"] = move_cookie(ev.cookie)
            doc["mask"] = [kind, *isdir]
            self._send(list(parent_watchers), bit, json.dumps(doc, separators=(",", ":")), target)
        if self_watchers:
            payload = json.dumps({"mask": [kind, *isdir]}, separators=(",", ":"))
            self._send(list(self_watchers), bit, payload, target)
        if kind == "IN_DELETE_SELF":  # emitted for every removed object, replaced ones included
            for sub in list(watches.get(ev.inode_id, ())):
                sub.ignore()

    def _send(self, watchers: list[InotifySubscription], bit: int, payload: str, target: _Target) -> None:
        now: float | None = None
        for sub in watchers:
            if not sub.mask & bit or sub.closed:
                continue
            channel = sub.channel
            if not channel.may_read_metadata:
                continue
            if channel.expires_at is not None:
                now = now or time.time()
                if now > channel.expires_at:
                    continue
            if channel.restricted and not channel.login.can_see(target.path):
                continue
            if not self.may_deliver(sub):
                continue
            channel.deliver(sub, payload)
            if sub.oneshot:
                sub.ignore()

    def _suppressed(self, inode_id: str, kind: str) -> bool:
        """At most one IN_ACCESS/IN_MODIFY per window of continuous I/O; a switch is sent at once."""
        now = time.monotonic()
        last = self._io.get(inode_id)
        if last is not None and last[0] == kind and now - last[1] < self.io_suppression:
            return True
        self._io[inode_id] = (kind, now)
        if len(self._io) > _IO_STATE_LIMIT:
            cutoff = now - self.io_suppression
            self._io = {k: v for k, v in self._io.items() if v[1] >= cutoff}
        return False
