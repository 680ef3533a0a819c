"""QoS, pin and stage operators on the tape-emulating instance: blocking, deferred (the trigger's
``run()`` for real, then ``execute_complete``), cancellation and bad input."""

from __future__ import annotations

import asyncio

import pytest
from airflow.sdk.exceptions import AirflowException, TaskDeferred

from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.operators.qos import DCachePinOperator, DCacheSetQosOperator, DCacheUnpinOperator
from airflow_dcache.operators.stage import DCacheStageOperator
from airflow_dcache.triggers.bulk import DCacheBulkRequestTrigger
from airflow_dcache.triggers.qos import DCacheQosTrigger
from tests.operators.conftest import put, run_trigger, settle

FAST = {"poll_interval": 0.1, "max_poll_interval": 0.5}


def test_set_qos_blocking_reaches_target_and_archive(main: DCacheHook, main_conn: str, workdir: str,
                                                     context: dict) -> None:
    paths = [f"{workdir}/q{i}" for i in range(3)]
    for p in paths:
        put(main, p)
    op = DCacheSetQosOperator(task_id="qos", path=[{"path": p} for p in paths], target_qos="disk+tape",
                              wait_for_locality="NEARLINE", deferrable=False, dcache_conn_id=main_conn, **FAST)
    result = op.execute(context)
    assert result["status"] == "reached" and result["paths"] == paths and result["locality"] == ["NEARLINE"]
    for p in paths:
        entry = main.stat(p, qos=True, locality=True)
        assert entry.current_qos == "disk+tape" and entry.locality == "ONLINE_AND_NEARLINE"
    assert "/bulk-requests/" in context["ti"].xcom["dcache_request_url"]


def test_set_qos_deferred_runs_trigger_then_completes(main: DCacheHook, main_conn: str, workdir: str,
                                                      context: dict) -> None:
    path = f"{workdir}/d"
    put(main, path)
    op = DCacheSetQosOperator(task_id="qos", path=path, target_qos="tape", deferrable=True,
                              dcache_conn_id=main_conn, **FAST)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    trigger = deferred.value.trigger
    assert isinstance(trigger, DCacheQosTrigger)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_dcache.triggers.qos.DCacheQosTrigger"
    assert "password" not in repr(kwargs) and DCacheQosTrigger(**kwargs).serialize() == (classpath, kwargs)
    event = run_trigger(trigger)
    assert event["status"] == "success", event
    result = getattr(op, deferred.value.method_name)(context, event)
    assert result["status"] == "reached" and result["target_qos"] == "tape"
    assert main.stat(path, locality=True).locality == "NEARLINE"


def test_already_at_target_does_not_defer(main: DCacheHook, main_conn: str, workdir: str, context: dict) -> None:
    put(main, f"{workdir}/disk")
    op = DCacheSetQosOperator(task_id="qos", path=f"{workdir}/disk", target_qos="disk", deferrable=True,
                              dcache_conn_id=main_conn, **FAST)
    assert op.execute(context)["status"] == "reached"  # checked once before deferring


def test_qos_trigger_reports_timeout_and_missing_files_as_events(main_conn: str, workdir: str) -> None:
    import time

    event = run_trigger(DCacheQosTrigger(paths=[f"{workdir}/never"], dcache_conn_id=main_conn,
                                         deadline=time.time() + 0.5, **FAST))
    assert event["status"] == "timeout" and f"{workdir}/never" in event["message"]
    event = run_trigger(DCacheQosTrigger(paths=["/home/alice/x"], dcache_conn_id="no_such_conn", **FAST))
    assert event["status"] == "error" and "no_such_conn" in event["message"]


def test_set_qos_failure_of_bulk_target_fails_fast(main_conn: str, workdir: str, context: dict) -> None:
    op = DCacheSetQosOperator(task_id="qos", path=f"{workdir}/missing", target_qos="tape", deferrable=False,
                              timeout=30, dcache_conn_id=main_conn, **FAST)
    with pytest.raises(AirflowException, match="failed"):
        op.execute(context)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"target_qos": "gold"}, "target_qos"),
    ({"target_qos": "disk", "wait_for_locality": "MOON"}, "locality"),
    ({"target_qos": "disk", "path": []}, "path"),
    ({"target_qos": "disk", "poll_interval": 0}, "poll_interval"),
    ({"target_qos": "disk", "timeout": -1}, "timeout"),
])
def test_set_qos_bad_input(kwargs: dict, field: str) -> None:
    args = {"task_id": "qos", "path": "/home/alice/f", **kwargs}
    with pytest.raises(ValueError, match=field):
        DCacheSetQosOperator(**args)


def test_on_kill_cancels_the_bulk_request(start_dcache, monkeypatch: pytest.MonkeyPatch, context: dict) -> None:
    from tests.operators.conftest import conn_json

    slow = start_dcache("--allow-insecure-macaroons", "--tape-flush-delay", "30", name="slow")
    monkeypatch.setenv("AIRFLOW_CONN_DC_SLOW", conn_json(slow))
    with DCacheHook("dc_slow") as hook:
        put(hook, "/home/alice/slow")
        op = DCacheSetQosOperator(task_id="qos", path="/home/alice/slow", target_qos="tape",
                                  wait_for_completion=False, dcache_conn_id="dc_slow")
        request_id = op.execute(context)["request_id"]
        op.on_kill()
        assert hook.bulk_request_status(request_id).status in ("CANCELLING", "CANCELLED")
        # the trigger's on_kill does the same while the task is deferred
        put(hook, "/home/alice/slow2")
        request_id = hook.submit_bulk_request("UPDATE_QOS", ["/home/alice/slow2"], arguments={"targetQos": "tape"}).id
        trigger = DCacheQosTrigger(paths=["/home/alice/slow2"], target_qos="tape", bulk_request_id=request_id,
                                   dcache_conn_id="dc_slow")
        asyncio.run(trigger.on_kill())
        assert hook.bulk_request_status(request_id).status in ("CANCELLING", "CANCELLED")


def test_pin_waits_online_and_unpin(main: DCacheHook, main_conn: str, workdir: str, context: dict) -> None:
    path = f"{workdir}/pinme"
    put(main, path)
    main.set_qos(path, "tape")
    settle(main, path, "tape")
    op = DCachePinOperator(task_id="pin", path=path, lifetime=600, wait_for_online=True, deferrable=True,
                           dcache_conn_id=main_conn, **FAST)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    event = run_trigger(deferred.value.trigger)
    result = op.execute_complete(context, event)
    assert result["online"] is True and main.stat(path, locality=True).locality == "ONLINE_AND_NEARLINE"
    DCacheUnpinOperator(task_id="unpin", path=path, dcache_conn_id=main_conn).execute(context)


@pytest.mark.parametrize("api", ["bulk", "tape"])
def test_stage_deferred_and_blocking(api: str, main: DCacheHook, main_conn: str, workdir: str,
                                     context: dict) -> None:
    paths = [f"{workdir}/t{i}" for i in range(2)]
    for p in paths:
        put(main, p)
        main.set_qos(p, "tape")
    for p in paths:
        settle(main, p, "tape")
    op = DCacheStageOperator(task_id="stage", path=paths, api=api, disk_lifetime=600, deferrable=True,
                             dcache_conn_id=main_conn, **FAST)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    trigger = deferred.value.trigger
    assert isinstance(trigger, DCacheBulkRequestTrigger) and trigger.api == api
    event = run_trigger(trigger)
    assert event["status"] == "success", event
    result = op.execute_complete(context, event)
    assert result["status"] == "completed" and result["paths"] == paths
    for p in paths:
        assert "ONLINE" in (main.stat(p, locality=True).locality or "")

    blocking = DCacheStageOperator(task_id="stage2", path=paths, api=api, deferrable=False,
                                   dcache_conn_id=main_conn, **FAST)
    assert blocking.execute(context)["status"] == "completed"


def test_stage_of_disk_only_file_fails_with_reason(main: DCacheHook, main_conn: str, workdir: str,
                                                   context: dict) -> None:
    put(main, f"{workdir}/diskonly")
    op = DCacheStageOperator(task_id="stage", path=f"{workdir}/diskonly", api="bulk", deferrable=False,
                             dcache_conn_id=main_conn, **FAST)
    with pytest.raises(AirflowException, match="DISK only"):
        op.execute(context)


def test_stage_bad_api() -> None:
    with pytest.raises(ValueError, match="api"):
        DCacheStageOperator(task_id="s", path="/f", api="srm")
