"""One real Airflow API server (+ dag-processor) with the dCache plugin, and the two bundled sites.

Module-scoped: starting Airflow and the sites costs ~20 s on a loaded machine, and the API tests only
read or create runs, so they share one deployment. The DAG folder holds a copy of the lead's
``dcache_ingest_pipeline`` (params ``paths``, ``function``, …; an SSE watcher on
``dcache://main/data/incoming``). Users: ``admin`` (Admin) and ``viewer`` (Viewer: may look, may not
trigger), both SimpleAuthManager users with generated passwords.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from airflow_dcache.demo.airflow_stack import AirflowStack
from airflow_dcache.demo.sites import Sites, start_sites

REPO = Path(__file__).resolve().parents[2]
INGEST = "dcache_ingest_pipeline"


@dataclass
class UIStack:
    sites: Sites
    stack: AirflowStack
    tmp: Path

    @property
    def base(self) -> str:
        return self.stack.base_url

    def password(self, user: str) -> str:
        return str(json.loads((self.stack.home / "passwords.json").read_text())[user])

    def token(self, user: str) -> str:
        r = requests.post(f"{self.base}/auth/token", json={"username": user, "password": self.password(user)},
                          timeout=30)
        r.raise_for_status()
        return str(r.json()["access_token"])

    def session(self, user: str | None) -> requests.Session:
        s = requests.Session()
        if user:
            s.headers["Authorization"] = f"Bearer {self.token(user)}"
        return s

    def upload(self, path: str, data: bytes, user: str = "alice") -> None:
        r = requests.put(self.sites.main.webdav + path, data=data, auth=(user, self.sites.passwords[user]),
                         timeout=30)
        assert r.status_code in (200, 201, 204), r.text


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIStack]:
    tmp = tmp_path_factory.mktemp("ui")
    sites = start_sites(tmp / "sites", fast_hash=True, log_dir=tmp)
    dags = tmp / "dags"
    dags.mkdir()
    shutil.copy(REPO / "dags" / f"{INGEST}.py", dags)
    env = {
        **sites.connections(),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # runs are created, never executed here
        "AIRFLOW_DCACHE_FUNCTION_RUNTIME": "local",
    }
    stack = AirflowStack(tmp / "airflow", dags, env)
    try:
        stack.start(("dag-processor", "api-server"))
        _wait_dag(stack, INGEST)
        stack.api.unpause(INGEST)  # watchers get their trigger rows only for active DAGs; no scheduler runs
        _wait_watcher(stack, "dcache://main/data/incoming")
        yield UIStack(sites, stack, tmp)
    finally:
        stack.stop()
        sites.stop()


def _wait_dag(stack: AirflowStack, dag_id: str, timeout: float = 180) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        errors = stack.api.import_errors()
        if errors:
            raise RuntimeError(f"DAG import errors: {errors}")
        try:
            stack.api.dag(dag_id)
            return
        except requests.HTTPError:
            time.sleep(1)
    raise TimeoutError(f"{dag_id} not parsed after {timeout} s")


def _wait_watcher(stack: AirflowStack, uri: str, timeout: float = 120) -> None:
    """The dag-processor links a watcher's trigger row on its next parse after the unpause."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assets = stack.api.request("GET", "/assets", params={"uri_pattern": uri})["assets"]
        if any(a["uri"] == uri and a["watchers"] for a in assets):
            return
        time.sleep(1)
    raise TimeoutError(f"no watcher on {uri} after {timeout} s")


@pytest.fixture
def main_hook(ui_stack: UIStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """The hook as the test's own ``pipeline`` client of ``main`` (to set up xattrs, list channels)."""
    from airflow_dcache.hooks import DCacheHook

    monkeypatch.setenv("AIRFLOW_CONN_DCACHE_MAIN", ui_stack.sites.connections()["AIRFLOW_CONN_DCACHE_MAIN"])
    with DCacheHook("dcache_main") as hook:
        yield hook
