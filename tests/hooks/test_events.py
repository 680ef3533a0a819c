"""Storage events (§4) through both hooks, against the real bundled server."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from airflow_dcache.exceptions import (
    AuthenticationFailed,
    BadRequest,
    DCacheConnectionError,
    NotFound,
    PermissionDenied,
)
from airflow_dcache.hooks._sse import ChannelMessage
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.hooks.dcache_async import DCacheAsyncHook
from tests.hooks.conftest import ConnFactory, server_conn, sync_only

Run = Callable[..., Any]


@pytest.fixture
def alice_id(set_conn: ConnFactory, dcache_server: Any) -> str:
    return server_conn(set_conn, dcache_server, "alice")


@pytest.fixture
def channel(alice: DCacheHook) -> Any:
    """A channel for alice, deleted afterwards (whatever the test did to it)."""
    url = alice.create_channel()
    yield url
    with contextlib.suppress(NotFound):
        alice.delete_channel(url)


# -------------------------------------------------------------------------------- management


@sync_only
def test_create_list_delete_channel(run: Run, alice_id: str, dcache_server: Any) -> None:
    client_id = f"airflow-{uuid.uuid4().hex[:8]}"
    url = run(alice_id, "create_channel", client_id)
    assert url.startswith(dcache_server.api + "/events/channels/")
    assert run(alice_id, "list_channels", client_id) == [url]
    assert url in run(alice_id, "list_channels")
    assert url not in run(alice_id, "list_channels", "")  # only channels without a client id
    run(alice_id, "delete_channel", url)
    assert url not in run(alice_id, "list_channels")
    with pytest.raises(NotFound):
        run(alice_id, "channel_timeout", url)
    with pytest.raises(NotFound):
        run(alice_id, "delete_channel", url)


def test_channel_without_client_id(run: Run, alice_id: str) -> None:
    url = run(alice_id, "create_channel")
    try:
        assert url in run(alice_id, "list_channels", "")
    finally:
        run(alice_id, "delete_channel", url)


@sync_only
def test_channel_timeout(run: Run, alice_id: str, channel: str) -> None:
    assert run(alice_id, "channel_timeout", channel) == 300
    run(alice_id, "set_channel_timeout", channel, 3600)
    assert run(alice_id, "channel_timeout", channel) == 3600
    with pytest.raises(BadRequest):
        run(alice_id, "set_channel_timeout", channel, 10**9)
    with pytest.raises(ValueError):
        run(alice_id, "set_channel_timeout", channel, 0)


@sync_only
def test_subscriptions(run: Run, alice_id: str, channel: str, workdir: str) -> None:
    inotify = run(alice_id, "subscribe_inotify", channel, workdir, ["IN_CLOSE_WRITE", "moved_to"])
    metronome = run(alice_id, "subscribe_metronome", channel, delay=60, message="tick", count=1)
    assert inotify.startswith(channel + "/subscriptions/inotify/")
    assert metronome.startswith(channel + "/subscriptions/metronome/")
    assert sorted(run(alice_id, "list_subscriptions", channel)) == sorted([inotify, metronome])
    run(alice_id, "unsubscribe", metronome)
    assert run(alice_id, "list_subscriptions", channel) == [inotify]
    with pytest.raises(NotFound):
        run(alice_id, "unsubscribe", metronome)


def test_second_inotify_subscription_is_merged(run: Run, alice_id: str, channel: str, workdir: str) -> None:
    first = run(alice_id, "subscribe_inotify", channel, workdir, ["IN_CREATE"])
    # 303 See Other: the hook must hand back the Location, not follow it.
    again = run(alice_id, "subscribe_inotify", channel, workdir + "/", ["IN_CLOSE_WRITE", "IN_MASK_ADD"])
    assert again == first
    assert run(alice_id, "list_subscriptions", channel) == [first]


def test_subscription_errors(run: Run, alice_id: str, channel: str, workdir: str) -> None:
    with pytest.raises(BadRequest, match="Not found"):
        run(alice_id, "subscribe_inotify", channel, workdir + "/missing")
    with pytest.raises(ValueError, match="inotify flag"):
        run(alice_id, "subscribe_inotify", channel, workdir, ["IN_BOGUS"])
    with pytest.raises(ValueError, match="exactly one"):
        run(alice_id, "subscribe_metronome", channel, delay=1, frequency=2)


@sync_only
def test_event_types(run: Run, alice_id: str) -> None:
    assert run(alice_id, "event_types") == ["inotify", "metronome"]


@sync_only
def test_event_schemas(run: Run, alice_id: str) -> None:
    selector = run(alice_id, "event_schema", "inotify")
    assert selector["type"] == "object" and "path" in selector["properties"]
    event = run(alice_id, "event_schema", "inotify", "event")
    assert event["type"] == "object" and "mask" in json.dumps(event)
    with pytest.raises(NotFound):
        run(alice_id, "event_schema", "no-such-type")
    with pytest.raises(ValueError, match="part"):
        run(alice_id, "event_schema", "inotify", "schema")
    for bad in ("inotify/../x", "..", ".", "", "ino tify"):
        with pytest.raises(ValueError, match="single name"):
            run(alice_id, "event_schema", bad)


@sync_only
def test_anonymous_is_refused(run: Run, set_conn: ConnFactory, dcache_server: Any) -> None:
    anonymous = server_conn(set_conn, dcache_server, None)
    with pytest.raises(AuthenticationFailed):
        run(anonymous, "create_channel")
    with pytest.raises(AuthenticationFailed):
        run(anonymous, "event_types")


@sync_only
def test_foreign_urls_are_refused_before_sending(run: Run, alice_id: str, channel: str) -> None:
    for url in ("https://evil.example.org/api/v1/events/channels/x", channel.replace("/events/", "/bulk/"), "x"):
        with pytest.raises(ValueError, match="URL of this connection"):
            run(alice_id, "channel_timeout", url)


def test_channel_of_another_user_is_forbidden(
    run: Run, set_conn: ConnFactory, dcache_server: Any, channel: str
) -> None:
    with pytest.raises(PermissionDenied):
        run(server_conn(set_conn, dcache_server, "bob"), "list_subscriptions", channel)


# --------------------------------------------------------------------------------- streaming

Stream = AsyncIterator[ChannelMessage]


async def read_until(stream: Stream, done: Callable[[ChannelMessage], bool],
                     timeout: float = 20) -> list[ChannelMessage]:
    """Events up to and including the first for which ``done`` is true; bounded by ``timeout``."""
    events: list[ChannelMessage] = []

    async def go() -> None:
        async for event in stream:
            events.append(event)
            if done(event):
                return
        raise AssertionError(f"stream ended early after {events}")

    await asyncio.wait_for(go(), timeout)
    return events


def is_tick(event: ChannelMessage) -> bool:
    return event.type == "metronome"


async def test_upload_is_seen_on_the_stream_and_replayed(alice_id: str, alice: DCacheHook, workdir: str) -> None:
    async with DCacheAsyncHook(alice_id) as hook:
        channel = await hook.create_channel()
        try:
            watch = await hook.subscribe_inotify(channel, workdir)
            # Only events after the connection are delivered: a fast metronome shows when it is live.
            ticks = await hook.subscribe_metronome(channel, delay=0.05, message="tick ${count}")
            async with contextlib.aclosing(hook.stream_events(channel, read_timeout=30)) as stream:
                await read_until(stream, is_tick)
                # the async hook has no upload (nothing async needs one): the sync hook writes, off the loop
                await asyncio.to_thread(alice.upload, io.BytesIO(b"x" * 1000), f"{workdir}/run42.dat")
                events = await read_until(stream, lambda e: e.name == "run42.dat" and "IN_CLOSE_WRITE" in e.mask)
            await asyncio.to_thread(alice.unsubscribe, ticks)

            mine = [e for e in events if e.type == "inotify" and e.name == "run42.dat"]
            masks = [e.mask[0] for e in mine]
            assert masks[0] == "IN_CREATE" and masks[-1] == "IN_CLOSE_WRITE", masks
            assert all(e.subscription == watch and e.id is not None for e in mine)
            ids = [int(e.id) for e in events if e.id is not None]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)

            # Reconnect after IN_CREATE: everything after it is sent again, in order, with the same ids.
            create = mine[0]
            async with contextlib.aclosing(hook.stream_events(channel, last_event_id=create.id)) as stream:
                replay = await read_until(stream, lambda e: e.id == mine[-1].id)
            replayed = [e for e in replay if e.id is not None]
            assert int(replayed[0].id or -1) == int(create.id or 0) + 1
            assert [e for e in replayed if e.type == "inotify"] == mine[1:]
        finally:
            await hook.delete_channel(channel)


async def test_stream_ends_when_the_channel_is_deleted(alice_id: str) -> None:
    async with DCacheAsyncHook(alice_id) as hook:
        channel = await hook.create_channel()
        ticks = await hook.subscribe_metronome(channel, delay=0.05)
        stream = hook.stream_events(channel, read_timeout=30)
        await read_until(stream, is_tick)
        await hook.delete_channel(channel)
        rest = await asyncio.wait_for(_drain(stream), 20)
        closed = [e for e in rest if e.system_type == "SUBSCRIPTION_CLOSED"]
        assert closed and closed[0].subscription == ticks and closed[0].id is None
        with pytest.raises(NotFound):
            await _drain(hook.stream_events(channel))


async def _drain(stream: Stream) -> list[ChannelMessage]:
    return [event async for event in stream]


def test_sync_stream_events(alice: DCacheHook) -> None:
    channel = alice.create_channel()
    try:
        alice.subscribe_metronome(channel, delay=0.05, message="hello ${username}")
        with contextlib.closing(alice.stream_events(channel, read_timeout=30)) as stream:
            first, second = next(stream), next(stream)
        assert (first.type, first.payload) == ("metronome", "hello alice")
        assert int(second.id or 0) > int(first.id or 0)
    finally:
        alice.delete_channel(channel)


def test_read_timeout_on_a_quiet_channel(run: Run, alice_id: str, channel: str) -> None:
    with pytest.raises(DCacheConnectionError, match=r"no data on the event stream for 0\.5 s"):
        _collect(run, alice_id, channel, read_timeout=0.5)


def test_stream_errors_are_typed(run: Run, set_conn: ConnFactory, dcache_server: Any, alice_id: str) -> None:
    channel = run(alice_id, "create_channel")
    with pytest.raises(AuthenticationFailed):
        _collect(run, server_conn(set_conn, dcache_server, None), channel)
    with pytest.raises(PermissionDenied):
        _collect(run, server_conn(set_conn, dcache_server, "bob"), channel)
    run(alice_id, "delete_channel", channel)
    with pytest.raises(NotFound):
        _collect(run, alice_id, channel)


def _collect(run: Run, conn_id: str, channel: str, **kwargs: Any) -> list[ChannelMessage]:
    """All events of ``stream_events`` through whichever hook ``run`` drives."""
    if run.__name__ == "sync":
        with DCacheHook(conn_id) as hook:
            return list(hook.stream_events(channel, **kwargs))

    async def go() -> list[ChannelMessage]:
        async with DCacheAsyncHook(conn_id) as hook:
            return await asyncio.wait_for(_drain(hook.stream_events(channel, **kwargs)), 20)

    return asyncio.run(go())
