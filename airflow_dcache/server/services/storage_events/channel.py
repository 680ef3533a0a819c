"""A channel: one user's event stream, its subscriptions, the replay backlog and the SSE consumer.

Everything here runs on the event loop thread and never blocks. Sources call
:meth:`Channel.deliver`, which numbers the event, keeps it in the ring buffer and, when a client is
connected, hands the already encoded SSE frame to the :class:`Connection`. The connection's writer
(:meth:`Channel.pump`, run by the HTTP handler) sends whatever has accumulated in one write, so a
burst costs one syscall per channel, not one per event.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from itertools import islice
from typing import TYPE_CHECKING, Any

from airflow_dcache.server.services.activity import Activity
from airflow_dcache.server.services.login import Login

if TYPE_CHECKING:
    from airflow_dcache.server.services.storage_events.registry import ChannelRegistry

# SYSTEM event types (dCache's SystemEventType).
NEW_SUBSCRIPTION = "NEW_SUBSCRIPTION"
SUBSCRIPTION_CLOSED = "SUBSCRIPTION_CLOSED"
EVENT_LOSS = "EVENT_LOSS"
COMPETING_CLIENT = "COMPETING_CLIENT"
SHUTDOWN = "SHUTDOWN"


def system_frame(kind: str, subscription: str | None = None) -> bytes:
    """A SYSTEM event: no ``id:`` line, so it is never replayed."""
    doc: dict[str, str] = {"type": kind}
    if subscription is not None:
        doc["subscription"] = subscription
    return b"event: SYSTEM\ndata: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"


class Subscription:
    """Base of the subscriptions of every event type; ``id`` is unique per channel and type."""

    event_type = ""

    def __init__(self, channel: Channel, sid: str, url: str) -> None:
        self.channel = channel
        self.id = sid
        self.url = url
        self.url_json = json.dumps(url)  # pre-encoded for the event envelope
        self.closed = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.event_type, self.id)

    def selector(self) -> Any:
        raise NotImplementedError

    def release(self) -> None:
        """Stop producing events (unhook from the source); called once, by the channel."""

    def on_overflow(self) -> None:
        """Events were dropped because the consumer was slow; tell the client if the type can."""

    def deliver(self, payload_json: str) -> bool:
        return self.channel.deliver(self, payload_json)


class Connection:
    """The one SSE consumer of a channel: encoded frames waiting to be written, and a wake-up."""

    __slots__ = ("closing", "counts", "frames", "is_gone", "overflowed", "owners", "wake")

    def __init__(self, is_gone: Callable[[], bool] = lambda: False) -> None:
        self.frames: list[bytes] = []
        self.owners: list[Subscription | None] = []
        self.counts: dict[Subscription, int] = {}  # frames per subscription not yet written
        self.overflowed: set[Subscription] = set()
        self.wake = asyncio.Event()
        self.closing = False
        self.is_gone = is_gone

    def push(self, frame: bytes, owner: Subscription | None = None) -> None:
        self.frames.append(frame)
        self.owners.append(owner)
        if owner is not None:
            self.counts[owner] = self.counts.get(owner, 0) + 1
        self.wake.set()

    def close(self, last: bytes | None = None) -> None:
        """Send ``last`` (if any) after what is queued, then end the stream."""
        if last is not None:
            self.push(last)
        self.closing = True
        self.wake.set()


class Channel:
    def __init__(self, registry: ChannelRegistry, cid: str, login: Login, client_id: str | None,
                 timeout: int, backlog: int, queue_limit: int) -> None:
        self.registry = registry
        self.id = cid
        self.uid = login.uid
        self.login = login  # events are filtered through the restrictions of the creating login
        self.client_id = client_id
        self.timeout = timeout
        self.queue_limit = queue_limit
        self.created = time.time()
        self.subscriptions: dict[tuple[str, str], Subscription] = {}
        self.backlog: deque[tuple[int, bytes]] = deque(maxlen=backlog)
        self.next_id = 0
        self.conn: Connection | None = None
        self.closed = False
        self._gc: asyncio.TimerHandle | None = None
        # Precomputed filter of the owner's login (isSendableEvent: READ_METADATA on the target).
        self.may_read_metadata = login.allows(Activity.READ_METADATA)
        self.restricted = login.path_restriction not in (None, "/") or login.grants is not None  # token scopes
        self.expires_at = login.expiry.timestamp() if login.expiry is not None else None

    # -- sending ---------------------------------------------------------------------------------
    def deliver(self, sub: Subscription, payload_json: str) -> bool:
        """Number, buffer and send one event of ``sub``; False if dropped (consumer too slow)."""
        conn = self.conn
        if conn is not None and conn.counts.get(sub, 0) >= self.queue_limit:
            conn.overflowed.add(sub)
            return False
        n = self.next_id
        self.next_id = n + 1
        frame = (f"event: {sub.event_type}\nid: {n}\ndata: {{\"event\":{payload_json},"
                 f"\"subscription\":{sub.url_json}}}\n\n").encode()
        self.backlog.append((n, frame))
        if conn is not None:
            conn.push(frame, sub)
        return True

    def system(self, kind: str, subscription: str | None = None) -> None:
        if self.conn is not None:
            self.conn.push(system_frame(kind, subscription))

    # -- subscriptions ---------------------------------------------------------------------------
    def add_subscription(self, sub: Subscription) -> None:
        self.subscriptions[sub.key] = sub
        self.system(NEW_SUBSCRIPTION, sub.url)

    def close_subscription(self, sub: Subscription) -> None:
        if sub.closed:
            return
        sub.closed = True
        sub.release()
        self.subscriptions.pop(sub.key, None)
        if self.conn is not None:
            self.conn.counts.pop(sub, None)
            self.conn.overflowed.discard(sub)
        self.system(SUBSCRIPTION_CLOSED, sub.url)

    # -- connections -----------------------------------------------------------------------------
    def attach(self, conn: Connection, last_event_id: int | None) -> None:
        """Make ``conn`` the consumer, replaying after ``last_event_id`` as dCache does."""
        old = self.conn
        if old is not None:
            old.close(system_frame(COMPETING_CLIENT))
        self.conn = conn
        self._cancel_gc()
        if last_event_id is None:
            return
        backlog = self.backlog
        # Drain up to the client's last event; it stays at the head so a retry replays the same.
        for _ in range(len(backlog)):
            if backlog[0][0] == last_event_id:
                break
            backlog.popleft()
        if backlog:
            for _, frame in islice(backlog, 1, None):
                conn.push(frame)
        else:
            conn.push(system_frame(EVENT_LOSS))

    def detach(self, conn: Connection) -> None:
        if self.conn is conn:
            self.conn = None
            if not self.closed:
                self.start_gc_timer()

    async def pump(self, conn: Connection, write: Callable[[bytes], Awaitable[None]]) -> None:
        """Write queued frames until the connection is closed; runs in the SSE request handler."""
        try:
            while True:
                if not conn.frames:
                    if conn.closing:
                        return
                    conn.wake.clear()
                    await conn.wake.wait()
                    continue
                frames, owners = conn.frames, conn.owners
                conn.frames, conn.owners = [], []
                await write(b"".join(frames))
                counts = conn.counts
                for owner in owners:
                    if owner is not None and owner in counts:
                        left = counts[owner] - 1
                        if left:
                            counts[owner] = left
                        else:
                            del counts[owner]
                if conn.overflowed and not conn.closing:
                    for sub in [s for s in conn.overflowed if counts.get(s, 0) < self.queue_limit]:
                        conn.overflowed.discard(sub)
                        sub.on_overflow()
        finally:
            self.detach(conn)

    # -- lifetime --------------------------------------------------------------------------------
    def set_timeout(self, seconds: int) -> None:
        self.timeout = seconds
        if self._gc is not None:
            self.start_gc_timer()

    def start_gc_timer(self) -> None:
        self._cancel_gc()
        loop = self.registry.loop
        if loop is not None:
            self._gc = loop.call_later(self.timeout, self.registry.expire, self)

    def _cancel_gc(self) -> None:
        if self._gc is not None:
            self._gc.cancel()
            self._gc = None

    def close(self, last: bytes | None = None) -> None:
        """Close every subscription, then the connection (after ``last``, if given)."""
        if self.closed:
            return
        for sub in list(self.subscriptions.values()):
            self.close_subscription(sub)
        self.closed = True
        self._cancel_gc()
        if self.conn is not None:
            self.conn.close(last)
