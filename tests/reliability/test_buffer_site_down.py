"""The buffer site down while the ingest pipeline runs (issue 12), in a real Airflow against real sites.

* ``test_buffer_down_run_fails_after_budget_then_next_run_completes``: the buffer is killed (``kill -9``)
  before a file is uploaded. ``replicate`` retries with exponential backoff (a short budget set through
  ``$AIRFLOW_DCACHE_REPLICATE_*``: 2 retries, 4 s base), the run fails naming the buffer site, the raw
  file on ``main`` is byte-identical with the same metadata (no idempotency marker, no QoS change) and
  nothing was published for it; once the buffer is back a run triggered through the REST API with the
  same ``paths`` (as the UI's trigger form sends it) completes with outputs, archive and lineage.
* ``test_buffer_down_then_clearing_the_failed_task_completes_the_same_run``: the same failure, and
  the way back through *Clear* on the failed task (with its downstream tasks): the same run completes.
* ``test_buffer_dies_during_copy_retry_completes``: the buffer is killed while the third-party copy of
  a 128 MiB file is being written (its pool's ``.part`` file is growing), and restarted while the task
  waits for its retry: the failed try names the site that went away, no partial replica is visible,
  and the retry finishes the same run.

One facility (both sites, one Airflow) for the module; each test uploads its own file and leaves the
buffer running.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_dcache.demo import default_dags_folder
from airflow_dcache.demo.samples import write_cxi
from airflow_dcache.testing.airflow_stack import AirflowStack
from airflow_dcache.testing.sites import Sites, start_sites, wait_for_watches

INGEST = "dcache_ingest_pipeline"
REPLICATE = "file.replicate"
FINAL = {"success", "failed"}
RETRIES, BASE_DELAY = 2, 4
MARKER = f"airflow_dcache.done.{INGEST}"


@pytest.fixture(scope="module")
def facility(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sites, AirflowStack]]:
    base = tmp_path_factory.mktemp("buffer-down")
    sites = start_sites(base / "sites", fast_hash=True, log_dir=base)
    env = {**sites.connections(), "AIRFLOW_DCACHE_FUNCTION_RUNTIME": "local",
           # the per-file variant, whose task ids this test reads (file.replicate[0]); the chunked design's
           # copy stages take the same retry settings, a site down there is not exercised by this test
           "AIRFLOW_DCACHE_PIPELINE_DESIGN": "per_file",
           "AIRFLOW_DCACHE_REPLICATE_RETRIES": str(RETRIES),
           "AIRFLOW_DCACHE_REPLICATE_RETRY_DELAY": str(BASE_DELAY),
           "AIRFLOW_DCACHE_REPLICATE_MAX_RETRY_DELAY": "60"}
    stack = AirflowStack(base / "airflow", default_dags_folder(), env)
    saved = {k: os.environ.get(k) for k in sites.connections()}
    try:
        stack.start()
        stack.wait_dags([INGEST])
        os.environ.update(sites.connections())  # the test reads both sites with the pipeline's connections
        wait_for_watches("dcache_main", 2)
        yield sites, stack
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        stack.stop()
        sites.stop()  # a site a failed test left down is simply not running


# ----------------------------------------------------------------------------------------- helpers


def _upload(sites: Sites, local: Path, name: str) -> str:
    path = f"/data/incoming/{name}"
    with open(local, "rb") as f:
        r = requests.put(f"{sites.main.webdav}{path}", data=f, auth=("alice", sites.passwords["alice"]), timeout=120)
    r.raise_for_status()
    return path


def _sha256_on_main(sites: Sites, path: str) -> str:
    digest = hashlib.sha256()
    with requests.get(f"{sites.main.webdav}{path}", auth=("pipeline", sites.passwords["pipeline"]), stream=True,
                      timeout=120) as r:
        r.raise_for_status()
        for chunk in r.iter_content(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _run_for(stack: AirflowStack, path: str, known: set[str], timeout: float = 90) -> str:
    """The new run whose work items include ``path`` (the one the upload event started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in stack.api.dag_runs(INGEST):
            run_id = run["dag_run_id"]
            if run_id in known:
                continue
            try:
                items = stack.api.xcom(INGEST, run_id, "collect")
            except requests.HTTPError:
                continue  # collect not done yet
            if any(i["path"] == path for i in items or []):
                return str(run_id)
        time.sleep(1)
    raise AssertionError(f"no run picked up {path} within {timeout:.0f} s")


def _wait_final(stack: AirflowStack, run_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = stack.api.dag_run(INGEST, run_id)["state"]
        if state in FINAL:
            return str(state)
        time.sleep(1)
    raise AssertionError(f"{run_id} still {state} after {timeout:.0f} s: {_states(stack, run_id)}")


def _states(stack: AirflowStack, run_id: str) -> dict[str, Any]:
    return {f"{t['task_id']}[{t['map_index']}]": (t["state"], t["try_number"])
            for t in stack.api.task_instances(INGEST, run_id)}


def _ti(stack: AirflowStack, run_id: str, task_id: str, map_index: int = 0) -> dict[str, Any]:
    return dict(stack.api.request("GET", f"/dags/{INGEST}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}"))


def _tries(stack: AirflowStack, run_id: str, task_id: str, map_index: int = 0) -> list[dict[str, Any]]:
    doc = stack.api.request("GET", f"/dags/{INGEST}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/tries")
    return sorted(doc["task_instances"], key=lambda t: t["try_number"])


def _log(stack: AirflowStack, run_id: str, task_id: str, try_number: int, map_index: int = 0) -> str:
    """The try's log as the UI fetches it (REST, JSON form), flattened to text for searching."""
    doc = stack.api.request("GET", f"/dags/{INGEST}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
                            params={"map_index": map_index, "full_content": True},
                            headers={"Accept": "application/json"})
    return json.dumps(doc.get("content"))


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _tree(hook: Any, root: str, limit: int = 2000) -> list[str]:
    """Every path below ``root`` (bounded)."""
    out, todo = [], [root]
    while todo and len(out) < limit:
        for entry in hook.list_dir(todo.pop()):
            out.append(entry.path)
            if entry.file_type == "DIR":
                todo.append(entry.path)
    return out


def _snapshot(hook: Any, path: str) -> dict[str, Any]:
    entry = hook.stat(path, checksum=True, xattr=True, qos=True, locality=True, labels=True)
    return {"pnfsid": entry.pnfsid, "size": entry.size, "checksums": entry.checksums, "xattrs": entry.xattrs or {},
            "qos": entry.current_qos, "target_qos": entry.target_qos, "mtime": entry.mtime, "mode": entry.mode,
            "locality": entry.locality, "labels": entry.labels}


def _assert_processed(stack: AirflowStack, run_id: str, path: str) -> None:
    """The run archived ``path`` and published its outputs; its lineage event names this run."""
    from airflow_dcache.hooks import DCacheHook

    lineage = [e["extra"] for e in stack.api.asset_events("dcache://main/data/processed")
               if (e.get("extra") or {}).get("run_id") == run_id]
    assert [r["input"]["path"] for r in lineage] == [path], lineage
    (record,) = lineage
    assert record["outputs"], record
    from airflow_dcache.events.version import parse_marker

    with DCacheHook("dcache_main") as main:
        for out in record["outputs"]:
            assert out["path"].startswith("/data/processed/"), out
            assert main.exists(out["path"]), out
        entry = main.stat(path, locality=True, qos=True, xattr=True)
        assert "NEARLINE" in (entry.locality or ""), entry.locality
        assert entry.current_qos == "disk+tape"
        version, dag_id, marked_run = parse_marker((entry.xattrs or {}).get(MARKER, ""))
        assert (dag_id, marked_run) == (INGEST, run_id)  # the marker names the run and the file's version
        assert version is not None and version.pnfsid == entry.pnfsid


# ------------------------------------------------------------------------------------------- tests


def _fail_with_buffer_down(sites: Sites, stack: AirflowStack, local: Path) -> tuple[str, str, list[float]]:
    """Kill the buffer, upload ``local``, and check the run it starts fails as it should: (run id, path, gaps)."""
    from airflow_dcache.hooks import DCacheHook

    known = {r["dag_run_id"] for r in stack.api.dag_runs(INGEST)}
    sites.buffer.kill()
    path = _upload(sites, local, local.name)
    with DCacheHook("dcache_main") as main:
        before = _snapshot(main, path)
    started = time.monotonic()

    run_id = _run_for(stack, path, known)
    state = _wait_final(stack, run_id, timeout=420)
    failed_after = time.monotonic() - started
    states = _states(stack, run_id)
    assert state == "failed", states
    assert states[f"{REPLICATE}[0]"] == ("failed", RETRIES + 1), states
    assert states["file.validate[0]"][0] == "success", states
    for later in ("preview", "publish", "archive_rule", "drop_buffer_replica", "wait_archived", "record_lineage"):
        assert states[f"file.{later}[0]"][0] == "upstream_failed", states

    # Every try ran and failed; the waits between them grow (retry_delay * 2**n and up to as much again).
    tries = _tries(stack, run_id, REPLICATE)
    assert [t["try_number"] for t in tries] == list(range(1, RETRIES + 2)), tries
    assert all(t["state"] in ("failed", "up_for_retry") for t in tries[:-1]), tries
    assert tries[-1]["state"] == "failed", tries
    gaps = [(_when(b["start_date"]) - _when(a["end_date"])).total_seconds() for a, b in itertools.pairwise(tries)]
    for n, gap in enumerate(gaps):
        assert gap >= BASE_DELAY * 2**n - 0.5, (n, gaps)
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0], gaps

    # The failure says which site and why, in every try's log (what the UI shows).
    for t in tries:
        log = _log(stack, run_id, REPLICATE, t["try_number"])
        assert "destination site 'buffer' (connection dcache_buffer" in log, log[-3000:]
        assert "is unreachable while creating /data/work/" in log, log[-3000:]
        assert "Connection refused" in log, log[-3000:]
        assert f"{path} was not replicated" in log

    # main: the raw file is untouched (bytes, pnfsid, checksum, xattrs: no marker, QoS) and nothing published.
    assert _sha256_on_main(sites, path) == _sha256_file(local)
    items = stack.api.xcom(INGEST, run_id, "collect")
    stem = local.name.rsplit(".", 1)[0]
    with DCacheHook("dcache_main") as main:
        assert _snapshot(main, path) == before
        assert MARKER not in before["xattrs"]
        assert not main.exists(items[0]["output_dir"])
        assert not [p for p in _tree(main, "/data/processed") if stem in p]

    said = re.findall(r"destination site 'buffer'[^\"]*", _log(stack, run_id, REPLICATE, RETRIES + 1))
    print(f"\nfailed try says: {said[-1]}")
    print(f"buffer down: failed after {failed_after:.1f} s (from upload), gaps between tries "
          f"{[round(g, 1) for g in gaps]} s, try durations "
          f"{[round((_when(t['end_date']) - _when(t['start_date'])).total_seconds(), 1) for t in tries]} s")
    return run_id, path, gaps


@pytest.mark.timeout(900)
def test_buffer_down_run_fails_after_budget_then_next_run_completes(facility, tmp_path: Path) -> None:
    sites, stack = facility
    local = write_cxi(tmp_path / "down-1.h5", seed=7, frames=4)
    _run_id, path, _gaps = _fail_with_buffer_down(sites, stack, local)

    # The buffer is back: the next run (as the UI's trigger form sends it, same path) completes.
    sites.buffer.start()
    retrigger = time.monotonic()
    run2 = stack.api.trigger(INGEST, {"paths": [path]}, note="buffer back")
    state2 = _wait_final(stack, run2, timeout=300)
    assert state2 == "success", _states(stack, run2)
    assert [i["path"] for i in stack.api.xcom(INGEST, run2, "collect")] == [path]
    assert _ti(stack, run2, REPLICATE)["try_number"] == 1
    _assert_processed(stack, run2, path)
    assert _sha256_on_main(sites, path) == _sha256_file(local)
    print(f"re-triggered run completed in {time.monotonic() - retrigger:.1f} s")


@pytest.mark.timeout(900)
def test_buffer_down_then_clearing_the_failed_task_completes_the_same_run(facility, tmp_path: Path) -> None:
    """The other way back: *Clear* on the failed ``replicate`` with its downstream tasks (as the UI does it)."""
    sites, stack = facility
    local = write_cxi(tmp_path / "down-2.h5", seed=8, frames=4)
    run_id, path, _gaps = _fail_with_buffer_down(sites, stack, local)

    sites.buffer.start()
    cleared = time.monotonic()
    stack.api.request("POST", f"/dags/{INGEST}/clearTaskInstances", json={
        "dry_run": False, "dag_run_id": run_id, "task_ids": [REPLICATE], "include_downstream": True,
        "only_failed": False, "reset_dag_runs": True})
    deadline = time.monotonic() + 60
    while stack.api.dag_run(INGEST, run_id)["state"] == "failed" and time.monotonic() < deadline:
        time.sleep(0.5)
    state = _wait_final(stack, run_id, timeout=300)
    assert state == "success", _states(stack, run_id)
    assert [t["state"] for t in _tries(stack, run_id, REPLICATE)][-1] == "success"
    _assert_processed(stack, run_id, path)
    assert _sha256_on_main(sites, path) == _sha256_file(local)
    print(f"cleared run completed in {time.monotonic() - cleared:.1f} s")


def _big_cxi(path: Path, mib: int) -> Path:
    """A sample run with a large uncompressed extra dataset, so the copy lasts long enough to be cut."""
    import h5py
    import numpy as np

    write_cxi(path, seed=11, frames=4)
    with h5py.File(path, "a") as f:
        pad = f.create_dataset("entry_1/padding", shape=(mib, 1 << 20), dtype="uint8")
        rng = np.random.default_rng(11)
        for row in range(0, mib, 16):
            pad[row:row + 16] = rng.integers(0, 256, size=(min(16, mib - row), 1 << 20), dtype=np.uint8)
    return path


def _growing_part(site_dir: Path) -> Path | None:
    for part in site_dir.rglob("*.part"):
        try:
            if part.stat().st_size > 0:
                return part
        except FileNotFoundError:
            continue
    return None


@pytest.mark.timeout(900)
def test_buffer_dies_during_copy_retry_completes(facility, tmp_path: Path) -> None:
    from airflow_dcache.exceptions import NotFound
    from airflow_dcache.hooks import DCacheHook

    sites, stack = facility
    assert sites.buffer.process.poll() is None, "the buffer should be running"
    known = {r["dag_run_id"] for r in stack.api.dag_runs(INGEST)}
    local = _big_cxi(tmp_path / "cut-1.h5", 128)
    size = local.stat().st_size
    path = _upload(sites, local, "cut-1.h5")

    # Kill the buffer while the replicate task's COPY is writing its pool file.
    deadline = time.monotonic() + 180
    part = None
    while part is None and time.monotonic() < deadline:
        part = _growing_part(sites.buffer.data_dir)
        if part is None:
            time.sleep(0.01)
    assert part is not None, "the copy to the buffer never started"
    sites.buffer.kill()
    written = part.stat().st_size if part.exists() else None
    assert written is None or written < size, "the copy was complete before the kill"

    run_id = _run_for(stack, path, known)
    deadline = time.monotonic() + 120
    ti = _ti(stack, run_id, REPLICATE)
    while ti["state"] != "up_for_retry" and time.monotonic() < deadline:
        assert ti["state"] not in ("failed", "success"), ti
        time.sleep(0.5)
        ti = _ti(stack, run_id, REPLICATE)
    assert ti["state"] == "up_for_retry", ti
    sites.buffer.start()

    items = stack.api.xcom(INGEST, run_id, "collect")
    with DCacheHook("dcache_buffer") as buffer, pytest.raises(NotFound):  # the cut copy left nothing visible
        buffer.stat(items[0]["buffer_path"])
    assert not list(sites.buffer.data_dir.rglob("*.part")), "a partial pool file survived the restart"
    log1 = _log(stack, run_id, REPLICATE, 1)
    assert "destination site 'buffer' (connection dcache_buffer" in log1, log1[-3000:]
    assert "went away during the copy /data/incoming/cut-1.h5" in log1, log1[-3000:]

    state = _wait_final(stack, run_id, timeout=420)
    assert state == "success", _states(stack, run_id)
    tries = _tries(stack, run_id, REPLICATE)
    assert [t["state"] for t in tries][-1] == "success" and len(tries) >= 2, tries
    _assert_processed(stack, run_id, path)
    assert _sha256_on_main(sites, path) == _sha256_file(local)
    said = re.findall(r"destination site 'buffer'[^\"]*", log1)
    print(f"\nfailed try says: {said[-1]}")
    print(f"buffer died mid-copy after {written} of {size} bytes; replicate tries "
          f"{[(t['try_number'], t['state']) for t in tries]}")
