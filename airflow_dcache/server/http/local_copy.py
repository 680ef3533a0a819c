"""WebDAV COPY within this door (RFC 4918 §9.8), when ``Destination`` names this same server.

dCache treats every COPY whose ``Destination`` has a scheme and host as a third-party copy, even one
naming the door itself; a plain WebDAV client (litmus, cadaver's ``copy``) then gets 202 and a
perf-marker body although nothing sensible happened, and ``Overwrite: F`` or a missing parent
collection were not refused. Here a Destination whose authority is the request's own ``Host`` (or a
bare path) is a local copy with WebDAV's answers: 201 created / 204 replaced, 412 for an existing
target with ``Overwrite: F``, 409 when the parent collection is missing, 403 onto itself. A file is
copied through the ordinary upload path (checksums, events, billing); a collection is copied
entry by entry with ``Depth: infinity`` (the default) or alone with ``Depth: 0``.
"""

from __future__ import annotations

import posixpath
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from aiohttp import web

from airflow_dcache.server.http.paths import path_from_url
from airflow_dcache.server.services.errors import BadRequest, Conflict, NotFound, PermissionDenied
from airflow_dcache.server.services.login import Login, is_within
from airflow_dcache.server.services.namespace import Entry, NamespaceService
from airflow_dcache.server.services.transfers import TransferService

CHUNK = 1 << 20
MAX_ENTRIES = 10_000  # a collection copy larger than this is refused rather than run for minutes


def is_local_destination(request: web.Request) -> bool:
    """True for a COPY whose Destination is a path or a URL naming this door's own authority."""
    if request.headers.get("Source"):
        return False
    destination = (request.headers.get("Destination") or "").strip()
    if not destination:
        return False
    if destination.startswith("/"):
        return True
    try:
        parts = urlsplit(destination)
    except ValueError:
        return False  # the third-party copy parser answers the malformed URL with a 400
    return bool(parts.netloc) and parts.netloc.lower() == request.host.lower()


def _depth(request: web.Request) -> bool:
    """True for infinity (the default for COPY), False for 0; anything else is a 400."""
    value = request.headers.get("Depth", "infinity").strip().lower()
    if value not in ("0", "infinity"):
        raise BadRequest(f"Bad Depth header for COPY: {value[:20]!r} (expected 0 or infinity)")
    return value == "infinity"


class LocalCopy:
    def __init__(self, namespace: NamespaceService, transfers: TransferService) -> None:
        self.ns = namespace
        self.transfers = transfers

    async def copy(self, request: web.Request, login: Login, path: str) -> web.Response:
        dst = path_from_url(request.headers["Destination"].strip())
        overwrite = request.headers.get("Overwrite", "T").strip().upper()
        if overwrite not in ("T", "F"):
            raise BadRequest(f"Bad Overwrite header: {overwrite[:10]!r} (expected T or F)")
        recursive = _depth(request)
        source = self.ns.stat(login, path)
        if dst == path or (source.inode.is_dir and is_within(dst, path)):
            raise PermissionDenied(f"Cannot copy {path} onto itself or into itself")
        parent, _ = self.ns.parent_of(login, dst)
        if parent is None:
            raise Conflict(f"Parent collection of the destination does not exist: {dst}")
        existed = self._exists(login, dst)
        if existed:
            if overwrite == "F":
                raise web.HTTPPreconditionFailed(reason=f"Destination exists: {dst}")
            self.ns.delete(login, dst, recursive=True)
        client = request.remote or ""
        if source.inode.is_dir:
            await self._copy_dir(login, source, dst, recursive, client)
        else:
            await self._copy_file(login, source, dst, client)
        return web.Response(status=204 if existed else 201)

    def _exists(self, login: Login, path: str) -> bool:
        try:
            self.ns.stat(login, path)
        except NotFound:
            return False
        return True

    async def _copy_file(self, login: Login, source: Entry, dst: str, client: str) -> None:
        entry = self.ns.open_for_read(login, source.path)
        replica = self.ns.pool.data_path(entry.inode.id)

        async def body() -> AsyncIterator[bytes]:
            with open(replica, "rb") as f:
                while data := f.read(CHUNK):
                    yield data

        await self.transfers.upload(login, dst, body(), client=client, content_length=entry.inode.size,
                                    extra={"protocol": "WebDAV COPY"})

    async def _copy_dir(self, login: Login, source: Entry, dst: str, recursive: bool, client: str) -> None:
        """Breadth-first with an explicit queue: deep trees cannot exhaust the interpreter's stack."""
        self.ns.mkdir(login, dst)
        if not recursive:
            return
        queue = [(source, dst)]
        copied = 0
        while queue:
            src_dir, dst_dir = queue.pop()
            for child in self.ns.list_dir(login, src_dir.path):
                copied += 1
                if copied > MAX_ENTRIES:
                    raise BadRequest(f"Collection copy larger than {MAX_ENTRIES} entries; copy it in parts")
                target = posixpath.join(dst_dir, child.inode.name)
                if child.inode.is_dir:
                    self.ns.mkdir(login, target)
                    queue.append((child, target))
                else:
                    await self._copy_file(login, child, target, client)
