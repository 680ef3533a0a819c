"""Where a watcher starts, and what a paused DAG does to it, on a real Airflow (issue 16).

One facility for the module (the bundled ``main``/``buffer`` sites and a scheduler, triggerer,
dag-processor and API server on SQLite) runs the two consumer DAGs of ``dags_start/``: ``start_existing``
(``start_from="existing"``) and ``start_now`` (the default ``"now"``). DAGs are created paused, as on a
site with Airflow's default ``dags_are_paused_at_creation``, and the DAG files are parsed every
``PARSE_INTERVAL`` seconds (Airflow's default is 30): Airflow adds or removes an ``AssetWatcher``'s
trigger only when it parses the file (``dag_processing/collection.py``, ``add_asset_trigger_references``:
the watchers of an asset whose DAGs are all paused are dropped), so that interval is how long a pause or
an unpause takes to reach the watcher. "Processed" means the DAG's task claimed the event's marker, so
every file must be in exactly one successful run's ``done`` list.
"""

from __future__ import annotations

import io
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.testing.airflow_stack import AirflowStack
from airflow_dcache.testing.sites import start_sites, wait_for_watches

DAGS = Path(__file__).parent / "dags_start"
EXISTING, NOW = "start_existing", "start_now"
PARSE_INTERVAL = 10  # [dag_processor] min_file_process_interval for this stack (Airflow's default: 30)
UPLOADER = "e2e_start"  # a connection of this process (the pipeline identity on main)


def measure(name: str, **values: Any) -> None:
    print(f"MEASURE {name} " + " ".join(f"{k}={v}" for k, v in values.items()), flush=True)


def _wait(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not after {timeout:.0f} s")


@pytest.fixture(scope="module")
def facility(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("watcher-start")
    started = time.monotonic()
    sites = start_sites(base / "sites", fast_hash=True, log_dir=base)
    root = f"/data/incoming/start-{uuid.uuid4().hex[:8]}"
    conns = sites.connections()
    env = {**conns, "E2E_START_ROOT": root, "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
           "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": str(PARSE_INTERVAL)}
    saved = {k: os.environ.get(k) for k in (*conns, f"AIRFLOW_CONN_{UPLOADER.upper()}")}
    os.environ.update(conns)
    os.environ[f"AIRFLOW_CONN_{UPLOADER.upper()}"] = conns["AIRFLOW_CONN_DCACHE_MAIN"]
    stack = AirflowStack(base / "airflow", DAGS, env, parallelism=4)
    try:
        with DCacheHook(UPLOADER) as hook:
            for mode in ("existing", "now"):
                hook.mkdir(f"{root}/{mode}", parents=True)
        stack.start()
        measure("watcher_start_facility", seconds=round(time.monotonic() - started, 1))
        yield {"sites": sites, "stack": stack, "root": root}
    finally:
        stack.stop()
        sites.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _dump_logs(stack: AirflowStack) -> None:
    for name in ("triggerer", "dag-processor", "scheduler"):
        path = stack.log_path(name)
        if path.exists():
            print(f"----- airflow {name} (tail) -----\n{path.read_text(errors='replace')[-4000:]}", flush=True)


# ------------------------------------------------------------------------------------------ helpers


def _put(path: str, data: bytes | None = None) -> None:
    with DCacheHook(UPLOADER) as hook:
        hook.upload(io.BytesIO(data or f"data of {path}".encode()), path, checksum="none")


def _uri(root: str, mode: str) -> str:
    return f"dcache://main{root}/{mode}"


def _asset(stack: AirflowStack, uri: str) -> dict[str, Any] | None:
    assets = stack.api.request("GET", "/assets", params={"uri_pattern": uri, "limit": 100})["assets"]
    return next((a for a in assets if a["uri"] == uri), None)


def _watchers(stack: AirflowStack, uri: str) -> list[dict[str, Any]]:
    asset = _asset(stack, uri)
    return list(asset.get("watchers") or []) if asset else []


def _state(stack: AirflowStack, uri: str) -> dict[str, Any] | None:
    """The watcher's entry in ``asset_state_store`` (``dcache-sse/<watch id>``), via the REST API."""
    asset = _asset(stack, uri)
    if asset is None:
        return None
    doc = stack.api.request("GET", f"/assets/{asset['id']}/state-store")
    entries = [e for e in doc["asset_state_store"] if e["key"].startswith("dcache-sse/")]
    return dict(entries[0]["value"]) if entries else None


def _set_paused(stack: AirflowStack, dag_id: str, paused: bool) -> None:
    stack.api.request("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})


def _runs_done(stack: AirflowStack, dag_id: str) -> tuple[Counter, dict[str, list[str]]]:
    """Per path, how many successful runs claimed it; and every path each run saw as listed/reconciled."""
    counts: Counter = Counter()
    seen: dict[str, list[str]] = {"listed": [], "reconciled": [], "skipped": []}
    for run in stack.api.dag_runs(dag_id):
        if run["state"] == "failed":
            raise AssertionError(f"{dag_id}: run {run['dag_run_id']} failed")
        if run["state"] != "success":
            continue
        value = stack.api.xcom(dag_id, run["dag_run_id"], "process") or {}
        for path in value.get("done", []):
            counts[path] += 1
        for key in seen:
            seen[key] += value.get(key, [])
    return counts, seen


def _wait_processed(stack: AirflowStack, dag_id: str, paths: list[str],
                    timeout: float) -> tuple[Counter, dict[str, list[str]]]:
    def done() -> tuple[Counter, dict[str, list[str]]] | None:
        counts, seen = _runs_done(stack, dag_id)
        return (counts, seen) if all(counts[p] for p in paths) else None

    return _wait(done, timeout, f"{dag_id}: processed {paths}", interval=2)  # type: ignore[no-any-return]


def _ensure_running(stack: AirflowStack, root: str, mode: str, timeout: float = 120) -> list[dict[str, Any]]:
    """The DAG unpaused and its watcher's trigger in place (the DAG file parsed since the unpause)."""
    _wait(lambda: _asset(stack, _uri(root, mode)), timeout, f"asset of start_{mode} registered")
    _set_paused(stack, f"start_{mode}", False)
    return list(_wait(lambda: _watchers(stack, _uri(root, mode)), timeout, f"watcher of start_{mode} added"))


def _pause_until_watcher_removed(stack: AirflowStack, root: str, mode: str, timeout: float = 120) -> float:
    """Pause the DAG; returns the seconds until Airflow removed its watcher's trigger."""
    t0 = time.monotonic()
    _set_paused(stack, f"start_{mode}", True)
    _wait(lambda: not _watchers(stack, _uri(root, mode)), timeout, f"watcher of start_{mode} removed",
          interval=0.5)
    return round(time.monotonic() - t0, 1)


# -------------------------------------------------------------------------------------------- tests


@pytest.mark.timeout(600)
def test_first_unpause_reports_files_already_there_only_with_start_from_existing(
    facility: dict[str, Any],
) -> None:
    stack, root = facility["stack"], facility["root"]
    try:
        for dag_id in (EXISTING, NOW):
            dag = _wait(partial(_try_dag, stack, dag_id), 120, f"{dag_id} parsed")
            assert dag["is_paused"], f"{dag_id} should be created paused"
        # Paused from creation: Airflow made no trigger for either watcher, nothing watches yet.
        for mode in ("existing", "now"):
            _wait(partial(_asset, stack, _uri(root, mode)), 60, f"asset {mode}")
            assert _watchers(stack, _uri(root, mode)) == []
        before = {mode: [f"{root}/{mode}/before-{i}.h5" for i in range(3)] for mode in ("existing", "now")}
        for paths in before.values():
            for path in paths:
                _put(path)

        t0 = time.monotonic()
        for mode in ("existing", "now"):
            _ensure_running(stack, root, mode)
        wait_for_watches(UPLOADER, 2, timeout=120)
        counts, seen = _wait_processed(stack, EXISTING, before["existing"], timeout=180)
        measure("start_existing_first_unpause", unpause_to_processed_s=round(time.monotonic() - t0, 1))
        assert all(counts[p] == 1 for p in before["existing"]), counts
        assert set(before["existing"]) <= set(seen["listed"])  # reported by the first listing
        assert (_state(stack, _uri(root, "existing")) or {}).get("start_from") == "existing"

        live = f"{root}/now/live.h5"
        _put(live)
        counts, _ = _wait_processed(stack, NOW, [live], timeout=120)
        # "now" remembered the files already there and never reports them; the live one came through.
        assert set(counts) == {live} and counts[live] == 1, counts
        assert (_state(stack, _uri(root, "now")) or {}).get("start_from") == "now"
    except BaseException:
        _dump_logs(stack)
        raise


def _try_dag(stack: AirflowStack, dag_id: str) -> dict[str, Any] | None:
    try:
        return stack.api.dag(dag_id)
    except requests.HTTPError:
        return None


@pytest.mark.timeout(900)
def test_uploads_while_paused_are_processed_after_unpause(facility: dict[str, Any]) -> None:
    """Three pauses of a running watcher's DAG, each followed by an unpause:

    1. the channel survives the pause: the resumed watcher replays what landed meanwhile from the
       channel's backlog (its stored channel and ``Last-Event-ID``);
    2. the channel expired on the server meanwhile (deleted here, as dCache does after
       ``channel_lifetime``): a new channel and a reconcile listing from the stored watermark;
    3. the only upload lands in the window between the pause and the re-parse that removes the watcher:
       the running trigger reports it, Airflow stores the asset event but queues no run (the DAG is
       paused), and the watcher's cursor moves past it. The resumed watcher's first batch is an empty
       flush batch; the run it makes picks the stranded asset event up.
    """
    stack, root = facility["stack"], facility["root"]
    uri = _uri(root, "existing")
    report: dict[str, Any] = {}
    try:
        before = {w["created_date"] for w in _ensure_running(stack, root, "existing")}
        wait_for_watches(UPLOADER, 1, timeout=120)
        warm = f"{root}/existing/warm.h5"
        _put(warm)
        _wait_processed(stack, EXISTING, [warm], timeout=120)
        time.sleep(7)  # the trigger stores its cursor 5 s after a batch
        state = _state(stack, uri)
        assert state and state["channel"] and state["last_id"] is not None

        # 1. channel survives: replay
        report["pause_to_watcher_removed_s"] = _pause_until_watcher_removed(stack, root, "existing")
        kept = _state(stack, uri)
        assert kept and kept["channel"] == state["channel"]  # the state outlives the trigger row
        during = [f"{root}/existing/paused-{i}.h5" for i in range(2)]
        for path in during:
            _put(path)
        t0 = time.monotonic()
        watchers = _ensure_running(stack, root, "existing")
        report["unpause_to_watcher_added_s"] = round(time.monotonic() - t0, 1)
        # a new watcher and trigger row (SQLite may reuse the deleted row's id), with the same state
        assert {w["created_date"] for w in watchers}.isdisjoint(before)
        counts, seen = _wait_processed(stack, EXISTING, during, timeout=120)
        report["replay_unpause_to_processed_s"] = round(time.monotonic() - t0, 1)
        assert all(counts[p] == 1 for p in during), counts
        assert not set(during) & set(seen["reconciled"] + seen["listed"])  # replayed, not listed
        resumed = _state(stack, uri)
        assert resumed and resumed["channel"] == state["channel"]

        # 2. channel expired while paused: reconcile from the watermark
        _pause_until_watcher_removed(stack, root, "existing")
        with DCacheHook(UPLOADER) as hook:
            hook.delete_channel(state["channel"])
        expired = f"{root}/existing/expired.h5"
        _put(expired)
        t0 = time.monotonic()
        _ensure_running(stack, root, "existing")
        counts, seen = _wait_processed(stack, EXISTING, [expired], timeout=120)
        report["reconcile_unpause_to_processed_s"] = round(time.monotonic() - t0, 1)
        assert counts[expired] == 1 and expired in seen["reconciled"]
        _wait(lambda: (_state(stack, uri) or {}).get("channel") not in (None, state["channel"]), 30,
              "the new channel stored")  # committed 5 s after the batch

        # 3. the only upload lands before Airflow removed the paused DAG's watcher, and the trigger
        #    stored its cursor past it before it was cancelled (else it is replayed: not this case)
        stranded = ""
        for attempt in range(3):
            parsed = stack.api.dag(EXISTING)["last_parsed_time"]
            _wait(partial(_parsed_since, stack, EXISTING, parsed), PARSE_INTERVAL * 6, "a parse of the DAG file",
                  interval=0.2)  # pause right after a parse: the next one is PARSE_INTERVAL away
            _set_paused(stack, EXISTING, True)
            stranded = f"{root}/existing/window-{attempt}.h5"
            _put(stranded)
            event_id = _wait_either(partial(_event_id, stack, uri, stranded), lambda: not _watchers(stack, uri),
                                    timeout=60)
            _wait(lambda: not _watchers(stack, uri), 120, "watcher removed", interval=0.5)
            stored = int((_state(stack, uri) or {}).get("last_id") or -1)
            if event_id is not None and stored >= event_id:
                break
            _ensure_running(stack, root, "existing")  # not stored past it: it is replayed, processed
            _wait_processed(stack, EXISTING, [stranded], timeout=120)
        else:
            pytest.fail("three times the watcher stopped before its cursor passed the upload: window not tested")
        report["window_attempts"] = attempt + 1
        counts, _ = _runs_done(stack, EXISTING)
        assert not counts[stranded]  # an asset event exists, but the paused DAG got no run for it
        t0 = time.monotonic()
        _ensure_running(stack, root, "existing")
        counts, _ = _wait_processed(stack, EXISTING, [stranded], timeout=120)
        report["stranded_unpause_to_processed_s"] = round(time.monotonic() - t0, 1)
        assert counts[stranded] == 1

        counts, _ = _runs_done(stack, EXISTING)
        assert all(c == 1 for c in counts.values()), {p: c for p, c in counts.items() if c != 1}
        runs = stack.api.dag_runs(EXISTING)
        report["runs"] = len(runs)
        print("E2E-REPORT", json.dumps(report), flush=True)
    except BaseException:
        print("E2E-REPORT (partial)", json.dumps(report), flush=True)
        _dump_logs(stack)
        raise


def _parsed_since(stack: AirflowStack, dag_id: str, parsed: str | None) -> bool:
    """The dag-processor parsed the DAG's file again since ``parsed`` (its ``last_parsed_time`` then)."""
    return bool(stack.api.dag(dag_id)["last_parsed_time"] != parsed)


def _event_id(stack: AirflowStack, uri: str, path: str) -> int | None:
    """The SSE id of the stored asset event that reported ``path`` (its cursor ``<channel>#<id>``)."""
    for ev in stack.api.asset_events(uri):
        for event in ((ev.get("extra") or {}).get("payload") or {}).get("events", []):
            if event["path"] == path and "#" in event["cursor"] and not event["cursor"].startswith("reconcile#"):
                return int(event["cursor"].rsplit("#", 1)[1])
    return None


def _wait_either(first: Callable[[], Any], second: Callable[[], bool], timeout: float) -> Any:
    """Poll until ``first()`` is truthy (its value) or ``second()`` holds (``first()`` once more); bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = first()
        if value:
            return value
        if second():
            return first()
        time.sleep(0.5)
    raise AssertionError(f"neither condition after {timeout:.0f} s")
