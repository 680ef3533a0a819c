"""Storage events end to end: namespace changes made over WebDAV and REST arrive on SSE streams."""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.server.test_events_support import Events, SseClient, dav, fresh_dir, inotify, system

UPLOAD = ["IN_CREATE", "IN_OPEN", "IN_MODIFY", "IN_CLOSE_WRITE", "IN_ATTRIB"]


@pytest.fixture
def alice(dcache_server):
    ev = Events(dcache_server, "alice")
    yield ev
    ev.cleanup()


def rest(server, user: str, path: str, **doc) -> None:
    r = requests.post(f"{server.api}/namespace{path}", json=doc, auth=server.auth(user))
    assert r.status_code == 201, r.text


def put(server, user: str, path: str, data: bytes = b"data") -> None:
    r = requests.put(f"{server.webdav}{path}", data=data, auth=server.auth(user))
    assert r.status_code in (201, 204), r.text


def test_upload_sequence_and_envelope(dcache_server, alice):
    d = fresh_dir(dcache_server)
    channel = alice.channel()
    sub = alice.subscribe(channel, {"path": d})
    with alice.stream(channel) as sse:
        assert sse.headers["content-type"].startswith("text/event-stream")
        put(dcache_server, "alice", f"{d}/file.dat")
        got = sse.collect(5)
        assert [e.id for e in got] == ["0", "1", "2", "3", "4"]
        assert {e.event for e in got} == {"inotify"}
        assert inotify(got) == [("file.dat", [k]) for k in UPLOAD]
        assert all(e.doc["subscription"] == sub for e in got)
        assert set(got[0].doc) == {"event", "subscription"}
        assert got[0].doc["event"] == {"name": "file.dat", "mask": ["IN_CREATE"]}
        raw = sse.raw.decode()
        assert raw.startswith(f'event: inotify\nid: 0\ndata: {{"event":{{"name":"file.dat","mask":["IN_CREATE"]}},'
                              f'"subscription":"{sub}"}}\n\n')
        # Another user's change in the watched directory is delivered too (root, uid 0, bypasses modes).
        put(dcache_server, "admin", f"{d}/by-admin")
        assert inotify(sse.collect(5)) == [("by-admin", [k]) for k in UPLOAD]


def test_rest_mkdir_chmod_delete_and_self_watch(dcache_server, alice):
    d = fresh_dir(dcache_server)
    put(dcache_server, "alice", f"{d}/f")
    channel = alice.channel()
    parent_sub = alice.subscribe(channel, {"path": d})
    file_sub = alice.subscribe(channel, {"path": f"{d}/f"})
    with alice.stream(channel) as sse:
        rest(dcache_server, "alice", d, action="mkdir", name="sub")
        assert inotify(sse.collect(1)) == [("sub", ["IN_CREATE", "IN_ISDIR"])]
        rest(dcache_server, "alice", f"{d}/f", action="chmod", mode=0o600)
        got = sse.collect(2)
        pairs = {(e.doc["subscription"], json.dumps(e.doc["event"])) for e in got}
        assert pairs == {(parent_sub, '{"name": "f", "mask": ["IN_ATTRIB"]}'),
                         (file_sub, '{"mask": ["IN_ATTRIB"]}')}
        r = requests.delete(f"{dcache_server.api}/namespace{d}/f", auth=dcache_server.auth("alice"))
        assert r.status_code == 200
        got = sse.collect(until=lambda e: e.event == "SYSTEM")
        assert [(e.doc["subscription"], e.mask) for e in got if e.event == "inotify"] == [
            (parent_sub, ["IN_DELETE"]), (file_sub, ["IN_DELETE_SELF"]), (file_sub, ["IN_IGNORED"])]
        assert system(got) == [{"type": "SUBSCRIPTION_CLOSED", "subscription": file_sub}]
        assert alice.session.get(f"{channel}/subscriptions").json() == [parent_sub]
        requests.delete(f"{dcache_server.webdav}{d}/sub", auth=dcache_server.auth("alice"))
        assert inotify(sse.collect(1)) == [("sub", ["IN_DELETE", "IN_ISDIR"])]


def test_moves_share_a_cookie_and_watches_follow_objects(dcache_server, alice):
    a, b = fresh_dir(dcache_server), fresh_dir(dcache_server)
    put(dcache_server, "alice", f"{a}/x")
    channel = alice.channel()
    sub_a = alice.subscribe(channel, {"path": a, "flags": ["IN_MOVE"]})
    sub_b = alice.subscribe(channel, {"path": b, "flags": ["IN_MOVE", "IN_CLOSE_WRITE"]})
    sub_x = alice.subscribe(channel, {"path": f"{a}/x", "flags": ["IN_MOVE_SELF", "IN_ATTRIB"]})
    with alice.stream(channel) as sse:
        # Rename inside one directory: both halves on the same watch, same cookie.
        rest(dcache_server, "alice", f"{a}/x", action="mv", destination="y")
        got = sse.collect(3)
        by_sub = {(e.doc["subscription"], e.mask[0]): e.doc["event"] for e in got}
        assert by_sub[(sub_a, "IN_MOVED_FROM")]["name"] == "x"
        assert by_sub[(sub_a, "IN_MOVED_TO")]["name"] == "y"
        cookie = by_sub[(sub_a, "IN_MOVED_FROM")]["cookie"]
        assert cookie and by_sub[(sub_a, "IN_MOVED_TO")]["cookie"] == cookie
        assert by_sub[(sub_x, "IN_MOVE_SELF")] == {"mask": ["IN_MOVE_SELF"]}
        # Move to another directory (WebDAV MOVE): source and destination watches, new cookie.
        r = requests.request("MOVE", f"{dcache_server.webdav}{a}/y", auth=dcache_server.auth("alice"),
                             headers={"Destination": f"{dcache_server.webdav}{b}/z"})
        assert r.status_code in (201, 204)
        got = sse.collect(3)
        by_sub = {(e.doc["subscription"], e.mask[0]): e.doc["event"] for e in got}
        assert by_sub[(sub_a, "IN_MOVED_FROM")]["name"] == "y"
        assert by_sub[(sub_b, "IN_MOVED_TO")]["name"] == "z"
        assert by_sub[(sub_a, "IN_MOVED_FROM")]["cookie"] == by_sub[(sub_b, "IN_MOVED_TO")]["cookie"] != cookie
        assert (sub_x, "IN_MOVE_SELF") in by_sub
        # The file watch followed the object to b/z.
        rest(dcache_server, "alice", f"{b}/z", action="chmod", mode=0o640)
        assert [(e.doc["subscription"], e.mask) for e in sse.collect(1)] == [(sub_x, ["IN_ATTRIB"])]
        # A watched directory that is moved keeps its watch.
        rest(dcache_server, "alice", b, action="mv", destination=b + "-renamed")
        put(dcache_server, "alice", f"{b}-renamed/after")
        got = sse.collect(1)
        assert [(e.doc["subscription"], e.doc["event"]["name"], e.mask) for e in got] == [
            (sub_b, "after", ["IN_CLOSE_WRITE"])]


def test_system_events_flags_and_oneshot(dcache_server, alice):
    d = fresh_dir(dcache_server)
    channel = alice.channel()
    with alice.stream(channel) as sse:
        sub = alice.subscribe(channel, {"path": d, "flags": ["IN_CLOSE_WRITE", "IN_ONESHOT"]})
        assert system(sse.collect(1)) == [{"type": "NEW_SUBSCRIPTION", "subscription": sub}]
        assert alice.session.get(sub).json() == {"path": d, "flags": ["IN_CLOSE_WRITE", "IN_ONESHOT"]}
        put(dcache_server, "alice", f"{d}/one")
        got = sse.collect(3)
        assert inotify(got) == [("one", ["IN_CLOSE_WRITE"]), (None, ["IN_IGNORED"])]
        assert system(got) == [{"type": "SUBSCRIPTION_CLOSED", "subscription": sub}]
        put(dcache_server, "alice", f"{d}/two")
        assert sse.quiet(0.5) == []
        # A plain subscription closed by DELETE.
        sub2 = alice.subscribe(channel, {"path": d, "flags": ["IN_CREATE"]})
        assert system(sse.collect(1)) == [{"type": "NEW_SUBSCRIPTION", "subscription": sub2}]
        assert alice.session.delete(sub2).status_code == 204
        assert system(sse.collect(1)) == [{"type": "SUBSCRIPTION_CLOSED", "subscription": sub2}]
        put(dcache_server, "alice", f"{d}/three")
        assert sse.quiet(0.5) == []
        # DELETE of the channel closes the subscriptions, then the stream.
        sub3 = alice.subscribe(channel, {"path": d})
        sse.collect(1)
        assert alice.session.delete(channel).status_code == 204
        got = sse.collect(timeout=3)
        assert system(got) == [{"type": "SUBSCRIPTION_CLOSED", "subscription": sub3}]
        assert sse.closed.wait(3)


def test_merge_with_mask_add_changes_delivery(dcache_server, alice):
    d = fresh_dir(dcache_server)
    channel = alice.channel()
    alice.subscribe(channel, {"path": d, "flags": ["IN_CREATE"]})
    alice.subscribe(channel, {"path": d, "flags": ["IN_CLOSE_WRITE", "IN_MASK_ADD"]}, expect=303)
    with alice.stream(channel) as sse:
        put(dcache_server, "alice", f"{d}/a")
        assert inotify(sse.collect(2)) == [("a", ["IN_CREATE"]), ("a", ["IN_CLOSE_WRITE"])]
        alice.subscribe(channel, {"path": d, "flags": ["IN_ATTRIB"]}, expect=303)
        put(dcache_server, "alice", f"{d}/b")
        assert inotify(sse.collect(1)) == [("b", ["IN_ATTRIB"])]
        assert sse.quiet(0.3) == []


def test_overwrite_ends_a_watch_on_the_replaced_file(dcache_server, alice):
    d = fresh_dir(dcache_server)
    put(dcache_server, "alice", f"{d}/f", b"v1")
    channel = alice.channel()
    sub = alice.subscribe(channel, {"path": f"{d}/f"})
    with alice.stream(channel) as sse:
        put(dcache_server, "alice", f"{d}/f", b"v2")
        got = sse.collect(until=lambda e: e.event == "SYSTEM")
        assert [e.mask for e in got if e.event == "inotify"] == [["IN_DELETE_SELF"], ["IN_IGNORED"]]
        assert system(got) == [{"type": "SUBSCRIPTION_CLOSED", "subscription": sub}]


def test_download_events(dcache_server, alice):
    d = fresh_dir(dcache_server)
    put(dcache_server, "alice", f"{d}/f")
    channel = alice.channel()
    alice.subscribe(channel, {"path": d, "flags": ["IN_OPEN", "IN_ACCESS", "IN_CLOSE_NOWRITE"]})
    with alice.stream(channel) as sse:
        for _ in range(2):
            assert requests.get(f"{dcache_server.webdav}{d}/f", auth=dcache_server.auth("alice")).content == b"data"
            assert inotify(sse.collect(3)) == [("f", ["IN_OPEN"]), ("f", ["IN_ACCESS"]), ("f", ["IN_CLOSE_NOWRITE"])]


def test_last_event_id_replay_and_event_loss(dcache_server, alice):
    d = fresh_dir(dcache_server)
    channel = alice.channel()
    alice.subscribe(channel, {"path": d, "flags": ["IN_CLOSE_WRITE"]})
    for i in range(5):  # nobody connected: the backlog still fills
        put(dcache_server, "alice", f"{d}/f{i}")
    with alice.stream(channel, {"Last-Event-ID": "1"}) as sse:
        got = sse.collect(3)
        assert [(e.id, e.doc["event"]["name"]) for e in got] == [("2", "f2"), ("3", "f3"), ("4", "f4")]
        assert sse.quiet(0.3) == []
    with alice.stream(channel, {"Last-Event-ID": "1"}) as sse:  # N stays at the head: same replay
        assert [e.id for e in sse.collect(3)] == ["2", "3", "4"]
    with alice.stream(channel, {"Last-Event-ID": "3"}) as sse:  # drains 1 and 2
        assert [e.id for e in sse.collect(1)] == ["4"]
        put(dcache_server, "alice", f"{d}/f5")
        assert [e.id for e in sse.collect(1)] == ["5"]
    with alice.stream(channel, {"Last-Event-ID": "1"}) as sse:  # gone now
        got = sse.collect(1)
        assert system(got) == [{"type": "EVENT_LOSS"}] and got[0].id is None
    with alice.stream(channel, {"Last-Event-ID": "4"}) as sse:  # the search emptied the buffer
        assert system(sse.collect(1)) == [{"type": "EVENT_LOSS"}]
    with alice.stream(channel, {"Last-Event-ID": ""}) as sse:  # empty: no replay, only new events
        assert sse.quiet(0.3) == []
        put(dcache_server, "alice", f"{d}/g")
        got = sse.collect(1)
        assert len(got) == 1 and int(got[0].id) >= 6
    for bad in ("abc", "1.5", "-1", "9" * 40):  # malformed: refused, so a broken cursor is noticed
        r = requests.get(channel, headers={"Accept": "text/event-stream", "Last-Event-ID": bad},
                         auth=dcache_server.auth("alice"), timeout=10)
        assert r.status_code == 400 and "Last-Event-ID" in r.json()["detail"]


def test_competing_client_takes_over(dcache_server, alice):
    d = fresh_dir(dcache_server)
    channel = alice.channel()
    alice.subscribe(channel, {"path": d, "flags": ["IN_CLOSE_WRITE"]})
    first = alice.stream(channel)
    try:
        with alice.stream(channel) as second:
            assert system(first.collect(1)) == [{"type": "COMPETING_CLIENT"}]
            assert first.closed.wait(3)
            put(dcache_server, "alice", f"{d}/x")
            assert inotify(second.collect(1)) == [("x", ["IN_CLOSE_WRITE"])]
            assert first.collect(timeout=0.3) == []
    finally:
        first.close()


def test_metronome(dcache_server, alice):
    channel = alice.channel()
    with alice.stream(channel) as sse:
        sub = alice.subscribe(channel, {"delay": 0.05, "count": 3, "message": "tick ${count} for ${username}"},
                              "metronome")
        got = sse.collect(until=lambda e: e.event == "SYSTEM" and e.doc["type"] == "SUBSCRIPTION_CLOSED")
        assert system(got) == [{"type": "NEW_SUBSCRIPTION", "subscription": sub},
                               {"type": "SUBSCRIPTION_CLOSED", "subscription": sub}]
        ticks = [e for e in got if e.event == "metronome"]
        assert [(e.id, e.doc) for e in ticks] == [
            ("0", {"event": "tick 1 for alice", "subscription": sub}),
            ("1", {"event": "tick 2 for alice", "subscription": sub}),
            ("2", {"event": "tick 3 for alice", "subscription": sub})]
        assert alice.session.get(f"{channel}/subscriptions").json() == []
        fast = alice.subscribe(channel, {"frequency": 1000}, "metronome")
        got = sse.collect(101, timeout=5)
        assert len([e for e in got if e.event == "metronome"]) == 100
        assert alice.session.delete(fast).status_code == 204


def mint(server, path: str, user: str = "alice", caveats: list[str] | None = None) -> str:
    r = requests.post(f"{server.webdav}{path}", data=json.dumps({"caveats": caveats or [], "validity": "PT10M"}),
                      headers={"Content-Type": "application/macaroon-request"}, auth=server.auth(user))
    assert r.status_code == 200, r.text
    return r.json()["macaroon"]


def test_macaroon_channel_sees_only_its_path(dcache_server, alice):
    d = fresh_dir(dcache_server)
    rest(dcache_server, "alice", d, action="mkdir", name="sub")
    token = mint(dcache_server, f"{d}/sub")
    mac = Events(dcache_server, "alice", token=token)
    try:
        channel = mac.channel()
        parent = mac.subscribe(channel, {"path": d})  # an ancestor of the macaroon's path
        inner = mac.subscribe(channel, {"path": f"{d}/sub"})
        with mac.stream(channel) as sse:
            put(dcache_server, "alice", f"{d}/outside")
            put(dcache_server, "alice", f"{d}/sub/inside")
            rest(dcache_server, "alice", f"{d}/sub", action="chmod", mode=0o750)
            got = sse.collect(timeout=2)
        seen = [(e.doc["subscription"], e.doc["event"].get("name"), e.mask[0]) for e in got]
        assert (parent, "outside", "IN_CREATE") not in seen
        assert all(name != "outside" for _, name, _ in seen)
        assert [(s, n) for s, n, k in seen if k == "IN_CLOSE_WRITE"] == [(inner, "inside")]
        assert (parent, "sub", "IN_ATTRIB") in seen and (inner, None, "IN_ATTRIB") in seen
        # The channel belongs to alice's uid: her password login may use it as well.
        assert alice.session.get(f"{channel}/subscriptions").json() == [parent, inner]
        # Outside the macaroon's path there is nothing to subscribe to.
        other = fresh_dir(dcache_server)
        r = mac.session.post(f"{channel}/subscriptions/inotify", json={"path": other})
        assert r.status_code == 403 and r.json()["detail"] == "Permission denied: Not allowed."
        # A macaroon that may not list cannot watch a directory.
        nolist = Events(dcache_server, "alice", token=mint(dcache_server, f"{d}/sub", caveats=["activity:DOWNLOAD"]))
        try:
            r = nolist.session.post(f"{nolist.channel()}/subscriptions/inotify", json={"path": f"{d}/sub"})
            assert r.status_code == 403 and r.json()["detail"] == "Permission denied: Not allowed."
        finally:
            nolist.cleanup()
    finally:
        mac.cleanup()


def test_gc_after_disconnect_timeout(start_dcache):
    server = start_dcache("--events-disconnect-timeout", "1", name="gc")
    ev = Events(server, "alice")
    info = ev.session.get(ev.api).json()
    assert info["channels"]["lifetimeWhenDisconnected"]["default"] == 1
    never = ev.channel()
    kept = ev.channel()
    patched = ev.channel()
    assert ev.session.patch(patched, json={"timeout": 30}).status_code == 204
    sse = ev.stream(kept)
    time.sleep(2.5)
    assert ev.session.get(never).status_code == 404  # never connected: collected after 1 s
    assert ev.session.get(kept).status_code == 200  # connected: kept
    assert ev.session.get(patched).status_code == 200
    sse.close()
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and ev.session.get(kept).status_code == 200:
        time.sleep(0.2)
    assert ev.session.get(kept).status_code == 404  # disconnect noticed, then 1 s later gone
    assert ev.session.get(f"{ev.api}/channels").json() == [patched]


def test_shutdown_is_announced(start_dcache):
    server = start_dcache(name="shutdown")
    ev = Events(server, "alice")
    channel = ev.channel()
    with ev.stream(channel) as sse:
        server.stop()
        got = sse.collect(timeout=10)
        assert system(got) == [{"type": "SHUTDOWN"}]
        assert sse.closed.wait(5)


def test_unusual_accept_headers(dcache_server, alice):
    channel = alice.channel()
    sse = SseClient(channel, auth=dcache_server.auth("alice"),
                    headers={"Accept": "application/json;q=0.5, text/event-stream"})
    try:
        assert sse.status == 200 and sse.headers["content-type"].startswith("text/event-stream")
    finally:
        sse.close()
    r = dav(dcache_server, "alice").get(channel, headers={"Accept": "*/*"})
    assert r.json() == {"timeout": 300}


def test_directory_listing_reports_open_and_close(dcache_server, alice):
    d = fresh_dir(dcache_server)
    channel = alice.channel()
    alice.subscribe(channel, {"path": d})
    with alice.stream(channel) as sse:
        r = requests.request("PROPFIND", f"{dcache_server.webdav}{d}", headers={"Depth": "1"},
                             auth=dcache_server.auth("alice"))
        assert r.status_code == 207
        assert inotify(sse.collect(2)) == [(None, ["IN_OPEN", "IN_ISDIR"]), (None, ["IN_CLOSE_NOWRITE", "IN_ISDIR"])]


def test_move_over_a_watched_file_ends_its_watch(dcache_server, alice):
    d = fresh_dir(dcache_server)
    put(dcache_server, "alice", f"{d}/old")
    put(dcache_server, "alice", f"{d}/new")
    channel = alice.channel()
    alice.subscribe(channel, {"path": f"{d}/old"})
    with alice.stream(channel) as sse:
        rest(dcache_server, "alice", f"{d}/new", action="mv", destination="old")
        got = sse.collect(until=lambda e: e.event == "SYSTEM" and e.doc.get("type") == "SUBSCRIPTION_CLOSED")
        masks = [m for _, m in inotify(got)]
        assert ["IN_DELETE_SELF"] in masks and ["IN_IGNORED"] in masks
