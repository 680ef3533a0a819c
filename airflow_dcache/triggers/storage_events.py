"""``DCacheStorageEventTrigger``: dCache SSE inotify events as burst-safe batches for an ``AssetWatcher``.

The trigger holds one events channel (see ``docs/triggers.md`` for why not a shared stream), keeps its
cursor and listing watermark in ``asset_state_store``, and yields **batches** (contract:
``docs/event-contract.md``) paced so that Airflow 3.3.2's one-row asset queue cannot strand a burst.
The SSE mechanics live in :mod:`airflow_dcache.triggers._sse_watch`; this module validates the
configuration at DAG parse, paces the batches and commits the cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from airflow_dcache.events import KIND_BY_MASK, BatchBuilder, EventFilter, batch_payload, format_time
from airflow_dcache.events.payload import FLUSH_AGAIN_AFTER, MAX_BATCH_BYTES, MAX_BATCH_EVENTS
from airflow_dcache.paths import clean_path
from airflow_dcache.triggers._sse_watch import (
    START_EXISTING,
    START_NOW,
    ChannelWatch,
    WatchConfig,
    WatchState,
    listing_flags,
    metric_incr,
    metric_timing,
)
from airflow_dcache.version_compat import first_asset_state_accessor

__all__ = ["DEFAULT_EVENTS", "DCacheStorageEventTrigger"]

log = logging.getLogger(__name__)

DEFAULT_EVENTS = ("IN_CLOSE_WRITE", "IN_MOVED_TO")
_SUBSCRIBABLE = frozenset(KIND_BY_MASK) - {"IN_Q_OVERFLOW"}
COMMIT_DELAY = 5.0  # seconds between yielding a batch and storing the cursor past it (see _commit_due)
#: A batch yielded within this many seconds of the watcher's previous yield may land while the scheduler
#: is still creating the run of that previous one: such a batch is followed by a flush (``flush_after``).
FLUSH_WINDOW = 120.0
#: ``flush_after="auto"``: this many seconds, or ``batch_min_interval`` when that is longer.
FLUSH_AFTER = 5.0


def _number(name: str, value: Any, *, minimum: float, maximum: float, integer: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name}: must be {kind}, got {value!r}")
    if not math.isfinite(value) or not minimum <= value <= maximum:
        raise ValueError(f"{name}: must be between {minimum} and {maximum}, got {value!r}")
    return value


def _paths(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable) or not value:
        raise ValueError("paths: give at least one absolute dCache directory")
    result = set()
    for path in value:
        result.add(clean_path(path, field="paths"))  # one spelling per directory: the watch id hashes them
    return tuple(sorted(result))


def _events(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable) or not value:
        raise ValueError("events: give at least one IN_* flag, e.g. ['IN_CLOSE_WRITE']")
    result = set()
    for flag in value:
        name = flag.strip().upper() if isinstance(flag, str) else flag
        if isinstance(name, str) and not name.startswith("IN_"):
            name = "IN_" + name
        if name == "IN_CLOSE":
            result |= {"IN_CLOSE_WRITE", "IN_CLOSE_NOWRITE"}
        elif name == "IN_MOVE":
            result |= {"IN_MOVED_FROM", "IN_MOVED_TO"}
        elif name in _SUBSCRIBABLE:
            result.add(name)
        else:
            raise ValueError(f"events: unknown inotify flag {flag!r} (one of {', '.join(sorted(_SUBSCRIBABLE))})")
    return tuple(sorted(result))


_LISTABLE = frozenset({"IN_CLOSE_WRITE", "IN_MOVED_TO", "IN_CREATE"})  # kinds a listing can report


def _start_from(value: Any, events: Sequence[str]) -> str:
    """Validate ``start_from``; returns ``"now"``, ``"existing"`` or the timestamp in one canonical form
    (UTC, milliseconds, ``Z``), so two spellings of one instant serialize, and hash, alike."""
    if value in (START_NOW, START_EXISTING):
        canonical = str(value)
    else:
        parsed = value
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.strip())
            except ValueError:
                parsed = None
        if not isinstance(parsed, datetime):
            raise ValueError(f"start_from: must be 'now', 'existing' or an ISO-8601 timestamp with a UTC "
                             f"offset (e.g. '2026-05-14T08:00:00+00:00'), got {value!r}")
        if parsed.tzinfo is None:
            raise ValueError(f"start_from: the timestamp needs a UTC offset ('Z' or '+HH:MM'), got {value!r}")
        canonical = format_time(parsed)
    if canonical != START_NOW and not _LISTABLE & set(events):
        raise ValueError(f"start_from: a listing reports files as closed_after_write, moved_in or created; "
                         f"events={list(events)} has none of {', '.join(sorted(_LISTABLE))}, so "
                         f"start_from={canonical!r} could report nothing")
    return canonical


class DCacheStorageEventTrigger(BaseEventTrigger):
    """Watch dCache directories through the frontend's SSE events API and yield batches of file events.

    Use it in an ``AssetWatcher``; a consumer DAG with ``schedule=[asset]`` reads
    ``events_from_asset_events(triggering_asset_events)``. Every argument is checked here, when the DAG
    is parsed (``ValueError`` naming the argument); network problems are logged once per cause and
    retried with backoff inside :meth:`run`.

    :param dcache_conn_id: the dCache connection (only its id is stored; its ``site`` names the asset site).
    :param paths: absolute directories (or files) to watch.
    :param recursive: also watch every subdirectory, including ones created later (which are subscribed
        and *then* listed, so files that landed first are reported too).
    :param events: inotify flags (``IN_CLOSE_WRITE``, ``IN_MOVED_TO``, …; ``IN_CLOSE``/``IN_MOVE`` expand).
    :param include: path/name patterns of which one must match (glob, ``re:`` regex, or path prefix).
    :param exclude: patterns of which none may match.
    :param name_regex: a regex the file name must fully match.
    :param users: not supported: inotify events carry no user (use the billing trigger); must be empty.
    :param min_size: smallest file size in bytes (needs ``stat=True``).
    :param max_size: largest file size in bytes (needs ``stat=True``).
    :param stat: stat each created / closed-after-write / moved-in file when its event arrives (never
        from a cache: the event's own version) for its pnfsid, size, mtime and stored checksums (in
        ``extra.checksums``): needed for single processing across redeliveries and for the size filter.
        Turn off for pure notification watchers.
    :param start_from: where a watcher without stored state starts (``docs/triggers.md`` §10):
        ``"now"`` (files already there are remembered, never reported), ``"existing"`` (a first
        listing reports every matching file already there) or an ISO-8601 timestamp with a UTC offset
        (reports the files whose mtime is newer). Applied once: a watcher with a stored starting point
        catches up from its watermark instead (and, being resumed, first yields one empty flush batch).
    :param batch_quiet: seconds without a new matching event after which a batch is yielded.
    :param batch_max_latency: a batch is yielded at most this long after its first event (subject to
        ``batch_min_interval``).
    :param batch_min_interval: minimum seconds between two yields, so each batch meets a free asset-queue
        row (the scheduler must turn a queue row into a run within this time).
    :param batch_max_events: events per batch (≤ 1000).
    :param batch_max_bytes: JSON bytes per batch (≤ 512 KiB).
    :param flush_after: seconds of quiet after a batch that followed another yield (within
        ``FLUSH_WINDOW``, 120 s) until an empty flush batch is yielded; ``None``: never; ``"auto"`` (the
        default): 5 s, or ``batch_min_interval`` when that is longer. Never shorter than
        ``batch_min_interval``. Airflow 3.3.2's
        asset queue can drop a batch that lands while the scheduler creates the run of the batch before
        (``docs/reliability.md``); the flush queues the asset again, so the next run picks the dropped
        batch up instead of the next upload's run. An isolated batch (the first after two quiet minutes)
        cannot meet a run being created by this watcher and is not followed by one.
    :param reconnect_backoff_max: cap of the reconnect backoff in seconds.
    :param keepalive: seconds between keep-alive ticks on the channel (dCache sends none of its own).
    :param channel_lifetime: seconds dCache keeps the channel while no client is connected, i.e. how
        long a triggerer may be down and still resume by replay instead of reconcile.
    :param max_directories: upper bound on watched directories (dCache watches are per directory).
    """

    def __init__(
        self,
        *,
        paths: Sequence[str],
        dcache_conn_id: str = "dcache_default",
        recursive: bool = False,
        events: Sequence[str] = DEFAULT_EVENTS,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        name_regex: str | None = None,
        users: Sequence[str] = (),
        min_size: int | None = None,
        max_size: int | None = None,
        stat: bool = True,
        batch_quiet: float = 0.5,
        batch_max_latency: float = 5.0,
        batch_min_interval: float = 3.0,
        batch_max_events: int = 500,
        batch_max_bytes: int = 256 * 1024,
        flush_after: float | str | None = "auto",
        reconnect_backoff_max: float = 60.0,
        keepalive: float = 30.0,
        channel_lifetime: int = 3600,
        max_directories: int = 1000,
        start_from: str | datetime = START_NOW,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(dcache_conn_id, str) or not dcache_conn_id.strip():
            raise ValueError(f"dcache_conn_id: must be a connection id, got {dcache_conn_id!r}")
        for name, flag in (("recursive", recursive), ("stat", stat)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name}: must be True or False, got {flag!r}")
        self.dcache_conn_id = dcache_conn_id
        self.paths = _paths(paths)
        self.recursive = recursive
        self.events = _events(events)
        self.stat = stat
        if users:
            raise ValueError("users: dCache inotify events carry no user; filter by user with "
                             "DCacheBillingEventTrigger (Kafka billing records)")
        self.filter = EventFilter(include=tuple(include), exclude=tuple(exclude), name_regex=name_regex,
                                  kinds=self.events, min_size=min_size, max_size=max_size)
        if self.filter.needs_size and not stat:
            raise ValueError("min_size: a size filter needs stat=True (inotify events carry no size)")
        self.batch_quiet = _number("batch_quiet", batch_quiet, minimum=0, maximum=60)
        self.batch_max_latency = _number("batch_max_latency", batch_max_latency, minimum=0, maximum=600)
        self.batch_min_interval = _number("batch_min_interval", batch_min_interval, minimum=0, maximum=600)
        self.batch_max_events = _number("batch_max_events", batch_max_events, minimum=1,
                                        maximum=MAX_BATCH_EVENTS, integer=True)
        self.batch_max_bytes = _number("batch_max_bytes", batch_max_bytes, minimum=4096,
                                       maximum=MAX_BATCH_BYTES, integer=True)
        self.flush_after: float | None = None
        if flush_after is not None:
            auto = max(FLUSH_AFTER, self.batch_min_interval)
            self.flush_after = float(_number("flush_after", auto if flush_after == "auto" else flush_after,
                                             minimum=0.1, maximum=3600))
            if self.flush_after < self.batch_min_interval:
                raise ValueError(f"flush_after: {flush_after} is shorter than batch_min_interval "
                                 f"{self.batch_min_interval} (a flush must keep the spacing of yields)")
        self.reconnect_backoff_max = _number("reconnect_backoff_max", reconnect_backoff_max, minimum=1,
                                             maximum=3600)
        self.keepalive = _number("keepalive", keepalive, minimum=1, maximum=300)
        self.channel_lifetime = _number("channel_lifetime", channel_lifetime, minimum=60, maximum=86400,
                                        integer=True)
        self.max_directories = _number("max_directories", max_directories, minimum=1, maximum=100000,
                                       integer=True)
        self.start_from = _start_from(start_from, self.events)
        self._watch: ChannelWatch | None = None

    @property
    def is_subscribed(self) -> bool:
        """Whether the running watch holds its channel with every subscription in place.

        From then on every change below the watched paths is reported; test harnesses wait for it
        before they upload (``airflow_dcache.testing.watchers``).
        """
        return self._watch is not None and self._watch.subscribed_channel is not None

    # ------------------------------------------------------------------ identity

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Deterministic kwargs (sorted lists, fixed keys) with no secret: only the connection id."""
        f = self.filter.to_kwargs()
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "batch_max_bytes": self.batch_max_bytes,
                "batch_max_events": self.batch_max_events,
                "batch_max_latency": self.batch_max_latency,
                "batch_min_interval": self.batch_min_interval,
                "batch_quiet": self.batch_quiet,
                "channel_lifetime": self.channel_lifetime,
                "dcache_conn_id": self.dcache_conn_id,
                "events": list(self.events),
                "exclude": f["exclude"],
                "flush_after": self.flush_after,
                "include": f["include"],
                "keepalive": self.keepalive,
                "max_directories": self.max_directories,
                "max_size": f["max_size"],
                "min_size": f["min_size"],
                "name_regex": f["name_regex"],
                "paths": list(self.paths),
                "reconnect_backoff_max": self.reconnect_backoff_max,
                "recursive": self.recursive,
                "start_from": self.start_from,
                "stat": self.stat,
            },
        )

    @property
    def watch_id(self) -> str:
        """Stable id of *what* is watched (connection, paths, recursion): names the channel and the state.

        Filter or pacing changes keep the id, so the cursor and the channel survive them.
        """
        ident = json.dumps([self.dcache_conn_id, list(self.paths), self.recursive]).encode()
        return hashlib.sha256(ident).hexdigest()[:16]

    @property
    def state_key(self) -> str:
        return f"dcache-sse/{self.watch_id}"

    # ------------------------------------------------------------------ state store

    def _store(self) -> Any:
        """The accessor of the watched asset (the first, if one trigger row feeds several assets)."""
        return first_asset_state_accessor(self.asset_state_store)

    async def _load_state(self) -> WatchState:
        store = self._store()
        if store is None:
            return WatchState()
        try:
            return WatchState.from_json(await store.aget(self.state_key))
        except Exception as exc:  # the store is best effort: without it we reconcile instead of replaying
            log.warning("cannot read the watch state %s (%s); starting without a cursor", self.state_key, exc)
            return WatchState()

    async def _save_state(self, snapshot: dict[str, Any]) -> None:
        store = self._store()
        if store is None:
            return
        try:
            await store.aset(self.state_key, snapshot)
        except Exception as exc:
            log.warning("cannot store the watch state %s (%s); a restart will replay more", self.state_key, exc)

    # ------------------------------------------------------------------ run

    def _config(self) -> WatchConfig:
        return WatchConfig(
            conn_id=self.dcache_conn_id, paths=self.paths, recursive=self.recursive,
            flags=listing_flags(self.events, self.recursive), filter=self.filter, stat=self.stat,
            client_id=f"airflow-dcache-sse-{self.watch_id}", keepalive=float(self.keepalive),
            channel_lifetime=int(self.channel_lifetime), backoff_max=float(self.reconnect_backoff_max),
            max_directories=int(self.max_directories), start_from=self.start_from,
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Yield batches forever; never raises for a transient fault (3.3.2 restarts raisers every 2 s)."""
        state = await self._load_state()
        resumed = state.watermark_ms is not None  # a stored starting point: a restart, a redeploy, an unpause
        queue: asyncio.Queue = asyncio.Queue(maxsize=10000)
        watch = self._watch = ChannelWatch(self._config(), state, queue)
        task = asyncio.create_task(watch.run_forever(), name=f"dcache-sse-{self.watch_id}")
        try:
            async for payload in self._pace(queue, watch, resumed=resumed):
                yield TriggerEvent(payload)
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await watch.drop_hook()

    async def _pace(self, queue: asyncio.Queue, watch: ChannelWatch, *,
                    resumed: bool = False) -> AsyncIterator[dict[str, Any]]:
        """Coalesce events into batches and space the yields (``docs/triggers.md`` §Burst).

        A batch is ready ``batch_quiet`` after its last event or ``batch_max_latency`` after its first,
        whichever is earlier, but never sooner than ``batch_min_interval`` after the previous yield. A
        batch that fills up is yielded at once; if that breaks the spacing, an empty flush batch follows
        ``batch_min_interval`` later unless another yield comes first. A batch that followed another
        yield within ``FLUSH_WINDOW`` (or came within it of a resumption) is followed by an empty flush
        batch ``flush_after`` later, unless another yield comes first: the end of a burst is flushed, an
        isolated upload is not. The cursor
        past a batch is stored ``COMMIT_DELAY`` after it was yielded (the triggerer persists events
        within its ~1 s loop), so a crash replays rather than loses.

        ``resumed`` (the watcher had a stored starting point): the first yield is due
        ``batch_min_interval`` after the start, an empty flush batch unless a batch of events comes
        first. Airflow 3.3.2 keeps running a paused DAG's watcher until it parses the DAG file again,
        and the asset events of that window queue no run (``docs/triggers.md`` §10); the cursor has
        moved past them, so only a run made by a later asset event picks them up. This yield is it.
        """
        builder = BatchBuilder(int(self.batch_max_events), int(self.batch_max_bytes))
        first_at = last_at = 0.0
        last_yield = -math.inf
        # a resumed watcher's previous yield was its previous incarnation's, perhaps seconds ago
        resumed_at = time.monotonic() if resumed else -math.inf
        flush_due: float | None = time.monotonic() + self.batch_min_interval if resumed else None
        flush_why = "resumed watcher: a run for asset events a paused DAG did not queue" if resumed else ""
        flushed_again = False  # each flush is followed by one more, FLUSH_AGAIN_AFTER later
        end_state: dict[str, Any] | None = None
        commits: list[tuple[float, dict[str, Any]]] = []
        last_saved: dict[str, Any] | None = None
        pending_save: dict[str, Any] | None = None
        next_save_at = 0.0

        def ready_at() -> float:
            at = min(last_at + self.batch_quiet, first_at + self.batch_max_latency)
            return max(at, last_yield + self.batch_min_interval)

        def batch(flush: bool = False) -> dict[str, Any]:
            nonlocal last_yield, flush_due, flush_why, flushed_again
            now = time.monotonic()
            events = builder.take()
            if not flush:
                flushed_again = False
            if not flush and now - last_yield < self.batch_min_interval:
                flush_due = now + self.batch_min_interval  # this yield may meet an occupied queue row
                flush_why = "after an early (size-capped) batch"
            elif not flush and self.flush_after is not None and now - max(last_yield, resumed_at) <= FLUSH_WINDOW:
                flush_due = now + self.flush_after  # this yield may meet a run being created
                flush_why = "end of a burst: a batch the scheduler's run creation may have dropped"
            elif not flush:
                flush_due = None  # a spaced yield covers whatever an earlier early one stranded
            last_yield = now
            if events:
                metric_incr("batches")
                metric_incr("events_emitted", len(events))
                metric_timing("batch_delay", (now - first_at) * 1000)
            if end_state is not None:
                commits.append((now + COMMIT_DELAY, end_state))
            return batch_payload(watch.site, "sse", events, flush=flush)

        while True:
            now = time.monotonic()
            deadlines = [t for t, _ in commits[:1]]
            if pending_save is not None:
                deadlines.append(next_save_at)
            if len(builder):
                deadlines.append(ready_at())
            elif flush_due is not None:
                deadlines.append(flush_due)
            timeout = max(0.0, min(deadlines) - now) if deadlines else 5.0
            item = None
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that arrives together
            # with an item, and the triggerer's cancel of this trigger would then be lost.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    item = await queue.get()
            now = time.monotonic()
            if item is not None:
                event, snapshot = item
                if event is None:
                    if len(builder):
                        end_state = snapshot
                    elif not commits:
                        commits.append((now, snapshot))  # nothing pending: the cursor may move on
                    else:
                        commits.append((max(now, commits[-1][0]), snapshot))
                else:
                    if builder.would_overflow(event):
                        yield batch()
                    if not len(builder):
                        first_at = now
                    builder.add(event)
                    last_at = now
                    end_state = snapshot
            if len(builder) and now >= ready_at():
                yield batch()
                end_state = None
            elif not len(builder) and flush_due is not None and now >= flush_due:
                flush_due = None
                log.info("yielding a flush batch (%s)", flush_why)
                yield batch(flush=True)
                if not flushed_again and flush_due is None:
                    flushed_again = True
                    flush_due = time.monotonic() + FLUSH_AGAIN_AFTER
                    flush_why = "again: a scheduler slower than the first flush may have stranded it"
            due = [s for t, s in commits if t <= now]
            if due:
                commits[:] = [(t, s) for t, s in commits if t > now]
                pending_save = due[-1]
            if pending_save is not None and now >= next_save_at:  # at most one write per second
                if pending_save != last_saved:
                    await self._save_state(pending_save)
                    last_saved = pending_save
                pending_save, next_save_at = None, now + 1.0
