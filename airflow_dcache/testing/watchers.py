"""Run a DAG's own asset watchers in a test, as the triggerer would, and keep what they report.

An event-driven DAG is scheduled by the ``AssetWatcher`` triggers on its assets; its tasks read the
storage events from ``triggering_asset_events``. To test that path end to end without a scheduler and a
triggerer, :func:`watch` builds each watcher's trigger from its serialized form (as the triggerer does,
so a trigger that does not round-trip fails here too), runs it with an in-memory state store, waits
until it is subscribed, lets the test act (upload files), and collects the ``TriggerEvent`` payloads
until the expected number of files was reported. :mod:`airflow_dcache.testing.dagrun` then runs the
DAG with those payloads as the run's triggering asset events.

Only what a watcher reports *after* it is subscribed counts, as in production: a new watcher does not
report files that were already there unless its trigger says so (``start_from="existing"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_dcache.events.payload import parse_batch

__all__ = ["MemoryStateStore", "WatchedEvents", "WatcherError", "watch", "watchers_of"]

READY_TIMEOUT = 30.0
"""Seconds a watcher may take to subscribe."""
UNREADY_GRACE = 3.0
"""For triggers that do not say when they are subscribed (``is_subscribed``): how long to let them start."""


class WatcherError(AssertionError):
    """A watcher did not subscribe, died, or did not report what the test expected in time."""


class MemoryStateStore:
    """The triggerer's per-asset state store (``aget``/``aset``/``adelete``/``aclear``), in memory.

    Values go through JSON, as the real store's do, so state that would not survive the database
    fails here too.
    """

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    async def aget(self, key: str, default: Any = None) -> Any:
        return json.loads(json.dumps(self.data.get(key, default)))

    async def aset(self, key: str, value: Any) -> None:
        self.data[key] = json.loads(json.dumps(value))

    async def adelete(self, key: str) -> None:
        self.data.pop(key, None)

    async def aclear(self) -> None:
        self.data.clear()


@dataclass
class WatchedEvents:
    """What the watchers reported: per asset URI, the raw TriggerEvent payloads, in order."""

    payloads: dict[str, list[Any]] = field(default_factory=dict)

    def files(self) -> list[str]:
        """Paths of the storage events reported, de-duplicated, in order (flush batches and ticks skipped)."""
        seen: dict[str, None] = {}
        for payloads in self.payloads.values():
            for payload in payloads:
                with contextlib.suppress(ValueError):
                    for event in parse_batch(payload):
                        seen.setdefault(event.path, None)
        return list(seen)

    def asset_events(self) -> list[dict[str, Any]]:
        """As the triggerer records them: ``{"uri", "extra": {"from_trigger": True, "payload": …}}``."""
        return [{"uri": uri, "extra": {"from_trigger": True, "payload": payload}}
                for uri, payloads in self.payloads.items() for payload in payloads]


def watchers_of(dag: Any) -> list[tuple[str, Any]]:
    """``(asset uri, trigger)`` for every ``AssetWatcher`` on the assets that schedule ``dag``."""
    found: list[tuple[str, Any]] = []
    for asset in _schedule_assets(getattr(dag, "timetable", None)):
        for watcher in getattr(asset, "watchers", None) or ():
            found.append((asset.uri, watcher.trigger))
    return found


def _schedule_assets(timetable: Any) -> list[Any]:
    """The assets of a schedule's condition (``AssetAll``/``AssetAny`` nest; ``AssetOrTimeSchedule`` too)."""
    return _assets(getattr(timetable, "asset_condition", None))


def _assets(condition: Any) -> list[Any]:
    if condition is None:
        return []
    if hasattr(condition, "objects"):  # AssetAll / AssetAny
        return [asset for member in condition.objects for asset in _assets(member)]
    return [condition] if hasattr(condition, "uri") and hasattr(condition, "watchers") else []


def _rebuilt(trigger: Any) -> Any:
    """The trigger as the triggerer makes it: from ``serialize()``'s class path and kwargs."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**kwargs)


def watch(dag: Any, act: Callable[[], Any], *, expect_files: int, timeout: float = 60.0,
          quiet: float = 1.0) -> WatchedEvents:
    """Run ``dag``'s watchers, call ``act()`` once they are subscribed, collect until ``expect_files``.

    :param dag: the DAG object (e.g. from ``DagBag``); it must be scheduled on assets with watchers.
    :param act: what the test does to storage (uploads, moves); called once, in this thread.
    :param expect_files: how many distinct files the watchers must report (then ``quiet`` more seconds
        are waited for, so extra reports show up too).
    :param timeout: bound on the whole watch, in seconds.
    :raises WatcherError: no watcher, a watcher failed, or fewer files were reported in time.
    """
    triggers = watchers_of(dag)
    if not triggers:
        raise WatcherError(f"DAG {getattr(dag, 'dag_id', dag)!r} is not scheduled on an asset with a watcher")
    return asyncio.run(_watch([(uri, _rebuilt(t)) for uri, t in triggers], act, expect_files, timeout, quiet))


async def _watch(triggers: list[tuple[str, Any]], act: Callable[[], Any], expect_files: int, timeout: float,
                 quiet: float) -> WatchedEvents:
    seen = WatchedEvents({uri: [] for uri, _ in triggers})
    tasks: list[asyncio.Task[None]] = []

    async def pump(uri: str, trigger: Any) -> None:
        async for event in trigger.run():
            seen.payloads[uri].append(event.payload)

    deadline = time.monotonic() + timeout
    try:
        for uri, trigger in triggers:
            trigger.asset_state_store = MemoryStateStore()
            tasks.append(asyncio.create_task(pump(uri, trigger), name=f"watcher {uri}"))
        await _until_subscribed(triggers, tasks, min(deadline, time.monotonic() + READY_TIMEOUT))
        await asyncio.to_thread(act)
        while len(seen.files()) < expect_files:
            _raise_if_failed(tasks)
            if time.monotonic() > deadline:
                raise WatcherError(f"the watchers reported {len(seen.files())} of {expect_files} files within "
                                   f"{timeout:g} s: {seen.files()}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(quiet)
        _raise_if_failed(tasks)
        return seen
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _until_subscribed(triggers: list[tuple[str, Any]], tasks: list[asyncio.Task[None]],
                            deadline: float) -> None:
    started = time.monotonic()
    while True:
        _raise_if_failed(tasks)
        pending = [uri for uri, t in triggers
                   if not getattr(t, "is_subscribed", time.monotonic() - started >= UNREADY_GRACE)]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise WatcherError(f"the watcher(s) of {', '.join(pending)} did not subscribe in time")
        await asyncio.sleep(0.05)


def _raise_if_failed(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise WatcherError(f"{task.get_name()} failed: {task.exception()!r}") from task.exception()
