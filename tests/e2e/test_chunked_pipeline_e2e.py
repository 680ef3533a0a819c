"""The chunked design of the ingest pipeline end to end: both sites, a real scheduler/triggerer/dag-processor/API.

One Airflow for the module, started with ``AIRFLOW_DCACHE_PIPELINE_DESIGN=chunked`` and
``[core] max_map_length`` = 32, so the 60-file run below is over the cap a per-file run would hit.
The files are named ``*.hdf5``, which the storage-event watcher (``*.h5``) ignores: each test triggers
exactly one run over its own folder, as the trigger form does, and the runs cannot overlap.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from airflow_dcache.demo import default_dags_folder
from airflow_dcache.demo.samples import write_cxi
from airflow_dcache.testing.airflow_stack import AirflowStack
from airflow_dcache.testing.sites import Sites, start_sites, wait_for_watches

INGEST = "dcache_ingest_pipeline"
MARKER = "airflow_dcache.done.dcache_ingest_pipeline"
FINAL = {"success", "failed"}
MAX_MAP_LENGTH = 32


@pytest.fixture(scope="module")
def facility(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sites, AirflowStack]]:
    base = tmp_path_factory.mktemp("chunked")
    with contextlib.ExitStack() as cleanup:  # stops whatever was started, in reverse order
        sites = start_sites(base / "sites", fast_hash=True, log_dir=base)
        cleanup.callback(sites.stop)
        env = {**sites.connections(), "AIRFLOW_DCACHE_FUNCTION_RUNTIME": "local",
               "AIRFLOW_DCACHE_PIPELINE_DESIGN": "chunked", "AIRFLOW__CORE__MAX_MAP_LENGTH": str(MAX_MAP_LENGTH)}
        stack = cleanup.enter_context(AirflowStack(base / "airflow", default_dags_folder(), env))
        stack.wait_dags([INGEST])
        os.environ.update(sites.connections())
        wait_for_watches("dcache_main", 2)
        yield sites, stack


def _put(session: requests.Session, sites: Sites, path: str, data: bytes) -> None:
    auth = ("pipeline", sites.passwords["pipeline"])
    session.put(f"{sites.main.webdav}{path}", data=data, auth=auth, timeout=60).raise_for_status()


def _upload(sites: Sites, tmp_path: Path, folder: str, files: dict[str, bytes | None]) -> None:
    """Upload ``{name: content}`` below ``folder`` (``None``: a fresh CXI file)."""
    auth = ("pipeline", sites.passwords["pipeline"])
    with requests.Session() as s:
        s.request("MKCOL", f"{sites.main.webdav}{folder}", auth=auth, timeout=60)
        for i, (name, content) in enumerate(files.items()):
            data = content if content is not None else write_cxi(tmp_path / name, seed=i, frames=2).read_bytes()
            _put(s, sites, f"{folder}/{name}", data)


def _finish(stack: AirflowStack, run_id: str, timeout: float = 1200) -> str:
    deadline = time.monotonic() + timeout
    state = "?"
    while time.monotonic() < deadline:
        state = stack.api.dag_run(INGEST, run_id)["state"]
        if state in FINAL:
            return state
        time.sleep(2)
    raise AssertionError(f"run {run_id} not finished after {timeout:.0f} s (state {state})")


def _wait_task(stack: AirflowStack, run_id: str, task_id: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {ti["task_id"]: ti["state"] for ti in stack.api.task_instances(INGEST, run_id)}
        if states.get(task_id) == "success":
            return
        assert states.get(task_id) not in ("failed", "upstream_failed"), states
        time.sleep(0.2)
    raise AssertionError(f"{task_id} of {run_id} did not succeed within {timeout:.0f} s")


def _lineage(stack: AirflowStack, run_id: str) -> dict[str, list[dict]]:
    """The per-file lineage records of the run's chunk asset events, by input path."""
    out: dict[str, list[dict]] = {}
    for ev in stack.api.asset_events("dcache://main/data/processed"):
        extra = ev.get("extra") or {}
        if extra.get("schema") == "airflow-dcache/lineage-chunk/v1" and extra.get("run_id") == run_id:
            for record in extra["records"]:
                assert record["schema"] == "airflow-dcache/lineage/v1" and record["run_id"] == run_id
                out.setdefault(record["input"]["path"], []).append(record)
    return out


@pytest.mark.timeout(1800)  # bounded; every wait below has its own bound too
def test_burst_with_bad_files_reports_them_and_reruns_only_the_failures(facility, tmp_path: Path) -> None:
    sites, stack = facility
    folder = "/data/incoming/chunked"
    cxi = write_cxi(tmp_path / "template.cxi", seed=999, frames=2).read_bytes()
    bad = {"not-hdf5-0.hdf5": b"just some text, not HDF5\n", "not-hdf5-1.hdf5": b"{\"json\": true}\n" * 40,
           "truncated-0.hdf5": cxi[:4],  # shorter than the signature: refused by validate
           "truncated-1.hdf5": cxi[: len(cxi) // 2],  # a valid signature, but the function cannot read it
           "deleted-0.hdf5": None}
    files: dict[str, bytes | None] = {f"good-{i:03d}.hdf5": None for i in range(195)}
    files.update(bad)
    _upload(sites, tmp_path, folder, files)
    good = {f"{folder}/{n}" for n in files if n.startswith("good-")}
    bad_paths = {f"{folder}/{n}" for n in bad}

    run_id = stack.api.trigger(INGEST, {"paths": [f"{folder}/*.hdf5"], "chunk_max_files": 50}, note="chunked burst")
    _wait_task(stack, run_id, "collect")
    auth = ("pipeline", sites.passwords["pipeline"])  # deleted after it was collected, before it is validated
    requests.delete(f"{sites.main.webdav}{folder}/deleted-0.hdf5", auth=auth, timeout=60).raise_for_status()
    assert _finish(stack, run_id) == "failed"

    items = stack.api.xcom(INGEST, run_id, "collect")
    assert {i["path"] for i in items} == good | bad_paths
    chunks = stack.api.xcom(INGEST, run_id, "chunk")
    assert [len(c["files"]) for c in chunks] == [50, 50, 50, 50]
    tis = stack.api.task_instances(INGEST, run_id)
    # collect, chunk, report, clean_up, and per chunk process, wait_archived, record_lineage
    assert len(tis) <= 4 + 3 * len(chunks), sorted((t["task_id"], t["map_index"]) for t in tis)

    # the five are reported with stage and reason, and the run's failure names each of them
    failed = {f["path"]: f for f in stack.api.xcom(INGEST, run_id, "report", key="failed")}
    assert set(failed) == bad_paths, failed
    for path, f in failed.items():
        assert path in f["reason"], f
    for name in ("not-hdf5-0.hdf5", "not-hdf5-1.hdf5", "truncated-0.hdf5"):
        assert failed[f"{folder}/{name}"]["stage"] == "validate" and "no HDF5 signature" in \
            failed[f"{folder}/{name}"]["reason"]
    assert failed[f"{folder}/truncated-1.hdf5"]["stage"] == "preview"
    assert failed[f"{folder}/deleted-0.hdf5"]["stage"] == "validate"
    report_log = stack.task_log(INGEST, run_id, "report")
    assert "5 of 200 file(s) failed" in report_log
    assert all(p in report_log for p in bad_paths)
    outcomes = stack.api.xcom(INGEST, run_id, "report", key="outcomes")
    assert outcomes["counts"] == {"processed": 195, "failed": 5}
    timed = next(f for f in outcomes["files"] if f["outcome"] == "processed")
    assert set(timed["timings"]) >= {"validate", "replicate", "preview", "publish", "archive_rule",
                                     "wait_archived", "record_lineage"}

    # the 195 are processed exactly once: one lineage record, the marker, the outputs, archived
    lineage = _lineage(stack, run_id)
    assert {p: len(v) for p, v in lineage.items()} == dict.fromkeys(good, 1)
    from airflow_dcache.hooks import DCacheHook

    with DCacheHook("dcache_main") as main, DCacheHook("dcache_buffer") as buffer:
        for entry in main.list_dir(folder, xattr=True, locality=True):
            if entry.path in good:
                assert run_id in (entry.xattrs or {}).get(MARKER, ""), entry.path
                assert "NEARLINE" in (entry.locality or ""), entry.path
            else:
                assert MARKER not in (entry.xattrs or {}), entry.path
        for path in good:
            (record,) = lineage[path]
            assert len(record["outputs"]) == 2 and record["activation_record"], record
            for out in [*record["outputs"], {"path": record["activation_record"]}]:
                assert out["path"].startswith("/data/processed/") and main.exists(out["path"]), out
        assert all(buffer.list_dir(d.path) == [] for d in buffer.list_dir("/data/work"))

    # one action re-runs the failures: fixed files are processed, the others fail again, nothing else runs
    with requests.Session() as s:
        _put(s, sites, f"{folder}/truncated-1.hdf5", cxi)
    rerun = stack.api.trigger(INGEST, {"only_failed_of": run_id}, note="re-run the failures")
    assert _finish(stack, rerun) == "failed"
    again = stack.api.xcom(INGEST, rerun, "collect")
    assert {i["path"] for i in again} == bad_paths - {f"{folder}/deleted-0.hdf5"}
    skipped = stack.api.xcom(INGEST, rerun, "collect", key="skipped")
    assert [s["path"] for s in skipped] == [f"{folder}/deleted-0.hdf5"] and "gone" in skipped[0]["reason"]
    failed_again = {f["path"] for f in stack.api.xcom(INGEST, rerun, "report", key="failed")}
    assert failed_again == {f"{folder}/not-hdf5-0.hdf5", f"{folder}/not-hdf5-1.hdf5", f"{folder}/truncated-0.hdf5"}
    assert set(_lineage(stack, rerun)) == {f"{folder}/truncated-1.hdf5"}
    with DCacheHook("dcache_main") as main:
        assert rerun in (main.stat(f"{folder}/truncated-1.hdf5", xattr=True).xattrs or {})[MARKER]
        assert run_id in (main.stat(f"{folder}/good-000.hdf5", xattr=True).xattrs or {})[MARKER]


@pytest.mark.timeout(900)
def test_a_run_over_more_files_than_max_map_length_completes(facility, tmp_path: Path) -> None:
    sites, stack = facility
    folder = "/data/incoming/many"
    names = [f"many-{i:02d}.hdf5" for i in range(60)]
    _upload(sites, tmp_path, folder, dict.fromkeys(names))
    run_id = stack.api.trigger(INGEST, {"paths": [f"{folder}/*.hdf5"], "chunk_max_files": 10}, note="over the cap")
    assert _finish(stack, run_id) == "success"
    assert len(stack.api.xcom(INGEST, run_id, "collect")) == 60 > MAX_MAP_LENGTH
    assert len(stack.api.xcom(INGEST, run_id, "chunk")) == 6
    assert set(_lineage(stack, run_id)) == {f"{folder}/{n}" for n in names}
    outcomes = stack.api.xcom(INGEST, run_id, "report", key="outcomes")
    assert outcomes["counts"] == {"processed": 60} and outcomes["failed"] == []
