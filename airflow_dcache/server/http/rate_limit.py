"""dCache's request rate limiter (frontend and WebDAV door, 11.2+): 429 with ``Retry-After`` per client.

dCache keys the limiter on the client's IP address (``RateLimitedHandlerList``), answers before any
authentication or processing, and since 12.0 / 11.2 adds ``Retry-After`` in whole seconds so that FTS
and other clients back off; the body is a plain text line. The emulation is a token bucket per client
address with one second's worth of burst (Guava's ``RateLimiter`` stores at most one second of permits),
off unless ``--rate-limit`` is given. ``Retry-After`` is the time until the next permit, rounded up to
whole seconds (dCache picks a random 1..idle-time value; a deterministic answer keeps clients testable).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web

from airflow_dcache.server.http.auth import ACCESS_LOG
from airflow_dcache.server.http.errors import Handler

BUSY_TEXT = "Server is busy. Please try again later."
_MAX_CLIENTS = 65_536  # bounded memory: the least recently seen client is forgotten first


class RateLimiter:
    """Token buckets, one per client address; ``rate`` permits a second, at most ``max(1, rate)`` stored."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1.0, rate)
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, stamp)

    def acquire(self, client: str) -> float:
        """Take a permit: 0 when granted, else the seconds until one will be available."""
        now = self._clock()
        tokens, stamp = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > _MAX_CLIENTS:
            self._buckets.popitem(last=False)
        return wait


def retry_after_seconds(wait: float) -> int:
    """Whole seconds, at least 1: a ``Retry-After: 0`` would invite an immediate retry storm."""
    return max(1, math.ceil(wait))


def rate_limit_middleware(limiter: RateLimiter) -> Callable[[web.Request, Handler], object]:
    """The aiohttp middleware: refuse over-limit requests before any handler (or login) runs."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        wait = limiter.acquire(request.remote or "")
        if wait > 0:
            if ACCESS_LOG.isEnabledFor(logging.INFO):  # refused before login, so no user is known
                ACCESS_LOG.info(json.dumps({"method": request.method, "path": request.path, "status": 429}))
            return web.Response(status=429, text=BUSY_TEXT,
                                headers={"Retry-After": str(retry_after_seconds(wait))})
        return await handler(request)

    return middleware
