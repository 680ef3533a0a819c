"""Pipeline test fixtures: two real service instances ("main" with fast tape emulation, "buffer"), as
``AIRFLOW_CONN_*`` connections of alice, hooks on them, a per-test working directory and a minimal task
context for executing operators directly.

The instances are module-scoped (starting one takes about a second) and speak plain HTTP on 127.0.0.1;
every test works in its own directory.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_dcache.hooks.dcache import DCacheHook
from tests.conftest import DCacheServer, fresh_dir, start_server
from tests.operators.conftest import FAST_TAPE, RecordingTI, conn_json


@pytest.fixture(scope="module")
def pipe_main_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DCacheServer]:
    server = start_server(tmp_path_factory.mktemp("pipe-main"), *FAST_TAPE)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pipe_buffer_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DCacheServer]:
    server = start_server(tmp_path_factory.mktemp("pipe-buffer"), "--allow-insecure-macaroons", "--site", "buffer",
                          "--tpc-marker-period", "0.2")
    yield server
    server.stop()


@pytest.fixture
def pipe_main_conn(pipe_main_site: DCacheServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_PIPE_MAIN", conn_json(pipe_main_site))
    return "pipe_main"


@pytest.fixture
def pipe_buffer_conn(pipe_buffer_site: DCacheServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_PIPE_BUFFER", conn_json(pipe_buffer_site))
    return "pipe_buffer"


@pytest.fixture
def pipe_bob_conn(pipe_main_site: DCacheServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_PIPE_BOB", conn_json(pipe_main_site, "bob"))
    return "pipe_bob"


@pytest.fixture
def pipe_main(pipe_main_conn: str) -> Iterator[DCacheHook]:
    with DCacheHook(pipe_main_conn) as hook:
        yield hook


@pytest.fixture
def pipe_buffer(pipe_buffer_conn: str) -> Iterator[DCacheHook]:
    with DCacheHook(pipe_buffer_conn) as hook:
        yield hook


@pytest.fixture
def pipe_workdir(pipe_main: DCacheHook) -> Iterator[str]:
    """A fresh directory in alice's home on ``main``, removed afterwards."""
    with fresh_dir(pipe_main, "/home/alice/pl") as path:
        yield path


@pytest.fixture
def task_context() -> dict[str, Any]:
    return {"ti": RecordingTI()}


def put(hook: DCacheHook, path: str, data: bytes | None = None) -> bytes:
    """Upload ``data`` (random 4 KiB by default) to ``path`` (parents made), replacing what is there."""
    data = data if data is not None else os.urandom(4096)
    hook.upload(io.BytesIO(data), path, make_parents=True)
    return data
