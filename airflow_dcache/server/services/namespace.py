"""Namespace operations with dCache's authorisation rules, independent of the protocol used.

Paths given to this service are the caller's view (relative to the login's root, already split
and validated by the HTTP layer); results carry both that view and the absolute namespace path.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from airflow_dcache.server.services import permissions as perm
from airflow_dcache.server.services.activity import Activity
from airflow_dcache.server.services.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    NotEmpty,
    NotFound,
    PermissionDenied,
)
from airflow_dcache.server.services.events import EventBus, NamespaceEvent
from airflow_dcache.server.services.login import Login, is_within, join_under
from airflow_dcache.server.storage.namespace_db import DIR, ROOT_ID, Inode, NamespaceDB
from airflow_dcache.server.storage.pool import Pool

DEFAULT_DIR_MODE = 0o755
DEFAULT_FILE_MODE = 0o644
XATTR_MODES = ("CREATE", "MODIFY", "EITHER")


@dataclass(frozen=True)
class Entry:
    """An inode together with where it is: ``path`` as the caller sees it, ``ns_path`` absolute."""

    path: str
    ns_path: str
    inode: Inode


def _parent_and_name(ns_path: str) -> tuple[str, str]:
    parent, name = posixpath.split(ns_path)
    return parent or "/", name


class NamespaceService:
    def __init__(self, db: NamespaceDB, pool: Pool, events: EventBus) -> None:
        self.db = db
        self.pool = pool
        self.events = events

    # -- path resolution -----------------------------------------------------------------------
    @staticmethod
    def ns_path(login: Login, path: str) -> str:
        return join_under(login.root, path)

    @staticmethod
    def user_path(login: Login, ns_path: str) -> str:
        """The caller's view of an absolute namespace path (inverse of :meth:`ns_path`)."""
        if login.root == "/":
            return ns_path
        return ns_path[len(login.root.rstrip("/")):] or "/"

    def _lookup(self, login: Login, ns_path: str, shown: str) -> Inode | None:
        """Walk from the root; every directory passed needs search (x) permission."""
        parts = [p for p in ns_path.split("/") if p]
        chain = self.db.resolve(parts)
        for node in chain[:-1]:
            if not node.is_dir:
                return None
            perm.require_mode(login, node, perm.EXECUTE, shown)
        if len(chain) != len(parts) + 1:
            if chain and chain[-1].is_dir:  # the missing component's parent must be searchable too
                perm.require_mode(login, chain[-1], perm.EXECUTE, shown)
            return None
        return chain[-1]

    def _get(self, login: Login, path: str) -> Entry:
        ns = self.ns_path(login, path)
        perm.require_visible(login, ns, path)
        node = self._lookup(login, ns, path)
        if node is None:
            raise NotFound(f"No such file or directory: {path}")
        return Entry(path, ns, node)

    def parent_of(self, login: Login, path: str) -> tuple[Entry | None, str]:
        ns = self.ns_path(login, path)
        if ns == "/":
            raise BadRequest("The root directory cannot be the target of this operation")
        parent_ns, name = _parent_and_name(ns)
        node = self._lookup(login, parent_ns, path)
        if node is None:
            return None, name
        if not node.is_dir:
            raise Conflict(f"Parent is not a directory: {path}")
        return Entry(self.user_path(login, parent_ns), parent_ns, node), name

    def emit(self, kind: str, node: Inode, *, cookie: str | None = None,
             parent_id: str | None = None, name: str | None = None, access_changed: bool = False) -> None:
        self.events.publish(NamespaceEvent(kind, node.id, parent_id if parent_id is not None else node.parent,
                                           name if name is not None else node.name, node.is_dir, cookie,
                                           access_changed))

    # -- reads -------------------------------------------------------------------------------
    def stat(self, login: Login, path: str) -> Entry:
        perm.require_activity(login, Activity.READ_METADATA, path)
        return self._get(login, path)

    def list_dir(self, login: Login, path: str, offset: int = 0, limit: int = -1, *,
                 notify: bool = False) -> list[Entry]:
        """Children the caller may see; ``notify`` reports a client's listing as IN_OPEN/IN_CLOSE_NOWRITE."""
        entry = self.stat(login, path)
        if not entry.inode.is_dir:
            raise BadRequest(f"Not a directory: {path}")
        perm.require_activity(login, Activity.LIST, path)
        perm.require_mode(login, entry.inode, perm.READ | perm.EXECUTE, path)
        result = []
        for child in self.db.children(entry.inode.id, offset, limit):
            child_ns = posixpath.join(entry.ns_path, child.name)
            if login.can_see(child_ns):
                result.append(Entry(posixpath.join(path, child.name), child_ns, child))
        if notify:
            self.emit("IN_OPEN", entry.inode)
            self.emit("IN_CLOSE_NOWRITE", entry.inode)
        return result

    def open_for_read(self, login: Login, path: str) -> Entry:
        """Authorise a download; the caller streams ``pool.data_path(entry.inode.id)``."""
        perm.require_activity(login, Activity.DOWNLOAD, path)
        return self.authorise_read(login, self._get(login, path))

    def authorise_read(self, login: Login, entry: Entry) -> Entry:
        """The download checks on an entry already looked up (saves a second path walk)."""
        perm.require_activity(login, Activity.DOWNLOAD, entry.path)
        perm.require_within(login, entry.ns_path, entry.path)
        if entry.inode.is_dir:
            raise BadRequest(f"Is a directory: {entry.path}")
        perm.require_mode(login, entry.inode, perm.READ, entry.path)
        return entry

    def xattrs(self, entry: Entry) -> dict[str, str]:
        return self.db.xattrs(entry.inode.id)

    def labels(self, entry: Entry) -> list[str]:
        return self.db.labels(entry.inode.id)

    def labelled(self, login: Login, label: str, offset: int = 0, limit: int | None = None) -> list[Entry] | None:
        """The label's virtual directory: files with ``label`` that the caller could reach by path.

        dCache lists them without checking the caller; here a file outside the caller's root or
        credential restriction, or behind a directory it may not search, is left out, so a label
        never reveals more than the namespace itself would. None means the caller sees no file with
        the label at all, which callers answer exactly like a label that does not exist. The walk
        stops once the requested page is full.
        """
        perm.require_activity(login, Activity.LIST, f"/labels/{label}")
        page: list[Entry] = []
        seen = 0
        for entry in self._visible(login, self.db.labelled(label)):
            seen += 1
            if seen <= offset:
                continue
            if limit is not None and len(page) >= limit:
                break
            page.append(entry)
        return page if seen else None

    def visible_labels(self, login: Login) -> list[str]:
        """Labels on at least one file the caller can reach (so hidden files do not leak their labels)."""
        return [label for label in self.db.all_labels()
                if next(self._visible(login, self.db.labelled(label)), None) is not None]

    def _visible(self, login: Login, nodes: Iterable[Inode]) -> Iterator[Entry]:
        for node in nodes:
            ns_path = self.db.path_of(node.id)
            if not (is_within(ns_path, login.root) and login.can_see(ns_path)):
                continue
            try:
                yield self.stat(login, self.user_path(login, ns_path))
            except (NotFound, PermissionDenied):
                continue

    # -- directory and entry changes ---------------------------------------------------------
    def mkdir(self, login: Login, path: str, *, parents: bool = False,
              activity: Activity = Activity.MANAGE) -> Entry:
        perm.require_activity(login, activity, path)
        ns = self.ns_path(login, path)
        perm.require_within(login, ns, path)
        parent, name = self.parent_of(login, path)
        if parent is None:
            if not parents:
                raise Conflict(f"Parent directory does not exist: {path}")
            parent = self.mkdir(login, posixpath.dirname(path) or "/", parents=True, activity=activity)
        if self.db.child(parent.inode.id, name) is not None:
            raise AlreadyExists(f"File exists: {path}")
        perm.require_mode(login, parent.inode, perm.WRITE | perm.EXECUTE, path)
        node = self.db.insert(parent.inode.id, name, DIR, mode=DEFAULT_DIR_MODE, uid=login.uid,
                              gid=login.primary_gid, size=512)
        self.emit("IN_CREATE", node)
        return Entry(path, ns, node)

    def delete(self, login: Login, path: str, *, recursive: bool = False,
               removed_files: list[Entry] | None = None) -> Entry:
        """Remove a file or directory; ``recursive`` is WebDAV's Depth: infinity on collections.

        A recursive delete removes children one by one with the same checks, so it stops at the
        first entry the caller may not delete and leaves everything not yet reached intact (as
        dCache's door, through Milton, does). ``removed_files`` collects the files it removed, for the
        door's billing records.
        """
        if recursive and self.stat(login, path).inode.is_dir:
            for child in self.list_dir(login, path):
                self.delete(login, child.path, recursive=True, removed_files=removed_files)
        perm.require_activity(login, Activity.DELETE, path)
        entry = self._get(login, path)
        perm.require_within(login, entry.ns_path, path)
        if entry.inode.parent is None:
            raise BadRequest("The root directory cannot be deleted")
        parent = self.db.get(entry.inode.parent)
        assert parent is not None
        perm.require_mode(login, parent, perm.WRITE | perm.EXECUTE, path)
        if entry.inode.is_dir and self.db.has_children(entry.inode.id):
            raise NotEmpty(f"Directory is not empty: {path}")
        self.db.delete(entry.inode.id)
        if not entry.inode.is_dir:
            self.pool.remove(entry.inode.id)
            if removed_files is not None:
                removed_files.append(entry)
        self.emit("IN_DELETE", entry.inode)
        self.emit("IN_DELETE_SELF", entry.inode)
        return entry

    def move(self, login: Login, src: str, dst: str, *, overwrite: bool = True) -> tuple[Entry, bool]:
        """Rename ``src`` to ``dst``; returns the moved entry and whether ``dst`` was new."""
        perm.require_activity(login, Activity.MANAGE, src)
        entry = self._get(login, src)
        perm.require_within(login, entry.ns_path, src)
        dst_ns = self.ns_path(login, dst)
        perm.require_activity(login, Activity.MANAGE, dst)  # a token may manage one tree, not another
        perm.require_within(login, dst_ns, dst)
        if entry.inode.parent is None:
            raise BadRequest("The root directory cannot be moved")
        if is_within(dst_ns, entry.ns_path):
            raise Conflict(f"Cannot move {src} into itself")
        dst_parent, dst_name = self.parent_of(login, dst)
        if dst_parent is None:
            raise Conflict(f"Destination parent does not exist: {dst}")
        src_parent = self.db.get(entry.inode.parent)
        assert src_parent is not None
        perm.require_mode(login, src_parent, perm.WRITE | perm.EXECUTE, src)
        perm.require_mode(login, dst_parent.inode, perm.WRITE | perm.EXECUTE, dst)
        existing = self.db.child(dst_parent.inode.id, dst_name)
        if existing is not None and existing.id == entry.inode.id:
            return entry, False
        if existing is not None:
            if not overwrite:
                raise AlreadyExists(f"Destination exists: {dst}")
            perm.require_activity(login, Activity.DELETE, dst)
            if existing.is_dir != entry.inode.is_dir:
                raise Conflict(f"Cannot replace {'a directory' if existing.is_dir else 'a file'}: {dst}")
            if existing.is_dir and self.db.has_children(existing.id):
                raise NotEmpty(f"Destination directory is not empty: {dst}")
        with self.db.transaction():
            if existing is not None:
                self.db.delete(existing.id)
            self.db.rename(entry.inode.id, dst_parent.inode.id, dst_name)
        if existing is not None:
            if not existing.is_dir:
                self.pool.remove(existing.id)
            self.emit("IN_DELETE_SELF", existing)  # the replaced object is gone; its watches end
        moved = self.db.get(entry.inode.id)
        assert moved is not None
        cookie = entry.inode.id[-12:] + format(moved.ctime, "x")
        self.emit("IN_MOVED_FROM", entry.inode, cookie=cookie)
        self.emit("IN_MOVED_TO", moved, cookie=cookie)
        self.emit("IN_MOVE_SELF", moved)
        return Entry(dst, dst_ns, moved), existing is None

    def provision_home(self, ns_home: str, uid: int, gid: int) -> None:
        """Create a user's home (and root-owned parents) if missing, owned by that user.

        Done at start-up for every user in the users file, as a dCache admin would, so a new
        user can upload to their home straight away.
        """
        node = self.db.get(ROOT_ID)
        assert node is not None
        parts = [p for p in ns_home.split("/") if p]
        for i, part in enumerate(parts):
            child = self.db.child(node.id, part)
            if child is None:
                last = i == len(parts) - 1
                child = self.db.insert(node.id, part, DIR, mode=DEFAULT_DIR_MODE, size=512,
                                       uid=uid if last else 0, gid=gid if last else 0)
            node = child

    # -- attributes ----------------------------------------------------------------------------
    def _require_owner(self, login: Login, entry: Entry) -> None:
        if not login.superuser and entry.inode.uid != login.uid:
            raise perm.deny(login, f"Permission denied: only the owner may change {entry.path}")

    def _for_update(self, login: Login, path: str) -> Entry:
        perm.require_activity(login, Activity.UPDATE_METADATA, path)
        entry = self._get(login, path)
        perm.require_within(login, entry.ns_path, path)
        return entry

    def chmod(self, login: Login, path: str, mode: int) -> Entry:
        if not 0 <= mode <= 0o7777:
            raise BadRequest(f"mode must be between 0 and 4095 (0o7777), got {mode}")
        entry = self._for_update(login, path)
        self._require_owner(login, entry)
        self.db.set_mode(entry.inode.id, mode)
        self.emit("IN_ATTRIB", entry.inode, access_changed=True)
        return entry

    def chgrp(self, login: Login, path: str, gid: int) -> Entry:
        entry = self._for_update(login, path)
        self._require_owner(login, entry)
        if not login.superuser and gid not in login.gids:
            raise PermissionDenied(f"Permission denied: not a member of group {gid}")
        self.db.set_group(entry.inode.id, gid)
        self.emit("IN_ATTRIB", entry.inode, access_changed=True)
        return entry

    def authorise_attr_write(self, login: Login, path: str) -> Entry:
        """Owner or writer may change attributes, labels and QoS (UPDATE_METADATA for macaroons)."""
        entry = self._for_update(login, path)
        if not (login.superuser or entry.inode.uid == login.uid or perm.mode_allows(login, entry.inode, perm.WRITE)):
            raise perm.deny(login, f"Permission denied: {path}")
        return entry

    def set_xattrs(self, login: Login, path: str, attrs: dict[str, str], mode: str = "EITHER") -> Entry:
        if mode not in XATTR_MODES:
            raise BadRequest(f"mode must be one of {', '.join(XATTR_MODES)}, got {mode!r}")
        entry = self.authorise_attr_write(login, path)
        current = self.db.xattrs(entry.inode.id)
        for name in attrs:
            if mode == "CREATE" and name in current:
                raise Conflict(f"Attribute already exist: {name}")
            if mode == "MODIFY" and name not in current:
                raise Conflict(f"No such attribute: {name}")
        self.db.set_xattrs(entry.inode.id, attrs)
        self.emit("IN_ATTRIB", entry.inode)
        return entry

    def remove_xattrs(self, login: Login, path: str, names: list[str]) -> Entry:
        entry = self.authorise_attr_write(login, path)
        current = self.db.xattrs(entry.inode.id)
        missing = [n for n in names if n not in current]
        if missing:
            raise Conflict(f"No such attribute: {', '.join(missing)}")
        self.db.remove_xattrs(entry.inode.id, names)
        self.emit("IN_ATTRIB", entry.inode)
        return entry

    def set_label(self, login: Login, path: str, label: str, *, add: bool) -> Entry:
        entry = self.authorise_attr_write(login, path)
        if add:
            self.db.add_label(entry.inode.id, label)
        else:
            if label not in self.db.labels(entry.inode.id):
                raise Conflict(f"No such label: {label}")
            self.db.remove_label(entry.inode.id, label)
        self.emit("IN_ATTRIB", entry.inode)
        return entry

