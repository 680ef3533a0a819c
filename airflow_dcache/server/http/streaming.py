"""Streaming responses shared by the door and the pool movers."""

from __future__ import annotations

import asyncio
import mimetypes
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

READ_CHUNK = 1 << 20


def content_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


async def request_body(request: web.Request) -> AsyncIterator[bytes]:
    """The body in the pieces it arrives in (``iter_chunks`` would hang on an empty chunked body)."""
    async for chunk in request.content.iter_any():
        yield chunk


_CONDITIONAL = ("Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range")


class DownloadResponse(web.FileResponse):
    """Zero-copy (sendfile) file response that reports when the body has been sent.

    A plain GET is served without aiohttp's thread-pool hop for open/stat: a replica is a local
    file whose inode is almost always cached, so opening it inline costs microseconds while the
    hop costs a context switch per request. Ranges and conditional requests keep aiohttp's full
    implementation.
    """

    def __init__(self, path: Path, on_sent: Callable[[int], None], **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self._on_sent = on_sent
        self._replica = path

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:  # aiohttp calls prepare again after the handler returns
            return self._payload_writer
        if request.method != "GET" or any(h in request.headers for h in _CONDITIONAL):
            writer = await super().prepare(request)
        else:
            writer = await self._send_whole_file(request)
        self._on_sent(self.content_length or 0)
        return writer

    async def _send_whole_file(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("Connection lost")
        with open(self._replica, "rb") as fobj:
            st = os.fstat(fobj.fileno())
            self.content_length = st.st_size
            self.etag = f"{st.st_mtime_ns:x}-{st.st_size:x}"  # same value as aiohttp's own path
            self.last_modified = st.st_mtime
            self.headers["Accept-Ranges"] = "bytes"
            if "Content-Type" not in self.headers:
                self.content_type = "application/octet-stream"
            writer = await web.StreamResponse.prepare(self, request)
            if st.st_size:
                await asyncio.get_running_loop().sendfile(transport, fobj, 0, st.st_size)
        await web.StreamResponse.write_eof(self)
        return writer
