"""SSE watcher end to end on a real scheduler + triggerer + dag-processor (SQLite) and the bundled sites.

One Airflow stack serves three phases in order (starting a stack costs most of the time): a single
upload, the 100-file burst, and a 300-file stream with a triggerer restart in the middle. The
consumer DAG (``dags/storage_consumer.py``) is a plain ``schedule=[asset]`` DAG; "processed" means
its task claimed the event's marker, so every file must be in exactly one run's ``done`` list.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.testing.sites import Sites

DAGS = Path(__file__).parent / "dags"
DAG_ID = "storage_consumer"


def _processed(stack: Any) -> tuple[Counter, dict[str, float]]:
    counts: Counter = Counter()
    started: dict[str, float] = {}
    for run in stack.api.dag_runs(DAG_ID):
        if run["state"] != "success":
            continue
        value = stack.api.xcom(DAG_ID, run["dag_run_id"], "process") or {}
        for path in value.get("done", []):
            counts[path] += 1
            started[path] = value["started"]
    return counts, started


def _wait_processed(stack: Any, paths: list[str], timeout: float) -> tuple[Counter, dict[str, float]]:
    deadline = time.monotonic() + timeout
    counts: Counter = Counter()
    started: dict[str, float] = {}
    while time.monotonic() < deadline:
        counts, started = _processed(stack)
        if all(counts[p] for p in paths):
            return counts, started
        time.sleep(2)
    missing = [p for p in paths if not counts[p]]
    raise AssertionError(f"{len(missing)} of {len(paths)} files never processed, e.g. {missing[:3]}")


def _wait_watching(hook: DCacheHook, timeout: float = 120) -> None:
    """The trigger runs in the triggerer: wait until its channel has an inotify subscription."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for channel in hook.list_channels():
            if any("/inotify/" in s for s in hook.list_subscriptions(channel)):
                return
        time.sleep(1)
    raise AssertionError("the triggerer never subscribed")


@pytest.mark.timeout(900)
def test_upload_burst_and_triggerer_restart(dcache_sites: Sites, airflow_stack: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    watch = f"/data/incoming/e2e-{uuid.uuid4().hex[:8]}"
    env = dict(dcache_sites.connections(), E2E_WATCH_DIR=watch)
    monkeypatch.setenv("AIRFLOW_CONN_E2E_UPLOADER", env["AIRFLOW_CONN_DCACHE_MAIN"])
    hook = DCacheHook("e2e_uploader")
    hook.mkdir(watch)
    stack = airflow_stack(DAGS, env, dag_ids=[DAG_ID])
    _wait_watching(hook)
    report: dict[str, Any] = {}

    def put(path: str) -> float:
        hook.upload(io.BytesIO(b"data " + path.encode()), path, checksum="none")
        return time.time()

    # 1. one upload -> a run whose triggering_asset_events hold the file
    single = f"{watch}/single.h5"
    put(single)
    counts, _ = _wait_processed(stack, [single], timeout=120)
    assert counts[single] == 1

    # 2. 100 files within about a second, nothing after them
    burst = [f"{watch}/burst-{i:03d}.h5" for i in range(100)]
    with ThreadPoolExecutor(8) as pool:
        t0 = time.time()
        ends = list(pool.map(put, burst))
    report["burst_upload_s"] = round(max(ends) - t0, 2)
    counts, started = _wait_processed(stack, burst, timeout=180)
    report["burst_last_processing_start_after_last_upload_s"] = round(max(started[p] for p in burst) - max(ends), 2)
    assert all(counts[p] == 1 for p in burst), {p: c for p, c in counts.items() if c != 1}

    # 3. 300 files as a stream, the triggerer restarted after the first 100
    stream = [f"{watch}/stream-{i:03d}.h5" for i in range(300)]
    for i, path in enumerate(stream):
        put(path)
        if i == 100:
            stack.restart("triggerer")
        time.sleep(0.02)
    counts, _ = _wait_processed(stack, stream, timeout=300)
    time.sleep(15)  # anything redelivered late would show up as a second claim attempt, never a second 'done'
    counts, _ = _processed(stack)
    assert all(counts[p] == 1 for p in [single, *burst, *stream])
    # the end of the stream was followed by one empty flush batch, and a run consumed it: the safety net
    # against Airflow's asset queue dropping a batch that lands while the run before it is created
    def flushes() -> list[dict[str, Any]]:
        events = stack.api.asset_events(f"dcache://main{watch}")
        payloads = [((e.get("extra") or {}).get("payload") or e.get("extra") or {}, e) for e in events]
        return [dict(e, payload=p) for p, e in payloads if p.get("flush")]

    found = flushes()
    report["flush_events"] = len(found)
    assert found and all(not e["payload"]["events"] for e in found), [
        (e.get("timestamp")[11:22], e["extra"]["payload"].get("count"), e["extra"]["payload"].get("flush"))
        for e in stack.api.asset_events(f"dcache://main{watch}")]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(e.get("created_dagruns") for e in found):
        time.sleep(2)
        found = flushes()
    assert all(e.get("created_dagruns") for e in found), found
    runs = stack.api.dag_runs(DAG_ID)
    report["runs"] = len(runs)
    report["failed_runs"] = sum(r["state"] == "failed" for r in runs)
    print("E2E-REPORT", json.dumps(report))
    assert report["failed_runs"] == 0
