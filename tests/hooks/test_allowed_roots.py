"""Allowed roots (issue 17): a hook made for a pipeline refuses every path outside its trees, before any request.

The refusal must not depend on which method a task calls: URLs (namespace, door) and JSON bodies
(bulk targets, WLCG stage and archive-info lists, event subscriptions) all go through one check. A
connection to a closed port proves "before any request": a request would fail with a connection
error instead of ``OutsideAllowedRoots``.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from typing import Any

import pytest

from airflow_dcache.exceptions import is_permanent
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.hooks.dcache_async import DCacheAsyncHook
from airflow_dcache.paths import InvalidPath, OutsideAllowedRoots, clean_path, within
from tests.hooks.conftest import ConnFactory, server_conn

ROOTS = ["/data/incoming", "/data/processed"]
OUTSIDE = ["/home/bob/private/x.h5", "/data/incomingX/a.h5", "/data", "/", "/data/processed2/y"]

#: (method, args builder): every kind of path-taking call of the hooks
CALLS: list[tuple[str, Callable[[str], tuple[Any, ...]]]] = [
    ("stat", lambda p: (p,)),
    ("list_dir", lambda p: (p,)),
    ("exists", lambda p: (p,)),
    ("mkdir", lambda p: (p,)),
    ("delete", lambda p: (p,)),
    ("set_xattr", lambda p: (p, {"a": "b"})),
    ("set_qos", lambda p: (p, "tape")),
    ("checksum", lambda p: (p, ("adler32",))),
    ("read_range", lambda p: (p, 0, 1)),
    ("mint_macaroon", lambda p: (p,)),
    ("submit_bulk_request", lambda p: ("PIN", [p])),
    ("stage", lambda p: ([p],)),
    ("archive_info", lambda p: ([p],)),
    ("move", lambda p: ("/data/incoming/a.h5", p)),
]


@pytest.fixture
def closed_conn(set_conn: ConnFactory) -> str:
    """A connection to a port nobody listens on, with no retries: any request would fail to connect."""
    return set_conn(host="http://127.0.0.1:9", login="pipeline", password="pw",
                    extra={"frontend_url": "http://127.0.0.1:9", "retries": 0, "timeout": 2})


@pytest.mark.parametrize("path", OUTSIDE)
@pytest.mark.parametrize(("method", "args"), CALLS, ids=[c[0] for c in CALLS])
def test_sync_hook_refuses_outside_before_any_request(closed_conn: str, method: str, args: Any, path: str) -> None:
    hook = DCacheHook(closed_conn, allowed_roots=ROOTS)
    if not hasattr(hook, method):
        pytest.skip(f"no {method} on the sync hook")
    with pytest.raises(OutsideAllowedRoots) as caught:
        getattr(hook, method)(*args(path))
    assert is_permanent(caught.value)


ASYNC_CALLS = [c for c in CALLS if hasattr(DCacheAsyncHook, c[0])]


@pytest.mark.parametrize(("method", "args"), ASYNC_CALLS, ids=[c[0] for c in ASYNC_CALLS])
def test_async_hook_refuses_outside_before_any_request(closed_conn: str, method: str, args: Any) -> None:
    async def go() -> None:
        async with DCacheAsyncHook(closed_conn, allowed_roots=ROOTS) as hook:
            with pytest.raises(OutsideAllowedRoots):
                await getattr(hook, method)(*args("/home/bob/private/x.h5"))

    asyncio.run(go())


def test_connection_extra_caps_every_hook_and_narrows_with_the_hooks_roots(set_conn: ConnFactory) -> None:
    conn = set_conn(host="http://127.0.0.1:9", login="p", password="pw",
                    extra={"frontend_url": "http://127.0.0.1:9", "allowed_roots": "/data", "retries": 0})
    assert DCacheHook(conn).settings.allowed_roots == ("/data",)
    # the hook's roots narrow the connection's, never widen them
    assert DCacheHook(conn, allowed_roots=["/data/incoming", "/home"]).settings.allowed_roots == ("/data/incoming",)
    assert DCacheHook(conn, allowed_roots=["/"]).settings.allowed_roots == ("/data",)
    with pytest.raises(OutsideAllowedRoots):
        DCacheHook(conn, allowed_roots=["/home"]).stat("/home/alice")
    with pytest.raises(OutsideAllowedRoots):
        DCacheHook(conn, allowed_roots=["/home"]).stat("/data/x")


def test_inside_the_roots_the_real_service_answers(set_conn: ConnFactory, dcache_server: Any) -> None:
    conn = server_conn(set_conn, dcache_server, "alice")
    with DCacheHook(conn, allowed_roots=["/home/alice"]) as hook:
        assert hook.stat("/home/alice").is_dir
        hook.upload(io.BytesIO(b"x"), "/home/alice/roots-probe.bin")
        assert hook.read_range("/home/alice/roots-probe.bin", 0, 1) == b"x"
        hook.delete("/home/alice/roots-probe.bin")
        with pytest.raises(OutsideAllowedRoots):
            hook.list_dir("/home")


@pytest.mark.parametrize(("value", "expected"), [
    ("/a//b/./c/", "/a/b/c"), ("/", "/"), ("/d/x.h5 ", "/d/x.h5 "), ("/d/ sp/x", "/d/ sp/x"),
])
def test_one_path_spelling(value: str, expected: str) -> None:
    assert clean_path(value) == expected


@pytest.mark.parametrize("bad", ["", "rel/x", "/a/../b", "/a/..", "/a\x00b", "/a\nb", "/" + "x" * 4096, 7, None])
def test_ambiguous_paths_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidPath):
        clean_path(bad, field="paths")


def test_within_compares_whole_components() -> None:
    assert within("/data/incoming/a", ["/data/incoming"]) and within("/data/incoming", ["/data/incoming"])
    assert not within("/data/incomingX/a", ["/data/incoming"]) and within("/x", ["/"])
