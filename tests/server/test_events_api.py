"""Storage events API (/api/v1/events) over real HTTP: resources, status codes and error messages."""

from __future__ import annotations

import base64
import json
import re

import pytest
import requests

from tests.server.test_events_support import JSON, Events, SseClient, fresh_dir


@pytest.fixture
def alice(dcache_server):
    ev = Events(dcache_server, "alice")
    yield ev
    ev.cleanup()


@pytest.fixture
def bob(dcache_server):
    ev = Events(dcache_server, "bob")
    yield ev
    ev.cleanup()


def error(r: requests.Response, status: int, detail_prefix: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    doc = r.json()
    assert doc["status"] == str(status)
    assert doc["detail"].startswith(detail_prefix), doc["detail"]
    return doc["detail"]


# -- service information ---------------------------------------------------------------------------

def test_service_info_and_event_types(dcache_server, alice):
    api = alice.api
    assert alice.session.get(api).json() == {"channels": {"maximumPerUser": 128, "lifetimeWhenDisconnected": {
        "minimum": 1, "maximum": 86400, "default": 300}}}
    assert alice.session.get(f"{api}/eventTypes").json() == ["inotify", "metronome"]
    assert alice.session.get(f"{api}/eventTypes/inotify").json() == {
        "description": "notification of namespace activity, modelled after inotify(7)"}
    assert alice.session.get(f"{api}/eventTypes/metronome").json() == {
        "description": "a configurable stream of messages"}
    for kind in ("inotify", "metronome"):
        for part in ("selector", "event"):
            schema = alice.session.get(f"{api}/eventTypes/{kind}/{part}").json()
            assert schema["$schema"] == "http://json-schema.org/draft-06/schema#"
    selector = alice.session.get(f"{api}/eventTypes/inotify/selector").json()
    assert selector["required"] == ["path"] and selector["additionalProperties"] is False
    assert selector["properties"]["path"]["pattern"] == "^/(.*[^/])?$"
    assert "IN_CLOSE_WRITE" in selector["properties"]["flags"]["items"]["enum"]
    assert alice.session.get(f"{api}/eventTypes/metronome/event").json()["type"] == "string"
    for suffix in ("", "/selector", "/event"):
        error(alice.session.get(f"{api}/eventTypes/SYSTEM{suffix}"), 404, "No such event type")


def test_anonymous_gets_401_everywhere(dcache_server, alice):
    channel = alice.channel()
    api = alice.api
    for method, url in [("GET", api), ("GET", f"{api}/eventTypes"), ("GET", f"{api}/eventTypes/inotify"),
                        ("GET", f"{api}/eventTypes/inotify/selector"), ("GET", f"{api}/channels"),
                        ("POST", f"{api}/channels"), ("GET", channel), ("PATCH", channel), ("DELETE", channel),
                        ("GET", f"{channel}/subscriptions"), ("POST", f"{channel}/subscriptions/inotify"),
                        ("GET", f"{channel}/subscriptions/inotify/x"),
                        ("DELETE", f"{channel}/subscriptions/inotify/x")]:
        r = requests.request(method, url, json={})
        error(r, 401, "Authentication required")
        assert "WWW-Authenticate" in r.headers
    bad = requests.get(api, auth=("alice", "wrong"))
    assert bad.status_code == 401
    with SseClient(channel) as sse:
        assert sse.status == 401


# -- channels --------------------------------------------------------------------------------------

def test_create_channel_location_and_listing(dcache_server, alice, bob):
    url = alice.channel()
    m = re.fullmatch(re.escape(f"{dcache_server.api}/events/channels/") + r"([A-Za-z0-9_-]{22})", url)
    assert m, url
    assert len(base64.urlsafe_b64decode(m.group(1) + "==")) == 16
    tagged = alice.channel(client_id="sensor-1")
    listed = alice.session.get(f"{alice.api}/channels").json()
    assert url in listed and tagged in listed
    assert alice.session.get(f"{alice.api}/channels?client-id=sensor-1").json() == [tagged]
    untagged = alice.session.get(f"{alice.api}/channels?client-id=").json()
    assert url in untagged and tagged not in untagged
    assert alice.session.get(f"{alice.api}/channels?client-id=nope").json() == []
    assert bob.session.get(f"{bob.api}/channels").json() == []


def test_client_id_is_cut_to_256_characters(alice):
    url = alice.channel(client_id="x" * 300)
    assert alice.session.get(f"{alice.api}/channels", params={"client-id": "x" * 256}).json() == [url]
    assert alice.session.get(f"{alice.api}/channels", params={"client-id": "x" * 300}).json() == [url]


def test_channel_json_patch_delete(alice):
    url = alice.channel()
    assert alice.session.get(url, headers={"Accept": "application/json"}).json() == {"timeout": 300}
    assert alice.session.get(url).json() == {"timeout": 300}  # JSON is the default
    r = alice.session.patch(url, json={"timeout": 3600})
    assert r.status_code == 204 and r.content == b""
    assert alice.session.get(url).json() == {"timeout": 3600}
    for bad in (0, -5, 86401, 10**12):
        error(alice.session.patch(url, json={"timeout": bad}), 400, "Bad timeout value")
    for wrong in ("60", 1.5, True, None, [60]):
        error(alice.session.patch(url, json={"timeout": wrong}), 400, "Field 'timeout'")
    error(alice.session.patch(url, json={}), 400, "Missing required field 'timeout'")
    error(alice.session.patch(url, data=b"{nope", headers=JSON), 400, "Request body is not valid JSON")
    error(alice.session.patch(url, data=b"[1]", headers=JSON), 400, "Request body must be a JSON object")
    assert alice.session.patch(url, data=b"{}", headers={"Content-Type": "text/plain"}).status_code == 415
    assert alice.session.get(url).json() == {"timeout": 3600}
    r = alice.session.delete(url)
    assert r.status_code == 204
    error(alice.session.get(url), 404, "No such channel")
    error(alice.session.delete(url), 404, "No such channel")
    error(alice.session.patch(url, json={"timeout": 5}), 404, "No such channel")
    assert url not in alice.session.get(f"{alice.api}/channels").json()


def test_unknown_and_foreign_channels(alice, bob):
    url = alice.channel()
    missing = url.rsplit("/", 1)[0] + "/AAAAAAAAAAAAAAAAAAAAAA"
    for method in ("GET", "PATCH", "DELETE"):
        error(alice.session.request(method, missing, json={"timeout": 5}), 404, "No such channel")
        error(bob.session.request(method, url, json={"timeout": 5}), 403, "Access denied")
    error(bob.session.get(f"{url}/subscriptions"), 403, "Access denied")
    error(bob.session.post(f"{url}/subscriptions/inotify", json={"path": "/"}), 403, "Access denied")
    with SseClient(url, auth=bob.server.auth("bob")) as sse:
        assert sse.status == 403 and json.loads(sse.body)["detail"] == "Access denied"
    assert alice.session.get(url).status_code == 200  # untouched


def test_create_channel_bad_bodies(alice):
    api = f"{alice.api}/channels"
    error(alice.session.post(api, data=b"{", headers=JSON), 400, "Request body is not valid JSON")
    error(alice.session.post(api, json=["x"]), 400, "Request body must be a JSON object")
    error(alice.session.post(api, json={"client-id": 5}), 400, "Field 'client-id' must be a string")
    assert alice.session.post(api, data=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
    r = alice.session.post(api, json={})
    assert r.status_code == 201
    alice.created.append(r.headers["Location"])


def test_not_acceptable_and_methods(alice):
    url = alice.channel()
    r = alice.session.get(url, headers={"Accept": "image/png"})
    assert r.status_code == 406 and r.json()["status"] == "406"
    assert alice.session.put(url, json={}).status_code == 405
    assert alice.session.post(alice.api).status_code == 405


def test_too_many_channels(start_dcache):
    server = start_dcache(name="limit")
    ev = Events(server, "bob")
    urls = [ev.channel() for _ in range(128)]
    assert len(set(urls)) == 128
    r = ev.session.post(f"{ev.api}/channels")
    error(r, 429, "Too Many Channels")
    other = Events(server, "alice")
    other.channel()  # the limit is per user
    assert ev.session.delete(urls[0]).status_code == 204
    ev.channel()  # room again
    assert len(ev.session.get(f"{ev.api}/channels").json()) == 128


# -- subscriptions ---------------------------------------------------------------------------------

def test_subscription_lifecycle(dcache_server, alice):
    channel = alice.channel()
    d = fresh_dir(dcache_server)
    sub = alice.subscribe(channel, {"path": d, "flags": ["IN_CREATE", "IN_CLOSE_WRITE"]})
    assert sub.startswith(f"{channel}/subscriptions/inotify/")
    sid = sub.rsplit("/", 1)[1]
    pnfsid = alice.session.get(f"{dcache_server.api}/namespace{d}").json()["pnfsId"]
    assert base64.urlsafe_b64decode(sid + "=" * (-len(sid) % 4)).hex().upper() == pnfsid
    assert alice.session.get(f"{channel}/subscriptions").json() == [sub]
    assert alice.session.get(sub).json() == {"path": d, "flags": ["IN_CLOSE_WRITE", "IN_CREATE"]}
    assert alice.session.delete(sub).status_code == 204
    assert alice.session.get(f"{channel}/subscriptions").json() == []
    error(alice.session.get(sub), 404, "No such subscription")
    error(alice.session.delete(sub), 404, "No such subscription")
    error(alice.session.get(f"{channel}/subscriptions/metronome/{sid}"), 404, "No such subscription")


def test_merge_replaces_or_adds_flags(dcache_server, alice):
    channel = alice.channel()
    d = fresh_dir(dcache_server)
    first = alice.subscribe(channel, {"path": d, "flags": ["IN_CREATE"]})
    again = alice.subscribe(channel, {"path": d + "/", "flags": ["IN_DELETE"]}, expect=400)  # bad path
    assert again == ""
    replaced = alice.subscribe(channel, {"path": d, "flags": ["IN_DELETE"]}, expect=303)
    assert replaced == first
    assert alice.session.get(first).json()["flags"] == ["IN_DELETE"]
    added = alice.subscribe(channel, {"path": d, "flags": ["IN_MOVE", "IN_MASK_ADD"]}, expect=303)
    assert added == first
    assert alice.session.get(first).json()["flags"] == ["IN_MOVED_FROM", "IN_MOVED_TO", "IN_DELETE"]
    assert alice.session.get(f"{channel}/subscriptions").json() == [first]
    # Same object through another path form (the watch is on the object, not on the string).
    parent, name = d.rsplit("/", 1)
    assert alice.subscribe(channel, {"path": f"{parent}/./{name}"}, expect=303) == first
    assert len(alice.session.get(first).json()["flags"]) == 12
    # Another channel gets its own subscription with the same id.
    other = alice.channel()
    assert alice.subscribe(other, {"path": d}) == first.replace(channel, other)


@pytest.mark.parametrize(("selector", "prefix"), [
    ({}, "Bad selector: Missing required field 'path'"),
    ({"path": 5}, "Bad selector: Field 'path' must be a string"),
    ({"path": "relative"}, "Bad selector: path"),
    ({"path": "/trailing/"}, "Bad selector: path"),
    ({"path": ""}, "Bad selector: path"),
    ({"path": "/", "recursive": True}, "Bad selector: Unrecognized field \"recursive\""),
    ({"path": "/", "flags": "IN_CREATE"}, "Bad selector: Field 'flags' must be an array of strings"),
    ({"path": "/", "flags": [1]}, "Bad selector: Field 'flags' must be an array of strings"),
    ({"path": "/", "flags": ["IN_BOGUS"]}, "Bad selector: Unknown flag: IN_BOGUS"),
    ({"path": "/", "flags": ["IN_ISDIR"]}, "Bad selector: Unknown flag: IN_ISDIR"),
    ({"path": "/", "flags": ["IN_CREATE", "IN_DONT_FOLLOW"]}, "Bad selector: Unsupported flags: IN_DONT_FOLLOW"),
    ({"path": "/", "flags": ["IN_EXCL_UNLINK"]}, "Bad selector: Unsupported flags: IN_EXCL_UNLINK"),
    ({"path": "/home/alice/does-not-exist"}, "Not found: Problem with path: /home/alice/does-not-exist"),
    ({"path": "/home/alice/x/y/z"}, "Not found:"),
])
def test_bad_inotify_selectors(alice, selector, prefix):
    channel = alice.channel()
    error(alice.session.post(f"{channel}/subscriptions/inotify", json=selector), 400, prefix)
    assert alice.session.get(f"{channel}/subscriptions").json() == []


def test_bad_subscription_requests(dcache_server, alice):
    channel = alice.channel()
    post = f"{channel}/subscriptions"
    error(alice.session.post(f"{post}/SYSTEM", json={"path": "/"}), 400, "Unknown event type: SYSTEM")
    error(alice.session.post(f"{post}/nope", json={}), 400, "Unknown event type: nope")
    error(alice.session.post(f"{post}/inotify", data=b"{bad", headers=JSON), 400, "Bad selector: Request body is not")
    error(alice.session.post(f"{post}/inotify", data=b"", headers=JSON), 400, "Bad selector:")
    error(alice.session.post(f"{post}/inotify", json=[1, 2]), 400, "Bad selector: Request body must be a JSON object")
    error(alice.session.post(f"{post}/inotify", data="\udcff".encode("utf-8", "surrogatepass"), headers=JSON),
          400, "Bad selector:")
    assert alice.session.post(f"{post}/inotify", data=b"{}", headers={"Content-Type": "text/plain"}).status_code == 415
    missing = channel.rsplit("/", 1)[0] + "/AAAAAAAAAAAAAAAAAAAAAA"
    error(alice.session.post(f"{missing}/subscriptions/inotify", json={"path": "/"}), 404, "No such channel")
    # IN_ONLYDIR on a file.
    d = fresh_dir(dcache_server)
    requests.put(f"{dcache_server.webdav}{d}/file", data=b"x", auth=dcache_server.auth("alice"))
    error(alice.session.post(f"{post}/inotify", json={"path": f"{d}/file", "flags": ["IN_ONLYDIR"]}), 400,
          "Failed condition: IN_ONLYDIR with REGULAR target")
    alice.subscribe(channel, {"path": d, "flags": ["IN_ONLYDIR", "IN_CREATE"]})
    alice.subscribe(channel, {"path": f"{d}/file"})  # a file can be watched


def test_permission_denied_for_others_private_directory(dcache_server, alice, bob):
    d = fresh_dir(dcache_server)
    r = requests.post(f"{dcache_server.api}/namespace{d}", json={"action": "chmod", "mode": 0o700},
                      auth=dcache_server.auth("alice"))
    assert r.status_code == 201
    requests.put(f"{dcache_server.webdav}{d}/secret", data=b"x", auth=dcache_server.auth("alice"))
    channel = bob.channel()
    error(bob.session.post(f"{channel}/subscriptions/inotify", json={"path": d}), 403,
          "Permission denied: Not allowed.")
    error(bob.session.post(f"{channel}/subscriptions/inotify", json={"path": f"{d}/secret"}), 403,
          "Permission denied: Not allowed.")
    # Execute only: can pass through but not list.
    requests.post(f"{dcache_server.api}/namespace{d}", json={"action": "chmod", "mode": 0o711},
                  auth=dcache_server.auth("alice"))
    error(bob.session.post(f"{channel}/subscriptions/inotify", json={"path": d}), 403, "Permission denied:")
    # A 0640 file of another user's group-less file: no read for bob.
    requests.post(f"{dcache_server.api}/namespace{d}/secret", json={"action": "chmod", "mode": 0o600},
                  auth=dcache_server.auth("alice"))
    error(bob.session.post(f"{channel}/subscriptions/inotify", json={"path": f"{d}/secret"}), 403,
          "Permission denied: Not allowed.")
    # Carol is chrooted to /home/carol: her "/" is that directory, alice's tree is out of reach.
    carol = Events(dcache_server, "carol")
    try:
        cch = carol.channel()
        carol.subscribe(cch, {"path": "/"})
        error(carol.session.post(f"{cch}/subscriptions/inotify", json={"path": d}), 400, "Not found:")
    finally:
        carol.cleanup()


@pytest.mark.parametrize(("selector", "prefix"), [
    ({}, "Bad selector: exactly one of 'frequency' or 'delay' is required"),
    ({"frequency": 1, "delay": 1}, "Bad selector: exactly one of"),
    ({"frequency": 0}, "Bad selector: frequency must be between"),
    ({"frequency": 2e6}, "Bad selector: frequency must be between"),
    ({"delay": 0}, "Bad selector: delay must be between"),
    ({"delay": 301}, "Bad selector: delay must be between"),
    ({"delay": "1"}, "Bad selector: Field 'delay' must be a number"),
    ({"delay": True}, "Bad selector: Field 'delay' must be a number"),
    ({"delay": 1, "count": -1}, "Bad selector: Field 'count' must be an integer >= 0"),
    ({"delay": 1, "count": 1.5}, "Bad selector: Field 'count'"),
    ({"delay": 1, "message": 7}, "Bad selector: Field 'message'"),
    ({"delay": 1, "tempo": 7}, "Bad selector: Unrecognized field \"tempo\""),
])
def test_bad_metronome_selectors(alice, selector, prefix):
    channel = alice.channel()
    error(alice.session.post(f"{channel}/subscriptions/metronome", json=selector), 400, prefix)


def test_metronome_subscription_ids_and_selector(alice):
    channel = alice.channel()
    a = alice.subscribe(channel, {"delay": 300}, "metronome")
    b = alice.subscribe(channel, {"delay": 300}, "metronome")
    assert a != b
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", a.rsplit("/", 1)[1])
    assert alice.session.get(a).json() == {"delay": 300, "message": "tick", "count": 0}
    assert sorted(alice.session.get(f"{channel}/subscriptions").json()) == sorted([a, b])
