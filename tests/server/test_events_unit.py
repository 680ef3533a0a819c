"""Storage-event internals that HTTP cannot reach deterministically: the ring buffer's bound, the
per-subscription queue of a slow consumer (IN_Q_OVERFLOW), and the IN_ACCESS/IN_MODIFY limiter."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

from airflow_dcache.server.services.events import EventBus, NamespaceEvent
from airflow_dcache.server.services.login import Login
from airflow_dcache.server.services.namespace import NamespaceService
from airflow_dcache.server.services.storage_events import ChannelRegistry, EventsSettings
from airflow_dcache.server.services.storage_events.channel import Connection
from airflow_dcache.server.services.storage_events.inotify import InotifySelector, move_cookie, subscription_id
from airflow_dcache.server.storage.namespace_db import NamespaceDB
from airflow_dcache.server.storage.pool import Pool

ALICE = Login(uid=1000, gids=(1000,), username="alice", admin=True)  # admin: no mode checks needed


@pytest.fixture
def world(tmp_path: Path):
    db = NamespaceDB(tmp_path / "ns.db")
    bus = EventBus()
    ns = NamespaceService(db, Pool("p", tmp_path / "pool"), bus)
    yield ns, bus
    db.close()


def frames(conn: Connection) -> list[dict]:
    out = []
    for frame in conn.frames:
        data = frame.decode().split("data: ", 1)[1].strip()
        out.append(json.loads(data))
    return out


async def test_ring_buffer_keeps_the_last_events(world):
    ns, bus = world
    registry = ChannelRegistry(ns, EventsSettings(backlog=5), bus=bus)
    d = ns.mkdir(ALICE, "/d")
    channel = registry.create(ALICE, None)
    sub, created = registry.inotify.subscribe(channel, ALICE, {"path": "/d", "flags": ["IN_CREATE"]}, "http://x/c")
    assert created and sub.id == subscription_id(d.inode.id)
    for i in range(8):
        ns.mkdir(ALICE, f"/d/s{i}")
    assert [n for n, _ in channel.backlog] == [3, 4, 5, 6, 7]
    conn = Connection()
    channel.attach(conn, 5)
    assert [f["event"]["name"] for f in frames(conn)] == ["s6", "s7"]
    registry.delete(channel)
    await registry.shutdown()


async def test_slow_consumer_overflows_and_is_told(world):
    ns, bus = world
    registry = ChannelRegistry(ns, EventsSettings(queue_limit=5), bus=bus)
    ns.mkdir(ALICE, "/d")
    channel = registry.create(ALICE, None)
    registry.inotify.subscribe(channel, ALICE, {"path": "/d", "flags": ["IN_CREATE"]}, "http://x/c")
    conn = Connection()
    channel.attach(conn, None)
    written: list[bytes] = []
    gate = asyncio.Event()

    async def write(data: bytes) -> None:
        await gate.wait()  # the client does not read until the gate opens
        written.append(data)

    pump = asyncio.create_task(channel.pump(conn, write))
    await asyncio.sleep(0)
    for i in range(3):
        ns.mkdir(ALICE, f"/d/a{i}")
    await asyncio.sleep(0.01)  # the pump took the first batch and is blocked writing it
    for i in range(10):
        ns.mkdir(ALICE, f"/d/b{i}")  # with 3 in flight, 2 more fit in the queue of 5; 8 are dropped
    assert channel.next_id == 5
    gate.set()
    for _ in range(50):
        await asyncio.sleep(0.01)
        if b"IN_Q_OVERFLOW" in b"".join(written):
            break
    text = b"".join(written).decode()
    names = [json.loads(line[6:])["event"].get("name") or json.loads(line[6:])["event"]["mask"][0]
             for line in text.splitlines() if line.startswith("data: ")]
    assert names == ["a0", "a1", "a2", "b0", "b1", "IN_Q_OVERFLOW"]
    assert "id: 5\n" in text
    ns.mkdir(ALICE, "/d/c")  # delivery resumes
    await asyncio.sleep(0.05)
    assert b'"name":"c"' in written[-1]
    conn.close()
    await asyncio.wait_for(pump, 2)
    await registry.shutdown()


async def test_io_events_are_rate_limited_per_object(world):
    ns, bus = world
    registry = ChannelRegistry(ns, EventsSettings(io_suppression=0.2), bus=bus)
    d = ns.mkdir(ALICE, "/d")
    channel = registry.create(ALICE, None)
    registry.inotify.subscribe(channel, ALICE, {"path": "/d"}, "http://x/c")
    conn = Connection()
    channel.attach(conn, None)

    def emit(kind: str, inode: str = "F" * 36) -> None:
        bus.publish(NamespaceEvent(kind, inode, d.inode.id, "f", False))

    emit("IN_OPEN")
    for _ in range(5):
        emit("IN_MODIFY")  # continuous writing: one event per window
    emit("IN_ACCESS")  # switching between reading and writing is sent at once
    emit("IN_MODIFY")
    emit("IN_MODIFY", "E" * 36)  # another object has its own limiter
    await asyncio.sleep(0.25)
    emit("IN_MODIFY")  # a new window
    emit("IN_CLOSE_WRITE")
    emit("IN_MODIFY")  # after close, a new mover starts fresh
    masks = [f["event"]["mask"][0] for f in frames(conn)]
    assert masks == ["IN_OPEN", "IN_MODIFY", "IN_ACCESS", "IN_MODIFY", "IN_MODIFY", "IN_MODIFY", "IN_CLOSE_WRITE",
                     "IN_MODIFY"]
    await registry.shutdown()


def test_selector_parsing_and_helpers():
    sel = InotifySelector.parse({"path": "/", "flags": ["IN_CLOSE", "IN_ONESHOT", "IN_MASK_ADD"]})
    assert sel.events == 0x18 and sel.modifiers == {"IN_ONESHOT", "IN_MASK_ADD"}
    assert InotifySelector.parse({"path": "/a b/ü"}).events == 0xFFF
    assert InotifySelector.parse({"path": "/", "flags": []}).events == 0
    assert subscription_id("0" * 36) == "A" * 24
    assert move_cookie("k") == move_cookie("k") != move_cookie("l")
    assert "=" not in move_cookie("k") and len(move_cookie("k")) == 22


async def test_shutdown_closes_connections_with_shutdown(world):
    ns, bus = world
    registry = ChannelRegistry(ns, bus=bus)
    await registry.start()
    channel = registry.create(ALICE, None)
    conn = Connection()
    channel.attach(conn, None)
    written: list[bytes] = []

    async def write(data: bytes) -> None:
        written.append(data)

    pump = asyncio.create_task(channel.pump(conn, write))
    registry.track_pump(pump)
    await registry.shutdown()
    assert pump.done()
    assert b"".join(written) == b'event: SYSTEM\ndata: {"type":"SHUTDOWN"}\n\n'
    assert registry.get(channel.id) is None
    assert registry.on_bus_event not in bus._listeners


async def test_events_published_from_a_worker_thread_reach_the_loop(world):
    ns, bus = world
    registry = ChannelRegistry(ns, bus=bus)
    await registry.start()
    d = ns.mkdir(ALICE, "/d")
    channel = registry.create(ALICE, None)
    registry.inotify.subscribe(channel, ALICE, {"path": "/d", "flags": ["IN_ATTRIB"]}, "http://x/c")
    conn = Connection()
    channel.attach(conn, None)
    threads: list[int] = []
    deliver = registry.inotify.on_event

    def recording(ev: NamespaceEvent) -> None:
        threads.append(threading.get_ident())
        deliver(ev)

    registry.inotify.on_event = recording  # type: ignore[method-assign]
    event = NamespaceEvent("IN_ATTRIB", "F" * 36, d.inode.id, "f", False)
    await asyncio.to_thread(bus.publish, event)
    for _ in range(100):
        await asyncio.sleep(0.01)
        if conn.frames:
            break
    assert [f["event"] for f in frames(conn)] == [{"name": "f", "mask": ["IN_ATTRIB"]}]
    assert threads == [threading.get_ident()]  # delivered on the loop thread, not the worker
    await registry.shutdown()


async def test_delivery_verdict_is_cached_and_invalidated_by_access_changes(world, monkeypatch):
    """The namespace is asked once per subscription after chmod/chgrp/move, not once per event."""
    ns, bus = world
    registry = ChannelRegistry(ns, EventsSettings(), bus=bus)
    root = Login(uid=0, gids=(0,), username="root")
    bob = Login(uid=1001, gids=(1001,), username="bob")
    ns.mkdir(root, "/d")
    ns.chmod(root, "/d", 0o755)
    channel = registry.create(bob, None)
    registry.inotify.subscribe(channel, bob, {"path": "/d", "flags": ["IN_CREATE"]}, "http://x/c")
    checks = []
    original = registry.inotify._still_allowed
    monkeypatch.setattr(registry.inotify, "_still_allowed", lambda *a: checks.append(a) or original(*a))
    for i in range(5):
        ns.mkdir(root, f"/d/a{i}")
    ns.set_xattrs(root, "/d", {"k": "v"})  # IN_ATTRIB without an access change
    ns.mkdir(root, "/d/after-xattr")
    assert checks == []  # the verdict from subscribe time still holds
    ns.chmod(root, "/d", 0o700)
    for i in range(5):
        ns.mkdir(root, f"/d/hidden{i}")
    assert len(checks) == 1
    names = [e["event"].get("name") for e in (json.loads(f.split(b"data: ", 1)[1]) for _, f in channel.backlog)]
    assert names == [f"a{i}" for i in range(5)] + ["after-xattr"]
    registry.delete(channel)
    await registry.shutdown()
