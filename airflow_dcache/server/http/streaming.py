"""Streaming request and response bodies shared by the door and the pool movers."""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

READ_CHUNK = 1 << 20


def content_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


async def body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """Request body in large pieces; coalescing cuts per-chunk hashing and write overhead."""
    buf = bytearray()
    async for data in request.content.iter_any():
        buf += data
        if len(buf) >= READ_CHUNK:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


class DownloadResponse(web.FileResponse):
    """aiohttp's zero-copy (sendfile) file response, reporting when the body has been sent."""

    def __init__(self, path: Path, on_sent: Callable[[int], None], **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self._on_sent = on_sent

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:  # aiohttp calls prepare again after the handler returns
            return self._payload_writer
        writer = await super().prepare(request)
        self._on_sent(self.content_length or 0)
        return writer


