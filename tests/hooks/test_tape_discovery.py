"""The hooks find the WLCG Tape REST API through ``/.well-known/wlcg-tape-rest-api``, as FTS and gfal do.

The service mounts the API at a non-default path (``--tape-api-path``) and serves a generated, a
site-written (``--wlcg-tape-rest-api FILE``) or no (``none``) document; the access log shows where
the hook sent its calls and that it read the document once per hook.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_dcache import exceptions as exc
from airflow_dcache.hooks._settings import AuthType, ConnectionSettings
from airflow_dcache.hooks._tape_discovery import choose_endpoint
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.hooks.dcache_async import DCacheAsyncHook
from airflow_dcache.paths import OutsideAllowedRoots
from airflow_dcache.testing.server import DCacheTestServer, start_server, stop_process

CUSTOM = "/custom/tape-rest"
DISCOVERY = "/.well-known/wlcg-tape-rest-api"


def _start(tmp: Path, *flags: str) -> tuple[DCacheTestServer, Path]:
    log = tmp / "access.jsonl"
    return start_server(tmp, "--access-log", str(log), "--tape-flush-delay", "0", "--tape-stage-delay", "0",
                        *flags), log


@pytest.fixture(scope="module")
def moved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DCacheTestServer, Path]]:
    """The API under /custom/tape-rest only; the generated document says so."""
    srv, log = _start(tmp_path_factory.mktemp("moved"), "--tape-api-path", CUSTOM)
    try:
        yield srv, log
    finally:
        stop_process(srv.process)


def _conn(monkeypatch: pytest.MonkeyPatch, srv: DCacheTestServer, **extra: Any) -> str:
    conn_id = f"td_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", srv.connection_json("alice", **extra))
    return conn_id


def _lines(log: Path, start: int = 0) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()[start:] if line.strip()]


def _mark(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def _file(srv: DCacheTestServer) -> str:
    path = f"/home/alice/td-{uuid.uuid4().hex[:8]}"
    r = requests.put(srv.webdav + path, data=b"tape me", auth=("alice", srv.passwords["alice"]), timeout=10)
    assert r.status_code == 201
    return path


def _tape_round(hook: DCacheHook, path: str) -> None:
    sub = hook.stage([path], disk_lifetime="PT1H")
    assert hook.stage_status(sub.id).id == sub.id
    assert hook.archive_info([path])[0].locality
    hook.release(sub.id, [path])


def test_sync_hook_follows_the_document_and_reads_it_once(moved, monkeypatch) -> None:
    srv, log = moved
    auth = ("alice", srv.passwords["alice"])
    assert requests.post(f"{srv.api}/tape/archiveinfo", json={"paths": ["/x"]}, auth=auth, timeout=10).status_code \
        == 404  # the default location really is empty here
    path = _file(srv)
    start = _mark(log)
    with DCacheHook(_conn(monkeypatch, srv)) as hook:
        _tape_round(hook, path)
        assert hook._tape.uri == f"{srv.frontend}{CUSTOM}"
    lines = _lines(log, start)
    assert [line["path"] for line in lines].count(DISCOVERY) == 1
    tape = [line["path"] for line in lines if line["path"] != DISCOVERY]
    assert tape and all(p.startswith(CUSTOM + "/") for p in tape), tape


def test_async_hook_follows_the_document(moved, monkeypatch) -> None:
    srv, log = moved
    path = _file(srv)
    conn_id = _conn(monkeypatch, srv)

    with DCacheHook(conn_id) as sync_hook:  # the async hook only follows stage requests (what triggers do)
        sub = sync_hook.stage([path])
    assert sub.url.startswith(f"{srv.frontend}{CUSTOM}/stage/")

    async def go() -> str:
        async with DCacheAsyncHook(conn_id) as hook:
            status = await hook.stage_status(sub.id)
            await hook.cancel_stage(sub.id, [path])
            return status.id

    start = _mark(log)
    assert asyncio.run(go()) == sub.id
    lines = _lines(log, start)
    assert [line["path"] for line in lines].count(DISCOVERY) == 1
    assert all(line["path"].startswith(CUSTOM + "/") for line in lines if line["path"] != DISCOVERY)


def test_allowed_roots_still_apply_to_a_discovered_endpoint(moved, monkeypatch) -> None:
    srv, log = moved
    with DCacheHook(_conn(monkeypatch, srv, allowed_roots=["/home/alice"])) as hook:
        start = _mark(log)
        with pytest.raises(OutsideAllowedRoots):
            hook.stage(["/home/bob/f"])
    assert not _lines(log, start)  # refused before any request, the discovery GET included


def test_no_document_falls_back_to_api_v1_tape(tmp_path, monkeypatch, caplog) -> None:
    srv, log = _start(tmp_path, "--wlcg-tape-rest-api", "none")
    try:
        assert requests.get(srv.frontend + DISCOVERY, timeout=10).status_code == 404
        path = _file(srv)
        with caplog.at_level(logging.DEBUG, logger="airflow_dcache.hooks._tape_discovery"), \
                DCacheHook(_conn(monkeypatch, srv)) as hook:
            _tape_round(hook, path)
        assert any("no wlcg-tape-rest-api discovery document" in r.getMessage() for r in caplog.records)
        tape = {line["path"] for line in _lines(log) if line["path"].startswith("/api/")}
        assert tape and all(p.startswith("/api/v1/tape/") for p in tape), tape
    finally:
        stop_process(srv.process)


def test_a_site_written_document_may_name_another_host(tmp_path, monkeypatch) -> None:
    """dCache serves the file the site wrote; here it names ``localhost`` while the connection says 127.0.0.1."""
    document = tmp_path / "wlcg-tape-rest-api.json"
    document.write_text("{}")
    srv, _log = _start(tmp_path, "--wlcg-tape-rest-api", str(document), "--tape-api-path", CUSTOM)
    try:
        port = srv.frontend.rsplit(":", 1)[1]
        other = f"http://localhost:{port}{CUSTOM}"
        document.write_text(json.dumps({"sitename": "main", "endpoints": [
            {"uri": "https://tape.example.org/api/v0/tape", "version": "v0", "metadata": {}},
            {"uri": other, "version": "v1", "metadata": {}},
        ]}))
        path = _file(srv)
        with DCacheHook(_conn(monkeypatch, srv)) as hook:
            _tape_round(hook, path)
            assert hook._tape.uri == other
    finally:
        stop_process(srv.process)


def _settings(frontend: str) -> ConnectionSettings:
    return ConnectionSettings(door_url="https://door.example.org:2880", frontend_url=frontend,
                              auth_type=AuthType.NONE)


def test_endpoint_choice_refuses_what_it_cannot_use() -> None:
    https = _settings("https://dcache.example.org:3880")
    doc = {"endpoints": [{"uri": "https://a.example.org/tape/", "version": "v1"},
                         {"uri": "https://b.example.org/tape", "version": "v9"}]}
    assert choose_endpoint(https, doc, "u") == "https://a.example.org/tape"  # v9 is not spoken here
    with pytest.raises(exc.UnexpectedResponse, match="plain HTTP"):
        choose_endpoint(https, {"endpoints": [{"uri": "http://a.example.org/tape", "version": "v1"}]}, "u")
    with pytest.raises(exc.UnexpectedResponse, match="offered: v2"):
        choose_endpoint(https, {"endpoints": [{"uri": "https://a.example.org/tape", "version": "v2"}]}, "u")
    with pytest.raises(exc.UnexpectedResponse, match="not an http"):
        choose_endpoint(https, {"endpoints": [{"uri": "ftp://a.example.org/tape", "version": "v1"}]}, "u")
    with pytest.raises(exc.UnexpectedResponse, match="no endpoints list"):
        choose_endpoint(https, {"sitename": "x"}, "u")
