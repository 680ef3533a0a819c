"""All channels of the frontend, their limits and garbage collection, and the event types.

Channels live in memory only, as in dCache's Registrar: a restarted server has none.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from airflow_dcache.server.services.errors import TooManyRequests
from airflow_dcache.server.services.events import EventBus, NamespaceEvent
from airflow_dcache.server.services.login import Login
from airflow_dcache.server.services.namespace import NamespaceService
from airflow_dcache.server.services.storage_events import schemas
from airflow_dcache.server.services.storage_events.channel import SHUTDOWN, Channel, Subscription, system_frame
from airflow_dcache.server.services.storage_events.inotify import InotifySource
from airflow_dcache.server.services.storage_events.metronome import MetronomeSource

log = logging.getLogger(__name__)

MAX_CLIENT_ID = 256


@dataclass(frozen=True)
class EventsSettings:
    """dCache's ``frontend.limit.events.*`` properties, in seconds and counts."""

    channels_per_user: int = 128
    disconnect_timeout: int = 300
    disconnect_timeout_min: int = 1
    disconnect_timeout_max: int = 86400
    backlog: int = 16383
    queue_limit: int = 1000  # per subscription, events not yet written to a slow client
    io_suppression: float = 10.0  # pool.inotify-generation.io-suppression
    sweep_interval: float = 1.0  # how often closed SSE connections are looked for
    shutdown_grace: float = 2.0  # how long SHUTDOWN may take to reach connected clients


class Source(Protocol):
    description: str

    def subscribe(self, channel: Channel, login: Login, doc: dict[str, Any],
                  channel_url: str) -> tuple[Subscription, bool]: ...


@dataclass(frozen=True)
class EventType:
    name: str
    source: Source
    selector_schema: dict[str, Any]
    event_schema: dict[str, Any]


def new_channel_id() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")


class ChannelRegistry:
    def __init__(self, namespace: NamespaceService, settings: EventsSettings | None = None, *,
                 bus: EventBus | None = None) -> None:
        self.settings = settings or EventsSettings()
        self.bus = bus
        self.inotify = InotifySource(namespace, io_suppression=self.settings.io_suppression)
        self.types: dict[str, EventType] = {
            "inotify": EventType("inotify", self.inotify, schemas.INOTIFY_SELECTOR, schemas.INOTIFY_EVENT),
            "metronome": EventType("metronome", MetronomeSource(), schemas.METRONOME_SELECTOR,
                                   schemas.METRONOME_EVENT),
        }
        self.channels: dict[str, Channel] = {}
        self.by_uid: dict[int, dict[str, Channel]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = threading.get_ident()
        self._sweeper: asyncio.Task[None] | None = None
        self._pumps: set[asyncio.Future[Any]] = set()
        if bus is not None:
            bus.subscribe(self.on_bus_event)

    # -- wiring ----------------------------------------------------------------------------------
    def on_bus_event(self, event: object) -> None:
        """EventBus listener, called synchronously by the publisher; channels live on the loop thread."""
        if not isinstance(event, NamespaceEvent) or not self.inotify.watches:
            return
        if self.loop is not None and threading.get_ident() != self._loop_thread:
            self.loop.call_soon_threadsafe(self.inotify.on_event, event)  # published from a worker thread
            return
        self.inotify.on_event(event)

    async def start(self, _app: object = None) -> None:
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        if self._sweeper is None:
            self._sweeper = self.loop.create_task(self._sweep())

    async def shutdown(self, _app: object = None) -> None:
        """Tell connected clients SHUTDOWN, close every channel and wait (bounded) for the writers."""
        for channel in list(self.channels.values()):
            self._forget(channel)
            channel.close(system_frame(SHUTDOWN))
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self.bus is not None:
            with contextlib.suppress(ValueError):
                self.bus.unsubscribe(self.on_bus_event)
            self.bus = None
        pumps = [p for p in self._pumps if not p.done()]
        if pumps:
            await asyncio.wait(pumps, timeout=self.settings.shutdown_grace)

    def track_pump(self, pump: asyncio.Future[Any]) -> None:
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)

    async def _sweep(self) -> None:
        """Notice SSE clients that went away on quiet channels, so their GC timer starts."""
        while True:
            await asyncio.sleep(self.settings.sweep_interval)
            for channel in list(self.channels.values()):
                conn = channel.conn
                if conn is not None and not conn.closing and conn.is_gone():
                    conn.close()

    # -- channels --------------------------------------------------------------------------------
    def create(self, login: Login, client_id: str | None) -> Channel:
        owned = self.by_uid.setdefault(login.uid, {})
        if len(owned) >= self.settings.channels_per_user:
            raise TooManyRequests("Too Many Channels")
        if client_id is not None:
            client_id = client_id[:MAX_CLIENT_ID]
        cid = new_channel_id()
        while cid in self.channels:  # 128 random bits: a repeat is practically impossible
            cid = new_channel_id()
        s = self.settings
        channel = Channel(self, cid, login, client_id, s.disconnect_timeout, s.backlog, s.queue_limit)
        self.channels[cid] = channel
        owned[cid] = channel
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
        channel.start_gc_timer()  # not connected yet: the GC timer runs from creation
        return channel

    def get(self, cid: str) -> Channel | None:
        return self.channels.get(cid)

    def of_user(self, uid: int, client_id: str | None = None) -> list[Channel]:
        """The user's channels; ``client_id=""`` selects those created without a client-id."""
        channels = list(self.by_uid.get(uid, {}).values())
        if client_id is None:
            return channels
        wanted = client_id[:MAX_CLIENT_ID] or None
        return [c for c in channels if c.client_id == wanted]

    def delete(self, channel: Channel) -> None:
        self._forget(channel)
        channel.close()

    def expire(self, channel: Channel) -> None:
        """GC timer: the channel stayed disconnected for its timeout."""
        if channel.conn is None and self.channels.get(channel.id) is channel:
            log.debug("garbage-collecting channel %s of uid %s", channel.id, channel.uid)
            self.delete(channel)

    def _forget(self, channel: Channel) -> None:
        self.channels.pop(channel.id, None)
        owned = self.by_uid.get(channel.uid)
        if owned is not None:
            owned.pop(channel.id, None)
            if not owned:
                del self.by_uid[channel.uid]

    def close(self) -> None:
        """Synchronous last resort (no loop): drop everything."""
        with contextlib.suppress(Exception):
            for channel in list(self.channels.values()):
                self._forget(channel)
                channel.close()
