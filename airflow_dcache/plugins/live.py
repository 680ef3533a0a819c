"""The live-events proxy: dCache's SSE storage events of one directory, re-streamed to the browser.

The backend opens a channel with the hook (the connection's credential stays in the API server),
subscribes to the directory, and forwards each inotify event as a small JSON SSE message
(``kind``, ``path``, ``name``, ``is_dir``, ``time``, ``mask``). The browser never sees the channel
URL, a macaroon or the connection. Bounded: at most :data:`MAX_STREAMS` proxies per API-server
process, each for at most :data:`MAX_SECONDS` (the browser's ``EventSource`` reconnects by itself),
a comment line every :data:`KEEPALIVE` seconds so proxies and the browser notice a dead stream, and
the channel is deleted when the browser goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import posixpath
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow_dcache.events.model import format_time, kind_from_mask

log = logging.getLogger(__name__)

MAX_STREAMS = 16
MAX_SECONDS = 900.0
KEEPALIVE = 15.0
_active = 0


class TooManyStreams(RuntimeError):
    """More live views are open in this API server than :data:`MAX_STREAMS`."""


def sse(event: str, data: Any, event_id: str | None = None) -> bytes:
    lines = [f"event: {event}"]
    if event_id:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


def event_view(directory: str, raw: Any) -> dict[str, Any] | None:
    """The browser's view of one inotify event (``None`` for events it has no use for)."""
    if raw.type != "inotify":
        return None
    mask = list(raw.mask)
    kind = kind_from_mask(mask)
    if kind is None:
        return None
    name = raw.name
    path = posixpath.join(directory, name) if name else directory
    return {"kind": str(kind), "path": path, "name": name or posixpath.basename(directory),
            "is_dir": "IN_ISDIR" in mask, "time": format_time(time.time()), "mask": mask}


class LiveStream:
    """One browser's proxy: opened (channel + subscription) before the response starts, so dCache's
    refusals become HTTP errors; iterated by the response; closed when the browser leaves."""

    def __init__(self, hook: Any, channel: str, directory: str, conn_id: str) -> None:
        self.hook, self.channel, self.directory, self.conn_id = hook, channel, directory, conn_id

    @classmethod
    async def open(cls, conn_id: str, directory: str, hook_factory: Any) -> LiveStream:
        global _active
        if _active >= MAX_STREAMS:
            raise TooManyStreams(f"at most {MAX_STREAMS} live views per API server")
        _active += 1
        hook = hook_factory(conn_id)
        channel: str | None = None
        try:
            await hook.__aenter__()
            channel = await hook.create_channel(client_id="airflow-ui")
            await hook.subscribe_inotify(channel, directory)
        except BaseException:
            await cls._close(hook, channel)
            raise
        return cls(hook, channel, directory, conn_id)

    @staticmethod
    async def _close(hook: Any, channel: str | None) -> None:
        global _active
        _active -= 1
        if channel is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(hook.delete_channel(channel)), timeout=10)
        with contextlib.suppress(Exception):
            await hook.__aexit__(None, None, None)

    async def events(self) -> AsyncIterator[bytes]:
        """Forward events until the browser leaves, dCache ends the stream or :data:`MAX_SECONDS` pass."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1000)

        async def forward() -> None:
            try:
                async with contextlib.aclosing(self.hook.stream_events(self.channel)) as events:
                    async for raw in events:
                        view = event_view(self.directory, raw)
                        if view is not None:
                            await queue.put(sse("storage", view, raw.id))
                log.info("dCache view: event stream of %s on %s ended by the server", self.directory, self.conn_id)
            except Exception as exc:  # told to the browser, which reconnects
                log.warning("dCache view: event stream of %s on %s failed: %s", self.directory, self.conn_id, exc)
                await queue.put(sse("failure", {"message": f"dCache stream ended: {type(exc).__name__}"}))
            await queue.put(None)

        pump = asyncio.create_task(forward())
        try:
            yield sse("ready", {"path": self.directory, "conn": self.conn_id})
            deadline = time.monotonic() + MAX_SECONDS
            while time.monotonic() < deadline:
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if item is None:
                    break
                yield item
        finally:
            pump.cancel()
            with contextlib.suppress(BaseException):
                await pump
            await self._close(self.hook, self.channel)
