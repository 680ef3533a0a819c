"""``DCacheChunkWaitOperator``: a chunk's QoS wait as one deferral, per-file outcomes carried in the chunk.

Real server over HTTP (tape flush slowed to 1.5 s, so a wait is under way when the operator first looks);
the trigger the operator defers with is run for real and its event handed to ``execute_complete``.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, TaskDeferred

from airflow_dcache.events.version import FileVersion
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.operators.chunk_wait import DCacheChunkWaitOperator
from airflow_dcache.paths import OutsideAllowedRoots
from airflow_dcache.pipelines import chunk_steps as cs
from airflow_dcache.pipelines import chunks as ck
from airflow_dcache.triggers.files_wait import DCacheFilesWaitTrigger
from tests.conftest import DCacheServer, connection_json, fresh_dir, start_server
from tests.operators.conftest import run_trigger

ROOT = "/home/alice"


@pytest.fixture(scope="module")
def slow_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DCacheServer]:
    server = start_server(tmp_path_factory.mktemp("chunk-wait"), "--tape-flush-delay", "1.5",
                          "--tape-stage-delay", "0.3")
    yield server
    server.stop()


@pytest.fixture
def conn(slow_site: DCacheServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_DC_CHUNK", connection_json(slow_site))
    return "dc_chunk"


@pytest.fixture
def hook(conn: str) -> Iterator[DCacheHook]:
    with DCacheHook(conn) as h:
        yield h


@pytest.fixture
def workdir(hook: DCacheHook) -> Iterator[str]:
    with fresh_dir(hook, f"{ROOT}/cw") as path:
        yield path


def _item(hook: DCacheHook, path: str, data: bytes | None = None) -> dict[str, Any]:
    hook.upload(io.BytesIO(data or path.encode() * 50), path)
    entry = hook.stat(path, checksum=True)
    version = FileVersion.of(entry)
    return {"path": path, "pnfsid": entry.pnfsid, "size": entry.size, "version": version.to_json()}


def _chunk(hook: DCacheHook, workdir: str, n: int, *, target: str | None = "disk+tape",
           failed_first: bool = False) -> dict[str, Any]:
    """A chunk as ``archive_rule`` leaves it: each live file with the chunk's bulk request (``qos_request``)."""
    (chunk,) = ck.make_chunks([_item(hook, f"{workdir}/f{i}.h5") for i in range(n)])
    if failed_first:
        chunk["files"][0]["failed"] = {"stage": "preview", "reason": f"{workdir}/f0.h5: no HDF5 signature"}
    live = ck.live(chunk)
    if target:
        request = hook.submit_bulk_request("UPDATE_QOS", [e["item"]["path"] for e in live],
                                           arguments={"targetQos": target}).id
        for e in live:
            e["qos_request"] = request
    return chunk


def _op(conn: str, chunk: Any, **kwargs: Any) -> DCacheChunkWaitOperator:
    kwargs.setdefault("poll_interval", 0.2)
    kwargs.setdefault("max_poll_interval", 0.5)
    kwargs.setdefault("timeout", 60)
    return DCacheChunkWaitOperator(task_id="wait_archived", chunk=chunk, dcache_conn_id=conn,
                                   allowed_roots=[ROOT], **kwargs)


def test_defers_once_for_the_chunk_and_resumes_with_per_file_outcomes(conn: str, hook: DCacheHook,
                                                                      workdir: str) -> None:
    chunk = _chunk(hook, workdir, 4, failed_first=True)
    op = _op(conn, chunk)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, DCacheFilesWaitTrigger) and deferred.value.method_name == "execute_complete"
    assert [f["path"] for f in trigger.files] == [f"{workdir}/f{i}.h5" for i in (1, 2, 3)]  # live files only
    assert trigger.bulk_request_id == chunk["files"][1]["qos_request"]
    assert trigger.allowed_roots == [ROOT] and trigger.condition.locality == {"ONLINE", "NEARLINE"}
    event = run_trigger(trigger)
    result = op.execute_complete({}, event)
    assert [e["failed"] for e in result["files"]][1:] == [None, None, None]
    assert result["files"][0]["failed"]["stage"] == "preview" and "wait_archived" not in result["files"][0]["timings"]
    for entry in result["files"][1:]:
        start, end = entry["timings"]["wait_archived"]
        assert start <= end
        assert hook.stat(entry["item"]["path"], locality=True).locality == "ONLINE_AND_NEARLINE"
    json.dumps(result)  # XCom


def test_a_met_condition_needs_no_deferral(conn: str, hook: DCacheHook, workdir: str) -> None:
    chunk = _chunk(hook, workdir, 3, target=None)  # a new file is on disk: a disk rule is met at once
    result = _op(conn, chunk, target_qos="disk").execute({})
    assert [e["failed"] for e in result["files"]] == [None, None, None]
    assert all("wait_archived" in e["timings"] for e in result["files"])


def test_blocking_gone_and_replaced_files_fail_alone(conn: str, hook: DCacheHook, workdir: str) -> None:
    chunk = _chunk(hook, workdir, 4)
    hook.delete(f"{workdir}/f1.h5")
    _item(hook, f"{workdir}/f2.h5", b"another version" * 20)
    result = _op(conn, chunk, deferrable=False).execute({})
    failed = {e["item"]["path"].rsplit("/", 1)[-1]: e["failed"] for e in result["files"]}
    assert failed["f0.h5"] is None and failed["f3.h5"] is None
    assert failed["f1.h5"]["stage"] == "wait_archived" and "gone" in failed["f1.h5"]["reason"]
    assert "changed since the event" in failed["f2.h5"]["reason"]
    outcome = ck.outcomes([result])
    assert outcome["counts"] == {"failed": 2, "processed": 2}
    assert {f["path"] for f in outcome["failed"]} == {f"{workdir}/f1.h5", f"{workdir}/f2.h5"}


def test_a_timeout_fails_the_late_files_naming_them(conn: str, hook: DCacheHook, workdir: str) -> None:
    chunk = _chunk(hook, workdir, 2, target=None)  # no rule was sent: nothing reaches tape
    result = _op(conn, chunk, deferrable=False, timeout=1).execute({})
    for entry in result["files"]:
        assert entry["failed"]["stage"] == "wait_archived"
        assert entry["item"]["path"] in entry["failed"]["reason"] and "timed out" in entry["failed"]["reason"]


def test_an_unreachable_site_fails_the_task_so_it_retries(refused_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DC_GONE", json.dumps({
        "conn_type": "dcache", "host": f"http://127.0.0.1:{refused_port}", "login": "a", "password": "b",
        "extra": {"retries": 0, "timeout": 2}}))
    (chunk,) = ck.make_chunks([{"path": f"{ROOT}/x{i}.h5", "pnfsid": f"000{i}"} for i in range(2)])
    with pytest.raises(ck.StageUnreachable, match="unreachable"):
        _op("dc_gone", chunk, deferrable=False, timeout=1, poll_interval=0.1).execute({})


def test_an_event_without_outcomes_fails_the_task(conn: str) -> None:
    (chunk,) = ck.make_chunks([{"path": f"{ROOT}/x.h5"}])
    with pytest.raises(AirflowException, match=r"without per-file outcomes.*boom"):
        _op(conn, chunk).execute_complete({}, {"status": "error", "message": "boom"})


def test_no_live_file_returns_the_chunk(conn: str) -> None:
    (chunk,) = ck.make_chunks([{"path": f"{ROOT}/x.h5"}])
    chunk["files"][0]["failed"] = {"stage": "validate", "reason": "bad"}
    assert _op(conn, chunk).execute({}) == chunk


def test_paths_outside_the_allowed_roots_are_refused(conn: str) -> None:
    (chunk,) = ck.make_chunks([{"path": "/etc/x.h5"}])
    with pytest.raises(OutsideAllowedRoots, match=r"/etc/x\.h5"):
        _op(conn, chunk).execute({})


def test_bad_target_qos_fails_at_parse(conn: str) -> None:
    with pytest.raises(ValueError, match="target_qos"):
        _op(conn, {"files": []}, target_qos="flash")


def test_on_kill_cancels_the_chunks_bulk_request(conn: str, hook: DCacheHook, workdir: str) -> None:
    chunk = _chunk(hook, workdir, 2)
    request = chunk["files"][0]["qos_request"]
    op = _op(conn, chunk, deferrable=False, timeout=30)
    out: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: out.update(result=op.execute({})))
    worker.start()
    deadline = time.monotonic() + 10
    while op._request_id is None and time.monotonic() < deadline:
        time.sleep(0.02)
    op.on_kill()  # what Airflow calls when the task is killed while it waits in the worker
    worker.join(30)
    assert not worker.is_alive()
    assert hook.bulk_request_status(request).status.upper() in ("CANCELLED", "CANCELLING")
    # the wait ends either way: a file whose transition had already gone through is reached, the others
    # fail naming the cancelled request
    for entry in out["result"]["files"]:
        assert entry["failed"] is None or "cancelled" in entry["failed"]["reason"], entry


def test_the_triggers_on_kill_cancels_the_request(conn: str, hook: DCacheHook, workdir: str) -> None:
    import asyncio

    chunk = _chunk(hook, workdir, 2)
    request = chunk["files"][0]["qos_request"]
    trigger = _op(conn, chunk).trigger(chunk, started=time.time())
    assert trigger is not None
    asyncio.run(trigger.on_kill())
    assert hook.bulk_request_status(request).status.upper() in ("CANCELLED", "CANCELLING")


def test_chunk_steps_blocking_wait_follows_the_target_qos(conn: str, hook: DCacheHook, workdir: str,
                                                          tmp_path: Path) -> None:
    chunk = _chunk(hook, workdir, 2, target="tape")
    cfg = cs.Config(main=conn, buffer=conn, allowed_roots=[ROOT])
    result = cs.wait_archived(chunk, cfg, target_qos="tape", timeout=60, interval=0.2)
    assert [e["failed"] for e in result["files"]] == [None, None]
    for e in result["files"]:
        entry = hook.stat(e["item"]["path"], qos=True, locality=True)
        assert entry.current_qos == "tape" and "NEARLINE" in entry.locality


def test_then_runs_in_the_same_task_once_the_wait_is_over(conn: str, hook: DCacheHook, workdir: str) -> None:
    """``then`` gets the chunk with the wait's outcomes and the context, after a deferral and without one."""
    from airflow.sdk.exceptions import AirflowSkipException

    calls: list[tuple[dict[str, Any], Any]] = []

    def then(chunk: dict[str, Any], context: Any) -> dict[str, Any]:
        calls.append((chunk, context))
        return {"recorded": [e["item"]["path"] for e in ck.live(chunk)]}

    chunk = _chunk(hook, workdir, 3, failed_first=True)
    op = _op(conn, chunk, then=then)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"run_id": "r"})
    assert calls == []  # not before the wait is over
    result = op.execute_complete({"run_id": "r"}, run_trigger(deferred.value.trigger))
    assert result == {"recorded": [f"{workdir}/f1.h5", f"{workdir}/f2.h5"]}
    (seen, context), = calls
    assert context == {"run_id": "r"} and all("wait_archived" in e["timings"] for e in ck.live(seen))
    # met at once (no deferral), and no live file at all: then still runs, and may skip the task
    assert _op(conn, _chunk(hook, workdir, 1, target=None), target_qos="disk", then=then).execute({})["recorded"]
    dead = _chunk(hook, workdir, 1, target=None, failed_first=True)

    def skip(chunk: dict[str, Any], context: Any) -> Any:
        raise AirflowSkipException("nothing processed")

    with pytest.raises(AirflowSkipException):
        _op(conn, dead, then=skip).execute({})
    # a wait that fails the task (no per-file outcomes) does not reach then
    calls.clear()
    with pytest.raises(AirflowException, match="without per-file outcomes"):
        op.execute_complete({}, {"status": "error", "message": "boom"})
    assert calls == []
    with pytest.raises(TypeError, match="then: expected a callable"):
        _op(conn, chunk, then="record")
