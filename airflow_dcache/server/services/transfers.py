"""Uploads and downloads: streaming to a pool with checksums, committed atomically.

An upload is authorised before any byte is read, written to a pool temp file while adler32 (and
md5/SHA when asked) are computed, verified, fsynced, and only then entered into the namespace, so a
failed or rejected upload never becomes visible and never replaces the previous file.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import posixpath
import zlib
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Any

from airflow_dcache.server.services import checksums
from airflow_dcache.server.services import permissions as perm
from airflow_dcache.server.services.activity import Activity
from airflow_dcache.server.services.checksums import Algorithm
from airflow_dcache.server.services.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    InsufficientStorage,
    PayloadTooLarge,
)
from airflow_dcache.server.services.events import TransferEvent
from airflow_dcache.server.services.login import Login
from airflow_dcache.server.services.namespace import DEFAULT_FILE_MODE, Entry, NamespaceService
from airflow_dcache.server.storage.namespace_db import REGULAR, Inode, new_pnfsid, now_ms
from airflow_dcache.server.storage.pool import Pool, PoolUpload


@dataclass(frozen=True)
class UploadTarget:
    """Where an upload will land: the parent (None if it must be created) and any file it replaces."""

    parent: Entry | None
    name: str
    existing: Inode | None


@dataclass(frozen=True)
class UploadResult:
    entry: Entry
    created: bool


def adler32_hex(value: int) -> str:
    return format(value & 0xFFFFFFFF, "08x")


def decode_content_md5(value: str) -> bytes:
    """``Content-MD5`` is base64 of the 16 raw digest bytes (RFC 1864)."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except ValueError:
        raise BadRequest("Content-MD5 is not valid base64") from None
    if len(raw) != 16:
        raise BadRequest(f"Content-MD5 must encode 16 bytes, got {len(raw)}")
    return raw


WRITE_BATCH = 1 << 20
MAX_PIECES = 512  # below IOV_MAX (1024) for writev


class _ChecksummingSink:
    """Hashes and writes chunks in order, in worker threads, one call at a time.

    The pool file is opened on the first call and a small upload is written, verified, fsynced
    and renamed in a single call, so it costs one thread hand-off instead of three.
    """

    def __init__(self, pool: Pool, file_id: str, *, algorithms: Collection[Algorithm],
                 expected_md5: bytes | None) -> None:
        self.pool = pool
        self.file_id = file_id
        self.upload: PoolUpload | None = None
        self.adler = 1
        wanted = set(algorithms) | ({checksums.MD5} if expected_md5 is not None else set())
        self.hashes = {a: a.new() for a in checksums.OPTIONAL if a in wanted}
        self.expected_md5 = expected_md5
        self.size = 0  # bytes accepted (counted on the event loop, ahead of the writes)

    def consume(self, pieces: list[bytes]) -> None:
        if self.upload is None:
            self.upload = self.pool.start_upload(self.file_id)
        for piece in pieces:
            self.adler = zlib.adler32(piece, self.adler)
            for h in self.hashes.values():
                h.update(piece)
        if pieces:
            self.upload.writev(pieces)

    def finish(self, pieces: list[bytes]) -> dict[str, str]:
        """Write the last pieces, check Content-MD5, then make the replica durable and visible.

        Returns the optional checksums in hex by namespace column.
        """
        self.consume(pieces)
        assert self.upload is not None
        digests = {a.key: h.hexdigest() for a, h in self.hashes.items()}
        if self.expected_md5 is not None and digests["md5"] != self.expected_md5.hex():
            actual = ", ".join([f"1:{adler32_hex(self.adler)}",
                                *(f"{a.type_code}:{digests[a.key]}" for a in self.hashes)])
            raise BadRequest(f"Checksum mismatch (expected=[2:{self.expected_md5.hex()}], actual=[{actual}])")
        self.upload.commit()
        return digests

    def abort(self) -> None:
        if self.upload is not None:
            self.upload.abort()


class TransferService:
    def __init__(self, namespace: NamespaceService, *, allow_overwrite: bool = True,
                 max_upload: int | None = None) -> None:
        self.ns = namespace
        self.allow_overwrite = allow_overwrite
        self.max_upload = max_upload
        # Called with the path before an upload's body is read and again right before its commit (no
        # await between that call, the commit and its events); a guard refuses by raising a ServiceError,
        # e.g. billing's InsufficientStorage (507) while its spool has no room for the upload's records.
        self.upload_guards: list[Callable[[str], None]] = []

    def authorise_upload(self, login: Login, path: str, *, replace: bool = True) -> UploadTarget:
        """Check everything that can be checked before the body arrives, and say what was found.

        Called before the body is read and again at commit (the namespace may have changed
        meanwhile); the commit uses the returned target instead of walking the path a third time.
        With ``replace=False`` an existing file is refused (AlreadyExists) before the DELETE
        right is asked for, since nothing would be deleted.
        """
        perm.require_activity(login, Activity.UPLOAD, path)
        ns = self.ns.ns_path(login, path)
        perm.require_within(login, ns, path)
        if ns == "/" or path.endswith("/"):
            raise BadRequest(f"Cannot upload to a directory path: {path}")
        parent, name = self.ns.parent_of(login, path)
        if parent is None:
            return UploadTarget(None, name, None)  # parents are created at commit, with the same checks
        perm.require_mode(login, parent.inode, perm.WRITE | perm.EXECUTE, path)
        node = self.ns.db.child(parent.inode.id, name)
        if node is None:
            return UploadTarget(parent, name, None)
        if node.is_dir:
            raise Conflict(f"Is a directory: {path}")
        if not replace:
            raise AlreadyExists(f"Destination exists: {path}")
        if not self.allow_overwrite:
            raise Conflict(f"File exists and overwriting is disabled: {path}")
        perm.require_activity(login, Activity.DELETE, path)
        return UploadTarget(parent, name, node)

    def size_limit(self, login: Login) -> int | None:
        limits = [x for x in (self.max_upload, login.max_upload) if x is not None]
        return min(limits) if limits else None

    async def upload(
        self, login: Login, path: str, body: AsyncIterator[bytes], *, client: str,
        content_length: int | None = None, content_md5: str | None = None,
        algorithms: Collection[Algorithm] = (),
        xattrs: dict[str, str] | None = None, extra: dict[str, Any] | None = None,
    ) -> UploadResult:
        self.authorise_upload(login, path)
        for guard in self.upload_guards:
            guard(path)
        expected_md5 = decode_content_md5(content_md5) if content_md5 is not None else None
        limit = self.size_limit(login)
        if limit is not None and content_length is not None and content_length > limit:
            raise PayloadTooLarge(f"Upload of {content_length} bytes exceeds the limit of {limit} bytes")
        started = now_ms()
        file_id = new_pnfsid()
        loop = asyncio.get_running_loop()
        # File I/O and hashing run in worker threads (both release the GIL): the event loop keeps
        # serving other requests, and the next chunk is received while the previous one is written.
        sink = _ChecksummingSink(self.ns.pool, file_id, algorithms=algorithms, expected_md5=expected_md5)
        pending: asyncio.Future[None] | None = None
        batch: list[bytes] = []
        batched = 0
        try:
            async for chunk in body:
                if limit is not None and sink.size + len(chunk) > limit:
                    raise PayloadTooLarge(f"Upload exceeds the limit of {limit} bytes")
                sink.size += len(chunk)
                batch.append(chunk)
                batched += len(chunk)
                if batched >= WRITE_BATCH or len(batch) >= MAX_PIECES:  # ~1 MiB at a time, not copied
                    if pending is not None:
                        await pending
                    pending = loop.run_in_executor(None, sink.consume, batch)
                    batch, batched = [], 0
            if pending is not None:
                await pending
                pending = None
            if content_length is not None and sink.size != content_length:
                raise BadRequest(f"Body ended after {sink.size} of {content_length} bytes")
            digests = await loop.run_in_executor(None, sink.finish, batch)
        except BaseException as err:
            if pending is not None:
                await asyncio.gather(pending, return_exceptions=True)
            sink.abort()
            if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage(
                    f"No space left on pool {self.ns.pool.name}: upload of {path} refused") from None
            raise
        adler = sink.adler
        try:
            for guard in self.upload_guards:
                guard(path)
            entry, created = self._commit(login, path, file_id, sink.size, adler32_hex(adler), digests,
                                          xattrs or {})
        except BaseException:
            self._discard(file_id)
            raise
        self.ns.events.publish(TransferEvent(
            "upload", entry.ns_path, entry.inode.id, entry.inode.size, sink.size, started, now_ms(),
            login.username, login.uid, login.gids, client, extra=dict(extra or {})))
        return UploadResult(entry, created)

    def _discard(self, file_id: str) -> None:
        """Remove a replica nobody can reach any more, off the event loop."""
        asyncio.get_running_loop().run_in_executor(None, self.ns.pool.remove, file_id)

    def _commit(self, login: Login, path: str, file_id: str, size: int, adler: str, digests: dict[str, str],
                xattrs: dict[str, str]) -> tuple[Entry, bool]:
        """Enter the finished replica into the namespace, replacing any previous file atomically."""
        target = self.authorise_upload(login, path)  # re-check: the namespace may have changed
        parent, name, old = target.parent, target.name, target.existing
        if parent is None:
            parent = self.ns.mkdir(login, posixpath.dirname(path), parents=True, activity=Activity.UPLOAD)
            perm.require_mode(login, parent.inode, perm.WRITE | perm.EXECUTE, path)
        db = self.ns.db
        with db.transaction():
            if old is not None:
                db.delete(old.id)
            node = db.insert(parent.inode.id, name, REGULAR, mode=DEFAULT_FILE_MODE, uid=login.uid,
                             gid=login.primary_gid, size=size, adler32=adler, digests=digests, inode_id=file_id)
            if xattrs:
                db.set_xattrs(node.id, xattrs)
        if old is not None:
            self._discard(old.id)
            self.ns.emit("IN_DELETE", old)
            self.ns.emit("IN_DELETE_SELF", old)
        for kind in ("IN_CREATE", "IN_OPEN", "IN_MODIFY", "IN_CLOSE_WRITE", "IN_ATTRIB"):
            self.ns.emit(kind, node)
        return Entry(path, posixpath.join(parent.ns_path, name), node), old is None

    def download_finished(self, login: Login, entry: Entry, transferred: int, started: int,
                          client: str, extra: dict[str, Any] | None = None) -> None:
        self.ns.emit("IN_OPEN", entry.inode)
        self.ns.emit("IN_ACCESS", entry.inode)
        self.ns.emit("IN_CLOSE_NOWRITE", entry.inode)
        self.ns.events.publish(TransferEvent(
            "download", entry.ns_path, entry.inode.id, entry.inode.size, transferred, started, now_ms(),
            login.username, login.uid, login.gids, client, extra=dict(extra or {})))


    def remove_finished(self, login: Login, entry: Entry, client: str,
                        extra: dict[str, Any] | None = None) -> None:
        """A door delete of a file: billing's ``remove`` record comes from this."""
        t = now_ms()
        self.ns.events.publish(TransferEvent(
            "remove", entry.ns_path, entry.inode.id, entry.inode.size, 0, t, t,
            login.username, login.uid, login.gids, client, extra=dict(extra or {})))
