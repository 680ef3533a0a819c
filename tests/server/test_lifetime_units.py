"""Pin lifetime units as dCache takes them: any ``java.util.concurrent.TimeUnit`` name, spelled exactly.

dCache reads the frontend's ``lifetime-unit`` and the bulk PIN ``lifetimeUnit`` with
``TimeUnit.valueOf(unit)``, which is case-sensitive; neither caller upper-cases first. So the seven
upper-case names work, and ``minutes`` does not (dCache: an uncaught IllegalArgumentException, a 500;
here a 400 that names the accepted units). The provider accepts any case and sends the exact name.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid

import pytest
import requests

from airflow_dcache.hooks import _operations as ops
from airflow_dcache.hooks._protocol import ResponseInfo
from airflow_dcache.hooks._settings import AuthType, ConnectionSettings
from airflow_dcache.server.services.bulk import pin_lifetime_ms
from airflow_dcache.server.services.errors import BadRequest
from airflow_dcache.server.services.tape import LIFETIME_UNITS, lifetime_ms
from tests.server.test_bulk_and_tape_rest import wait_for

UNITS = ("NANOSECONDS", "MICROSECONDS", "MILLISECONDS", "SECONDS", "MINUTES", "HOURS", "DAYS")


def test_every_time_unit_converts_as_java_does():
    assert LIFETIME_UNITS == UNITS
    # TimeUnit.X.toMillis(n), which truncates
    assert [lifetime_ms(3_000_000, u) for u in UNITS[:3]] == [3, 3_000, 3_000_000]
    assert [lifetime_ms(2, u) for u in UNITS[3:]] == [2_000, 120_000, 7_200_000, 172_800_000]
    assert lifetime_ms(999_999, "NANOSECONDS") == 0 and lifetime_ms(1_999, "MICROSECONDS") == 1
    assert lifetime_ms(5, None) == lifetime_ms(5, "") == 5_000  # the frontend's default: SECONDS


@pytest.mark.parametrize("unit", ["minutes", "Seconds", "WEEKS", " SECONDS", 3, ["DAYS"]])
def test_anything_else_is_a_400_naming_the_units(unit):
    with pytest.raises(BadRequest) as err:
        lifetime_ms(1, unit)
    assert "lifetime-unit" in err.value.message and "MILLISECONDS" in err.value.message


def test_bulk_pin_defaults_as_dcache():
    """bulk.plugin!pin.default-lifetime=5, .unit=MINUTES: also the unit of a lifetime given alone."""
    assert pin_lifetime_ms({}) == 5 * 60_000
    assert pin_lifetime_ms({"lifetime": "2"}) == 2 * 60_000
    assert pin_lifetime_ms({"lifetimeUnit": "HOURS"}) == 5 * 3_600_000
    assert pin_lifetime_ms({"lifetime": "1500", "lifetimeUnit": "MILLISECONDS"}) == 1_500
    with pytest.raises(BadRequest, match=r"arguments\.lifetimeUnit"):
        pin_lifetime_ms({"lifetime": "1", "lifetimeUnit": "hours"})


# -- over HTTP -------------------------------------------------------------------------------------


@pytest.fixture
def tape_server(start_dcache):
    return start_dcache("--allow-insecure-macaroons", "--tape-flush-delay", "0.1", "--tape-stage-delay", "0.1",
                        name="units")


def _upload(server, name: str) -> str:
    path = f"/home/alice/{name}-{uuid.uuid4().hex[:6]}"
    assert requests.put(f"{server.webdav}{path}", data=b"x" * 100, auth=server.auth("alice")).status_code == 201
    return path


def _locality(server, path: str) -> str:
    return requests.get(f"{server.api}/namespace{path}?locality=true", auth=server.auth("alice")).json()["fileLocality"]




def _on_tape_only(server, path: str) -> None:
    r = requests.post(f"{server.api}/namespace{path}", json={"action": "qos", "target": "tape"},
                      auth=server.auth("alice"))
    assert r.status_code == 201
    wait_for(lambda: _locality(server, path) == "NEARLINE")


@pytest.mark.parametrize("unit", UNITS)
def test_pin_action_and_bulk_pin_take_every_unit(dcache_server, unit):
    path = _upload(dcache_server, "unit")
    r = requests.post(f"{dcache_server.api}/namespace{path}", json={"action": "pin", "lifetime": 5,
                                                                   "lifetime-unit": unit},
                      auth=dcache_server.auth("alice"))
    assert r.status_code == 201, r.text
    r = requests.post(f"{dcache_server.api}/bulk-requests", auth=dcache_server.auth("alice"), json={
        "activity": "PIN", "target": [path], "arguments": {"lifetime": "5", "lifetimeUnit": unit}})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("unit", ["milliseconds", "Minutes", "WEEKS"])
def test_units_are_case_sensitive_as_in_dcache(dcache_server, unit):
    path = _upload(dcache_server, "case")
    r = requests.post(f"{dcache_server.api}/namespace{path}", json={"action": "pin", "lifetime": 5,
                                                                   "lifetime-unit": unit},
                      auth=dcache_server.auth("alice"))
    assert r.status_code == 400 and "java.util.concurrent.TimeUnit" in r.json()["detail"]
    assert "'lifetime-unit'" in r.json()["detail"]
    r = requests.post(f"{dcache_server.api}/bulk-requests", auth=dcache_server.auth("alice"), json={
        "activity": "PIN", "target": [path], "arguments": {"lifetime": "5", "lifetimeUnit": unit}})
    assert r.status_code == 400 and "'arguments.lifetimeUnit'" in r.json()["detail"]


def test_a_milliseconds_pin_expires_and_a_minutes_pin_holds(tape_server):
    """The unit is honoured: 1500 MILLISECONDS keeps the staged copy about 1.5 s, 2 MINUTES keeps it."""
    short, long_ = _upload(tape_server, "ms"), _upload(tape_server, "min")
    for path in (short, long_):
        _on_tape_only(tape_server, path)
    for path, lifetime, unit in ((short, 1500, "MILLISECONDS"), (long_, 2, "MINUTES")):
        r = requests.post(f"{tape_server.api}/namespace{path}", json={"action": "pin", "lifetime": lifetime,
                                                                     "lifetime-unit": unit},
                          auth=tape_server.auth("alice"))
        assert r.status_code == 201
    wait_for(lambda: _locality(tape_server, long_) == "ONLINE_AND_NEARLINE")
    wait_for(lambda: _locality(tape_server, short) == "NEARLINE", timeout=10)  # staged, then evicted at expiry
    assert _locality(tape_server, long_) == "ONLINE_AND_NEARLINE"


def test_bulk_pin_in_milliseconds_expires(tape_server):
    path = _upload(tape_server, "bulk-ms")
    _on_tape_only(tape_server, path)
    r = requests.post(f"{tape_server.api}/bulk-requests", auth=tape_server.auth("alice"), json={
        "activity": "PIN", "target": [path], "arguments": {"lifetime": "1500", "lifetimeUnit": "MILLISECONDS"}})
    assert r.status_code == 201
    wait_for(lambda: _locality(tape_server, path) == "ONLINE_AND_NEARLINE")
    wait_for(lambda: _locality(tape_server, path) == "NEARLINE", timeout=10)


def test_bulk_pin_of_minus_one_millisecond_is_permanent(tape_server):
    """dCache 11.1: ``lifetime`` -1 ``MILLISECONDS`` asks the pin manager for a pin that never expires."""
    assert pin_lifetime_ms({"lifetime": "-1", "lifetimeUnit": "MILLISECONDS"}) is None
    for args in ({"lifetime": "-1"}, {"lifetime": "-1", "lifetimeUnit": "SECONDS"},
                 {"lifetime": "-2", "lifetimeUnit": "MILLISECONDS"}):
        with pytest.raises(BadRequest, match="permanent pin"):
            pin_lifetime_ms(args)
    path = _upload(tape_server, "bulk-forever")
    _on_tape_only(tape_server, path)
    r = requests.post(f"{tape_server.api}/bulk-requests", auth=tape_server.auth("alice"), json={
        "activity": "PIN", "target": [path], "arguments": {"lifetime": "-1", "lifetimeUnit": "MILLISECONDS"}})
    assert r.status_code == 201
    wait_for(lambda: _locality(tape_server, path) == "ONLINE_AND_NEARLINE")
    time.sleep(3)  # the sweep (1 s here) never evicts it
    assert _locality(tape_server, path) == "ONLINE_AND_NEARLINE"
    bad = requests.post(f"{tape_server.api}/bulk-requests", auth=tape_server.auth("alice"), json={
        "activity": "PIN", "target": [path], "arguments": {"lifetime": "-5", "lifetimeUnit": "SECONDS"}})
    assert bad.status_code == 400 and "permanent pin" in bad.json()["detail"]


# -- the provider's side ---------------------------------------------------------------------------------

S = ConnectionSettings(door_url="https://door:2880", frontend_url="https://door:3880", auth_type=AuthType.BASIC,
                       login="alice")


def _first_call(operation):
    call = next(operation)
    with contextlib.suppress(StopIteration):
        operation.send(ResponseInfo(201, "Created", {"request-url": "https://door:3880/api/v1/bulk-requests/r1"}, b""))
    return call


@pytest.mark.parametrize("given", [*UNITS, "milliseconds", "Microseconds", " hours "])
def test_provider_sends_the_exact_name(given):
    call = _first_call(ops.pin(S, "/f", 5, given))
    assert json.loads(call.body)["lifetime-unit"] == given.strip().upper()
    call = _first_call(ops.submit_bulk_request(S, "PIN", ["/f"], arguments={"lifetime": 5, "lifetimeUnit": given}))
    assert json.loads(call.body)["arguments"] == {"lifetime": "5", "lifetimeUnit": given.strip().upper()}


@pytest.mark.parametrize("given", ["WEEKS", "", None, 3])
def test_provider_refuses_other_units_before_sending(given):
    with pytest.raises(ValueError, match="MILLISECONDS") as err:
        next(ops.pin(S, "/f", 5, given))
    assert repr(given) in str(err.value)
    with pytest.raises(ValueError, match=r"arguments\['lifetimeUnit'\]"):
        next(ops.submit_bulk_request(S, "pin", ["/f"], arguments={"lifetimeUnit": given}))
