"""Archived bulk requests (``/bulk-requests/archived``): what dCache keeps once a request is cleared."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta

import pytest
import requests

from tests.server.test_bulk_and_tape_rest import FAST, finished, make_files, submit, wait_for


@pytest.fixture
def server(start_dcache):
    return start_dcache(*FAST, name="bulk-archive")


def archived(server, rid: str, user: str = "alice") -> requests.Response:
    return requests.get(f"{server.api}/bulk-requests/archived/{rid}", auth=server.auth(user))


def summaries(server, user: str = "alice", **params: str) -> requests.Response:
    return requests.get(f"{server.api}/bulk-requests/archived", params=params, auth=server.auth(user))


def test_clear_archives_the_request_with_counts_not_targets(server):
    paths = make_files(server, 2)
    folder = paths[0].rsplit("/", 1)[0]
    url = submit(server, {"activity": "UPDATE_QOS", "target": [folder, "/home/alice/no-such-file"],
                          "expandDirectories": "TARGETS", "arguments": {"targetQos": "disk+tape"}}
                 ).headers["request-url"]
    rid = url.rsplit("/", 1)[1]
    doc = finished(server, url)
    assert archived(server, rid).status_code == 404  # not archived while it is still there
    assert requests.delete(url, auth=server.auth("alice")).status_code == 204
    assert requests.get(url, auth=server.auth("alice")).status_code == 404
    info = archived(server, rid).json()
    assert info["uid"] == rid and info["owner"] == "1000:1000" and info["activity"] == "UPDATE_QOS"
    assert info["depth"] == "TARGETS" and info["status"] == doc["status"] and info["targetPrefix"] == "/"
    assert info["initialTargets"] == [folder, "/home/alice/no-such-file"]  # expanded children are not listed
    assert (info["succeeded"], info["failed"], info["cancelled"]) == (3, 1, 0)  # folder SKIPPED counts as success
    assert sum(info["errors"].values()) == 1
    assert info["arrivedAt"] <= info["startedAt"] <= info["lastModified"] and info["arrivedAt"] > 1e12


def test_only_the_owner_root_or_an_asserted_admin_reads_an_archived_request(server):
    paths = make_files(server, 1)
    url = submit(server, {"activity": "LOG_TARGET", "target": paths, "clearOnSuccess": True}).headers["request-url"]
    rid = url.rsplit("/", 1)[1]
    wait_for(lambda: archived(server, rid).status_code == 200)  # clearOnSuccess archives by itself
    assert archived(server, rid, "bob").status_code == 403
    assert "does not have permission" in archived(server, rid, "bob").text
    assert archived(server, rid, "admin").status_code == 200  # root
    assert archived(server, "no-such-request").status_code == 404


def test_summaries_filter_by_owner_activity_status_time_and_limit(server):
    paths = make_files(server, 1)
    rids = []
    for activity, user in (("LOG_TARGET", "alice"), ("PIN", "alice"), ("LOG_TARGET", "bob")):
        target = paths if user == "alice" else ["/home/bob"]
        url = submit(server, {"activity": activity, "target": target}, user=user).headers["request-url"]
        finished(server, url, user)
        assert requests.delete(url, auth=server.auth(user)).status_code == 204
        rids.append(url.rsplit("/", 1)[1])
    everything = summaries(server).json()
    assert [s["uid"] for s in everything] == rids  # oldest first; every owner's, as dCache lists them
    assert set(everything[0]) == {"uid", "owner", "activity", "lastModified", "status"}
    assert [s["uid"] for s in summaries(server, owner="1000:1000").json()] == rids[:2]
    assert [s["uid"] for s in summaries(server, activity="pin").json()] == [rids[1]]
    assert [s["uid"] for s in summaries(server, status="completed", activity="LOG_TARGET,PIN").json()] == rids
    assert summaries(server, status="cancelled").json() == []
    assert [s["uid"] for s in summaries(server, limit="2").json()] == rids[:2]
    later = (datetime.now() + timedelta(hours=1)).strftime("%Y/%m/%d-%H:%M:%S")
    earlier = (datetime.now() - timedelta(hours=1)).strftime("%Y/%m/%d-%H:%M:%S")
    assert len(summaries(server, before=later, after=earlier).json()) == 3
    assert summaries(server, after=later).json() == []


@pytest.mark.parametrize(("params", "needle"), [
    ({"before": "2026-11-25T10:00:00"}, "yyyy/MM/dd-HH:mm:ss"),
    ({"after": "2026/13/01-00:00:00"}, "yyyy/MM/dd-HH:mm:ss"),
    ({"status": "queued"}, "not one of completed, cancelled"),
    ({"limit": "0"}, "limit"),
    ({"limit": "-5"}, "limit"),
    ({"limit": "many"}, "limit"),
    ({"limit": "²"}, "limit"),
    ({"limit": "9" * 5000}, "limit"),
])
def test_bad_summary_queries_get_400(server, params, needle):
    r = summaries(server, **params)
    assert r.status_code == 400 and needle in r.json()["detail"]


def test_anonymous_is_refused(server):
    assert requests.get(f"{server.api}/bulk-requests/archived").status_code == 401


def test_finished_requests_nobody_clears_are_archived_after_the_window_and_survive_restart(start_dcache):
    server = start_dcache(*FAST, "--bulk-archive-after", "1", name="archiver")
    paths = make_files(server, 1)
    url = submit(server, {"activity": "LOG_TARGET", "target": paths}).headers["request-url"]
    rid = url.rsplit("/", 1)[1]
    finished(server, url)
    wait_for(lambda: archived(server, rid).status_code == 200, timeout=30)
    assert requests.get(url, auth=server.auth("alice")).status_code == 404
    server.restart()
    assert archived(server, rid).json()["uid"] == rid


def test_archive_window_option_is_checked(tmp_path):
    done = subprocess.run([sys.executable, "-m", "airflow_dcache.cli", "server", "--data-dir", str(tmp_path),
                           "--bulk-archive-after", "0"], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "--bulk-archive-after" in done.stderr


def test_clearing_a_running_request_archives_it_as_cancelled(start_dcache):
    server = start_dcache("--tape-flush-delay", "0.1", "--tape-stage-delay", "30", name="slow-stage")
    paths = make_files(server, 2, tape=True)
    url = submit(server, {"activity": "STAGE", "target": paths}).headers["request-url"]
    rid = url.rsplit("/", 1)[1]
    wait_for(lambda: requests.get(url, auth=server.auth("alice")).json()["status"] == "STARTED")
    assert requests.delete(url, params={"cancelIfRunning": "true"}, auth=server.auth("alice")).status_code == 204
    info = archived(server, rid).json()
    assert info["status"] == "CANCELLED" and info["cancelled"] == 2 and info["succeeded"] == 0
    assert [s["uid"] for s in summaries(server, status="cancelled").json()] == [rid]


def test_an_asserted_admin_role_reads_any_archived_request(start_dcache):
    server = start_dcache(*FAST, user_fields={"bob": {"roles": ["admin"]}}, name="roles")
    paths = make_files(server, 1)
    url = submit(server, {"activity": "LOG_TARGET", "target": paths, "clearOnSuccess": True}).headers["request-url"]
    rid = url.rsplit("/", 1)[1]
    wait_for(lambda: archived(server, rid).status_code == 200)
    bob, password = server.auth("bob")
    target = f"{server.api}/bulk-requests/archived/{rid}"
    assert requests.get(target, auth=(bob, password)).status_code == 403  # holds the role, did not assert it
    assert requests.get(target, auth=(f"{bob}#admin", password)).json()["uid"] == rid
