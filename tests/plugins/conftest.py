"""A real Airflow (API server with the dCache plugin, dag-processor, scheduler, triggerer) and the two sites.

Module-scoped: starting Airflow and the sites costs ~20 s on a loaded machine, and the tests share one
deployment. The DAG folder holds

- a copy of the lead's ``dcache_ingest_pipeline`` (params ``paths``, ``function``, …; the DAG the
  view's "run a function" targets), left **paused**: runs created through the view stay queued, and
  its watcher is not started, so uploads to ``/data/incoming`` start nothing;
- ``ui_probe_consumer`` (``tests/plugins/dags``), unpaused: a real SSE watcher on
  ``dcache://main/data/videos`` (``*.mp4``) whose runs mark their files processed (files named
  ``*hold*`` stay waiting), so per-event status and lag are about real runs.

Users: ``admin`` (Admin), ``viewer`` (Viewer: may look, may not trigger) and ``alice`` (Viewer),
SimpleAuthManager users with generated passwords. ``alice`` is mapped to her own dCache identity
(``[dcache] user_connections`` → ``dcache_alice``, a connection as the scientist ``alice`` of ``main``);
``admin`` and ``viewer`` have none, so the view acts for them as the site connection without its
``admin`` role, inside the allowed roots: the probe watcher's ``/data/videos`` plus
``[dcache] ui_extra_roots`` = ``/data/incoming, /data/processed``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from airflow_dcache.testing.airflow_stack import AirflowStack
from airflow_dcache.testing.sites import Sites, start_sites

REPO = Path(__file__).resolve().parents[2]
INGEST = "dcache_ingest_pipeline"
PROBE = "ui_probe_consumer"
VIDEOS = "dcache://main/data/videos"


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

    def wait_processed(self, path: str, timeout: float = 180) -> dict[str, object]:
        """Poll the view's status of a watched file until a run marked it processed."""
        import time

        s = self.session("admin")
        deadline = time.monotonic() + timeout
        doc: dict[str, object] = {}
        while time.monotonic() < deadline:
            r = s.get(f"{self.base}/dcache/api/events/status", timeout=30,
                      params={"conn": "dcache_main", "path": path, "kind": "closed_after_write"})
            doc = r.json()
            if doc.get("status") == "processed":
                return doc
            time.sleep(1)
        raise TimeoutError(f"{path} not processed after {timeout} s: {doc}")

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
    shutil.copy(Path(__file__).parent / "dags" / f"{PROBE}.py", dags)
    env = {
        **sites.connections(),
        "AIRFLOW_CONN_DCACHE_ALICE": json.dumps(sites.main.connection("alice", sites.passwords["alice"])),
        "AIRFLOW__DCACHE__USER_CONNECTIONS": json.dumps({"alice": "dcache_alice"}),
        "AIRFLOW__DCACHE__UI_EXTRA_ROOTS": "/data/incoming,/data/processed",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer,alice:viewer",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW_DCACHE_FUNCTION_RUNTIME": "local",
    }
    stack = AirflowStack(tmp / "airflow", dags, env)
    try:
        stack.start()
        _wait_dag(stack, INGEST)
        _wait_dag(stack, PROBE)
        stack.api.unpause(PROBE)  # a watcher gets its trigger row only while its DAG is active
        _wait_watcher(stack, VIDEOS)
        ui = UIStack(sites, stack, tmp)
        _warm_up(ui)
        yield ui
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


def _warm_up(ui: UIStack, attempts: int = 12) -> None:
    """Upload until a file gets processed: the triggerer subscribes some seconds after the trigger row
    appears, and a watcher's first start reports only what happens after it (no initial listing)."""
    for i in range(attempts):
        path = f"/data/videos/warmup-{i}.mp4"
        ui.upload(path, b"warm-up", user="pipeline")
        try:
            ui.wait_processed(path, timeout=15)
            return
        except TimeoutError:
            continue
    raise TimeoutError("the probe consumer processed no upload; see the triggerer and scheduler logs")


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
