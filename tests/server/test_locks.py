"""LOCK/UNLOCK as dCache answers them: a fake, zero-lifetime lock that Finder-style clients accept."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

import pytest
import requests

D = "{DAV:}"
LOCKINFO = ('<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
            "</D:lockscope><D:locktype><D:write/></D:locktype><D:owner><D:href>me@example.org</D:href>"
            "</D:owner></D:lockinfo>")


@pytest.fixture
def home(dcache_server, alice):
    url = f"{dcache_server.webdav}/home/alice/lk-{uuid.uuid4().hex[:8]}"
    assert alice.request("MKCOL", url).status_code == 201
    return url


def test_lock_is_granted_with_zero_lifetime_and_unlock_succeeds(alice, home):
    assert alice.put(f"{home}/f", data=b"x").status_code == 201
    r = alice.request("LOCK", f"{home}/f", data=LOCKINFO, headers={"Content-Type": "application/xml",
                                                                  "Depth": "0", "Timeout": "Second-3600"})
    assert r.status_code == 200
    token = r.headers["Lock-Token"]
    assert token.startswith("<opaquelocktoken:") and token.endswith(">")
    lock = ET.fromstring(r.content).find(f"{D}lockdiscovery/{D}activelock")
    assert lock.findtext(f"{D}timeout") == "Second-0" and lock.findtext(f"{D}depth") == "0"
    assert lock.find(f"{D}lockscope/{D}exclusive") is not None
    assert lock.findtext(f"{D}owner") == "me@example.org"
    assert lock.findtext(f"{D}locktoken/{D}href") == token[1:-1]
    # nothing is really locked: another write goes through, and UNLOCK of the token is fine
    assert alice.put(f"{home}/f", data=b"y").status_code == 204
    assert alice.request("UNLOCK", f"{home}/f", headers={"Lock-Token": token}).status_code == 204


def test_lock_of_an_unbound_name_creates_nothing(alice, home):
    r = alice.request("LOCK", f"{home}/new.txt", data=LOCKINFO)
    assert r.status_code == 201 and "Lock-Token" in r.headers
    assert alice.head(f"{home}/new.txt").status_code == 404
    assert alice.request("LOCK", f"{home}/missing/new.txt", data=LOCKINFO).status_code == 409
    assert alice.put(f"{home}/plain", data=b"x").status_code == 201
    assert alice.request("LOCK", f"{home}/plain/under-a-file", data=LOCKINFO).status_code == 409


def test_options_advertises_class_2(alice, home):
    r = alice.options(home)
    assert r.headers["DAV"] == "1, 2" and "LOCK" in r.headers["Allow"] and "UNLOCK" in r.headers["Allow"]


@pytest.mark.parametrize(("headers", "body", "message"), [
    ({}, "<lockinfo/>", "DAV:lockinfo"),
    ({}, "<D:lockinfo xmlns:D='DAV:'><D:locktype><D:write/></D:locktype></D:lockinfo>", "lockscope"),
    ({}, "<D:lockinfo xmlns:D='DAV:'><D:lockscope><D:exclusive/></D:lockscope></D:lockinfo>", "locktype"),
    ({}, "<D:lockinfo xmlns:D='DAV:'", "Malformed LOCK body"),
    ({"Depth": "1"}, LOCKINFO, "Depth"),
    ({}, '<?xml version="1.0" encoding="no-such-codec"?><D:lockinfo xmlns:D="DAV:"/>', "Malformed LOCK body"),
])
def test_bad_lock_requests_get_400(alice, home, headers, body, message):
    r = alice.request("LOCK", home, data=body, headers=headers)
    assert r.status_code == 400 and message in r.text


def test_unlock_needs_a_coded_url_token(alice, home):
    for value in (None, "opaquelocktoken:x", "<>"):
        r = alice.request("UNLOCK", home, headers={"Lock-Token": value} if value else {})
        assert r.status_code == 400 and "Lock-Token" in r.text


def test_anonymous_lock_is_refused(dcache_server, home):
    assert requests.request("LOCK", home, data=LOCKINFO).status_code == 401
