"""In-process notifications of namespace and transfer changes.

Services publish here whatever made the change (WebDAV, REST, copies, tape); storage-event
channels and billing publishers subscribe. Publishing never blocks or fails the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NamespaceEvent:
    """One inotify-style change. ``parent_id``/``name`` locate the entry; ``cookie`` pairs moves."""

    kind: str  # IN_CREATE, IN_MODIFY, IN_CLOSE_WRITE, IN_ATTRIB, IN_DELETE, IN_MOVED_FROM, ...
    inode_id: str
    parent_id: str | None
    name: str
    is_dir: bool
    cookie: str | None = None
    access_changed: bool = False  # mode or group changed: who may see the object (and below) may differ


@dataclass(frozen=True)
class TransferEvent:
    """A finished upload, download or delete, with what billing records need."""

    kind: str  # "upload" | "download" | "remove"
    path: str
    inode_id: str
    size: int
    transferred: int
    started_ms: int
    finished_ms: int
    username: str
    uid: int
    gids: tuple[int, ...]
    client: str
    status: int = 0
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


Listener = Callable[[Any], None]


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def publish(self, event: NamespaceEvent | TransferEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken subscriber must not fail the user's request
                log.exception("event listener failed for %s", event)
