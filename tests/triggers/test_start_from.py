"""``start_from``: where a watcher without stored state starts, against the real bundled service.

As in ``test_storage_events.py`` the trigger's ``run()`` is driven directly and only
``asset_state_store`` is an in-memory dict; the service, channels, listings and the stream are real.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_dcache.events import format_time
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.triggers import DCacheStorageEventTrigger
from tests.conftest import fresh_dir
from tests.triggers.test_storage_events import FAST, MemoryStore, Runner, aput, put, set_connection

COMMITTED = 6.5  # past the trigger's COMMIT_DELAY (5 s): the cursor past the last batch is stored


@pytest.fixture
def conn_id(monkeypatch: pytest.MonkeyPatch, dcache_server: Any) -> str:
    cid = f"start_{uuid.uuid4().hex[:8]}"
    set_connection(monkeypatch, dcache_server, cid)
    return cid


@pytest.fixture
def alice(conn_id: str) -> Iterator[DCacheHook]:
    with DCacheHook(conn_id) as hook:
        yield hook


@pytest.fixture
def workdir(alice: DCacheHook) -> Iterator[str]:
    with fresh_dir(alice, "/home/alice/start") as path:
        yield path


async def _stored(store: MemoryStore, timeout: float = 10) -> dict[str, Any]:
    """The watch state once the trigger has stored one (bounded wait)."""
    for _ in range(int(timeout * 20)):
        if store.data:
            return dict(next(iter(store.data.values())))
        await asyncio.sleep(0.05)
    raise AssertionError("no watch state was stored")


async def test_existing_reports_matching_files_already_there_once(
    conn_id: str, alice: DCacheHook, workdir: str
) -> None:
    alice.mkdir(f"{workdir}/sub")
    for name in ("a.h5", "b.h5", "c.txt", "sub/d.h5"):
        put(alice, f"{workdir}/{name}", name.encode())
    store = MemoryStore()
    trigger = DCacheStorageEventTrigger(dcache_conn_id=conn_id, paths=[workdir], include=["*.h5"],
                                        start_from="existing", **FAST)
    runner = Runner(trigger, store)
    try:
        events = await runner.wait_for(lambda ev: len(ev) >= 2)
        await aput(alice, f"{workdir}/live.h5")  # after the listing: a live event, as always
        events = await runner.wait_for(lambda ev: any(e.name == "live.h5" for e in ev))
        events = await runner.settle()
        # not recursive: sub/d.h5 is not watched; c.txt is filtered out
        assert sorted(e.name for e in events) == ["a.h5", "b.h5", "live.h5"]
        listed = [e for e in events if e.name != "live.h5"]
        assert all(e.kind == "closed_after_write" and e.pnfsid and e.size == 4 for e in listed)
        assert all(e.extra == {"reconciled": True, "listed": "start_from"} for e in listed)
        assert all(e.key == f"{e.pnfsid}:closed_after_write" for e in listed)
        live = next(e for e in events if e.name == "live.h5")
        assert "listed" not in live.extra and not live.extra.get("reconciled")
        assert (await _stored(store))["start_from"] == "existing"
    finally:
        await runner.stop()


async def test_now_reports_nothing_already_there(conn_id: str, alice: DCacheHook, workdir: str) -> None:
    put(alice, f"{workdir}/old.h5")
    store = MemoryStore()
    runner = Runner(DCacheStorageEventTrigger(dcache_conn_id=conn_id, paths=[workdir], **FAST), store)
    try:
        await runner.ready()
        await aput(alice, f"{workdir}/new.h5")
        await runner.wait_for(lambda ev: len(ev) >= 1)
        assert [e.name for e in await runner.settle()] == ["new.h5"]
        assert [p["flush"] for p in runner.payloads] == [False]  # a first start has nothing to flush
        assert (await _stored(store))["start_from"] == "now"
    finally:
        await runner.stop()


async def test_timestamp_reports_files_newer_than_it(conn_id: str, alice: DCacheHook, workdir: str) -> None:
    put(alice, f"{workdir}/before.h5")
    cut = alice.stat(f"{workdir}/before.h5").mtime  # server clock, ms
    assert cut is not None
    await asyncio.sleep(0.05)
    put(alice, f"{workdir}/after.h5")
    start = format_time(cut / 1000).replace("Z", "+00:00")  # "newer than before.h5's mtime"
    runner = Runner(DCacheStorageEventTrigger(dcache_conn_id=conn_id, paths=[workdir], start_from=start, **FAST),
                    MemoryStore())
    try:
        await runner.wait_for(lambda ev: len(ev) >= 1)
        events = await runner.settle()
        assert [(e.name, e.extra.get("listed")) for e in events] == [("after.h5", "start_from")]
    finally:
        await runner.stop()


async def test_policy_is_not_applied_again_to_a_watcher_with_stored_state(
    conn_id: str, alice: DCacheHook, workdir: str
) -> None:
    """A re-deployed or restarted watcher catches up from its cursor; it does not list everything again.
    While it was stopped (a paused DAG: the trigger row is removed) the channel expired on the server
    (deleted here, as dCache's garbage collection does after channel_lifetime): a new channel, then a
    reconcile by listing from the watermark finds what landed meanwhile, and only that."""
    put(alice, f"{workdir}/old.h5")
    store = MemoryStore()
    make = lambda: DCacheStorageEventTrigger(dcache_conn_id=conn_id, paths=[workdir],  # noqa: E731
                                             start_from="existing", **FAST)
    first = Runner(make(), store)
    await first.wait_for(lambda ev: [e.name for e in ev] == ["old.h5"])
    await asyncio.sleep(COMMITTED)
    await first.stop()
    state = await _stored(store)
    assert state["start_from"] == "existing" and state["watermark_ms"]

    # stopped: the channel expires, a file lands
    with DCacheHook(conn_id) as hook:
        hook.delete_channel(state["channel"])
    await aput(alice, f"{workdir}/while-stopped.h5")
    second = Runner(make(), store)
    try:
        events = await second.wait_for(lambda ev: len(ev) >= 1)
        events = await second.settle()
        assert [e.name for e in events] == ["while-stopped.h5"]  # old.h5 is not listed again
        assert events[0].extra == {"reconciled": True}  # found by the reconcile, not by start_from
        assert second.trigger._watch.state.channel != state["channel"]  # type: ignore[union-attr]
    finally:
        await second.stop()


async def test_existing_many_files_are_batched_within_the_caps(
    conn_id: str, alice: DCacheHook, workdir: str
) -> None:
    names = [f"f{i:03d}.h5" for i in range(120)]
    await asyncio.gather(*(asyncio.to_thread(put, alice, f"{workdir}/{n}") for n in names[:60]))
    await asyncio.gather(*(asyncio.to_thread(put, alice, f"{workdir}/{n}") for n in names[60:]))
    trigger = DCacheStorageEventTrigger(dcache_conn_id=conn_id, paths=[workdir], start_from="existing",
                                        **dict(FAST, batch_max_events=50))
    runner = Runner(trigger, MemoryStore())
    try:
        await runner.wait_for(lambda ev: len(ev) >= len(names))
        events = await runner.settle()
        assert sorted(e.name for e in events) == names  # each exactly once
        counts = [p["count"] for p in runner.payloads if p["count"]]
        assert max(counts) <= 50 and len(counts) >= 3
    finally:
        await runner.stop()


async def test_resumed_watcher_first_yields_one_flush_batch(conn_id: str, alice: DCacheHook, workdir: str) -> None:
    """A watcher that resumes from stored state (a restart, or an unpause in Airflow) yields one empty
    flush batch ``batch_min_interval`` after its start, so that the run it makes picks up asset events a
    paused DAG did not queue (docs/triggers.md §10); then only batches of events."""
    store = MemoryStore()
    first = Runner(DCacheStorageEventTrigger(dcache_conn_id=conn_id, paths=[workdir], **FAST), store)
    await first.ready()
    await _stored(store)
    await first.stop()
    assert first.payloads == []
    second = Runner(DCacheStorageEventTrigger(dcache_conn_id=conn_id, paths=[workdir], **FAST), store)
    try:
        await second.ready()
        for _ in range(100):  # bounded: FAST's batch_min_interval is 0.3 s
            if second.payloads:
                break
            await asyncio.sleep(0.05)
        await second.settle(1.0)
        assert [(p["flush"], p["count"]) for p in second.payloads] == [(True, 0)]
        await aput(alice, f"{workdir}/after.h5")
        await second.wait_for(lambda ev: len(ev) == 1)
        assert [(p["flush"], p["count"]) for p in second.payloads] == [(True, 0), (False, 1)]
    finally:
        await second.stop()
