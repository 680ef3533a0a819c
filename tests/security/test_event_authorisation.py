"""Event authorisation: a subscriber sees events only while it may see their object (0 leaks).

Regression for "checked only at subscribe time": alice watches bob's 0755 directory, bob makes it
(or a directory above it) private, and no name of bob's later files reaches alice's stream. Each
attack is its own test; every wait is bounded.
"""

from __future__ import annotations

import uuid

import pytest
import requests

from tests.server.test_events_support import Events, fresh_dir

QUIET = 1.0  # seconds without events that show a name did not leak


def rest(server, user: str, path: str, **doc) -> None:
    r = requests.post(f"{server.api}/namespace{path}", json=doc, auth=server.auth(user))
    assert r.status_code == 201, r.text


def put(server, user: str, path: str, data: bytes = b"data") -> None:
    r = requests.put(f"{server.webdav}{path}", data=data, auth=server.auth(user))
    assert r.status_code in (201, 204), r.text


def names(events) -> set[str]:
    return {e.doc["event"].get("name") for e in events if e.event == "inotify"} - {None}


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


def secret() -> str:
    return f"secret-{uuid.uuid4().hex[:8]}"


def test_chmod_700_stops_names_reaching_an_earlier_subscriber(dcache_server, alice):
    d = fresh_dir(dcache_server, "bob")
    rest(dcache_server, "bob", d, action="mkdir", name="sub")
    channel = alice.channel()
    alice.subscribe(channel, {"path": d})
    alice.subscribe(channel, {"path": f"{d}/sub"})
    with alice.stream(channel) as sse:
        put(dcache_server, "bob", f"{d}/public")
        assert "public" in names(sse.collect(until=lambda e: e.doc.get("event", {}).get("mask") == ["IN_ATTRIB"]))
        sse.quiet(0.3)
        rest(dcache_server, "bob", d, action="chmod", mode=0o700)
        rest(dcache_server, "bob", f"{d}/sub", action="chmod", mode=0o700)
        hidden = [secret(), secret()]
        put(dcache_server, "bob", f"{d}/{hidden[0]}")
        put(dcache_server, "bob", f"{d}/sub/{hidden[1]}")
        leaked = sse.quiet(QUIET)
        assert not names(leaked) & set(hidden), leaked
        assert all(e.event != "inotify" for e in leaked), [e.data for e in leaked]
    # And a new subscription after the chmod is refused with 403, as PROPFIND is.
    r = alice.session.post(f"{channel}/subscriptions/inotify", json={"path": d})
    assert r.status_code == 403 and r.json()["detail"] == "Permission denied: Not allowed."
    r = requests.request("PROPFIND", f"{dcache_server.webdav}{d}/", auth=dcache_server.auth("alice"),
                         headers={"Depth": "1"})
    assert r.status_code == 403


def test_delivery_resumes_when_access_returns(dcache_server, alice):
    d = fresh_dir(dcache_server, "bob")
    channel = alice.channel()
    alice.subscribe(channel, {"path": d, "flags": ["IN_CLOSE_WRITE"]})
    with alice.stream(channel) as sse:
        rest(dcache_server, "bob", d, action="chmod", mode=0o700)
        hidden = secret()
        put(dcache_server, "bob", f"{d}/{hidden}")
        assert not sse.quiet(QUIET)
        rest(dcache_server, "bob", d, action="chmod", mode=0o755)
        put(dcache_server, "bob", f"{d}/visible-again")
        assert names(sse.collect(1)) == {"visible-again"}


def test_private_ancestor_hides_a_watched_subdirectory(dcache_server, alice):
    d = fresh_dir(dcache_server, "bob")
    rest(dcache_server, "bob", d, action="mkdir", name="inner")
    channel = alice.channel()
    alice.subscribe(channel, {"path": f"{d}/inner"})
    with alice.stream(channel) as sse:
        rest(dcache_server, "bob", d, action="chmod", mode=0o700)  # only the ancestor changes
        hidden = secret()
        put(dcache_server, "bob", f"{d}/inner/{hidden}")
        assert not names(sse.quiet(QUIET))


def test_move_into_a_private_directory_hides_the_watched_object(dcache_server, alice):
    d = fresh_dir(dcache_server, "bob")
    rest(dcache_server, "bob", d, action="mkdir", name="watched")
    rest(dcache_server, "bob", d, action="mkdir", name="vault")
    rest(dcache_server, "bob", f"{d}/vault", action="chmod", mode=0o700)
    channel = alice.channel()
    alice.subscribe(channel, {"path": f"{d}/watched"})
    with alice.stream(channel) as sse:
        r = requests.request("MOVE", f"{dcache_server.webdav}{d}/watched", auth=dcache_server.auth("bob"),
                             headers={"Destination": f"{dcache_server.webdav}{d}/vault/watched"})
        assert r.status_code in (201, 204)
        hidden = secret()
        put(dcache_server, "bob", f"{d}/vault/watched/{hidden}")
        assert hidden not in names(sse.quiet(QUIET))


def test_chgrp_away_from_a_shared_group_hides_events(dcache_server, alice):
    d = fresh_dir(dcache_server, "bob")
    rest(dcache_server, "bob", d, action="chgrp", gid=3000)  # alice and bob share group 3000
    rest(dcache_server, "bob", d, action="chmod", mode=0o750)
    channel = alice.channel()
    alice.subscribe(channel, {"path": d, "flags": ["IN_CLOSE_WRITE"]})
    with alice.stream(channel) as sse:
        put(dcache_server, "bob", f"{d}/group-visible")
        assert names(sse.collect(1)) == {"group-visible"}
        rest(dcache_server, "bob", d, action="chgrp", gid=1001)
        hidden = secret()
        put(dcache_server, "bob", f"{d}/{hidden}")
        assert not sse.quiet(QUIET)


def test_file_watch_stops_after_chmod_600(dcache_server, alice):
    d = fresh_dir(dcache_server, "bob")
    put(dcache_server, "bob", f"{d}/f")
    channel = alice.channel()
    alice.subscribe(channel, {"path": f"{d}/f"})
    with alice.stream(channel) as sse:
        rest(dcache_server, "bob", f"{d}/f", action="chmod", mode=0o600)
        rest(dcache_server, "bob", f"{d}/f", action="set-xattr", attributes={"k": "v"})
        assert not sse.quiet(QUIET)
        # Replacing the file ends the watch: only the content-free IN_IGNORED and SUBSCRIPTION_CLOSED.
        put(dcache_server, "bob", f"{d}/f", b"new private content")
        got = sse.quiet(QUIET)
        assert [e.mask for e in got if e.event == "inotify"] == [["IN_IGNORED"]]


def test_subscription_to_a_private_directory_is_403(dcache_server, alice):
    d = fresh_dir(dcache_server, "bob")
    rest(dcache_server, "bob", d, action="chmod", mode=0o700)
    r = alice.session.post(f"{alice.channel()}/subscriptions/inotify", json={"path": d})
    assert r.status_code == 403
    assert r.json() == {"status": "403", "title": "Forbidden", "detail": "Permission denied: Not allowed."}


def test_cannot_read_another_users_channel(dcache_server, alice, bob):
    channel = bob.channel()
    for method in ("GET", "PATCH", "DELETE"):
        r = alice.session.request(method, channel, json={"timeout": 60} if method == "PATCH" else None)
        assert r.status_code == 403, (method, r.status_code)
    assert alice.session.get(f"{channel}/subscriptions").status_code == 403
    assert requests.get(channel).status_code == 401


def test_cannot_stream_another_users_channel(dcache_server, alice, bob):
    channel = bob.channel()
    r = alice.session.get(channel, headers={"Accept": "text/event-stream"}, stream=True, timeout=10)
    assert r.status_code == 403
    r.close()


@pytest.mark.parametrize("guess", ["0", "1", "5", "100"])
def test_cannot_resume_another_users_stream_with_a_guessed_last_event_id(dcache_server, alice, bob, guess):
    d = fresh_dir(dcache_server, "bob")
    channel = bob.channel()
    bob.subscribe(channel, {"path": d})
    put(dcache_server, "bob", f"{d}/{secret()}")
    r = alice.session.get(channel, headers={"Accept": "text/event-stream", "Last-Event-ID": guess},
                          stream=True, timeout=10)
    assert r.status_code == 403
    assert b"secret-" not in r.raw.read(4096)
    r.close()


def test_cannot_subscribe_on_another_users_channel(dcache_server, alice, bob):
    d = fresh_dir(dcache_server, "alice")
    r = alice.session.post(f"{bob.channel()}/subscriptions/inotify", json={"path": d})
    assert r.status_code == 403


def test_guessed_channel_id_is_404_not_a_leak(dcache_server, alice):
    r = alice.session.get(f"{alice.api}/channels/{uuid.uuid4().hex}")
    assert r.status_code == 404


def test_chroot_user_cannot_watch_outside_root(dcache_server):
    carol = Events(dcache_server, "carol")
    try:
        d = fresh_dir(dcache_server, "alice")
        r = carol.session.post(f"{carol.channel()}/subscriptions/inotify", json={"path": d})
        assert r.status_code == 400 and r.json()["detail"].startswith("Not found:")
    finally:
        carol.cleanup()
