"""The live-events proxy: dCache's SSE storage events of one directory, re-streamed to the browser.

The backend opens a channel with the hook (the connection's credential stays in the API server),
subscribes to the directory, and forwards each inotify event as a small JSON SSE message
(``kind``, ``path``, ``name``, ``is_dir``, ``time``, ``mask``). The browser never sees the channel
URL, a macaroon or the connection. Bounded: at most :data:`MAX_STREAMS` proxies per API-server
process and :data:`MAX_STREAMS_PER_USER` per Airflow user (so one person cannot hold them all), each
for at most :data:`MAX_SECONDS` (the browser's ``EventSource`` reconnects by itself),
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
from airflow_dcache.plugins.validation import visible

log = logging.getLogger(__name__)

MAX_STREAMS = 16
MAX_STREAMS_PER_USER = 4
MAX_SECONDS = 900.0
KEEPALIVE = 15.0
RETRY_AFTER = 30  # seconds: a closed tab frees its slot within a keep-alive or two
_active = 0
_per_user: dict[str, int] = {}


class TooManyStreams(RuntimeError):
    """More live views are open than :data:`MAX_STREAMS` in this process or :data:`MAX_STREAMS_PER_USER`
    for this user; ``retry_after`` is a hint in seconds."""

    def __init__(self, message: str, retry_after: int = RETRY_AFTER) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _acquire(user: str) -> None:
    global _active
    if _per_user.get(user, 0) >= MAX_STREAMS_PER_USER:
        raise TooManyStreams(f"at most {MAX_STREAMS_PER_USER} live views per user; close one (another tab?)")
    if _active >= MAX_STREAMS:
        raise TooManyStreams(f"at most {MAX_STREAMS} live views per API server")
    _active += 1
    _per_user[user] = _per_user.get(user, 0) + 1


def _release(user: str) -> None:
    global _active
    _active -= 1
    left = _per_user.get(user, 0) - 1
    if left > 0:
        _per_user[user] = left
    else:
        _per_user.pop(user, None)


def usage() -> tuple[int, dict[str, int]]:
    """Open streams of this process: the total and per user (for tests and logs)."""
    return _active, dict(_per_user)


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
    shown = name or posixpath.basename(directory)
    return {"kind": str(kind), "path": path, "name": shown, "display": visible(shown),
            "display_path": visible(path), "is_dir": "IN_ISDIR" in mask, "time": format_time(time.time()),
            "mask": mask}


class LiveStream:
    """One browser's proxy: opened (channel + subscription) before the response starts, so dCache's
    refusals become HTTP errors; iterated by the response; closed when the browser leaves."""

    def __init__(self, hook: Any, channel: str, directory: str, conn_id: str, user: str) -> None:
        self.hook, self.channel, self.directory, self.conn_id, self.user = hook, channel, directory, conn_id, user

    @classmethod
    async def open(cls, conn_id: str, directory: str, hook_factory: Any, user: str) -> LiveStream:
        """Take a slot of ``user`` (or :class:`TooManyStreams`), then channel + subscription via
        ``hook_factory()`` (the user's :meth:`~.access.Access.hook`)."""
        _acquire(user)
        hook = None
        channel: str | None = None
        try:
            hook = hook_factory()
            await hook.__aenter__()
            channel = await hook.create_channel(client_id="airflow-ui")
            await hook.subscribe_inotify(channel, directory)
        except BaseException:
            await cls._close(hook, channel, user)
            raise
        return cls(hook, channel, directory, conn_id, user)

    @staticmethod
    async def _close(hook: Any, channel: str | None, user: str) -> None:
        _release(user)
        if hook is None:
            return
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
            yield sse("ready", {"path": self.directory, "display_path": visible(self.directory),
                                "conn": self.conn_id})
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
            await self._close(self.hook, self.channel, self.user)
