"""A pool: file replicas stored by file id, never by path, as dCache pools keep them.

Uploads go to a temporary file that is fsynced and renamed into place only when complete, so a
crash or a rejected checksum never leaves a partial replica where a reader could find it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import uuid
from collections.abc import Callable
from pathlib import Path

WRITEBACK_WINDOW = 16 << 20
_SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's sync_file_range(2), which Python does not expose; None elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_sync_file_range = _load_sync_file_range()


class PoolUpload:
    """One in-flight upload: a temp file that becomes the replica of ``file_id`` on :meth:`commit`."""

    def __init__(self, pool: Pool, file_id: str) -> None:
        self.pool = pool
        self.file_id = file_id
        self.tmp_path = pool.tmp_dir / f"{file_id}.{uuid.uuid4().hex}.part"
        self._fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.size = 0
        self._flushed = 0  # bytes already handed to the disk for writeback

    def write(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.size += len(chunk)

    def writev(self, pieces: list[bytes]) -> None:
        """Write several buffers with as few system calls as possible (no joining copy)."""
        total = sum(len(p) for p in pieces)
        written = os.writev(self._fd, pieces)
        if written < total:  # short write: finish the rest piece by piece
            rest = memoryview(b"".join(pieces))[written:]
            self.write(rest)
            self.size -= len(rest)
        self.size += written
        self._start_writeback()

    def _start_writeback(self) -> None:
        """Let the disk work while the network does: the final fsync then waits only for the tail.

        Without this, a large upload sits in the page cache until commit and the fsync flushes
        all of it at once, so the upload takes network time plus disk time instead of the maximum.
        """
        if _sync_file_range is None or self.size - self._flushed < WRITEBACK_WINDOW:
            return
        _sync_file_range(self._fd, self._flushed, self.size - self._flushed, _SYNC_FILE_RANGE_WRITE)
        self._flushed = self.size

    def commit(self) -> Path:
        """fsync and move into place; after this the replica is durable and visible to readers."""
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        final = self.pool.data_path(self.file_id)
        os.replace(self.tmp_path, final)
        return final

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.tmp_path.unlink(missing_ok=True)


class Pool:
    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.directory = directory
        self.data_dir = directory / "data"
        self.tmp_dir = directory / "tmp"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.tmp_dir.glob("*.part"):  # left by a crash: never visible, safe to drop
            stale.unlink(missing_ok=True)

    def data_path(self, file_id: str) -> Path:
        return self.data_dir / file_id

    def has(self, file_id: str) -> bool:
        return self.data_path(file_id).exists()

    def start_upload(self, file_id: str) -> PoolUpload:
        return PoolUpload(self, file_id)

    def remove(self, file_id: str) -> None:
        self.data_path(file_id).unlink(missing_ok=True)
