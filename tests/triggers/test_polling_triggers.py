"""Waiting triggers: deterministic, secret-free kwargs that round-trip; transient faults retried until the
deadline (then one timeout event, never a raise); backoff capped."""

from __future__ import annotations

import json
import time

import pytest
from airflow.sdk.module_loading import import_string

from airflow_dcache.paths import paths_from
from airflow_dcache.triggers.bulk import DCacheBulkRequestTrigger
from airflow_dcache.triggers.qos import DCacheQosTrigger
from tests.operators.conftest import run_trigger


@pytest.mark.parametrize("trigger", [
    DCacheQosTrigger(paths=["/b", "/a"], target_qos="tape+disk", locality="NEARLINE", deadline=5.0,
                     bulk_request_id="r1", dcache_conn_id="c"),
    DCacheBulkRequestTrigger(request_id="r2", api="tape", paths=["/a"], deadline=7.0, dcache_conn_id="c"),
])
def test_serialize_round_trip(trigger) -> None:
    classpath, kwargs = trigger.serialize()
    json.dumps(kwargs)
    assert import_string(classpath)(**kwargs).serialize() == (classpath, kwargs)
    if isinstance(trigger, DCacheQosTrigger):
        assert kwargs["target_qos"] == "disk+tape" and kwargs["locality"] == ["NEARLINE"]


def test_unreachable_service_is_retried_until_the_deadline(refused_port: int, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DC_DOWN", json.dumps({
        "conn_type": "dcache", "host": f"http://127.0.0.1:{refused_port}", "login": "a", "password": "b",
        "extra": {"retries": 0, "timeout": 2}}))
    for trigger in (
        DCacheQosTrigger(paths=["/f"], dcache_conn_id="dc_down", deadline=time.time() + 1, poll_interval=0.1),
        DCacheBulkRequestTrigger(request_id="r", dcache_conn_id="dc_down", deadline=time.time() + 1,
                                 poll_interval=0.1),
    ):
        event = run_trigger(trigger, timeout=60)
        assert event["status"] == "timeout", event


def test_paths_accept_operator_results() -> None:
    assert paths_from({"destinations": ["/b/x"], "files": []}) == ["/b/x"]
    assert paths_from([{"paths": ["/a", "/b"]}, {"path": "/c", "name": "c"}]) == ["/a", "/b", "/c"]
    with pytest.raises(ValueError, match="paths"):
        paths_from('["/a"]')
