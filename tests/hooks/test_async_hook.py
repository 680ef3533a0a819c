"""Async-only concerns: no blocking connection lookup inside the event loop, clean client shutdown."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_dcache.hooks.dcache_async import DCacheAsyncHook
from tests.hooks.fakes import FakeServer, Reply


async def test_connection_is_loaded_without_the_sync_lookup(monkeypatch: pytest.MonkeyPatch, set_conn: Any) -> None:
    def blocking_lookup(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the sync get_connection must not run inside the event loop")

    monkeypatch.setattr(DCacheAsyncHook, "get_connection", classmethod(blocking_lookup))
    with FakeServer(lambda r: Reply(200, body=b'{"status":"AUTHENTICATED","username":"alice"}')) as srv:
        conn_id = set_conn(host=srv.url, login="alice", password="pw-12345", extra={"frontend_url": srv.url})
        async with DCacheAsyncHook(conn_id) as hook:
            assert (await hook.whoami()).username == "alice"
            client = await hook.get_async_conn()
        assert client.is_closed


async def test_clients_are_reused_within_a_hook(set_conn: Any) -> None:
    with FakeServer(lambda r: Reply(200, body=b'{"status":"AUTHENTICATED"}')) as srv:
        conn_id = set_conn(host=srv.url, login="alice", password="pw-12345", extra={"frontend_url": srv.url})
        async with DCacheAsyncHook(conn_id) as hook:
            first = await hook.get_async_conn()
            await hook.whoami()
            await hook.whoami()
            assert await hook.get_async_conn() is first
            # Without a client certificate there is nothing to withhold: one client serves all origins.
            assert await hook.get_async_conn(with_cert=False) is first
