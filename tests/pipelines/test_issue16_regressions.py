"""Regression tests for issue 16: every file version is processed exactly once, by its own run.

One test (or a few) per case of the issue, at the level where the defect lived; each fails on the code
before d956228 (cases 1 and 6, the SSE trigger's stat cache and ``start_from``, are tested with the
triggers). Cases 2, 7 and 8 run against the bundled service over HTTP (``conftest.py``); cases 3-5 are
pure (the work-item builder). Product imports that did not exist before d956228 are made inside the
tests, so that each test fails on the old code for its own reason rather than the module not loading.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import requests
from airflow.sdk.exceptions import AirflowFailException

from airflow_dcache.events import StorageEvent
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.pipelines import steps
from tests.pipelines.conftest import put

RUN_ID = "asset_triggered__2026-12-02T01:36:02.368204+00:00_AbCdEfGh"
WHERE: dict[str, Any] = {"site": "main", "run_id": RUN_ID, "buffer_root": "/data/work",
                         "output_root": "/data/processed"}
AREAS = ("buffer_dir", "buffer_path", "buffer_output_dir", "output_dir")
CONSUMER = "dcache_ingest_pipeline"


def _event(path: str, pnfsid: str, *, kind: str = "closed_after_write", size: int = 10) -> StorageEvent:
    return StorageEvent(kind=kind, path=path, name=path.rsplit("/", 1)[-1], is_dir=False,
                        time="2026-12-02T01:36:02.000Z", source="sse", cursor=f"ch#{pnfsid}", pnfsid=pnfsid,
                        size=size)


def _under(inner: str, outer: str) -> bool:
    """Whether ``inner`` is ``outer`` or lies below it (what a recursive delete of ``outer`` removes)."""
    a, b = inner.rstrip("/"), outer.rstrip("/")
    return a == b or a.startswith(b + "/")


def assert_disjoint_areas(items: list[Mapping[str, Any]]) -> None:
    """No two items share an area, and no area of one lies inside (or is) an area of another."""
    for i, one in enumerate(items):
        for other in items[i + 1:]:
            for a in AREAS:
                for b in AREAS:
                    assert not _under(one[a], other[b]), (one["path"], a, one[a], other["path"], b, other[b])
                    assert not _under(other[b], one[a]), (other["path"], b, other[b], one["path"], a, one[a])


def _version_of(hook: DCacheHook, path: str) -> dict[str, Any]:
    """The version dict a work item carries for the file now at ``path`` (what ``check_hdf5`` gives it).

    Built by hand (it equals ``FileVersion.of(entry).to_json()``, checked in tests/events/test_version.py)
    so that the case-2 tests reach the steps on the code before d956228 too.
    """
    entry = hook.stat(path, checksum=True)
    checksum = f"adler32:{entry.checksums['adler32']}"
    return {"pnfsid": entry.pnfsid, "checksum": checksum, "size": entry.size, "mtime": entry.mtime,
            "id": f"{entry.pnfsid};{checksum}"}


# --- case 2: an overwrite while v1's run is in flight -------------------------------------------------------


@pytest.fixture
def overwritten(pipe_main: DCacheHook, pipe_workdir: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(path, v1, v2)``: v1 uploaded and its version taken (as v1's event run does), then v2 over it."""
    path = f"{pipe_workdir}/run001.h5"
    put(pipe_main, path, b"version one " * 100)
    v1 = _version_of(pipe_main, path)
    put(pipe_main, path, b"version two " * 100)
    v2 = _version_of(pipe_main, path)
    assert v1["pnfsid"] != v2["pnfsid"]
    return path, v1, v2


def _assert_version_changed(exc: BaseException, path: str) -> None:
    from airflow_dcache.exceptions import VersionChanged

    assert isinstance(exc, VersionChanged) and isinstance(exc, AirflowFailException), repr(exc)
    assert path in str(exc)


def test_case2_qos_for_v1_is_refused_after_an_overwrite(overwritten, pipe_main: DCacheHook, pipe_main_conn: str,
                                                       task_context: dict) -> None:
    from airflow_dcache.operators.qos import DCacheSetQosOperator

    path, v1, v2 = overwritten
    op = DCacheSetQosOperator(task_id="archive_rule", path=path, target_qos="disk+tape", deferrable=False,
                              wait_for_locality="NEARLINE", dcache_conn_id=pipe_main_conn, expected_version=v1,
                              poll_interval=0.1, max_poll_interval=0.2)
    with pytest.raises(Exception) as info:
        op.execute(task_context)
    _assert_version_changed(info.value, path)
    time.sleep(1.0)  # longer than the instance's tape flush delay: a rule would have acted by now
    entry = pipe_main.stat(path, qos=True, locality=True, checksum=True)
    assert entry.pnfsid == v2["pnfsid"]
    assert entry.current_qos == "disk" and not entry.target_qos and entry.locality == "ONLINE"


def test_case2_archive_wait_for_v1_does_not_report_v2_on_tape(overwritten, pipe_main: DCacheHook,
                                                             pipe_main_conn: str, task_context: dict) -> None:
    from airflow_dcache.operators.qos import DCacheSetQosOperator
    from airflow_dcache.sensors.dcache import DCacheFileSensor

    path, v1, v2 = overwritten
    # v2's own run archives v2; v1's run is still waiting for "its" file to be on tape.
    DCacheSetQosOperator(task_id="v2_rule", path=path, target_qos="disk+tape", wait_for_locality="NEARLINE",
                         deferrable=False, dcache_conn_id=pipe_main_conn, expected_version=v2, poll_interval=0.1,
                         max_poll_interval=0.2, timeout=30).execute(task_context)
    unbound = DCacheFileSensor(task_id="wait_any", path=path, condition="nearline", dcache_conn_id=pipe_main_conn,
                               deferrable=False)
    assert unbound.poke(task_context) is True  # what v1's wait saw before: v2 on tape, in v1's name
    sensor = DCacheFileSensor(task_id="wait_archived", path=path, condition="nearline", expected_version=v1,
                              dcache_conn_id=pipe_main_conn, deferrable=False)
    with pytest.raises(Exception) as info:
        sensor.poke(task_context)
    _assert_version_changed(info.value, path)


def test_case2_replica_of_v1_is_refused_after_an_overwrite(overwritten, pipe_buffer: DCacheHook,
                                                          pipe_main_conn: str, pipe_buffer_conn: str,
                                                          task_context: dict) -> None:
    from airflow_dcache.operators.replicate import DCacheReplicateOperator

    path, v1, _ = overwritten
    destination = f"/home/alice/rep-{uuid.uuid4().hex[:10]}/in/run001.h5"
    op = DCacheReplicateOperator(task_id="replicate", source_conn_id=pipe_main_conn,
                                 destination_conn_id=pipe_buffer_conn, source_path=path,
                                 destination_path=destination, expected_version=v1)
    try:
        with pytest.raises(Exception) as info:
            op.execute(task_context)
        _assert_version_changed(info.value, path)
        assert not pipe_buffer.exists(destination)
    finally:
        pipe_buffer.delete(destination.rsplit("/", 2)[0], recursive=True, missing_ok=True)


def test_case2_marker_for_v1_never_lands_on_v2(overwritten, pipe_main: DCacheHook) -> None:
    path, v1, v2 = overwritten
    item_v2 = {"path": path, "name": "run001.h5", "pnfsid": v2["pnfsid"], "size": v2["size"], "version": v2}
    with pytest.raises(Exception) as info:
        steps.mark_processed(pipe_main, path, CONSUMER, f"{CONSUMER}/run-of-v1", version=v1)
    _assert_version_changed(info.value, path)
    assert steps.marker_name(CONSUMER) not in (pipe_main.stat(path, xattr=True).xattrs or {})
    assert steps.already_processed(pipe_main, item_v2, CONSUMER) is False
    # v2's own run then marks v2, once.
    assert steps.mark_processed(pipe_main, path, CONSUMER, f"{CONSUMER}/run-of-v2", version=v2) is True
    assert steps.mark_processed(pipe_main, path, CONSUMER, f"{CONSUMER}/run-of-v2-again", version=v2) is False
    assert steps.already_processed(pipe_main, item_v2, CONSUMER) is True


# --- case 3: the same name in two directories of one burst --------------------------------------------------


def test_case3_same_name_in_two_directories_gets_two_areas() -> None:
    items = steps.work_items_from_events([_event("/data/incoming/x/run001.h5", "P1"),
                                          _event("/data/incoming/y/run001.h5", "P2")], **WHERE)
    assert [i["path"] for i in items] == ["/data/incoming/x/run001.h5", "/data/incoming/y/run001.h5"]
    assert_disjoint_areas(items)


def test_case3_two_versions_of_one_path_in_one_burst_get_two_areas() -> None:
    items = steps.work_items_from_events([_event("/data/incoming/run001.h5", "P1"),
                                          _event("/data/incoming/run001.h5", "P2")], **WHERE)
    assert [i["pnfsid"] for i in items] == ["P1", "P2"]
    assert_disjoint_areas(items)


# --- case 4: a file called ".h5" ---------------------------------------------------------------------------


@pytest.mark.parametrize("names", [
    [".h5", "a.h5"], ["..h5", "a.h5"], [".h5", "..h5"], ["a", "a.h5"], ["a.b.h5", "a.b"], [".h5", "h5"],
], ids=lambda names: "+".join(names))
def test_case4_odd_names_get_their_own_area_inside_the_run_area(names: list[str]) -> None:
    items = steps.work_items_from_events([_event(f"/data/incoming/{n}", f"P{i}") for i, n in enumerate(names)],
                                         **WHERE)
    run_area = f"{WHERE['buffer_root']}/{steps.run_folder(RUN_ID)}"
    for item in items:
        assert _under(item["buffer_dir"], run_area) and item["buffer_dir"].rstrip("/") != run_area, item
        assert "/./" not in item["buffer_dir"] + "/" and "/../" not in item["buffer_dir"] + "/", item
        assert "/./" not in item["output_dir"] + "/" and "/../" not in item["output_dir"] + "/", item
    assert_disjoint_areas(items)


# --- case 5: two manual runs in the same second ------------------------------------------------------------


def test_case5_two_manual_runs_in_one_second_get_two_run_folders() -> None:
    first, second = "manual__2026-12-02T01:36:02.123456+00:00", "manual__2026-12-02T01:36:02.654321+00:00"
    assert steps.run_folder(first) != steps.run_folder(second)
    record = {"path": "/data/incoming/run001.h5", "name": "run001.h5", "pnfsid": "P1", "size": 10}
    items = [steps.work_items_from_selection([record], **{**WHERE, "run_id": run})[0] for run in (first, second)]
    assert_disjoint_areas(items)


# --- case 7: a permanent refusal is not retried ------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 412, 413])
def test_case7_client_refusals_fail_at_once(status: int) -> None:
    from airflow.sdk.definitions.retry_policy import RetryAction

    from airflow_dcache.exceptions import error_class_for_status
    from airflow_dcache.retry_policy import DCacheRetryPolicy

    exc = error_class_for_status(status)("refused", status=status, method="GET", url="http://127.0.0.1/x")
    assert DCacheRetryPolicy().evaluate(exc, 1, 4).action == RetryAction.FAIL
    wrapped = RuntimeError("step failed")
    wrapped.__cause__ = exc
    assert DCacheRetryPolicy().evaluate(wrapped, 1, 4).action == RetryAction.FAIL


def test_case7_version_changed_fails_at_once() -> None:
    from airflow.sdk.definitions.retry_policy import RetryAction

    from airflow_dcache.exceptions import VersionChanged
    from airflow_dcache.retry_policy import DCacheRetryPolicy

    assert DCacheRetryPolicy().evaluate(VersionChanged("/x changed"), 1, 4).action == RetryAction.FAIL


def _transient_errors() -> list[BaseException]:
    from airflow_dcache.exceptions import DCacheConnectionError, error_class_for_status

    errors: list[BaseException] = [error_class_for_status(s)("try later", status=s) for s in (408, 429, 500, 503)]
    errors += [DCacheConnectionError("connection refused"), ConnectionError("reset"), TimeoutError("slow")]
    return errors


@pytest.mark.parametrize("index", range(7))
def test_case7_outages_use_the_tasks_retries(index: int) -> None:
    from airflow.sdk.definitions.retry_policy import RetryAction

    from airflow_dcache.retry_policy import DCacheRetryPolicy

    assert DCacheRetryPolicy().evaluate(_transient_errors()[index], 1, 4).action == RetryAction.DEFAULT


@pytest.fixture
def bobs_private_file(pipe_main_site, pipe_bob_conn: str) -> Iterator[str]:
    """A file in a 0700 directory of bob's on ``main``: alice is refused (403) whatever she does with it."""
    private = f"/home/bob/private-{uuid.uuid4().hex[:10]}"
    with DCacheHook(pipe_bob_conn) as bob:
        bob.mkdir(private)
        put(bob, f"{private}/secret.h5", b"bob's data")
        r = requests.post(f"{pipe_main_site.api}/namespace{private}", json={"action": "chmod", "mode": 0o700},
                          auth=pipe_main_site.auth("bob"), timeout=30)
        assert r.status_code == 201, r.text
        yield f"{private}/secret.h5"
        bob.delete(private, recursive=True, missing_ok=True)



@pytest.mark.parametrize("mode, expected_version", [
    # pull: the remote door's 403 arrives in the copy's failure marker ("rejected GET: 403 …")
    pytest.param("pull", False, id="pull"),
    pytest.param("push", False, id="push"),
    pytest.param("pull", True, id="pull-with-expected-version"),
])
def test_case7_real_403_from_an_operator_is_failed_at_once(bobs_private_file: str, pipe_main_conn: str,
                                                           pipe_buffer: DCacheHook, pipe_buffer_conn: str,
                                                           task_context: dict, mode: str,
                                                           expected_version: bool) -> None:
    from airflow.sdk.definitions.retry_policy import RetryAction

    from airflow_dcache.operators.replicate import DCacheReplicateOperator
    from airflow_dcache.retry_policy import DCacheRetryPolicy

    destination_dir = f"/home/alice/rep-{uuid.uuid4().hex[:10]}"
    # alice cannot stat bob's file, so the version an event would carry is a made-up one here
    version = {"expected_version": "0000AAAABBBBCCCCDDDDEEEEFFFF00001111;adler32:0a1b2c3d"} if expected_version else {}
    op = DCacheReplicateOperator(task_id="replicate", source_conn_id=pipe_main_conn, mode=mode,
                                 destination_conn_id=pipe_buffer_conn, source_path=bobs_private_file,
                                 destination_dir=destination_dir, retries=3, **version)
    try:
        assert isinstance(op.retry_policy, DCacheRetryPolicy)
        with pytest.raises(Exception) as info:
            op.execute(task_context)
        assert "403" in str(info.value), repr(info.value)
        decision = op.retry_policy.evaluate(info.value, 1, 4)
        assert decision.action == RetryAction.FAIL, (repr(info.value), decision)
        assert not pipe_buffer.exists(f"{destination_dir}/secret.h5")
    finally:
        pipe_buffer.delete(destination_dir, recursive=True, missing_ok=True)


# --- case 8: leftovers and silent emptiness ----------------------------------------------------------------


def test_case8_clean_run_area_removes_the_run_and_sweeps_only_old_areas(pipe_main: DCacheHook,
                                                                       pipe_workdir: str) -> None:
    root = f"{pipe_workdir}/work"
    run, other_old, other_new = (f"manual__2026-12-02T01:36:02.{n:06d}+00:00" for n in (1, 2, 3))
    old_area = f"{root}/{steps.run_folder(other_old)}"
    put(pipe_main, f"{old_area}/P9/in/stale.h5", b"left by a run whose clean-up failed")
    time.sleep(2.0)
    own = f"{root}/{steps.run_folder(run)}"
    leftovers = [f"{own}/P1/in/ok.h5", f"{own}/P1/out/preview.png", f"{own}/P2/in/failed.h5",
                 f"{own}/P2/out/.tmp-3f2a/partial.png"]
    for path in leftovers:
        put(pipe_main, path, b"x")
    new_area = f"{root}/{steps.run_folder(other_new)}"
    put(pipe_main, f"{new_area}/P3/in/running.h5", b"a run still working")
    removed = steps.clean_run_area(pipe_main, root, run, sweep_after_s=1.0)
    assert own in removed and old_area in removed and new_area not in removed
    assert not pipe_main.exists(own) and not pipe_main.exists(old_area)
    assert pipe_main.exists(f"{new_area}/P3/in/running.h5")
    assert steps.clean_run_area(pipe_main, root, run, sweep_after_s=1.0) == [own]  # again: nothing more to do


@pytest.mark.parametrize("pattern", ["/*.nxs", "/nothing-here/*.h5", "/nothing-here/run001.h5"])
def test_case8_a_selection_that_matches_nothing_fails_naming_the_pattern(pipe_main: DCacheHook, pipe_workdir: str,
                                                                          pattern: str) -> None:
    put(pipe_main, f"{pipe_workdir}/run001.h5", b"\x89HDF\r\n\x1a\n")
    missing = pipe_workdir + pattern
    with pytest.raises(ValueError, match=re.escape(missing)):
        steps.select_records(pipe_main, [f"{pipe_workdir}/*.h5", missing])
    with pytest.raises(ValueError, match="nothing matches"):
        steps.select_records(pipe_main, [missing])
    assert steps.select_records(pipe_main, [missing], allow_empty=True) == []
    found = steps.select_records(pipe_main, [f"{pipe_workdir}/*.h5", missing], allow_empty=True)
    assert [r["path"] for r in found] == [f"{pipe_workdir}/run001.h5"]


RETRY_DAG = '''
from datetime import datetime, timedelta

from airflow.sdk import dag

from airflow_dcache.operators.replicate import DCacheReplicateOperator


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def issue16_case7():
    DCacheReplicateOperator(task_id="replicate", source_conn_id="pipe_main", destination_conn_id="pipe_buffer",
                            mode="push", source_path=SOURCE, destination_dir=DESTINATION, retries=3,
                            retry_delay=timedelta(minutes=10))


issue16_case7()
'''


def test_case7_a_403_fails_the_task_run_after_one_try(bobs_private_file: str, pipe_main_conn: str,
                                                      pipe_buffer: DCacheHook, pipe_buffer_conn: str,
                                                      dcache_dag_test, tmp_path) -> None:
    """Through Airflow itself (``dag.test()``): retries=3 with a 10-minute delay, yet the run ends failed at once."""
    destination = f"/home/alice/rep-{uuid.uuid4().hex[:10]}"
    dag_file = tmp_path / "dags" / "issue16_case7.py"
    dag_file.parent.mkdir()
    dag_file.write_text(f"SOURCE = {bobs_private_file!r}\nDESTINATION = {destination!r}\n" + RETRY_DAG)
    started = time.monotonic()
    try:
        result = dcache_dag_test(dag_file, "issue16_case7")
    finally:
        pipe_buffer.delete(destination, recursive=True, missing_ok=True)
    assert result.task_states == {"replicate": "failed"}, result.output[-3000:]
    assert result.state == "failed" and time.monotonic() - started < 300
    assert "permanent refusal, not retried" in result.output, result.output[-3000:]
