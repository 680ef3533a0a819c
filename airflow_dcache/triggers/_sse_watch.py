"""The SSE side of :class:`~airflow_dcache.triggers.storage_events.DCacheStorageEventTrigger`.

:class:`ChannelWatch` owns one dCache events channel: it creates or finds the channel, subscribes the
watched directories (recursively: subscribe, *then* list, so nothing that landed in between is
missed), reads the stream, reconnects with capped backoff, and reconciles by listing after
``EVENT_LOSS``, ``IN_Q_OVERFLOW`` or a lost channel. It turns raw SSE events into
:class:`~airflow_dcache.events.StorageEvent` and hands ``(event or None, state snapshot)`` pairs to
the trigger's batcher through a queue; ``None`` only advances the cursor. All protocol calls go
through :class:`~airflow_dcache.hooks.dcache_async.DCacheAsyncHook`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from airflow_dcache.events import EventFilter, EventKind, StorageEvent, format_time, kind_from_mask
from airflow_dcache.exceptions import (
    AuthenticationFailed,
    DCacheError,
    InvalidConnection,
    LimitExceeded,
    NotFound,
    PermissionDenied,
)
from airflow_dcache.hooks.dcache_async import DCacheAsyncHook
from airflow_dcache.utils.backoff import Backoff
from airflow_dcache.utils.log_once import LogOnce

log = logging.getLogger(__name__)

CHANNELS_PER_USER = 128  # frontend.limit.events.channels-per-user (dcache-api.md §4.3)
RECONCILE_SLACK_MS = 2000  # files this much older than the watermark are still compared with "seen"
SEEN_LIMIT = 5000
# Kinds that begin a file version (or bring one to a new path): each such event is statted for its own
# version, never served from a cache, since a path can hold a new version (new pnfsid) a moment later.
_STAT_KINDS = frozenset({EventKind.CLOSED_AFTER_WRITE, EventKind.MOVED_IN, EventKind.CREATED})
_RECONCILE_KINDS = (EventKind.CLOSED_AFTER_WRITE, EventKind.MOVED_IN, EventKind.CREATED)
START_NOW = "now"
START_EXISTING = "existing"


def _stats() -> Any:
    from airflow.sdk.observability import stats

    return stats


def metric_incr(name: str, count: int = 1) -> None:
    with contextlib.suppress(Exception):  # metrics must never break the stream
        _stats().incr(f"dcache.sse.{name}", count)


def metric_gauge(name: str, value: float) -> None:
    with contextlib.suppress(Exception):
        _stats().gauge(f"dcache.sse.{name}", value)


def metric_timing(name: str, ms: float) -> None:
    with contextlib.suppress(Exception):
        _stats().timing(f"dcache.sse.{name}", ms)


class Resync(Exception):
    """The stream says events were lost (``EVENT_LOSS``, ``IN_Q_OVERFLOW``): list the tree."""


class StreamFault(Exception):
    """A transient condition on the stream (takeover, shutdown, server closed the stream)."""


@dataclass
class WatchState:
    """What survives a restart (stored in ``asset_state_store``); plain JSON via :meth:`to_json`."""

    channel: str | None = None
    last_id: str | None = None
    watermark_ms: int | None = None
    seen: dict[str, int] = field(default_factory=dict)
    #: the ``start_from`` policy that made this state's starting point (``None``: a state from before
    #: the policy existed, made as ``"now"``). Once a watermark exists the policy is not applied again.
    start_from: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"channel": self.channel, "last_id": self.last_id, "watermark_ms": self.watermark_ms,
                "seen": dict(self.seen), "start_from": self.start_from}

    @classmethod
    def from_json(cls, data: Any) -> WatchState:
        if not isinstance(data, dict):
            return cls()
        raw_seen = data.get("seen")
        seen: dict[str, Any] = raw_seen if isinstance(raw_seen, dict) else {}
        wm = data.get("watermark_ms")
        return cls(
            channel=data.get("channel") if isinstance(data.get("channel"), str) else None,
            last_id=str(data["last_id"]) if data.get("last_id") is not None else None,
            watermark_ms=wm if isinstance(wm, int) else None,
            seen={str(k): int(v) for k, v in seen.items() if isinstance(v, int)},
            start_from=data.get("start_from") if isinstance(data.get("start_from"), str) else None,
        )

    def remember(self, key: str, mtime_ms: int | None) -> None:
        """Record an emitted file version and move the watermark (server clock: file mtimes).

        Without an mtime (no stat) the local clock minus the slack moves the watermark instead, and
        the key (path-based) is not kept: a listing could not match it anyway.
        """
        if mtime_ms is None:
            now = int(time.time() * 1000) - RECONCILE_SLACK_MS
            if self.watermark_ms is None or now > self.watermark_ms:
                self.watermark_ms = now
            return
        self.seen[key] = mtime_ms
        if self.watermark_ms is None or mtime_ms > self.watermark_ms:
            self.watermark_ms = mtime_ms
        if len(self.seen) > SEEN_LIMIT:
            floor = (self.watermark_ms or 0) - RECONCILE_SLACK_MS
            self.seen = {k: v for k, v in self.seen.items() if v >= floor}
            while len(self.seen) > SEEN_LIMIT:
                self.seen.pop(next(iter(self.seen)))


class FaultLog:
    """Log a fault once per cause (type + message) until the watch recovers, not on every retry."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cause: str | None = None
        self.retries = 0
        self._once = LogOnce(log)

    def fault(self, exc: BaseException, retry_in: float) -> None:
        self.cause = f"{type(exc).__name__}: {exc}"
        self.retries += 1
        metric_incr("faults")
        if not self._once("%s: %s; retrying with backoff (further retries of this cause are logged at debug "
                          "level)", self.name, self.cause, repeat_at_debug=False):
            log.debug("%s: still failing (%s), retry %d in %.1f s", self.name, self.cause, self.retries, retry_in)

    def recovered(self) -> None:
        if self.cause is not None:
            log.info("%s: recovered after %d retries (last cause: %s)", self.name, self.retries, self.cause)
        self.cause, self.retries = None, 0
        self._once.forget()


@dataclass(frozen=True)
class WatchConfig:
    """The trigger's validated configuration, as the watch needs it."""

    conn_id: str
    paths: tuple[str, ...]
    recursive: bool
    flags: tuple[str, ...]
    filter: EventFilter
    stat: bool
    client_id: str
    keepalive: float
    channel_lifetime: int
    backoff_max: float
    max_directories: int
    start_from: str = START_NOW  # "now" | "existing" | a canonical UTC timestamp (see start_after_ms)


def start_after_ms(start_from: str) -> int | None:
    """The file mtime (ms, server clock) above which a watcher's first listing *reports* a file.

    ``None`` for ``"now"`` (report nothing, remember everything), ``-1`` for ``"existing"`` (report
    every file), else the timestamp in ms: a file whose mtime is newer is reported. ``start_from``
    is the canonical form the trigger validated (``format_time``'s ``...Z``).
    """
    if start_from == START_NOW:
        return None
    if start_from == START_EXISTING:
        return -1
    return int(datetime.fromisoformat(start_from.replace("Z", "+00:00")).timestamp() * 1000)


class ChannelWatch:
    """One channel, its subscriptions and the reconnect/reconcile loop (see the module docstring)."""

    def __init__(self, config: WatchConfig, state: WatchState, queue: asyncio.Queue) -> None:
        self.config = config
        self.state = state
        self.queue = queue
        self.hook: DCacheAsyncHook | None = None
        self.site = "dcache-default"
        self.dirs: dict[str, str] = {}  # subscription URL -> watched path
        self.watched: set[str] = set()
        self.subscribed_channel: str | None = None
        self.keepalive_channel: str | None = None
        self.needs_reconcile = False  # set when the channel is lost; a stored cursor resumes by replay
        self.start_listed = 0  # files the first listing reported under start_from (0 for "now")
        self.faults = FaultLog(f"dCache SSE watch {config.client_id}")
        self.reconcile_count = 0
        self.connected = asyncio.Event()

    # ------------------------------------------------------------------ helpers

    def snapshot(self) -> dict[str, Any]:
        return self.state.to_json()

    async def emit(self, event: StorageEvent | None) -> None:
        await self.queue.put((event, self.snapshot()))

    async def _hook(self) -> DCacheAsyncHook:
        if self.hook is None:
            self.hook = DCacheAsyncHook(self.config.conn_id)
            self.site = (await self.hook.aget_settings()).site
        return self.hook

    async def drop_hook(self) -> None:
        """Forget the client and the loaded connection, so a renewed credential or URL is picked up."""
        if self.hook is not None:
            with contextlib.suppress(Exception):
                await self.hook.aclose()
        self.hook = None

    # ------------------------------------------------------------------ main loop

    async def run_forever(self) -> None:
        """Never returns; never raises except ``CancelledError`` (the triggerer restarts raisers every 2 s)."""
        backoff = Backoff(1.0, self.config.backoff_max, jitter=True)
        while True:
            healthy_since = time.monotonic()
            try:
                await self._connect_once()
                raise StreamFault("the server closed the event stream")
            except asyncio.CancelledError:
                raise
            except NotFound as exc:
                # The channel was garbage-collected or the service restarted: new channel, then reconcile.
                if self.state.channel and "/events/" in (exc.url or ""):
                    log.info("events channel %s is gone; creating a new one and reconciling", self.state.channel)
                    self._forget_channel()
                    delay = 0.0
                else:
                    delay = backoff.next()
                    self.faults.fault(exc, delay)
            except (AuthenticationFailed, PermissionDenied, InvalidConnection) as exc:
                await self.drop_hook()  # the connection or credential may be fixed meanwhile
                delay = backoff.next()
                self.faults.fault(exc, delay)
            except Exception as exc:  # transient I/O, server errors, protocol surprises
                if isinstance(exc, DCacheError) and exc.status is None:
                    await self.drop_hook()  # unreachable: the service may come back on another URL
                delay = backoff.next()
                self.faults.fault(exc, delay)
            if time.monotonic() - healthy_since > 30:
                backoff.reset()
            metric_incr("reconnects")
            self.connected.clear()
            await asyncio.sleep(delay)

    def _forget_channel(self) -> None:
        self.state.channel = None
        self.state.last_id = None  # ids restart at 0 on a new channel
        self.subscribed_channel = None
        self.dirs.clear()
        self.watched.clear()
        self.needs_reconcile = True

    async def _connect_once(self) -> None:
        hook = await self._hook()
        channel = await self._ensure_channel(hook)
        if self.needs_reconcile:
            await self.reconcile("restart or lost channel")
        read_timeout = self.config.keepalive * 3 + 5
        stream: Any = hook.stream_events(channel, last_event_id=self.state.last_id, read_timeout=read_timeout)
        async with contextlib.aclosing(stream) as events:
            first = True
            async for raw in events:
                if first:
                    self.faults.recovered()
                    self.connected.set()
                    first = False
                try:
                    await self._handle(raw)
                except Resync as why:
                    await self.reconcile(str(why))

    # ------------------------------------------------------------------ channel and subscriptions

    async def _ensure_channel(self, hook: DCacheAsyncHook) -> str:
        cfg = self.config
        api = (await hook.aget_settings()).api_url
        if self.state.channel and not self.state.channel.startswith(f"{api}/events/channels/"):
            # the connection now points at another frontend: the old channel cannot be used from here
            log.info("stored events channel %s is not on %s; creating a new one and reconciling",
                     self.state.channel, api)
            self._forget_channel()
        if self.state.channel is None:
            mine = await hook.list_channels(cfg.client_id)
            if mine:
                self.state.channel = mine[0]
                self.state.last_id = None
                self.needs_reconcile = self.state.watermark_ms is not None
                for extra in mine[1:]:  # orphans of an earlier crash of this same watcher
                    with contextlib.suppress(DCacheError):
                        await hook.delete_channel(extra)
            else:
                try:
                    self.state.channel = await hook.create_channel(cfg.client_id)
                except LimitExceeded as exc:
                    raise LimitExceeded(
                        f"the user already has {CHANNELS_PER_USER} event channels (dCache's limit); "
                        "free some or use fewer watchers per user",
                        status=exc.status, method=exc.method, url=exc.url,
                    ) from None
                # dCache delivers only events after the stream opens unless Last-Event-ID asks for a
                # replay. A one-shot tick gets id 0 at once; resuming "after 0" then replays whatever
                # the subscriptions below see before the stream is open (EVENT_LOSS -> reconcile if not).
                await hook.subscribe_metronome(self.state.channel, delay=0.001, count=1, message="start")
                await hook.subscribe_metronome(self.state.channel, delay=cfg.keepalive, message="keepalive")
                self.state.last_id = "0"
                self.keepalive_channel = self.state.channel
            used = len(await hook.list_channels())
            metric_gauge("channels_used", used)
            level = logging.WARNING if used >= CHANNELS_PER_USER * 0.9 else logging.INFO
            log.log(level, "dCache events channel %s in use (%d of %d channels of this user)",
                    self.state.channel, used, CHANNELS_PER_USER)
        channel = self.state.channel
        assert channel is not None
        if self.subscribed_channel != channel:
            await hook.set_channel_timeout(channel, cfg.channel_lifetime)
            self.dirs.clear()
            self.watched.clear()
            existing = await hook.list_subscriptions(channel)
            if self.keepalive_channel != channel and not any("/metronome/" in s for s in existing):
                await hook.subscribe_metronome(channel, delay=cfg.keepalive, message="keepalive")
            initial = self.state.watermark_ms is None
            if initial:
                self.state.start_from = cfg.start_from
            elif (self.state.start_from or START_NOW) != cfg.start_from:
                log.info("start_from=%r not applied: this watcher already has a starting point (made with "
                         "start_from=%r) and catches up from its watermark; clear its state %s to start anew",
                         cfg.start_from, self.state.start_from or START_NOW, cfg.client_id)
            started = time.monotonic()
            for path in cfg.paths:
                await self._add_tree(path, emit=False, initial=initial)
            self.subscribed_channel = channel
            metric_gauge("watched_dirs", len(self.watched))
            if initial and cfg.start_from != START_NOW:
                log.info("first start (start_from=%r): %d existing file(s) reported from a listing of %d "
                         "director(ies) in %.1f s", cfg.start_from, self.start_listed, len(self.watched),
                         time.monotonic() - started)
            if initial:
                # Store the starting point now, before any event: a watcher restarted before its first
                # cursor commit would otherwise start again "fresh" and take every file that landed
                # meanwhile for pre-existing. With a stored watermark it reconciles them instead.
                await self.emit(None)
        return channel

    async def _subscribe(self, path: str) -> bool:
        if path in self.watched:
            return False
        if len(self.watched) >= self.config.max_directories:
            log.warning("not watching %s: max_directories=%d reached", path, self.config.max_directories)
            return False
        hook = await self._hook()
        assert self.state.channel is not None
        url = await hook.subscribe_inotify(self.state.channel, path, list(self.config.flags))
        self.dirs[url] = path
        self.watched.add(path)
        return True

    async def _add_tree(self, root: str, *, emit: bool, initial: bool = False) -> None:
        """Subscribe ``root`` and (when recursive) its subdirectories, each *before* it is listed.

        ``emit``: files found are emitted (a directory that appeared while watching: its files may have
        landed before the watch existed); ``initial``: first start, the listing applies ``start_from``:
        files it selects are reported (``extra.listed = "start_from"``), the others only move the
        watermark and are remembered as seen. A directory that cannot be subscribed because
        ``max_directories`` is reached is not listed either (its files could never be followed).
        """
        hook = await self._hook()
        after_ms = start_after_ms(self.config.start_from) if initial else None
        pending = [root]
        while pending:
            path = pending.pop()
            try:
                entry = await hook.stat(path)
            except NotFound:
                continue
            if not await self._subscribe(path) and path not in self.watched:
                continue  # max_directories reached: neither watched nor listed
            if not entry.is_dir or not (self.config.recursive or emit or initial):
                if initial and entry.is_file and after_ms is not None:  # a watched file, not a directory
                    await self._start_file(entry, after_ms)
                continue
            try:
                children = await hook.list_dir(path)
            except NotFound:
                continue
            for child in children:
                if child.is_dir and self.config.recursive:
                    pending.append(child.path)
                elif child.is_file and initial:
                    await self._start_file(child, after_ms)
                elif child.is_file and emit:
                    await self._emit_listed(child)
        if initial and self.state.watermark_ms is None:
            self.state.watermark_ms = int(time.time() * 1000) - RECONCILE_SLACK_MS

    async def _start_file(self, child: Any, after_ms: int | None) -> None:
        """A file found by the first listing: report it if ``start_from`` selects it, else remember it."""
        selected = after_ms is not None and (child.mtime or 0) > after_ms
        if selected and await self._emit_listed(child, listed="start_from"):
            self.start_listed += 1
            return
        self.state.remember(f"{child.pnfsid}:{EventKind.CLOSED_AFTER_WRITE.value}", child.mtime)

    # ------------------------------------------------------------------ reconcile

    def _listing_kind(self) -> EventKind | None:
        kinds = self.config.filter.kinds
        if not kinds:
            return EventKind.CLOSED_AFTER_WRITE
        for kind in _RECONCILE_KINDS:
            if kind.value in kinds:
                return kind
        return None

    async def _emit_listed(self, child: Any, *, listed: str | None = None) -> bool:
        """Emit a file found by a listing as the reconcile kind, unless its key was seen or the filter
        drops it; ``listed`` names why the listing ran when that is not a reconcile (``"start_from"``)."""
        kind = self._listing_kind()
        if kind is None or not child.pnfsid:
            return False
        key = f"{child.pnfsid}:{kind.value}"
        if key in self.state.seen:
            return False
        self.reconcile_count += 1
        extra: dict[str, Any] = {"reconciled": True}
        if listed:
            extra["listed"] = listed
        event = StorageEvent(
            kind=kind, path=child.path, name=child.name, is_dir=False,
            time=format_time((child.mtime or 0) / 1000), source="sse",
            cursor=f"reconcile#{self.reconcile_count}", size=child.size, pnfsid=child.pnfsid,
            extra=extra,
        )
        if not self.config.filter.matches(event):
            return False
        self.state.remember(event.key, child.mtime if child.mtime is not None else 0)
        await self.emit(event)
        return True

    async def reconcile(self, why: str) -> None:
        """List the watched tree and emit files newer than the watermark that were not seen yet."""
        hook = await self._hook()
        metric_incr("reconciles")
        floor = (self.state.watermark_ms or 0) - RECONCILE_SLACK_MS
        found = 0
        pending = list(self.config.paths)
        visited = 0
        while pending and visited < self.config.max_directories:
            path = pending.pop()
            visited += 1
            try:
                entry = await hook.stat(path)
                children = await hook.list_dir(path) if entry.is_dir else [entry]
            except NotFound:
                continue
            for child in children:
                if child.is_dir:
                    if self.config.recursive:
                        if child.path not in self.watched:
                            await self._subscribe(child.path)  # subscribe before its files are compared
                        pending.append(child.path)
                elif child.is_file and (child.mtime or 0) >= floor and await self._emit_listed(child):
                    found += 1
        self.needs_reconcile = False
        metric_incr("reconciled_files", found)
        log.info("reconciled %s by listing (%s): %d missed file(s) emitted", self.config.paths, why, found)

    # ------------------------------------------------------------------ events

    async def _stat(self, path: str) -> Any:
        """Stat ``path`` now, with its checksums (the namespace's stored values: no data is read).

        Never cached: an event is about the version at the path *when it happened*, and a path can
        hold a new version (new pnfsid) a moment later; a cached stat would give the new version's
        event the old pnfsid, and its key would then drop it as a duplicate. A stat made after a newer
        version replaced the file gives that newer version: both events then carry it and one is kept.
        """
        hook = await self._hook()
        try:
            return await hook.stat(path, checksum=True)
        except (NotFound, PermissionDenied):
            return None

    async def _handle(self, raw: Any) -> None:
        if raw.id is not None:
            self.state.last_id = raw.id
        metric_incr("events_received")
        if raw.is_system:
            kind = raw.system_type
            if kind == "EVENT_LOSS":
                raise Resync("EVENT_LOSS: the Last-Event-ID is no longer in the channel's backlog")
            if kind == "SUBSCRIPTION_CLOSED" and raw.subscription in self.dirs:
                self.watched.discard(self.dirs.pop(raw.subscription))
            elif kind == "COMPETING_CLIENT":
                raise StreamFault("another client took over the events channel")
            elif kind == "SHUTDOWN":
                raise StreamFault("the dCache frontend is shutting down")
            return
        if raw.type != "inotify":
            await self.emit(None)  # metronome keep-alive: only the cursor moves
            return
        mask = raw.mask
        if "IN_Q_OVERFLOW" in mask:
            raise Resync("IN_Q_OVERFLOW: the subscription's queue overflowed")
        if "IN_IGNORED" in mask:
            if raw.subscription in self.dirs:
                self.watched.discard(self.dirs.pop(raw.subscription))
            return
        base = self.dirs.get(raw.subscription or "")
        kind = kind_from_mask(mask)
        if base is None or kind is None:
            await self.emit(None)
            return
        path = f"{base.rstrip('/')}/{raw.name}" if raw.name else base
        is_dir = "IN_ISDIR" in mask
        if is_dir and self.config.recursive and raw.name and kind in (EventKind.CREATED, EventKind.MOVED_IN):
            await self._add_tree(path, emit=True)
        if self.config.filter.kinds and kind.value not in self.config.filter.kinds:
            await self.emit(None)
            return
        extra: dict[str, Any] = {}
        if raw.cookie:
            extra["cookie"] = raw.cookie
        size = pnfsid = mtime = None
        if self.config.stat and kind in _STAT_KINDS and not is_dir:
            entry = await self._stat(path)
            if entry is not None:
                size, pnfsid, mtime = entry.size, entry.pnfsid, entry.mtime
                if entry.checksums:  # not part of the key: the key stays pnfsid:kind (contract §4)
                    extra["checksums"] = dict(entry.checksums)
        event = StorageEvent(
            kind=kind, path=path, name=path.rsplit("/", 1)[-1], is_dir=is_dir,
            time=format_time(time.time()), source="sse", cursor=f"{_channel_id(self.state.channel)}#{raw.id}",
            size=size, pnfsid=pnfsid, mask=tuple(mask), extra=extra,
        )
        if event.key in self.state.seen:
            # A redelivery (replay after a restart), or an earlier event of this path was statted after
            # this version had already replaced the file: the version is reported once, by that event.
            log.debug("%s %s (id %s) is version %s, already reported; dropped", kind.value, path, raw.id,
                      pnfsid or "-")
            await self.emit(None)
            return
        if not self.config.filter.matches(event):
            await self.emit(None)
            return
        self.state.remember(event.key, mtime)
        await self.emit(event)


def _channel_id(url: str | None) -> str:
    return (url or "").rstrip("/").rsplit("/", 1)[-1]


def listing_flags(events: Sequence[str], recursive: bool) -> tuple[str, ...]:
    """Flags to subscribe with: the requested ones, plus what recursion needs to see new directories."""
    flags = set(events)
    if recursive:
        flags |= {"IN_CREATE", "IN_MOVED_TO"}
    return tuple(sorted(flags))
