"""File objects of the ``dcache://`` filesystem: ranged reads, and writes uploaded once at close.

Reads: each block is one ``Range`` GET through the door (:meth:`DCacheHook.read_range`), so ``seek``
is free and reading the middle of a large HDF5 file moves only the bytes asked for; sequential reads
go block by block (fsspec's read-ahead cache), never the whole file at once.

Writes: the data is spooled (in memory up to a bound, then to a temporary file) and sent as **one
PUT at close**, through :meth:`DCacheHook.upload` (adler32 computed while sending and compared with
what the pool stored). A PUT that streams while the caller writes is not feasible: dCache's door
answers the PUT with a redirect to a pool, and the body must then be sent again from its start, so
the source has to be rewindable; and a half-written file must never become visible when the writer
fails (leaving a ``with`` block by an exception uploads nothing).
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import tempfile
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from fsspec.spec import AbstractBufferedFile

from airflow_dcache.exceptions import AlreadyExists, AuthenticationFailed, NotFound, PermissionDenied

if TYPE_CHECKING:
    from airflow_dcache.hooks.dcache import DCacheHook

SPOOL_MEMORY = 8 * 1024 * 1024  # larger writes spill to a temporary file


@contextlib.contextmanager
def os_errors(name: str) -> Iterator[None]:
    """The hook's errors as the ``OSError`` subclasses fsspec and pathlib callers test for."""
    try:
        yield
    except NotFound as exc:
        raise FileNotFoundError(errno.ENOENT, str(exc), name) from exc
    except (PermissionDenied, AuthenticationFailed) as exc:
        raise PermissionError(errno.EACCES, str(exc), name) from exc
    except AlreadyExists as exc:
        raise FileExistsError(errno.EEXIST, str(exc), name) from exc


class DCacheReadFile(AbstractBufferedFile):
    """Read-only file; every cache miss is one ranged GET of ``block_size`` bytes."""

    def __init__(self, fs: Any, name: str, hook: DCacheHook, dcache_path: str, size: int, **kwargs: Any) -> None:
        self._hook = hook
        self._dcache_path = dcache_path
        super().__init__(fs, name, mode="rb", size=size, **kwargs)

    def _fetch_range(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        with os_errors(self.path):
            return self._hook.read_range(self._dcache_path, start, end - start)


class DCacheWriteFile(AbstractBufferedFile):
    """Write-only file; the data goes to dCache in one verified upload when the file is closed."""

    def __init__(
        self,
        fs: Any,
        name: str,
        hook: DCacheHook,
        dcache_path: str,
        *,
        checksum: str = "adler32",
        make_parents: bool = False,
        **kwargs: Any,
    ) -> None:
        self._hook = hook
        self._dcache_path = dcache_path
        self._checksum = checksum
        self._make_parents = make_parents
        self._spool: IO[bytes] | None = None
        super().__init__(fs, name, mode="wb", **kwargs)

    def _initiate_upload(self) -> None:
        self._spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115 (closed at commit)

    def _upload_chunk(self, final: bool = False) -> bool:
        assert self._spool is not None
        self.buffer.seek(0)
        shutil.copyfileobj(self.buffer, self._spool)
        if final and self.autocommit:
            self.commit()
        return True

    def commit(self) -> None:
        """Send the spooled data (the whole file) and verify it; the spool is dropped either way."""
        if self._spool is None:
            return
        spool, self._spool = self._spool, None
        try:
            spool.seek(0)
            with os_errors(self.path):
                self._hook.upload(spool, self._dcache_path, checksum=self._checksum,  # type: ignore[arg-type]
                                  overwrite=True, make_parents=self._make_parents)
        finally:
            spool.close()

    def discard(self) -> None:
        """Drop what was written; nothing reaches dCache."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None and not getattr(self, "_closed", True):
            self.discard()  # a failed writer must not leave a truncated file behind
            self._closed = True
            return
        self.close()
