"""The example pipelines end to end: real sites, a real scheduler + triggerer + dag-processor + API server.

One Airflow per module (start-up is the expensive part); each test uploads its own files with
distinct names, so the tests do not see each other's runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from airflow_dcache.demo import default_dags_folder
from airflow_dcache.demo.samples import write_cxi
from airflow_dcache.events import lineage_records
from airflow_dcache.testing.airflow_stack import AirflowStack
from airflow_dcache.testing.sites import Sites, start_sites, wait_for_watches

INGEST = "dcache_ingest_pipeline"
FINAL = {"success", "failed"}


@pytest.fixture(scope="module")
def facility(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sites, AirflowStack]]:
    base = tmp_path_factory.mktemp("facility")
    sites = start_sites(base / "sites", fast_hash=True, log_dir=base)
    stack = AirflowStack(base / "airflow", default_dags_folder(),
                         {**sites.connections(), "AIRFLOW_DCACHE_FUNCTION_RUNTIME": "local"})
    try:
        stack.start()
        stack.wait_dags([INGEST, "dcache_reprocess", "dcache_stage_and_process", "dcache_video_deshake"])
        os.environ.update(sites.connections())
        wait_for_watches("dcache_main", 2)
        yield sites, stack
    finally:
        stack.stop()
        sites.stop()


def _upload(sites: Sites, tmp_path: Path, names: list[str]) -> None:
    auth = ("alice", sites.passwords["alice"])
    with requests.Session() as s:
        for i, name in enumerate(names):
            local = write_cxi(tmp_path / name, seed=i, frames=4)
            with open(local, "rb") as f:
                s.put(f"{sites.main.webdav}/data/incoming/{name}", data=f, auth=auth, timeout=60).raise_for_status()


def _lineage_by_input(stack: AirflowStack) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for ev in stack.api.asset_events("dcache://main/data/processed"):
        for extra in lineage_records(ev.get("extra")):
            if extra.get("dag_id") == INGEST:
                out.setdefault(extra["input"]["path"], []).append(extra)
    return out


def _wait_lineage(stack: AirflowStack, paths: set[str], timeout: float) -> dict[str, list[dict]]:
    deadline = time.monotonic() + timeout
    seen: dict[str, list[dict]] = {}
    while time.monotonic() < deadline:
        seen = _lineage_by_input(stack)
        failed = [r for r in stack.api.dag_runs(INGEST) if r["state"] == "failed"]
        assert not failed, f"failed runs: {[r['dag_run_id'] for r in failed]}"
        if paths <= set(seen):
            return seen
        time.sleep(2)
    raise AssertionError(f"not processed after {timeout:.0f} s: {sorted(paths - set(seen))}")


def test_burst_of_uploads_each_processed_once_and_archived(facility, tmp_path: Path) -> None:
    sites, stack = facility
    names = [f"burst-{i:02d}.h5" for i in range(20)]
    _upload(sites, tmp_path, names)
    paths = {f"/data/incoming/{n}" for n in names}
    lineage = _wait_lineage(stack, paths, timeout=600)
    time.sleep(3)  # a duplicate run would show up right behind
    lineage = _lineage_by_input(stack)
    assert {p: len(v) for p, v in lineage.items() if p in paths} == dict.fromkeys(paths, 1)

    from airflow_dcache.hooks import DCacheHook

    with DCacheHook("dcache_main") as main, DCacheHook("dcache_buffer") as buffer:
        for path in paths:
            entry = main.stat(path, locality=True, qos=True, xattr=True)
            assert "NEARLINE" in (entry.locality or ""), (path, entry.locality)
            assert entry.current_qos == "disk+tape"
            assert "airflow_dcache.done.dcache_ingest_pipeline" in (entry.xattrs or {})
            (record,) = lineage[path]
            assert record["outputs"], record
            for out in record["outputs"]:
                assert out["path"].startswith("/data/processed/"), out
                assert main.exists(out["path"])
        assert buffer.list_dir("/data/work") == [] or all(
            buffer.list_dir(d.path) == [] for d in buffer.list_dir("/data/work"))


def test_ui_triggered_run_with_params(facility, tmp_path: Path) -> None:
    """The trigger dialog's form, through the REST API as the UI sends it: same tasks, chosen files."""
    sites, stack = facility
    # Files inside the pipeline's allowed roots but named *.hdf5, which the watcher (*.h5) ignores, so only
    # the manual run picks them up; a copy of each under /data/archive, outside the allowed roots.
    auth = ("pipeline", sites.passwords["pipeline"])
    with requests.Session() as s:
        s.request("MKCOL", f"{sites.main.webdav}/data/incoming/manual", auth=auth, timeout=60)
        for i in range(2):
            local = write_cxi(tmp_path / f"manual-{i}.h5", seed=100 + i, frames=3)
            for target in (f"/data/incoming/manual/manual-{i}.hdf5", f"/data/archive/manual-{i}.h5"):
                with open(local, "rb") as f:
                    s.put(f"{sites.main.webdav}{target}", data=f, auth=auth, timeout=60).raise_for_status()

    def finish(run_id: str) -> str:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            state = stack.api.dag_run(INGEST, run_id)["state"]
            if state in FINAL:
                return state
            time.sleep(2)
        return state

    # outside the allowed roots: refused before any dCache call, whoever triggers it (issue 17)
    refused = stack.api.trigger(INGEST, {"paths": ["/data/archive/manual-*.h5"]}, note="outside the roots")
    assert finish(refused) == "failed"
    with pytest.raises(requests.HTTPError, match="404"):  # nothing of the selection reached XCom
        stack.api.xcom(INGEST, refused, "collect")
    run_id = stack.api.trigger(INGEST, {"paths": ["/data/incoming/manual/manual-*.hdf5"],
                                        "function_parameters": {"frame": 0}, "target_qos": "disk+tape"},
                               note="from the UI form")
    state = finish(run_id)
    assert state == "success"
    items = stack.api.xcom(INGEST, run_id, "collect")
    manual = ["/data/incoming/manual/manual-0.hdf5", "/data/incoming/manual/manual-1.hdf5"]
    assert sorted(i["path"] for i in items) == manual
    lineage = _lineage_by_input(stack)
    assert set(manual) <= set(lineage)
