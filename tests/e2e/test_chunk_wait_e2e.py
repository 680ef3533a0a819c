"""The chunked pipeline's deferred ``wait_archived`` end to end: real scheduler, triggerer, dag-processor, API.

Tape flushes take 15 s on ``main`` here, so every chunk's wait really defers to the triggerer. One file
is replaced while its chunk waits: it alone fails at ``wait_archived`` (as the older version it was
collected as), its chunk-mates are archived and recorded, and each chunk costs one trigger. A second
run with ``target_qos=disk`` does not wait for tape at all.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_dcache.demo import default_dags_folder
from airflow_dcache.demo.samples import write_cxi
from airflow_dcache.testing.airflow_stack import AirflowStack
from airflow_dcache.testing.sites import Sites, start_sites, wait_for_watches

INGEST = "dcache_ingest_pipeline"
FLUSH = 15


@pytest.fixture(scope="module")
def facility(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sites, AirflowStack]]:
    base = tmp_path_factory.mktemp("chunk-wait-e2e")
    with contextlib.ExitStack() as cleanup:
        sites = start_sites(base / "sites", fast_hash=True, log_dir=base, main_args=("--tape-flush-delay", str(FLUSH)))
        cleanup.callback(sites.stop)
        env = {**sites.connections(), "AIRFLOW_DCACHE_FUNCTION_RUNTIME": "local",
               "AIRFLOW_DCACHE_PIPELINE_DESIGN": "chunked"}
        stack = cleanup.enter_context(AirflowStack(base / "airflow", default_dags_folder(), env))
        stack.wait_dags([INGEST])
        os.environ.update(sites.connections())
        wait_for_watches("dcache_main", 2)
        yield sites, stack


def _upload(sites: Sites, tmp_path: Path, folder: str, names: list[str], seed: int = 0) -> None:
    auth = ("pipeline", sites.passwords["pipeline"])
    with requests.Session() as s:
        s.request("MKCOL", f"{sites.main.webdav}{folder}", auth=auth, timeout=60)
        for i, name in enumerate(names):
            data = write_cxi(tmp_path / name, seed=seed + i, frames=2).read_bytes()
            s.put(f"{sites.main.webdav}{folder}/{name}", data=data, auth=auth, timeout=60).raise_for_status()


def _states(stack: AirflowStack, run_id: str, task_id: str) -> list[str]:
    return [ti["state"] for ti in stack.api.task_instances(INGEST, run_id) if ti["task_id"] == task_id]


def _until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def _finish(stack: AirflowStack, run_id: str, timeout: float = 600) -> str:
    state = "?"

    def done() -> bool:
        nonlocal state
        state = stack.api.dag_run(INGEST, run_id)["state"]
        return state in ("success", "failed")

    _until(done, timeout, f"run {run_id} finished (state {state})")
    return state


def _trigger_logs(stack: AirflowStack, run_id: str) -> list[Path]:
    base = stack.home / "logs" / f"dag_id={INGEST}" / f"run_id={run_id}" / "task_id=chunks.record_when_archived"
    return sorted(base.glob("map_index=*/*.trigger.*"))


@pytest.mark.timeout(900)
def test_each_chunk_waits_in_one_trigger_and_a_replaced_file_fails_alone(facility, tmp_path: Path) -> None:
    sites, stack = facility
    folder = "/data/incoming/waits"
    names = [f"w-{i:02d}.hdf5" for i in range(20)]
    _upload(sites, tmp_path, folder, names)
    run_id = stack.api.trigger(INGEST, {"paths": [f"{folder}/*.hdf5"], "chunk_max_files": 10}, note="deferred waits")
    _until(lambda: _states(stack, run_id, "chunks.record_when_archived") == ["deferred", "deferred"], 400,
           "both chunks' waits deferred")
    replaced = f"{folder}/w-03.hdf5"
    _upload(sites, tmp_path, folder, ["w-03.hdf5"], seed=500)  # a new version while its chunk waits for tape
    assert _finish(stack, run_id) == "failed"

    failed = stack.api.xcom(INGEST, run_id, "report", key="failed")
    assert [(f["path"], f["stage"]) for f in failed] == [(replaced, "wait_archived")], failed
    assert "changed since the event" in failed[0]["reason"]
    outcomes = stack.api.xcom(INGEST, run_id, "report", key="outcomes")
    assert outcomes["counts"] == {"processed": 19, "failed": 1}
    waited = [f["timings"]["wait_archived"] for f in outcomes["files"] if f["outcome"] == "processed"]
    assert len(waited) == 19 and all(start <= end for start, end in waited), waited
    logs = _trigger_logs(stack, run_id)
    assert len(logs) == 2, logs  # one trigger per chunk, not one per file
    text = "".join(p.read_text() for p in logs)
    assert text.count("Trigger fired event") == 2, text
    from airflow_dcache.hooks import DCacheHook

    with DCacheHook("dcache_main") as main:
        for entry in main.list_dir(folder, locality=True, qos=True):
            if entry.path != replaced:
                assert entry.locality == "ONLINE_AND_NEARLINE" and entry.current_qos == "disk+tape", entry


@pytest.mark.timeout(600)
def test_a_disk_rule_is_not_waited_for_on_tape(facility, tmp_path: Path) -> None:
    sites, stack = facility
    folder = "/data/incoming/disk-only"
    names = [f"d-{i:02d}.hdf5" for i in range(4)]
    _upload(sites, tmp_path, folder, names, seed=900)
    run_id = stack.api.trigger(INGEST, {"paths": [f"{folder}/*.hdf5"], "target_qos": "disk"}, note="disk rule")
    assert _finish(stack, run_id) == "success"
    outcomes = stack.api.xcom(INGEST, run_id, "report", key="outcomes")
    assert outcomes["counts"] == {"processed": 4}
    waited = [f["timings"]["wait_archived"] for f in outcomes["files"]]
    assert all(end - start < FLUSH for start, end in waited), waited  # no flush to wait for
    from airflow_dcache.hooks import DCacheHook

    with DCacheHook("dcache_main") as main:
        for entry in main.list_dir(folder, locality=True, qos=True):
            assert entry.current_qos == "disk" and entry.locality == "ONLINE", entry
