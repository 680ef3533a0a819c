"""The hooks honour ``Retry-After`` on 429 (and 503) and never retry a 413, against the real service.

The evidence is the service's access log (``--access-log``): one line per request that reached a
login, plus one line with ``"status": 429`` per request the rate limiter (``--rate-limit``) refused.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from airflow_dcache import exceptions as exc
from airflow_dcache.hooks._protocol import RETRY_AFTER_MAX, parse_retry_after, retry_wait
from airflow_dcache.hooks.dcache import DCacheHook, _Retry
from airflow_dcache.hooks.dcache_async import DCacheAsyncHook
from airflow_dcache.retry_policy import DCacheRetryPolicy
from airflow_dcache.testing.server import DCacheTestServer, start_server, stop_process


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DCacheTestServer, Path]]:
    """One request a second per client: the second of two quick calls gets 429 + ``Retry-After: 1``."""
    base = tmp_path_factory.mktemp("rate")
    log = base / "access.jsonl"
    srv = start_server(base, "--rate-limit", "1", "--access-log", str(log))
    try:
        yield srv, log
    finally:
        stop_process(srv.process)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DCacheTestServer, Path]]:
    base = tmp_path_factory.mktemp("limits")
    log = base / "access.jsonl"
    srv = start_server(base, "--access-log", str(log))
    try:
        yield srv, log
    finally:
        stop_process(srv.process)


def _conn(monkeypatch: pytest.MonkeyPatch, srv: DCacheTestServer) -> str:
    conn_id = f"ra_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", srv.connection_json("alice"))
    return conn_id


def _lines(log: Path, start: int = 0) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()[start:] if line.strip()]


def _mark(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def _sync_calls(conn_id: str) -> list[Any]:
    with DCacheHook(conn_id) as hook:
        return [hook.submit_bulk_request("LOG_TARGET", ["/home/alice"]) for _ in range(2)]


def _async_calls(conn_id: str) -> list[Any]:
    async def go() -> list[Any]:
        async with DCacheAsyncHook(conn_id) as hook:  # no bulk submission on the async hook: a channel is a POST too
            return [await hook.create_channel() for _ in range(2)]

    return asyncio.run(go())


@pytest.mark.parametrize(("calls", "path"), [(_sync_calls, "/api/v1/bulk-requests"),
                                             (_async_calls, "/api/v1/events/channels")], ids=["sync", "async"])
def test_429_with_retry_after_is_waited_out_even_for_a_post(limited, monkeypatch, calls, path) -> None:
    srv, log = limited
    conn_id = _conn(monkeypatch, srv)
    start = _mark(log)
    results = calls(conn_id)
    assert len(set(map(str, results))) == 2  # both requests were made, each once
    posts = [line for line in _lines(log, start) if line["path"] == path]
    assert [line.get("status") for line in posts].count(429) >= 1, posts  # the limiter did refuse one
    assert len([line for line in posts if "status" not in line]) == 2  # and each went through once


def test_a_read_is_retried_after_429_too(limited, monkeypatch) -> None:
    srv, log = limited
    with DCacheHook(_conn(monkeypatch, srv)) as hook:
        start = _mark(log)
        assert [hook.stat("/home/alice").is_dir for _ in range(2)] == [True, True]
    assert any(line.get("status") == 429 for line in _lines(log, start))


def test_413_fails_at_once_after_exactly_one_request(plain, monkeypatch) -> None:
    srv, log = plain
    conn_id = _conn(monkeypatch, srv)
    targets = [f"/home/alice/t{i}" for i in range(501)]
    with DCacheHook(conn_id) as hook:
        start = _mark(log)
        with pytest.raises(exc.PayloadTooLarge, match="exceeds maximum 500 for directory expansion NONE"):
            hook.submit_bulk_request("PIN", targets)
    posts = [line for line in _lines(log, start) if line["method"] == "POST"]
    assert [line["path"] for line in posts] == ["/api/v1/bulk-requests"]

    start = _mark(log)
    with DCacheHook(conn_id) as hook, pytest.raises(exc.PayloadTooLarge, match="exceeds maximum 500") as info:
        hook.stage(targets)
    assert DCacheRetryPolicy().evaluate(info.value, 1, 3).action.name.lower() == "fail"
    posts = [line for line in _lines(log, start) if line["method"] == "POST"]
    assert [line["path"] for line in posts] == ["/api/v1/tape/stage"]


def test_retry_policy_413_is_permanent_429_is_not() -> None:
    policy = DCacheRetryPolicy()
    assert policy.evaluate(exc.PayloadTooLarge("too many", status=413), 1, 3).action.name.lower() == "fail"
    assert policy.evaluate(exc.LimitExceeded("busy", status=429), 1, 3).action.name.lower() != "fail"


def test_parse_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("1") == 1.0
    assert parse_retry_after(" 120 ") == 120.0
    assert parse_retry_after(formatdate(1_000_030, usegmt=True), now=1_000_000) == pytest.approx(30.0)
    assert parse_retry_after(formatdate(999_000, usegmt=True), now=1_000_000) == 0.0  # in the past: now
    for garbage in (None, "", "soon", "-5", "1.5e3"):
        assert parse_retry_after(garbage) is None


def test_retry_wait_rules() -> None:
    after = {"Retry-After": "1"}
    assert retry_wait(429, after, "POST", 0, 3, 100.0) == 1.0  # refused before processing: any method
    assert retry_wait(429, {}, "GET", 0, 3, 100.0) is None  # a quota without Retry-After does not clear soon
    assert retry_wait(413, after, "GET", 0, 3, 100.0) is None  # a limit never moves
    assert retry_wait(429, after, "GET", 3, 3, 100.0) is None  # retries used up
    assert retry_wait(429, after, "GET", 0, 3, 0.5) is None  # past the call's deadline
    assert retry_wait(429, {"Retry-After": str(int(RETRY_AFTER_MAX) + 1)}, "GET", 0, 3, 1e9) is None
    assert retry_wait(503, after, "GET", 0, 3, 100.0) == 1.0
    assert retry_wait(503, {}, "HEAD", 0, 3, 100.0) == 0.5  # the backoff
    assert retry_wait(503, after, "POST", 0, 3, 100.0) is None  # may have been processed


def test_sync_transport_retry_never_honours_retry_after_on_413() -> None:
    retry = _Retry(total=3, status_forcelist=[503], allowed_methods=["GET"], respect_retry_after_header=True)
    assert not retry.is_retry("GET", 413, has_retry_after=True)
    assert not retry.is_retry("GET", 429, has_retry_after=True)  # the hook's own loop handles 429
    assert retry.is_retry("GET", 503, has_retry_after=True)
