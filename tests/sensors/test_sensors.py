"""Sensors against the bundled service: poke, poke-once-then-defer, the trigger run for real."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowException, TaskDeferred

from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.sensors.dcache import DCacheBulkRequestSensor, DCacheFileSensor, DCacheQosSensor
from airflow_dcache.triggers.bulk import DCacheBulkRequestTrigger
from airflow_dcache.triggers.qos import DCacheQosTrigger
from tests.operators.conftest import put, run_trigger


def test_file_sensor_pokes(main: DCacheHook, main_conn: str, workdir: str, context: dict) -> None:
    sensor = DCacheFileSensor(task_id="s", path=f"{workdir}/f", dcache_conn_id=main_conn)
    assert sensor.poke(context) is False
    put(main, f"{workdir}/f")
    assert sensor.poke(context) is True
    online = DCacheFileSensor(task_id="s", path=f"{workdir}/f", condition="online", dcache_conn_id=main_conn)
    assert online.poke(context)
    assert DCacheFileSensor(task_id="s", path=f"{workdir}/f", condition="checksum", checksum="adler32",
                            dcache_conn_id=main_conn).poke(context)
    assert not DCacheFileSensor(task_id="s", path=f"{workdir}/f", condition="nearline",
                                dcache_conn_id=main_conn).poke(context)


def test_file_sensor_defers_only_when_needed(main: DCacheHook, main_conn: str, workdir: str, context: dict) -> None:
    put(main, f"{workdir}/here")
    DCacheFileSensor(task_id="s", path=f"{workdir}/here", deferrable=True, dcache_conn_id=main_conn).execute(context)
    sensor = DCacheFileSensor(task_id="s", path=f"{workdir}/later", deferrable=True, poke_interval=0.1,
                              timeout=60, dcache_conn_id=main_conn)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context)
    trigger = deferred.value.trigger
    assert isinstance(trigger, DCacheQosTrigger) and trigger.deadline is not None
    put(main, f"{workdir}/later")
    event = run_trigger(trigger)
    assert event["status"] == "success"
    sensor.execute_complete(context, event)
    with pytest.raises(AirflowException, match="timeout"):
        sensor.execute_complete(context, {"status": "timeout", "message": "not yet"})


def test_qos_sensor_deferred_until_archived(main: DCacheHook, main_conn: str, workdir: str, context: dict) -> None:
    path = f"{workdir}/arch"
    put(main, path)
    main.set_qos(path, "disk+tape")
    sensor = DCacheQosSensor(task_id="s", path=[path], target_qos="disk+tape", locality="NEARLINE",
                             deferrable=True, poke_interval=0.1, dcache_conn_id=main_conn)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context)
    event = run_trigger(deferred.value.trigger)
    assert event["status"] == "success", event
    assert main.stat(path, locality=True).locality == "ONLINE_AND_NEARLINE"


def test_bulk_request_sensor(main: DCacheHook, main_conn: str, workdir: str, context: dict) -> None:
    put(main, f"{workdir}/p")
    ok = main.submit_bulk_request("PIN", [f"{workdir}/p"], arguments={"lifetime": 60})
    sensor = DCacheBulkRequestSensor(task_id="s", request_id=ok.id, deferrable=True, poke_interval=0.1,
                                     dcache_conn_id=main_conn)
    try:
        sensor.execute(context)  # may already be done: then it never defers
    except TaskDeferred as deferred:
        assert isinstance(deferred.trigger, DCacheBulkRequestTrigger)
        assert run_trigger(deferred.trigger)["status"] == "success"
    bad = main.submit_bulk_request("LOG_TARGET", [f"{workdir}/missing"])
    event = run_trigger(DCacheBulkRequestTrigger(request_id=bad.id, dcache_conn_id=main_conn, poll_interval=0.1))
    assert event["status"] == "error" and f"{workdir}/missing" in event["message"]
    with pytest.raises(AirflowException, match="failed"):
        DCacheBulkRequestSensor(task_id="s", request_id=bad.id, dcache_conn_id=main_conn).poke(context)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"condition": "shiny"}, "condition"),
    ({"condition": "qos"}, "target_qos"),
    ({"target_qos": "platinum"}, "target_qos"),
    ({"locality": "ORBIT"}, "locality"),
    ({"path": "no/slash"}, "path"),
])
def test_file_sensor_bad_input(kwargs: dict, field: str) -> None:
    args = {"task_id": "s", "path": "/home/alice/f", **kwargs}
    with pytest.raises(ValueError, match=field):
        DCacheFileSensor(**args)
    with pytest.raises(ValueError, match="api"):
        DCacheBulkRequestSensor(task_id="b", request_id="x", api="srm")
