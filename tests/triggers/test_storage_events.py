"""DCacheStorageEventTrigger against the real bundled service: run() driven directly.

Only ``asset_state_store`` is replaced (by an in-memory dict with the same async accessors); the
service, the SSE stream, channels, subscriptions and listings are real.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from airflow_dcache.events import parse_batch
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.testing.watchers import MemoryStateStore
from airflow_dcache.triggers import DCacheStorageEventTrigger
from tests.conftest import connection_json

FAST = dict(batch_quiet=0.2, batch_max_latency=1.0, batch_min_interval=0.3, keepalive=2.0,
            reconnect_backoff_max=2.0)


MemoryStore = MemoryStateStore  # the triggerer's asset_state_store accessor, in memory


def set_connection(monkeypatch: pytest.MonkeyPatch, server: Any, conn_id: str, user: str = "alice") -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", connection_json(server, user, site="main"))


class Runner:
    """Pumps a trigger's run() in a task and collects the payloads."""

    def __init__(self, trigger: DCacheStorageEventTrigger, store: MemoryStore) -> None:
        trigger.asset_state_store = store  # type: ignore[assignment]
        self.trigger = trigger
        self.payloads: list[dict[str, Any]] = []
        self.gen: AsyncIterator[Any] = trigger.run()
        self.task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        async for event in self.gen:
            self.payloads.append(event.payload)

    @property
    def events(self) -> list[Any]:
        return [e for p in self.payloads for e in parse_batch(p)]

    async def ready(self, timeout: float = 30) -> None:
        for _ in range(int(timeout * 20)):
            watch = self.trigger._watch
            if watch is not None and watch.subscribed_channel is not None:
                return
            assert not self.task.done(), self.task
            await asyncio.sleep(0.05)
        raise AssertionError("the trigger did not subscribe in time")

    async def wait_for(self, predicate: Callable[[list[Any]], bool], timeout: float = 30) -> list[Any]:
        for _ in range(int(timeout * 20)):
            if predicate(self.events):
                return self.events
            assert not self.task.done(), self.task
            await asyncio.sleep(0.05)
        raise AssertionError(f"condition not met; events: {[(e.kind, e.path) for e in self.events]}")

    async def settle(self, seconds: float = 1.5) -> list[Any]:
        await asyncio.sleep(seconds)
        return self.events

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task
        await self.gen.aclose()  # type: ignore[attr-defined]


@pytest.fixture
def conn_id(monkeypatch: pytest.MonkeyPatch, dcache_server: Any) -> str:
    cid = f"sse_{uuid.uuid4().hex[:8]}"
    set_connection(monkeypatch, dcache_server, cid)
    return cid


@pytest.fixture
def alice(dcache_server: Any, conn_id: str) -> Any:
    with DCacheHook(conn_id) as hook:
        yield hook


@pytest.fixture
def workdir(alice: DCacheHook) -> Any:
    path = f"/home/alice/sse-{uuid.uuid4().hex[:10]}"
    alice.mkdir(path)
    yield path
    alice.delete(path, recursive=True, missing_ok=True)


def put(hook: DCacheHook, path: str, data: bytes = b"payload") -> None:
    hook.upload(io.BytesIO(data), path, checksum="none")


async def aput(hook: DCacheHook, path: str, data: bytes = b"payload") -> None:
    await asyncio.to_thread(put, hook, path, data)


async def test_one_upload_one_trigger_event(conn_id: str, alice: DCacheHook, workdir: str) -> None:
    runner = Runner(DCacheStorageEventTrigger(dcache_conn_id=conn_id, paths=[workdir], **FAST), MemoryStore())
    try:
        await runner.ready()
        await aput(alice, f"{workdir}/run1.h5", b"x" * 1234)
        events = await runner.wait_for(lambda ev: len(ev) >= 1)
        events = await runner.settle()
        assert len(runner.payloads) == 1 and len(events) == 1
        (event,) = events
        payload = runner.payloads[0]
        assert payload["schema"] == "airflow-dcache/storage-events/v1" and payload["site"] == "main"
        assert event.kind == "closed_after_write" and event.path == f"{workdir}/run1.h5"
        assert event.size == 1234 and event.pnfsid and event.key == f"{event.pnfsid}:closed_after_write"
        assert event.cursor.split("#")[0] in runner.trigger._watch.state.channel  # type: ignore[union-attr]
    finally:
        await runner.stop()


async def test_the_end_of_a_burst_is_flushed_an_isolated_upload_is_not(
    conn_id: str, alice: DCacheHook, workdir: str
) -> None:
    """A batch that followed another yield can land while the scheduler creates the run of the one
    before, and Airflow 3.3.2 then drops it from the asset queue (docs/reliability.md): such a batch is
    followed by one empty flush batch ``flush_after`` later, so a run picks the dropped batch up. An
    isolated upload is not: no run of this watcher can be in creation then."""
    trigger = DCacheStorageEventTrigger(dcache_conn_id=conn_id, paths=[workdir], **dict(FAST, flush_after=1.0))
    runner = Runner(trigger, MemoryStore())
    try:
        await runner.ready()
        await aput(alice, f"{workdir}/alone.h5")
        await runner.wait_for(lambda ev: len(ev) == 1)
        await runner.settle(2.0)  # longer than flush_after: no flush follows an isolated batch
        assert [(p["flush"], p["count"]) for p in runner.payloads] == [(False, 1)]
        await aput(alice, f"{workdir}/burst-1.h5")  # within FLUSH_WINDOW of the first yield
        await runner.wait_for(lambda ev: len(ev) == 2)
        for _ in range(60):  # bounded: the flush is due 1 s after the batch
            if len(runner.payloads) == 3:
                break
            await asyncio.sleep(0.05)
        await runner.settle(1.5)  # exactly one flush, then quiet
        assert [(p["flush"], p["count"]) for p in runner.payloads] == [(False, 1), (False, 1), (True, 0)]
        assert runner.payloads[2]["events"] == [] and runner.payloads[2]["site"] == "main"
    finally:
        await runner.stop()


async def test_a_flush_is_followed_by_one_more_later(conn_id: str, alice: DCacheHook, workdir: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A scheduler that creates the run of the burst's last batch later than the flush strands the flush
    too (seen at 10 uploads/s for 5 minutes): one more flush ``FLUSH_AGAIN_AFTER`` later, then quiet."""
    import airflow_dcache.triggers.storage_events as storage_events

    monkeypatch.setattr(storage_events, "FLUSH_AGAIN_AFTER", 1.5)
    trigger = DCacheStorageEventTrigger(dcache_conn_id=conn_id, paths=[workdir], **dict(FAST, flush_after=1.0))
    runner = Runner(trigger, MemoryStore())
    try:
        await runner.ready()
        for name in ("b-1.h5", "b-2.h5"):  # the second batch within FLUSH_WINDOW of the first: a burst
            await aput(alice, f"{workdir}/{name}")
            await runner.wait_for(lambda ev, n=name: any(e.name == n for e in ev))
        for _ in range(120):  # bounded: the flushes are due 1 s and 2.5 s after the last batch
            if len(runner.payloads) == 4:
                break
            await asyncio.sleep(0.05)
        await runner.settle(3.0)  # no third flush
        assert [(p["flush"], p["count"]) for p in runner.payloads] == [(False, 1), (False, 1), (True, 0), (True, 0)]
    finally:
        await runner.stop()


def test_flush_after_follows_a_longer_batch_min_interval_unless_given() -> None:
    assert DCacheStorageEventTrigger(paths=["/data"]).serialize()[1]["flush_after"] == 5.0
    assert DCacheStorageEventTrigger(paths=["/data"], batch_min_interval=10).flush_after == 10
    assert DCacheStorageEventTrigger(paths=["/data"], batch_min_interval=10, flush_after=30).flush_after == 30


async def test_no_flush_when_turned_off(conn_id: str, alice: DCacheHook, workdir: str) -> None:
    trigger = DCacheStorageEventTrigger(dcache_conn_id=conn_id, paths=[workdir], **dict(FAST, flush_after=None))
    assert trigger.serialize()[1]["flush_after"] is None
    runner = Runner(trigger, MemoryStore())
    try:
        await runner.ready()
        for name in ("a.h5", "b.h5"):
            await aput(alice, f"{workdir}/{name}")
            await runner.wait_for(lambda ev, n=name: any(e.name == n for e in ev))
        await runner.settle(1.0)
        assert [p["flush"] for p in runner.payloads] == [False, False]
    finally:
        await runner.stop()


async def test_reupload_within_seconds_is_reported_as_a_new_version(
    conn_id: str, alice: DCacheHook, workdir: str
) -> None:
    """Regression (issue 16): the trigger cached stat() per path for 10 s, so a new version uploaded to
    the same path within 10 s got the old version's pnfsid, hence the old key, and was dropped as a
    duplicate. Every event is now statted for its own version, with the namespace's checksums."""
    runner = Runner(DCacheStorageEventTrigger(dcache_conn_id=conn_id, paths=[workdir], **FAST), MemoryStore())
    path = f"{workdir}/a.h5"
    try:
        await runner.ready()
        await aput(alice, path, b"version one")
        await runner.wait_for(lambda ev: len(ev) == 1)
        v1 = alice.stat(path)
        await asyncio.sleep(1.0)  # well inside the old 10 s cache
        await aput(alice, path, b"version two, longer")
        events = await runner.wait_for(lambda ev: len(ev) >= 2)
        events = await runner.settle()
        v2 = alice.stat(path, checksum=True)
        assert v1.pnfsid != v2.pnfsid  # the server gives an overwritten file a new pnfsid, as dCache does
        assert [(e.path, e.pnfsid, e.size) for e in events] == [(path, v1.pnfsid, 11), (path, v2.pnfsid, 19)]
        assert [e.key for e in events] == [f"{v1.pnfsid}:closed_after_write", f"{v2.pnfsid}:closed_after_write"]
        # the stored checksums travel in extra (not in the key)
        assert events[1].extra["checksums"] == v2.checksums and "adler32" in events[1].extra["checksums"]
    finally:
        await runner.stop()


async def test_filters_select_files(conn_id: str, alice: DCacheHook, workdir: str) -> None:
    trigger = DCacheStorageEventTrigger(dcache_conn_id=conn_id, paths=[workdir], include=["*.h5"],
                                        exclude=["*.tmp.h5"], min_size=5, **FAST)
    runner = Runner(trigger, MemoryStore())
    try:
        await runner.ready()
        for name, data in (("a.h5", b"123456"), ("b.txt", b"123456"), ("c.tmp.h5", b"123456"), ("d.h5", b"1")):
            await aput(alice, f"{workdir}/{name}", data)
        await aput(alice, f"{workdir}/z.h5", b"last-one")
        await runner.wait_for(lambda ev: any(e.name == "z.h5" for e in ev))
        assert sorted(e.name for e in await runner.settle()) == ["a.h5", "z.h5"]
    finally:
        await runner.stop()


async def test_recursive_new_subdirectory_is_subscribed_then_listed(
    conn_id: str, alice: DCacheHook, workdir: str
) -> None:
    watched, outside = f"{workdir}/watched", f"{workdir}/outside"
    alice.mkdir(watched)
    alice.mkdir(f"{outside}/sub/deeper")
    put(alice, f"{outside}/sub/early.h5")
    put(alice, f"{outside}/sub/deeper/earlier.h5")
    runner = Runner(DCacheStorageEventTrigger(dcache_conn_id=conn_id, paths=[watched], recursive=True,
                                              events=["IN_CLOSE_WRITE", "IN_MOVED_TO"], **FAST), MemoryStore())
    try:
        await runner.ready()
        # a tree with files moves in: its files landed before any watch on it existed
        await asyncio.to_thread(alice.move, f"{outside}/sub", f"{watched}/sub")
        await runner.wait_for(lambda ev: {"early.h5", "earlier.h5"} <= {e.name for e in ev})
        # and the new directories are now watched live
        await aput(alice, f"{watched}/sub/deeper/live.h5")
        events = await runner.wait_for(lambda ev: any(e.name == "live.h5" for e in ev))
        events = await runner.settle()
        files = [e for e in events if not e.is_dir]
        assert sorted(e.name for e in files) == ["earlier.h5", "early.h5", "live.h5"]
        assert {e.path for e in files} >= {f"{watched}/sub/early.h5", f"{watched}/sub/deeper/earlier.h5"}
        assert len({e.key for e in files}) == len(files)
    finally:
        await runner.stop()


async def test_resume_with_last_event_id_replays_what_came_while_stopped(
    conn_id: str, alice: DCacheHook, workdir: str
) -> None:
    store = MemoryStore()
    first = Runner(DCacheStorageEventTrigger(dcache_conn_id=conn_id, paths=[workdir], **FAST), store)
    await first.ready()
    await aput(alice, f"{workdir}/f1")
    await first.wait_for(lambda ev: len(ev) == 1)
    await asyncio.sleep(6.5)  # past the commit delay: the cursor is stored after f1
    await first.stop()
    state = next(iter(store.data.values()))
    assert state["channel"] and state["last_id"] is not None
    await aput(alice, f"{workdir}/f2")  # while no trigger runs: stays in the channel's backlog
    second = Runner(DCacheStorageEventTrigger(dcache_conn_id=conn_id, paths=[workdir], **FAST), store)
    try:
        events = await second.wait_for(lambda ev: any(e.name == "f2" for e in ev))
        events = await second.settle()
        assert [e.name for e in events] == ["f2"]
        assert not events[0].extra.get("reconciled")  # replayed from the backlog, not listed
        assert second.trigger._watch.state.channel == state["channel"]  # type: ignore[union-attr]
    finally:
        await second.stop()


async def test_stopped_before_its_first_commit_still_reports_what_landed_meanwhile(
    conn_id: str, alice: DCacheHook, workdir: str
) -> None:
    """Regression (found by the restart fault test): a watcher stopped within its first commit delay had
    stored no state, so its successor started "fresh" and took files that landed in between for
    pre-existing ones. The starting point is now stored as soon as the watch is subscribed."""
    await aput(alice, f"{workdir}/old")  # before any watcher: pre-existing, never reported
    store = MemoryStore()
    slow_ticks = dict(FAST, keepalive=30.0)  # the default: no keep-alive tick moves the cursor meanwhile
    first = Runner(DCacheStorageEventTrigger(dcache_conn_id=conn_id, paths=[workdir], **slow_ticks), store)
    await first.ready()
    for _ in range(100):  # the initial state is written within about a second
        if store.data:
            break
        await asyncio.sleep(0.05)
    assert store.data, "the watch's starting point was not stored before any event"
    await aput(alice, f"{workdir}/early")
    await first.wait_for(lambda ev: len(ev) == 1)
    await first.stop()  # well within the 5 s commit delay: the cursor past "early" is not stored
    channel = next(iter(store.data.values()))["channel"]
    with DCacheHook(conn_id) as hook:
        hook.delete_channel(channel)  # and the channel is gone too, as after a service restart
    await aput(alice, f"{workdir}/meanwhile")
    second = Runner(DCacheStorageEventTrigger(dcache_conn_id=conn_id, paths=[workdir], **slow_ticks), store)
    try:
        events = await second.wait_for(lambda ev: any(e.name == "meanwhile" for e in ev))
        events = await second.settle()
        # "early" comes again (at least once: the consumer's marker skips it), "old" never does
        assert sorted(e.name for e in events) == ["early", "meanwhile"]
        assert all(e.extra.get("reconciled") for e in events)
    finally:
        await second.stop()


async def test_event_loss_reconciles_by_listing(conn_id: str, alice: DCacheHook, workdir: str) -> None:
    store = MemoryStore()
    first = Runner(DCacheStorageEventTrigger(dcache_conn_id=conn_id, paths=[workdir], **FAST), store)
    await first.ready()
    await aput(alice, f"{workdir}/seen")
    await first.wait_for(lambda ev: len(ev) == 1)
    await asyncio.sleep(6.5)
    await first.stop()
    key = next(iter(store.data))
    store.data[key]["last_id"] = "987654"  # a cursor the channel's backlog no longer holds -> EVENT_LOSS
    await aput(alice, f"{workdir}/missed")
    second = Runner(DCacheStorageEventTrigger(dcache_conn_id=conn_id, paths=[workdir], **FAST), store)
    try:
        events = await second.wait_for(lambda ev: any(e.name == "missed" for e in ev))
        events = await second.settle()
        assert [e.name for e in events] == ["missed"]  # "seen" is below the watermark / in seen keys
        assert events[0].extra.get("reconciled") is True and events[0].pnfsid
    finally:
        await second.stop()


async def test_service_restart_new_channel_and_reconcile(
    monkeypatch: pytest.MonkeyPatch, start_dcache: Callable[..., Any]
) -> None:
    server = start_dcache(name="sse-restart")
    cid = f"sse_{uuid.uuid4().hex[:8]}"
    set_connection(monkeypatch, server, cid)
    with DCacheHook(cid) as hook:
        hook.mkdir("/home/alice/in")
    store = MemoryStore()
    runner = Runner(DCacheStorageEventTrigger(dcache_conn_id=cid, paths=["/home/alice/in"], **FAST), store)
    try:
        await runner.ready()
        with DCacheHook(cid) as hook:
            await aput(hook, "/home/alice/in/before")
        await runner.wait_for(lambda ev: len(ev) == 1)
        old_channel = runner.trigger._watch.state.channel  # type: ignore[union-attr]
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(1.0)  # the trigger now retries with backoff (and must not die)
        assert not runner.task.done()
        # the service comes back (new ports: the connection is updated, as an admin would)
        server.restart()  # stop() already ran: restart only starts it again, on new ports
        set_connection(monkeypatch, server, cid)
        with DCacheHook(cid) as hook:
            await aput(hook, "/home/alice/in/during")  # may land before the new channel exists
        events = await runner.wait_for(lambda ev: any(e.name == "during" for e in ev), timeout=60)
        with DCacheHook(cid) as hook:
            await aput(hook, "/home/alice/in/after")
        events = await runner.wait_for(lambda ev: any(e.name == "after" for e in ev), timeout=60)
        events = await runner.settle()
        assert [e.name for e in events] == ["before", "during", "after"]
        assert runner.trigger._watch.state.channel != old_channel  # type: ignore[union-attr]
    finally:
        await runner.stop()


def test_serialize_round_trip_and_determinism() -> None:
    a = DCacheStorageEventTrigger(dcache_conn_id="dc", paths=["/b", "/a"], include=["*.h5", "*.cxi"],
                                  events=["IN_MOVED_TO", "close_write"])
    classpath, kwargs = a.serialize()
    assert classpath == "airflow_dcache.triggers.storage_events.DCacheStorageEventTrigger"
    assert kwargs["paths"] == ["/a", "/b"] and kwargs["include"] == ["*.cxi", "*.h5"]
    assert kwargs["events"] == ["IN_CLOSE_WRITE", "IN_MOVED_TO"]
    json.dumps(kwargs)
    b = DCacheStorageEventTrigger(**kwargs)
    assert b.serialize() == (classpath, kwargs)
    c = DCacheStorageEventTrigger(dcache_conn_id="dc", paths=["/a", "/b"], include=["*.cxi", "*.h5"],
                                  events=["IN_CLOSE_WRITE", "IN_MOVED_TO"])
    assert DCacheStorageEventTrigger.hash(*a.serialize()) == DCacheStorageEventTrigger.hash(*c.serialize())
    assert not any("password" in k or "token" in k for k in kwargs)
    assert kwargs["start_from"] == "now"


def test_start_from_timestamp_is_serialized_in_one_form() -> None:
    """Two spellings of one instant give the same kwargs, hence one trigger row, not two."""
    a = DCacheStorageEventTrigger(paths=["/a"], start_from="2026-05-14T10:00:00+02:00")
    b = DCacheStorageEventTrigger(paths=["/a"], start_from="2026-05-14T08:00:00.000Z")
    assert a.serialize()[1]["start_from"] == "2026-05-14T08:00:00.000Z"
    assert DCacheStorageEventTrigger.hash(*a.serialize()) == DCacheStorageEventTrigger.hash(*b.serialize())
    assert DCacheStorageEventTrigger(**a.serialize()[1]).serialize() == a.serialize()
    assert a.watch_id == DCacheStorageEventTrigger(paths=["/a"]).watch_id  # the policy is not the watch identity


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"paths": []}, "paths"),
        ({"paths": ["relative/dir"]}, "paths"),
        ({"paths": ["/data/../etc"]}, "paths"),
        ({"paths": ["/data/in\x00"]}, "paths"),
        ({"events": ["IN_EXPLODE"]}, "events"),
        ({"include": ["re:(unclosed"]}, "include"),
        ({"name_regex": "*bad"}, "name_regex"),
        ({"users": ["alice"]}, "users"),
        ({"min_size": 10, "stat": False}, "min_size"),
        ({"batch_quiet": -1}, "batch_quiet"),
        ({"batch_max_events": 5000}, "batch_max_events"),
        ({"recursive": "yes"}, "recursive"),
        ({"dcache_conn_id": ""}, "dcache_conn_id"),
        ({"start_from": "yesterday"}, "start_from"),
        ({"start_from": "2026-05-14T08:00:00"}, "start_from"),  # no UTC offset
        ({"start_from": 1715670000}, "start_from"),
        ({"start_from": "existing", "events": ["IN_DELETE"]}, "start_from"),  # a listing could report nothing
        ({"flush_after": 0}, "flush_after"),
        ({"flush_after": "soon"}, "flush_after"),
        ({"flush_after": 1.0, "batch_min_interval": 3.0}, "flush_after"),  # would break the spacing
    ],
)
def test_bad_configuration_fails_at_parse_naming_the_field(kwargs: dict, field: str) -> None:
    base: dict[str, Any] = {"paths": ["/data"]}
    base.update(kwargs)
    with pytest.raises(ValueError, match=rf"^{field}"):
        DCacheStorageEventTrigger(**base)


def test_watched_paths_are_spelled_as_every_other_path() -> None:
    """``paths.clean_path`` decides, as for operators and hooks: one spelling per directory, so two
    spellings of one tree are one watcher (the watch id hashes the paths)."""
    spelled = DCacheStorageEventTrigger(paths=["/data/in/", "/data//raw", "/data/./x "])
    assert spelled.paths == ("/data/in", "/data/raw", "/data/x ")
    assert spelled.watch_id == DCacheStorageEventTrigger(paths=["/data/raw", "/data/in", "/data/x "]).watch_id


async def test_missing_connection_is_retried_not_raised(monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    runner = Runner(DCacheStorageEventTrigger(dcache_conn_id="no_such_conn_xyz", paths=["/data"], **FAST),
                    MemoryStore())
    try:
        await asyncio.sleep(4)
        assert not runner.task.done()  # keeps retrying inside run()
        faults = [r for r in caplog.records if "retrying with backoff" in r.getMessage()]
        assert len(faults) == 1  # logged once per cause, not on every retry
    finally:
        await runner.stop()
