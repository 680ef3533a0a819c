"""Fixtures shared by the function-runner tests (``tests/functions`` and ``tests/operators/test_function*``).

Import the fixtures into a test module with ``from tests.functions.support import *``. Everything is
real: the bundled dCache service over HTTP, a real Docker engine started by ``scripts/docker-engine``
and images built by the same code as ``make function-images``.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from airflow_dcache.functions.registry import LIBRARY_DIR
from airflow_dcache.hooks.dcache import DCacheHook

REPO = Path(__file__).resolve().parents[2]
FIXTURE_FUNCTIONS = Path(__file__).resolve().parent / "fixtures"
REQUIRE_DOCKER = os.environ.get("AIRFLOW_DCACHE_REQUIRE_DOCKER") == "1"

__all__ = [
    "FIXTURE_FUNCTIONS",
    "REPO",
    "FakeTI",
    "alice_conn",
    "area",
    "cxi_file",
    "dc",
    "docker_url",
    "function_image",
    "make_context",
    "write_cxi",
]


@pytest.fixture(scope="session")
def docker_url() -> str:
    """The engine from ``scripts/docker-engine`` (started when none runs); skip only when it cannot start."""
    try:
        proc = subprocess.run([str(REPO / "scripts/docker-engine")], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        reason = f"scripts/docker-engine could not run: {exc}"
    else:
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("DOCKER_HOST=")]
        if proc.returncode == 0 and lines:
            return lines[-1].split("=", 1)[1]
        reason = f"no Docker engine could be started: {proc.stderr.strip()[-500:]}"
    if REQUIRE_DOCKER:
        pytest.fail(reason)
    pytest.skip(reason)


_built: dict[str, str] = {}


@pytest.fixture(scope="session")
def function_image(docker_url: str) -> Callable[[str], str]:
    """``function_image(name)`` builds (cached by content hash) and returns the image tag."""
    from airflow_dcache.functions.images import build_base, build_function, docker_client
    from airflow_dcache.functions.registry import find_function

    client = docker_client(docker_url)

    def build(name: str) -> str:
        if name not in _built:
            base = build_base(client, log=lambda *_: None)
            where = FIXTURE_FUNCTIONS if (FIXTURE_FUNCTIONS / name).is_dir() else LIBRARY_DIR
            _built[name] = build_function(client, find_function(name, where), base, log=lambda *_: None)
        return _built[name]

    return build


@pytest.fixture
def alice_conn(monkeypatch: pytest.MonkeyPatch, dcache_server: Any) -> str:
    conn_id = f"fn_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({
        "conn_type": "dcache", "host": dcache_server.webdav, "login": "alice",
        "password": dcache_server.passwords["alice"], "extra": {"frontend_url": dcache_server.frontend},
    }))
    return conn_id


@pytest.fixture
def dc(alice_conn: str) -> Iterator[DCacheHook]:
    with DCacheHook(alice_conn) as hook:
        yield hook


@pytest.fixture
def area(dc: DCacheHook) -> Iterator[str]:
    """A fresh directory in alice's home with ``in/`` and ``out/``; removed afterwards."""
    path = f"/home/alice/fn-{uuid.uuid4().hex[:12]}"
    dc.mkdir(f"{path}/in")
    yield path
    dc.delete(path, recursive=True, missing_ok=True)


def write_cxi(path: Path, frames: int = 5, height: int = 32, width: int = 48, seed: int = 1) -> np.ndarray:
    """A CXI-style file: /entry_1/data_1/data NxHxW uint16 frames with a bright spot."""
    import h5py

    rng = np.random.default_rng(seed)
    data = rng.poisson(5, size=(frames, height, width)).astype(np.uint16)
    data[:, height // 2, width // 2] = 60000
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry_1/data_1/data", data=data, chunks=(1, height, width))
        f["/entry_1"].attrs["NX_class"] = "NXentry"
        f.attrs["cxi_version"] = 160
    return data


@pytest.fixture
def cxi_file(tmp_path: Path) -> Path:
    path = tmp_path / "run42.cxi"
    write_cxi(path)
    return path


@dataclass
class FakeTI:
    """The task-instance surface the operator uses (xcom_push and ids); Airflow's own is tested elsewhere."""

    dag_id: str = "fn_dag"
    task_id: str = "fn_task"
    map_index: int = -1
    xcom: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        json.dumps(value)  # XCom values must be JSON-serialisable
        self.xcom[key] = value


@pytest.fixture
def make_context() -> Callable[..., dict[str, Any]]:
    def factory(run_id: str | None = None, map_index: int = -1) -> dict[str, Any]:
        return {"ti": FakeTI(map_index=map_index), "run_id": run_id or f"manual__{uuid.uuid4().hex[:8]}"}

    return factory
