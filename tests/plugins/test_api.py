"""The dCache view's endpoints on a real ``airflow api-server`` with the plugin, against the bundled sites.

Authentication and authorisation (anonymous, bad token, a Viewer who may look but not trigger),
validation (traversal, relative paths, paging bounds, unknown connections, cross-origin posts),
paging of a directory, file details with done-markers and lineage records, the live-events proxy
(events arrive, no credential or channel URL reaches the client, the channel is removed afterwards)
and the per-event status.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from typing import Any

import pytest
import requests

from tests.plugins.conftest import INGEST, PROBE, VIDEOS, UIStack

pytestmark = pytest.mark.timeout(600)

ENDPOINTS = [
    ("GET", "/dcache/api/connections"),
    ("GET", "/dcache/api/browse?conn=dcache_main&path=/data"),
    ("GET", "/dcache/api/file?conn=dcache_main&path=/data"),
    ("GET", "/dcache/api/events?conn=dcache_main&path=/data/incoming"),
    ("GET", "/dcache/api/events/status?conn=dcache_main&path=/data/x&kind=created"),
    ("GET", "/dcache/api/dags"),
    ("GET", "/dcache/api/lag"),
    ("POST", "/dcache/api/trigger"),
    ("GET", "/dcache/ui/static/app.js"),
]


def _secrets(ui: UIStack) -> list[str]:
    return [pw for pw in ui.sites.passwords.values() if pw]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_anonymous_and_forged_tokens_are_refused(ui_stack: UIStack, method: str, path: str) -> None:
    url = ui_stack.base + path
    body = {"json": {"dag_id": INGEST, "paths": ["/data/incoming/x.h5"]}} if method == "POST" else {}
    assert requests.request(method, url, timeout=30, **body).status_code == 401
    forged = {"Authorization": "Bearer not-a-jwt"}
    assert requests.request(method, url, headers=forged, timeout=30, **body).status_code == 403
    assert requests.request(method, url, cookies={"_token": "garbage"}, timeout=30, **body).status_code == 403


def test_page_sends_anonymous_browser_to_login_and_serves_logged_in_user(ui_stack: UIStack) -> None:
    r = requests.get(ui_stack.base + "/dcache/ui/", allow_redirects=False, timeout=30)
    assert r.status_code == 302 and "login" in r.headers["location"]
    r = requests.get(ui_stack.base + "/dcache/ui/", cookies={"_token": ui_stack.token("viewer")}, timeout=30)
    assert r.status_code == 200 and "<title>dCache</title>" in r.text
    assert "frame-ancestors 'self'" in r.headers["content-security-policy"]


def test_plugin_is_registered_once_with_its_view(ui_stack: UIStack) -> None:
    plugins = ui_stack.stack.api.request("GET", "/plugins")["plugins"]
    ours = [p for p in plugins if p["name"] == "dcache"]
    assert len(ours) == 1
    assert ours[0]["fastapi_apps"][0]["url_prefix"] == "/dcache"
    assert ours[0]["external_views"][0]["href"] == "/dcache/ui/"
    errors = ui_stack.stack.api.request("GET", "/plugins/importErrors")["import_errors"]
    assert errors == [], errors


def test_connections_list_ids_and_sites_only(ui_stack: UIStack) -> None:
    r = ui_stack.session("viewer").get(ui_stack.base + "/dcache/api/connections", timeout=30)
    assert r.status_code == 200
    doc = r.json()
    assert doc["connections"] == [{"conn_id": "dcache_buffer", "site": "buffer"},
                                  {"conn_id": "dcache_main", "site": "main"}]
    assert all(pw not in r.text for pw in _secrets(ui_stack))
    assert ui_stack.sites.main.webdav not in r.text


@pytest.mark.parametrize(("query", "field"), [
    ("conn=dcache_main&path=/data/../etc", "path"),
    ("conn=dcache_main&path=data/incoming", "path"),
    ("conn=dcache_main&path=/data/%00x", "path"),
    ("conn=dcache_main&path=", "path"),
    ("conn=dcache_main&path=/data&limit=0", "limit"),
    ("conn=dcache_main&path=/data&limit=501", "limit"),
    ("conn=dcache_main&path=/data&offset=-1", "offset"),
    ("conn=kafka_billing&path=/data", "conn"),
    ("conn=../x&path=/data", "conn"),
    ("conn=dcache_main&path=/data&limit=abc", "limit"),
])
def test_browse_validates_inputs(ui_stack: UIStack, query: str, field: str) -> None:
    r = ui_stack.session("viewer").get(f"{ui_stack.base}/dcache/api/browse?{query}", timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field


def test_paths_are_normalised(ui_stack: UIStack) -> None:
    r = ui_stack.session("viewer").get(f"{ui_stack.base}/dcache/api/browse",
                                       params={"conn": "dcache_main", "path": "//data/./incoming/"}, timeout=30)
    assert r.status_code == 200 and r.json()["path"] == "/data/incoming"


def test_dcache_refusals_are_passed_on_without_secrets(ui_stack: UIStack) -> None:
    s = ui_stack.session("viewer")
    r = s.get(f"{ui_stack.base}/dcache/api/file", params={"conn": "dcache_main", "path": "/data/nope"}, timeout=30)
    assert r.status_code == 404 and "No such file" in r.json()["detail"]
    assert all(pw not in r.text for pw in _secrets(ui_stack))


def test_paging_walks_a_directory_once(ui_stack: UIStack, main_hook: Any) -> None:
    main_hook.mkdir("/data/processed/paging")
    names = [f"f{i:02d}.dat" for i in range(7)]
    for name in names:
        main_hook.upload(io.BytesIO(name.encode()), f"/data/processed/paging/{name}", checksum="none")
    s = ui_stack.session("viewer")
    seen, offset, pages = [], 0, 0
    while pages < 10:
        doc = s.get(f"{ui_stack.base}/dcache/api/browse", timeout=30,
                    params={"conn": "dcache_main", "path": "/data/processed/paging", "offset": offset,
                            "limit": 3}).json()
        seen += [c["name"] for c in doc["children"]]
        pages += 1
        if not doc["has_more"]:
            break
        offset += 3
    assert pages == 3
    assert sorted(seen) == names
    child = doc["children"][0]
    assert {"size", "mtime", "owner", "locality", "current_qos", "checksums", "labels"} <= set(child)
    assert child["locality"] == "ONLINE" and child["owner"] == 2000


def test_file_details_show_xattrs_markers_and_lineage_runs(ui_stack: UIStack, main_hook: Any) -> None:
    path = "/data/processed/detail.h5"
    main_hook.upload(io.BytesIO(b"\x89HDF\r\n\x1a\n" + b"0" * 100), path, checksum="adler32",
                     xattrs={"instrument": "cxi"})
    main_hook.set_labels(path, ["raw"])
    main_hook.set_xattr(path, {f"airflow_dcache.done.{INGEST}": f"{INGEST}/manual__lineage",
                               "airflow_dcache.done.other_dag": "other_dag/manual__marker_only"})
    entry = main_hook.stat(path)
    api = ui_stack.stack.api
    processed = next(a for a in api.request("GET", "/assets", params={"uri_pattern": "dcache://main/data/processed"})
                     ["assets"] if a["uri"] == "dcache://main/data/processed")
    record = {"schema": "airflow-dcache/lineage/v1", "event_key": f"{entry.pnfsid}:closed_after_write",
              "input": {"site": "main", "path": path, "pnfsid": entry.pnfsid, "checksums": {}},
              "outputs": [{"site": "main", "path": "/data/processed/x/detail.png", "size": 10, "checksums": {}}],
              "activation_record": None, "function": {"name": "hdf5-preview", "digest": "sha256:0"},
              "dag_id": INGEST, "run_id": "manual__lineage"}
    api.request("POST", "/assets/events", json={"asset_id": processed["id"], "extra": record})
    r = ui_stack.session("viewer").get(f"{ui_stack.base}/dcache/api/file",
                                       params={"conn": "dcache_main", "path": path}, timeout=30)
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["xattrs"]["instrument"] == "cxi" and d["labels"] == ["raw"]
    assert d["locations"] and d["current_qos"] == "disk" and d["checksums"].get("adler32")
    runs = {(x["dag_id"], x["run_id"]): x for x in d["runs"]}
    assert runs[(INGEST, "manual__lineage")]["source"] == "lineage"
    assert runs[(INGEST, "manual__lineage")]["outputs"][0]["path"] == "/data/processed/x/detail.png"
    assert runs[("other_dag", "manual__marker_only")]["source"] == "marker"
    assert all(pw not in r.text for pw in _secrets(ui_stack))


def _runs(ui: UIStack) -> list[dict[str, Any]]:
    return ui.stack.api.dag_runs(INGEST)


def test_viewer_cannot_trigger_through_the_plugin(ui_stack: UIStack) -> None:
    before = len(_runs(ui_stack))
    r = ui_stack.session("viewer").post(f"{ui_stack.base}/dcache/api/trigger", timeout=30,
                                        json={"dag_id": INGEST, "paths": ["/data/incoming/a.h5"]})
    assert r.status_code == 403
    dags = ui_stack.session("viewer").get(f"{ui_stack.base}/dcache/api/dags", timeout=60).json()["dags"]
    assert [d["may_trigger"] for d in dags if d["dag_id"] == INGEST] == [False]
    assert len(_runs(ui_stack)) == before


def test_admin_triggers_a_run_as_themself(ui_stack: UIStack) -> None:
    s = ui_stack.session("admin")
    dags = s.get(f"{ui_stack.base}/dcache/api/dags", timeout=60).json()["dags"]
    ingest = next(d for d in dags if d["dag_id"] == INGEST)
    assert ingest["may_trigger"] and {"paths", "function", "target_qos", "reprocess"} <= set(ingest["params"])
    r = s.post(f"{ui_stack.base}/dcache/api/trigger", timeout=30,
               json={"dag_id": INGEST, "paths": ["//data/incoming/./a.h5"], "conn": "dcache_main",
                     "params": {"function": "hdf5-preview", "reprocess": True, "target_qos": "disk"}})
    assert r.status_code == 200, r.text
    run_id = r.json()["run_id"]
    assert r.json()["url"].endswith("/runs/" + requests.utils.quote(run_id, safe=""))
    run = ui_stack.stack.api.dag_run(INGEST, run_id)
    assert run["conf"]["paths"] == ["/data/incoming/a.h5"] and run["conf"]["reprocess"] is True
    assert run["triggering_user_name"] == "admin" and run["run_type"] == "manual"


@pytest.mark.parametrize(("body", "headers", "status", "field"), [
    ({"dag_id": INGEST, "paths": []}, {}, 400, "paths"),
    ({"dag_id": INGEST, "paths": ["/data/../x"]}, {}, 400, "paths[0]"),
    ({"dag_id": INGEST, "paths": ["/a"], "params": {"paths": ["/b"]}}, {}, 400, "params.paths"),
    ({"dag_id": "../x", "paths": ["/a"]}, {}, 400, "dag_id"),
    ({"dag_id": INGEST, "paths": ["/a"], "conn": "nope"}, {}, 400, "conn"),
    ({"dag_id": INGEST, "paths": "/a"}, {}, 400, "paths"),
    ({"dag_id": INGEST, "paths": ["/a"]}, {"Origin": "http://evil.example"}, 403, None),
    ({"dag_id": "no_such_dag", "paths": ["/a"]}, {}, 404, None),
    ({"dag_id": INGEST, "paths": ["/a"], "params": {"target_qos": "gold"}}, {}, 400, None),
])
def test_trigger_validates(ui_stack: UIStack, body: dict[str, Any], headers: dict[str, str], status: int,
                           field: str | None) -> None:
    before = len(_runs(ui_stack))
    r = ui_stack.session("admin").post(f"{ui_stack.base}/dcache/api/trigger", json=body, headers=headers,
                                       timeout=30)
    assert r.status_code == status, r.text
    if field:
        assert r.json()["field"] == field
    assert len(_runs(ui_stack)) == before


def _read_events(lines: Any, until: Any, timeout: float) -> tuple[list[dict[str, Any]], str]:
    """SSE messages of the proxy until ``until(event)`` (bounded by ``timeout``).

    ``lines`` is ONE ``iter_lines()`` iterator kept for the whole response: dropping such an iterator
    early makes urllib3 close the connection, which the proxy rightly takes as the browser leaving.
    """
    deadline = time.monotonic() + timeout
    events: list[dict[str, Any]] = []
    text: list[str] = []
    kind = None
    for line in lines:
        text.append(line or "")
        if line and line.startswith("event: "):
            kind = line[7:]
        elif line and line.startswith("data: "):
            events.append({"event": kind, **json.loads(line[6:])})
            if until(events[-1]):
                break
        if time.monotonic() > deadline:
            raise TimeoutError(f"no matching event in {timeout} s: {events}")
    return events, "\n".join(text)


def test_event_proxy_streams_events_without_credentials_and_cleans_up(ui_stack: UIStack, main_hook: Any) -> None:
    s = ui_stack.session("viewer")
    with contextlib.closing(s.get(f"{ui_stack.base}/dcache/api/events", stream=True, timeout=60,
                                  params={"conn": "dcache_main", "path": "/data/incoming"})) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        lines = resp.iter_lines(decode_unicode=True)
        ready, _ = _read_events(lines, lambda e: e["event"] == "ready", 30)
        assert ready[-1]["path"] == "/data/incoming"
        assert main_hook.list_channels("airflow-ui"), "the proxy holds a channel while the browser is there"
        ui_stack.upload("/data/incoming/live1.h5", b"\x89HDF\r\n\x1a\nlive")
        events, raw = _read_events(lines, lambda e: e.get("kind") == "closed_after_write"
                                   and e.get("path") == "/data/incoming/live1.h5", 60)
    kinds = [e["kind"] for e in events if e["event"] == "storage"]
    assert "created" in kinds and kinds[-1] == "closed_after_write"
    assert all(pw not in raw for pw in _secrets(ui_stack))
    assert "/api/v1/events/channels" not in raw and "authz" not in raw and "macaroon" not in raw.lower()
    deadline = time.monotonic() + 30
    while main_hook.list_channels("airflow-ui") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert main_hook.list_channels("airflow-ui") == [], "the channel outlives the browser"


def test_event_proxy_refusals_are_http_errors(ui_stack: UIStack) -> None:
    s = ui_stack.session("viewer")
    r = s.get(f"{ui_stack.base}/dcache/api/events", params={"conn": "dcache_main", "path": "/data/nope"},
              timeout=30)
    assert r.status_code in (400, 404) and "dCache" in r.json()["detail"]
    r = s.get(f"{ui_stack.base}/dcache/api/events", params={"conn": "dcache_main", "path": "/data/../x"},
              timeout=30)
    assert r.status_code == 400 and r.json()["field"] == "path"


def test_event_status_waiting_filtered_processed(ui_stack: UIStack) -> None:
    s = ui_stack.session("viewer")

    def status(path: str, kind: str = "closed_after_write") -> dict[str, Any]:
        r = s.get(f"{ui_stack.base}/dcache/api/events/status", timeout=30,
                  params={"conn": "dcache_main", "path": path, "kind": kind})
        assert r.status_code == 200, r.text
        return dict(r.json())

    # the probe consumer's run leaves *hold* files unmarked: taken by the watcher, never processed
    ui_stack.upload("/data/videos/status-hold.mp4", b"held", user="pipeline")
    ui_stack.upload("/data/videos/notes.txt", b"text", user="pipeline")
    assert status("/data/videos/status-hold.mp4") == {"path": "/data/videos/status-hold.mp4", "status": "waiting",
                                                      "runs": [], "dags": [PROBE]}
    assert status("/data/videos/notes.txt")["reason"] == "excluded by the watchers' name or size filters"
    opened = status("/data/videos/status-hold.mp4", "opened")
    assert opened["status"] == "filtered" and opened["reason"] == "watchers take only IN_CLOSE_WRITE, IN_MOVED_TO"
    assert status("/data/processed/paging/f00.dat")["reason"] == "no watcher on this directory"
    assert status("/data/incoming/x.h5")["status"] == "filtered"  # the paused ingest DAG's watcher is not active
    assert status("/data/videos/gone.mp4")["reason"] == "the file is gone"

    ui_stack.upload("/data/videos/clip-status.mp4", b"clip", user="pipeline")
    done = ui_stack.wait_processed("/data/videos/clip-status.mp4")
    assert done["status"] == "processed" and done["dags"] == [PROBE]
    run_id = done["runs"][0]["run_id"]  # type: ignore[index]
    assert ui_stack.stack.api.dag_run(PROBE, run_id)["run_type"] == "asset_triggered"

    r = s.get(f"{ui_stack.base}/dcache/api/events/status", timeout=30,
              params={"conn": "dcache_main", "path": "/data/x", "kind": "exploded"})
    assert r.status_code == 400 and r.json()["field"] == "kind"


def test_lag_of_the_watched_asset_comes_from_real_runs(ui_stack: UIStack) -> None:
    ui_stack.upload("/data/videos/clip-lag.mp4", b"clip", user="pipeline")
    ui_stack.wait_processed("/data/videos/clip-lag.mp4")
    deadline = time.monotonic() + 60
    while True:
        doc = ui_stack.session("viewer").get(f"{ui_stack.base}/dcache/api/lag", timeout=60).json()
        row = next(a for a in doc["assets"] if a["uri"] == VIDEOS)
        if row["recent"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert row["dags"] == [PROBE] and row["watchers"] == ["videos_mp4"]
    assert row["last_event"] and row["last_run_start"]
    recent = row["recent"][0]
    assert recent["dag_id"] == PROBE and recent["lag_seconds"] >= 0 and recent["files"] >= 1
    assert row["median_lag_seconds"] is not None
    assert [w["paths"] for w in doc["watchers"] if w["asset"] == VIDEOS] == [["/data/videos"]]
    assert all(w["asset"] != "dcache://main/data/incoming" for w in doc["watchers"])  # paused: not active
