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

from airflow_dcache.exceptions import PermissionDenied
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
    ("GET", "/dcache/api/runs?dag_id=x"),
    ("GET", "/dcache/api/run?dag_id=x&run_id=y"),
    ("POST", "/dcache/api/rerun"),
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
    ("conn=dcache_main&path=/data/incoming&limit=0", "limit"),
    ("conn=dcache_main&path=/data/incoming&limit=501", "limit"),
    ("conn=dcache_main&path=/data/incoming&offset=-1", "offset"),
    ("conn=kafka_billing&path=/data/incoming", "conn"),
    ("conn=dcache_alice&path=/data/incoming", "conn"),  # a person's own identity is never offered
    ("conn=../x&path=/data/incoming", "conn"),
    ("conn=dcache_main&path=/data/incoming&limit=abc", "limit"),
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
    r = s.get(f"{ui_stack.base}/dcache/api/file", params={"conn": "dcache_main", "path": "/data/processed/nope"},
              timeout=30)
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
    r = s.get(f"{ui_stack.base}/dcache/api/events", params={"conn": "dcache_main", "path": "/data/incoming/nope"},
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
              params={"conn": "dcache_main", "path": "/data/videos/x", "kind": "exploded"})
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


# ---------------------------------------------------------------------- least privilege (issue 17)

BOB_DIR = "/data/incoming/private-b"
BOB_FILE = f"{BOB_DIR}/plan-x.h5"
ALICE_DIR = "/data/incoming/private-a"
MAIN_ROOTS = {"/data/videos", "/data/incoming", "/data/processed"}  # the probe watcher's + ui_extra_roots


def _private_tree(ui: UIStack, user: str, directory: str, name: str) -> None:
    """``directory`` (mode 0700) with one file, made by ``user`` in the sticky drop box."""
    auth = (user, ui.sites.passwords[user])
    r = requests.request("MKCOL", ui.sites.main.webdav + directory, auth=auth, timeout=30)
    assert r.status_code in (201, 405), r.text
    ui.upload(f"{directory}/{name}", b"\x89HDF\r\n\x1a\nprivate " + user.encode(), user=user)
    requests.post(f"{ui.sites.main.api}/namespace{directory}", json={"action": "chmod", "mode": 0o700}, auth=auth,
                  timeout=30).raise_for_status()


@pytest.fixture(scope="module")
def private_trees(ui_stack: UIStack) -> None:
    _private_tree(ui_stack, "bob", BOB_DIR, "plan-x.h5")
    _private_tree(ui_stack, "alice", ALICE_DIR, "notes-a.h5")


def _get(ui: UIStack, user: str, endpoint: str, **params: Any) -> requests.Response:
    return ui.session(user).get(f"{ui.base}/dcache/api/{endpoint}", params={"conn": "dcache_main", **params},
                                timeout=30)


def _refused_without_leak(r: requests.Response) -> None:
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["detail"]
    for leak in ("1001", "adler32", "\"mode\"", "\"owner\""):  # bob's uid, a checksum, an entry's fields
        assert leak not in r.text, r.text


def test_unmapped_viewer_cannot_see_a_private_tree(ui_stack: UIStack, private_trees: None, main_hook: Any) -> None:
    # the pipeline's connection holds the admin role: asserted, it could read it all; its reads never
    # assert it (issue 17), so even the pipeline's own login is refused here
    import dataclasses

    from airflow_dcache.hooks import DCacheHook

    admin = DCacheHook("dcache_main", settings=dataclasses.replace(main_hook.settings, roles_always=True))
    assert admin.stat(BOB_FILE).size and admin.whoami().roles == ["admin"]
    with pytest.raises(PermissionDenied):
        main_hook.stat(BOB_FILE)
    for endpoint, params in [("browse", {"path": BOB_DIR}), ("file", {"path": BOB_FILE}),
                             ("events/status", {"path": BOB_FILE, "kind": "closed_after_write"}),
                             ("events", {"path": BOB_DIR})]:
        r = _get(ui_stack, "viewer", endpoint, **params)
        _refused_without_leak(r)
        if endpoint in ("browse", "events"):
            assert "plan-x" not in r.text, r.text
    # the drop box itself is inside the roots and listable by anyone: bob's directory shows there as an
    # entry (as to any dCache user), never its content
    doc = _get(ui_stack, "viewer", "browse", path="/data/incoming").json()
    assert BOB_DIR in [c["path"] for c in doc["children"]]
    assert main_hook.list_channels("airflow-ui") == []  # the refused live view left no channel behind


@pytest.mark.parametrize(("endpoint", "params"), [
    ("browse", {"path": "/"}), ("browse", {"path": "/data"}), ("browse", {"path": "/data/archive"}),
    ("browse", {"path": "/home/bob"}), ("browse", {"path": "/data/incomingX"}), ("file", {"path": "/data/archive"}),
    ("events", {"path": "/data"}), ("events/status", {"path": "/data/archive/x.h5", "kind": "created"}),
])
def test_unmapped_viewer_is_confined_to_the_allowed_roots(ui_stack: UIStack, endpoint: str,
                                                          params: dict[str, str]) -> None:
    r = _get(ui_stack, "viewer", endpoint, **params)
    _refused_without_leak(r)
    doc = r.json()
    assert doc["field"] == "path" and set(doc["roots"]) == MAIN_ROOTS and "outside" in doc["detail"]


def test_connections_tell_each_user_their_identity_and_roots(ui_stack: UIStack) -> None:
    viewer = ui_stack.session("viewer").get(f"{ui_stack.base}/dcache/api/connections", timeout=30).json()
    assert viewer["access"]["dcache_main"]["identity"] == "site"
    assert set(viewer["access"]["dcache_main"]["roots"]) == MAIN_ROOTS
    assert viewer["access"]["dcache_buffer"] == {"identity": "site", "roots": ["/data/incoming", "/data/processed"]}
    alice = ui_stack.session("alice").get(f"{ui_stack.base}/dcache/api/connections", timeout=30).json()
    assert [c["conn_id"] for c in alice["connections"]] == ["dcache_buffer", "dcache_main"]  # never dcache_alice
    assert alice["access"]["dcache_main"] == {"identity": "own", "roots": None}
    assert alice["access"]["dcache_buffer"]["identity"] == "site"  # her connection is of site main only
    assert all(pw not in json.dumps(alice) for pw in _secrets(ui_stack))


def test_mapped_user_sees_what_her_dcache_identity_may_see(ui_stack: UIStack, private_trees: None) -> None:
    # her own private tree: dCache lets her, the view adds nothing
    doc = _get(ui_stack, "alice", "browse", path=ALICE_DIR).json()
    assert [(c["name"], c["owner"]) for c in doc["children"]] == [("notes-a.h5", 1000)]
    assert _get(ui_stack, "alice", "file", path=f"{ALICE_DIR}/notes-a.h5").json()["owner"] == 1000
    # outside the roots of unmapped users, where her identity may read (0755): dCache decides, not the roots
    assert _get(ui_stack, "alice", "browse", path="/data/archive").status_code == 200
    assert _get(ui_stack, "viewer", "browse", path="/data/archive").status_code == 403
    # bob's private tree: dCache's own 403, passed on
    for endpoint, params in [("browse", {"path": BOB_DIR}), ("file", {"path": BOB_FILE}),
                             ("events/status", {"path": BOB_FILE, "kind": "closed_after_write"}),
                             ("events", {"path": BOB_DIR})]:
        r = _get(ui_stack, "alice", endpoint, **params)
        _refused_without_leak(r)
        assert r.json()["detail"].startswith("dCache:") and "roots" not in r.json()
    # and the unmapped viewer (the site connection, no role) does not see alice's tree either
    _refused_without_leak(_get(ui_stack, "viewer", "browse", path=ALICE_DIR))


def test_mapped_user_watches_her_private_directory_as_herself(ui_stack: UIStack, private_trees: None,
                                                             main_hook: Any) -> None:
    with contextlib.closing(ui_stack.session("alice").get(f"{ui_stack.base}/dcache/api/events", stream=True,
                                                          timeout=60,
                                                          params={"conn": "dcache_main", "path": ALICE_DIR})) as r:
        assert r.status_code == 200, r.text
        lines = r.iter_lines(decode_unicode=True)
        _read_events(lines, lambda e: e["event"] == "ready", 30)
        assert main_hook.list_channels("airflow-ui") == []  # the channel is alice's, not the pipeline's
        ui_stack.upload(f"{ALICE_DIR}/late.h5", b"late", user="alice")
        _read_events(lines, lambda e: e.get("path") == f"{ALICE_DIR}/late.h5", 60)


def test_the_views_hooks_never_assert_a_role(ui_stack: UIStack, main_hook: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The view's hook factory (``Access.hook``) on the site connection whose extra asserts ``admin``."""
    import asyncio

    from airflow_dcache.plugins.access import Access

    # the same connection as the pipeline uses it: its role goes only with a call a plain login is refused
    # (issue 17), e.g. a lookup by pnfsid, which dCache allows admins only
    assert main_hook.whoami().roles == []
    pnfsid = main_hook.stat("/data").pnfsid
    assert main_hook.stat_by_pnfsid(pnfsid).path == "/data"
    monkeypatch.setenv("AIRFLOW_CONN_DCACHE_ALICE",
                       json.dumps(ui_stack.sites.main.connection("alice", ui_stack.sites.passwords["alice"],
                                                                 roles=("admin",))))

    async def whoami(acting: str, own: bool) -> Any:
        async with Access("dcache_main", "main", acting, own, None if own else ("/data",), "someone").hook() as h:
            return await h.whoami()

    site = asyncio.run(whoami("dcache_main", False))
    assert site.authenticated and site.username == "pipeline"
    assert site.roles == [] and site.unasserted_roles == ["admin"]

    async def by_pnfsid() -> Any:
        async with Access("dcache_main", "main", "dcache_main", False, ("/data",), "someone").hook() as h:
            return await h.stat_by_pnfsid(pnfsid)

    with pytest.raises(PermissionDenied):  # the view's hook never asserts the role, not even when refused
        asyncio.run(by_pnfsid())
    own = asyncio.run(whoami("dcache_alice", True))  # a user's connection asking for a role: not asserted either
    assert own.authenticated and own.username == "alice" and own.roles == []


# ---------------------------------------------------------------------- smaller defects (issue 17, 2-6)

def test_trailing_whitespace_never_names_another_file(ui_stack: UIStack) -> None:
    """``x.h5 `` is not ``x.h5``: the view uses ``airflow_dcache.paths`` like the hook, so the spaced path is
    refused (400) or looked up as itself (404 here), never silently stripped to the other file."""
    ui_stack.upload("/data/incoming/ws.h5", b"ws")
    assert _get(ui_stack, "viewer", "file", path="/data/incoming/ws.h5").json()["size"] == 2
    for endpoint, params in [("browse", {"path": "/data/incoming/ws.h5 "}), ("file", {"path": "/data/incoming/ws.h5 "}),
                             ("file", {"path": "/data/incoming/ws.h5\u00a0"}),
                             ("events/status", {"path": "/data/incoming/ws.h5 ", "kind": "closed_after_write"})]:
        r = _get(ui_stack, "viewer", endpoint, **params)
        if r.status_code == 400:
            assert r.json()["field"] == "path"
            continue
        if endpoint == "events/status":
            assert r.status_code == 200 and r.json()["path"] == params["path"], r.text
            continue
        assert r.status_code == 404, r.text
    r = _get(ui_stack, "viewer", "file", path=" /data/incoming/ws.h5")
    assert r.status_code == 400 and r.json()["field"] == "path"


def test_invalid_event_kind_is_echoed_bounded_and_escaped(ui_stack: UIStack) -> None:
    r = _get(ui_stack, "viewer", "events/status", path="/data/videos/x.mp4", kind="k" * 10_000)
    assert r.status_code == 400 and r.json()["field"] == "kind"
    assert len(r.content) < 600 and "k" * 81 not in r.text and "10000 characters" in r.json()["detail"]
    r = _get(ui_stack, "viewer", "events/status", path="/data/videos/x.mp4", kind="\x1b[2J\u202eboom")
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert "\x1b" not in detail and "\u202e" not in detail and "\\u001b[2J\\u202eboom" in detail


def test_bidi_names_are_shown_escaped_and_linked_raw(ui_stack: UIStack) -> None:
    path = "/data/incoming/x\u202egnp.h5"
    ui_stack.upload(path, b"\x89HDF\r\n\x1a\nbidi")
    doc = _get(ui_stack, "viewer", "browse", path="/data/incoming", limit=500).json()
    entry = next(c for c in doc["children"] if c["path"] == path)
    assert entry["name"] == "x\u202egnp.h5" and entry["display"] == "x\\u202egnp.h5"
    assert entry["display_path"] == "/data/incoming/x\\u202egnp.h5"
    details = _get(ui_stack, "viewer", "file", path=path).json()
    assert details["path"] == path and details["display"] == "x\\u202egnp.h5"


def test_live_views_are_capped_per_user(ui_stack: UIStack, main_hook: Any) -> None:
    from airflow_dcache.plugins.live import MAX_STREAMS_PER_USER

    def open_stream(user: str) -> requests.Response:
        return ui_stack.session(user).get(f"{ui_stack.base}/dcache/api/events", stream=True, timeout=60,
                                          params={"conn": "dcache_main", "path": "/data/videos"})

    with contextlib.ExitStack() as held:
        for _ in range(MAX_STREAMS_PER_USER):
            r = held.enter_context(contextlib.closing(open_stream("viewer")))
            assert r.status_code == 200, r.text
        r = held.enter_context(contextlib.closing(open_stream("viewer")))
        assert r.status_code == 429 and r.headers["content-type"].startswith("application/json")
        assert int(r.headers["retry-after"]) > 0 and "per user" in r.json()["detail"]
        other = held.enter_context(contextlib.closing(open_stream("admin")))  # another user still gets one
        assert other.status_code == 200, other.text
    deadline = time.monotonic() + 60
    while main_hook.list_channels("airflow-ui") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert main_hook.list_channels("airflow-ui") == [], "the closed live views kept their channels"
    r = open_stream("viewer")  # the slots are free again
    with contextlib.closing(r):
        assert r.status_code == 200, r.text


def test_page_accepts_a_bearer_token_like_the_api(ui_stack: UIStack) -> None:
    url = ui_stack.base + "/dcache/ui/"
    token = ui_stack.token("viewer")
    r = requests.get(url, headers={"Authorization": f"Bearer {token}"}, allow_redirects=False, timeout=30)
    assert r.status_code == 200 and "<title>dCache</title>" in r.text
    r = requests.get(url, headers={"Authorization": f"Bearer {token}"}, cookies={"_token": "garbage"},
                     allow_redirects=False, timeout=30)
    assert r.status_code == 200  # the explicit credential wins over the cookie, as in the core API
    r = requests.get(url, headers={"Authorization": "Bearer not-a-jwt"}, allow_redirects=False, timeout=30)
    assert r.status_code == 403


def _wait_report(ui: UIStack, run_id: str, timeout: float = 300) -> dict[str, Any]:
    """The view's file-by-file answer for ``run_id`` once the run's report ran (bounded)."""
    s = ui.session("admin")
    deadline = time.monotonic() + timeout
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = s.get(f"{ui.base}/dcache/api/run", params={"dag_id": INGEST, "run_id": run_id}, timeout=60)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["source"] in ("report", "task instances", "not chunked yet"), doc
        if doc["source"] == "report":
            return doc
        time.sleep(2)
    raise TimeoutError(f"no report for {run_id} after {timeout} s: {doc}")


def test_runs_tab_shows_a_chunked_run_file_by_file_and_reruns_only_the_failed(ui_stack: UIStack, tmp_path) -> None:
    """Last in this module: it unpauses the ingest DAG (the chunked design, the default) for two runs."""
    from airflow_dcache.demo.samples import write_cxi

    good, bad = "/data/incoming/runs-tab-good.h5", "/data/incoming/runs-tab-bad.h5"
    ui_stack.upload(good, write_cxi(tmp_path / "good.h5", seed=7, frames=2).read_bytes())
    ui_stack.upload(bad, b"not an HDF5 file at all")
    admin, viewer = ui_stack.session("admin"), ui_stack.session("viewer")
    r = admin.post(f"{ui_stack.base}/dcache/api/trigger", timeout=30,
                   json={"dag_id": INGEST, "paths": [good, bad], "conn": "dcache_main", "params": {"reprocess": True}})
    assert r.status_code == 200, r.text
    run_id = r.json()["run_id"]
    listed = viewer.get(f"{ui_stack.base}/dcache/api/runs", params={"dag_id": INGEST}, timeout=60).json()
    assert run_id in [x["dag_run_id"] for x in listed["runs"]] and listed["may_trigger"] is False
    ui_stack.stack.api.unpause(INGEST)
    try:
        doc = _wait_report(ui_stack, run_id)
        by_path = {f["path"]: f for f in doc["files"]}
        assert set(by_path) == {good, bad}, doc
        assert by_path[good]["outcome"] == "processed" and by_path[good]["stage"] == "done"
        assert {"preview", "publish", "record_lineage"} <= set(by_path[good]["durations"]), by_path[good]
        assert by_path[bad]["outcome"] == "failed" and bad in by_path[bad]["reason"], by_path[bad]
        assert doc["failed"] == 1 and doc["counts"] == {"processed": 1, "failed": 1} and doc["may_rerun"] is True
        # a viewer sees the same rows, without the button, and cannot re-run
        seen = viewer.get(f"{ui_stack.base}/dcache/api/run", params={"dag_id": INGEST, "run_id": run_id},
                          timeout=60).json()
        assert seen["files"] == doc["files"] and seen["may_rerun"] is False
        r = viewer.post(f"{ui_stack.base}/dcache/api/rerun", json={"dag_id": INGEST, "run_id": run_id}, timeout=30)
        assert r.status_code == 403
        for body, field in (({"dag_id": INGEST, "run_id": "a/b"}, "run_id"), ({"dag_id": "../x", "run_id": run_id},
                                                                                 "dag_id")):
            r = admin.post(f"{ui_stack.base}/dcache/api/rerun", json=body, timeout=30)
            assert r.status_code == 400 and r.json()["field"] == field, r.text
        r = admin.post(f"{ui_stack.base}/dcache/api/rerun", json={"dag_id": INGEST, "run_id": run_id},
                       headers={"Origin": "http://evil.example"}, timeout=30)
        assert r.status_code == 403
        # the button: a new run over the one failed file, as the admin
        r = admin.post(f"{ui_stack.base}/dcache/api/rerun", json={"dag_id": INGEST, "run_id": run_id}, timeout=30)
        assert r.status_code == 200, r.text
        again = r.json()
        assert again["files"] == 1 and again["run_id"] != run_id
        run = ui_stack.stack.api.dag_run(INGEST, again["run_id"])
        assert run["conf"] == {"only_failed_of": run_id} and run["triggering_user_name"] == "admin"
        r = admin.post(f"{ui_stack.base}/dcache/api/rerun", json={"dag_id": INGEST, "run_id": again["run_id"]},
                       timeout=30)
        assert r.status_code == 400 and r.json()["field"] == "run_id"  # no report yet: nothing to re-run
        redo = _wait_report(ui_stack, again["run_id"])
        assert [(f["path"], f["outcome"]) for f in redo["files"]] == [(bad, "failed")], redo
    finally:
        ui_stack.stack.api.request("PATCH", f"/dags/{INGEST}", json={"is_paused": True})
