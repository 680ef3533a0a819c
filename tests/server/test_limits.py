"""Limits answered as dCache 11.2/12.0 answers them, over real HTTP.

- Too many targets in one bulk/stage request: **413** with BulkService's text (was 403/400 before 11.2.4).
- Too many unfinished requests of one user (``bulk.limits.max-requests-per-user``): **429**, no Retry-After.
- The frontend/door rate limiter (``--rate-limit``, off by default): **429** + ``Retry-After`` in whole
  seconds and a plain text body, before any login.
"""

from __future__ import annotations

import time
import uuid

import pytest
import requests

BUSY = "Server is busy. Please try again later."


def _bulk(server, body: dict) -> requests.Response:
    return requests.post(f"{server.api}/bulk-requests", json=body, auth=server.auth("alice"), timeout=10)


@pytest.mark.parametrize(("expand", "limit"), [("NONE", 500), ("TARGETS", 10), ("ALL", 1)])
def test_bulk_request_over_the_target_limit_is_413(dcache_server, expand, limit):
    targets = [f"/home/alice/x{i}" for i in range(limit + 1)]
    r = _bulk(dcache_server, {"activity": "PIN", "target": targets, "expandDirectories": expand})
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == (f"The number of targets {limit + 1} exceeds maximum {limit} "
                                  f"for directory expansion {expand}.")
    at_limit = _bulk(dcache_server, {"activity": "LOG_TARGET", "target": targets[:limit], "expandDirectories": expand})
    assert at_limit.status_code == 201, at_limit.text


def test_tape_stage_over_the_target_limit_is_413(dcache_server):
    files = [{"path": f"/home/alice/s{i}"} for i in range(501)]
    r = requests.post(f"{dcache_server.api}/tape/stage", json={"files": files}, auth=dcache_server.auth("alice"),
                      timeout=10)
    assert r.status_code == 413 and "exceeds maximum 500" in r.json()["detail"]


def _nearline(server, path: str) -> None:
    """Upload, ask for tape and wait (bounded) until the disk copy is gone."""
    auth = server.auth("alice")
    assert requests.put(server.webdav + path, data=b"x" * 100, auth=auth, timeout=10).status_code == 201
    requests.post(f"{server.api}/namespace{path}", json={"action": "qos", "target": "tape"}, auth=auth,
                  timeout=10).raise_for_status()
    for _ in range(200):  # at most ~20 s
        doc = requests.get(f"{server.api}/namespace{path}?locality=true", auth=auth, timeout=10).json()
        if doc.get("fileLocality") == "NEARLINE":
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} never became NEARLINE")


def test_unfinished_requests_per_user_over_the_quota_is_429(start_dcache):
    server = start_dcache("--bulk-max-requests-per-user", "1", "--tape-flush-delay", "0",
                          "--tape-stage-delay", "60", name="quota")
    path = f"/home/alice/q-{uuid.uuid4().hex[:6]}"
    _nearline(server, path)
    first = _bulk(server, {"activity": "STAGE", "target": [path]})  # recalls for 60 s: stays unfinished
    assert first.status_code == 201, first.text
    second = _bulk(server, {"activity": "LOG_TARGET", "target": [path]})
    assert second.status_code == 429 and "limit 1" in second.json()["detail"]
    assert "Retry-After" not in second.headers  # a quota, not a rate: dCache sends none
    stage = requests.post(f"{server.api}/tape/stage", json={"files": [{"path": path}]}, auth=server.auth("alice"),
                          timeout=10)
    assert stage.status_code == 429
    other = requests.post(f"{server.api}/bulk-requests", json={"activity": "LOG_TARGET", "target": ["/x"]},
                          auth=server.auth("bob"), timeout=10)
    assert other.status_code == 201  # the quota is per user


def _burst(url: str, auth: tuple[str, str], n: int = 20) -> list[requests.Response]:
    with requests.Session() as s:
        return [s.get(url, auth=auth, timeout=10) for _ in range(n)]


def test_rate_limiter_answers_429_with_retry_after_on_door_and_frontend(start_dcache):
    server = start_dcache("--rate-limit", "2", name="rate")
    auth = server.auth("alice")
    for url in (f"{server.webdav}/home/alice", f"{server.api}/user"):
        replies = _burst(url, auth)
        limited = [r for r in replies if r.status_code == 429]
        assert replies[0].status_code == 200 and limited, [r.status_code for r in replies]
        assert all(r.text == BUSY and int(r.headers["Retry-After"]) >= 1 for r in limited)
        time.sleep(int(limited[-1].headers["Retry-After"]))  # waiting as asked is enough
        assert requests.get(url, auth=auth, timeout=10).status_code == 200


def test_rate_limiter_refuses_before_login(start_dcache):
    server = start_dcache("--rate-limit", "1", name="rate-anon")
    replies = _burst(f"{server.api}/user", ("alice", "wrong password"), n=5)
    assert 429 in [r.status_code for r in replies]


def test_no_rate_limit_by_default(dcache_server):
    replies = _burst(f"{dcache_server.api}/user", dcache_server.auth("alice"), n=30)
    assert {r.status_code for r in replies} == {200}


@pytest.mark.parametrize(("flag", "value"), [("--rate-limit", "0"), ("--bulk-max-requests-per-user", "0"),
                                              ("--tape-api-path", "relative/tape")])
def test_bad_limit_options_are_refused(tmp_path, flag, value):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "airflow_dcache.cli", "server", "--data-dir", str(tmp_path),
                           "--webdav-port", "0", "--frontend-port", "0", flag, value],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and flag in proc.stderr
