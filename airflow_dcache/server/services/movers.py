"""Movers: single-use, short-lived transfer slots on a pool, like dCache's ``dcache-http-uuid`` URLs.

When the door redirects a client to a pool, the authorisation happens at the door; the pool only
checks that the UUID is known, unused, unexpired and for this very path and direction.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from airflow_dcache.server.services.errors import BadRequest, NotFound
from airflow_dcache.server.services.login import Login


@dataclass(frozen=True)
class Mover:
    uuid: str
    kind: str  # "read" | "write"
    login: Login
    path: str  # the caller's view, as authorised by the door
    ns_path: str
    expires: float = field(compare=False)
    xattrs: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class RedirectPolicy:
    """dCache's webdav.redirect.on-read / on-write: send data transfers to the pool, not the door."""

    movers: MoverRegistry
    reads: bool
    writes: bool


class MoverRegistry:
    def __init__(self, lifetime: float = 60.0, capacity: int = 10_000) -> None:
        self.lifetime = lifetime
        self.capacity = capacity
        self._movers: dict[str, Mover] = {}
        self.base_url = ""  # set once the pool listener is bound

    def create(self, kind: str, login: Login, path: str, ns_path: str,
               xattrs: dict[str, str] | None = None) -> Mover:
        self._expire()
        if len(self._movers) >= self.capacity:
            oldest = min(self._movers.values(), key=lambda m: m.expires)
            del self._movers[oldest.uuid]
        mover = Mover(str(uuid.uuid4()), kind, login, path, ns_path, time.monotonic() + self.lifetime,
                      dict(xattrs or {}))
        self._movers[mover.uuid] = mover
        return mover

    def claim(self, mover_id: str, kind: str, ns_path: str) -> Mover:
        """Take the mover for this transfer; a second use, another path or direction is refused."""
        self._expire()
        mover = self._movers.get(mover_id)
        if mover is None:
            raise NotFound("No such transfer: the dcache-http-uuid is unknown, used or expired")
        if mover.kind != kind or mover.ns_path != ns_path:
            raise BadRequest("This dcache-http-uuid is for another path or direction")
        del self._movers[mover_id]
        return mover

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, m in self._movers.items() if m.expires <= now]:
            del self._movers[key]
