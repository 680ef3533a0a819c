"""Read a small request body whole, but never more than a bound (JSON, PROPFIND, PROPPATCH, LOCK, macaroons)."""

from __future__ import annotations

from aiohttp import web


async def read_bounded(request: web.Request, limit: int) -> bytes:
    """Up to ``limit + 1`` bytes of the body: the caller refuses a result longer than ``limit``.

    ``StreamReader.read(n)`` returns what has arrived so far, not ``n`` bytes, so one call would parse
    a body sent in several TCP segments cut short; this reads until EOF or past the bound.
    """
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await request.content.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
