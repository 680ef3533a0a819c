"""Operator and sensor fixtures: two real service instances (site "main" with fast tape emulation, site
"buffer"), connections as ``AIRFLOW_CONN_*`` variables, and a minimal task context.

The instances are module-scoped (starting one takes about a second); each test works in its own
directory. The context's ``ti`` only records XCom pushes: executing an operator directly needs nothing
more, and the full scheduler path is covered by the ``dag.test()`` test.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_dcache.hooks.dcache import DCacheHook
from tests.conftest import DCacheServer, connection_json, fresh_dir, start_server

FAST_TAPE = ("--allow-insecure-macaroons", "--tape-flush-delay", "0.3", "--tape-stage-delay", "0.3",
             "--tpc-marker-period", "0.2")


conn_json = connection_json  # the name this folder's tests import


@pytest.fixture(scope="module")
def main_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DCacheServer]:
    server = start_server(tmp_path_factory.mktemp("op-main"), *FAST_TAPE)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def buffer_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DCacheServer]:
    server = start_server(tmp_path_factory.mktemp("op-buffer"), "--allow-insecure-macaroons", "--site", "buffer",
                          "--tpc-marker-period", "0.2")
    yield server
    server.stop()


@pytest.fixture
def main_conn(main_site: DCacheServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_DC_MAIN", conn_json(main_site))
    return "dc_main"


@pytest.fixture
def buffer_conn(buffer_site: DCacheServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_DC_BUFFER", conn_json(buffer_site))
    return "dc_buffer"


@pytest.fixture
def main(main_conn: str) -> Iterator[DCacheHook]:
    with DCacheHook(main_conn) as hook:
        yield hook


@pytest.fixture
def workdir(main: DCacheHook) -> Iterator[str]:
    with fresh_dir(main, "/home/alice/op") as path:
        yield path


class RecordingTI:
    """Records ``xcom_push`` calls (the only task-instance method the operators use)."""

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        json.dumps(value)  # XCom values must be plain JSON
        self.xcom[key] = value


@pytest.fixture
def context() -> dict[str, Any]:
    return {"ti": RecordingTI()}


def put(hook: DCacheHook, path: str, data: bytes | None = None) -> bytes:
    import io

    data = data if data is not None else os.urandom(4096)
    hook.upload(io.BytesIO(data), path)
    return data


def run_trigger(trigger: Any, timeout: float = 60) -> dict[str, Any]:
    """Run a trigger's ``run()`` for real until its (single) event; fail if it hangs."""

    async def first() -> dict[str, Any]:
        gen = trigger.run()
        try:
            ev = await asyncio.wait_for(gen.__anext__(), timeout)
        finally:
            await gen.aclose()
        return ev.payload

    return asyncio.run(first())


def settle(hook: DCacheHook, path: str, qos: str, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = hook.stat(path, qos=True)
        if entry.current_qos == qos and not entry.target_qos:
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} did not reach {qos}")
