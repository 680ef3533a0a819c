"""docs/backfills.md's event-driven DAG, as printed, on a real scheduler/triggerer/dag-processor.

Three uploads are processed by event runs (the watcher); a backfill over their one-minute interval then
processes nothing (every version carries the DAG's done-marker), and a backfill with
``{"reprocess": true}`` processes all three again.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_dcache.demo.samples import write_cxi
from airflow_dcache.testing.airflow_stack import AirflowStack
from airflow_dcache.testing.sites import Sites, wait_for_watches

ROOT_DIR = Path(__file__).resolve().parents[2]
DAG_ID = "beamline_inventory"
FOLDER = "/data/incoming/beamline/run-e2e"
FINAL = {"success", "failed"}


def doc_dag() -> str:
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", (ROOT_DIR / "docs" / "backfills.md").read_text(),
                                      flags=re.S) if b.startswith("# dags/beamline_inventory.py")]
    return block


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def processed(stack: AirflowStack, run_id: str) -> list[str]:
    """Paths the run's mapped ``inventory`` tasks reported."""
    out = []
    for ti in stack.api.task_instances(DAG_ID, run_id):
        if ti["task_id"] == "inventory" and ti["state"] == "success":
            out.append(stack.api.xcom(DAG_ID, run_id, "inventory", map_index=ti["map_index"])["path"])
    return sorted(out)


@pytest.mark.timeout(900)
def test_event_runs_then_backfill_skips_then_reprocess(dcache_sites: Sites, airflow_stack: Any,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_dcache.hooks import DCacheHook

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "beamline_inventory.py").write_text(doc_dag())
    sites = dcache_sites
    for key, value in sites.connections().items():
        monkeypatch.setenv(key, value)
    with DCacheHook("dcache_main") as hook:
        hook.mkdir(FOLDER)
    stack = airflow_stack(dags, {**sites.connections(), "BEAMLINE_CRON": "* * * * *"}, dag_ids=[DAG_ID])
    stack.api.request("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    wait_for_watches("dcache_main", 1)

    # all three uploads inside one minute, so one backfill run covers them
    if datetime.now(UTC).second > 40:
        time.sleep(61 - datetime.now(UTC).second)
    names = [f"b{i}.h5" for i in range(3)]
    paths = sorted(f"{FOLDER}/{n}" for n in names)
    for i, name in enumerate(names):
        local = write_cxi(tmp_path / name, seed=300 + i, frames=2)
        requests.put(f"{sites.main.webdav}{FOLDER}/{name}", data=local.read_bytes(),
                     auth=("pipeline", sites.passwords["pipeline"]), timeout=60).raise_for_status()
    with DCacheHook("dcache_main") as hook:
        mtimes = [hook.stat(p).mtime or 0 for p in paths]
    (minute,) = {datetime.fromtimestamp(m / 1000, UTC).replace(second=0, microsecond=0) for m in mtimes}

    def by_events() -> list[str]:
        runs = [r for r in stack.api.dag_runs(DAG_ID) if r["run_type"] == "asset_triggered"]
        if not runs or any(r["state"] not in FINAL for r in runs):
            return []
        assert {r["state"] for r in runs} == {"success"}, runs
        done = sorted(p for r in runs for p in processed(stack, r["dag_run_id"]))
        return done if done == paths else []

    _wait(by_events, 240, "the event runs to process the three uploads")
    # the interval [minute, minute + 1) must have ended, and the timetable's own runs settled
    time.sleep(max(0.0, (minute + timedelta(minutes=1, seconds=3) - datetime.now(UTC)).total_seconds()))
    _wait(lambda: not [r for r in stack.api.dag_runs(DAG_ID) if r["state"] not in FINAL], 180, "runs settled")

    def backfill_run(conf: dict[str, Any]) -> dict[str, Any]:
        backfill = stack.backfill(DAG_ID, minute.isoformat(), minute.isoformat(), dag_run_conf=conf,
                                  reprocess_behavior="completed")
        runs = [r for r in stack.api.dag_runs(DAG_ID)
                if r["run_type"] == "backfill" and r.get("conf") == conf
                and datetime.fromisoformat(r["logical_date"].replace("Z", "+00:00")) == minute]
        assert runs, (backfill, stack.api.dag_runs(DAG_ID))
        return max(runs, key=lambda r: r.get("end_date") or "")

    skipped = backfill_run({})
    assert skipped["state"] == "success", skipped
    assert stack.api.xcom(DAG_ID, skipped["dag_run_id"], "files") == []  # all three already processed
    assert processed(stack, skipped["dag_run_id"]) == []

    again = backfill_run({"reprocess": True})
    assert again["state"] == "success", again
    assert processed(stack, again["dag_run_id"]) == paths
