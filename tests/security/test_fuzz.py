"""Hypothesis fuzzing of the door and the frontend: 0 x 5xx, the process never dies, memory bounded.

A private instance takes the abuse (so a crash cannot disturb other tests). Random methods,
paths, headers (Depth, Overwrite, Destination, Range, Content-Type, If, digests, Last-Event-ID),
bodies (bytes, JSON of any shape and depth, XML) go over real HTTP. CI runs a few hundred examples
per strategy; the ``soak`` variants (``DCACHE_SOAK=1``) run thousands.
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Iterator

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import DCacheServer, start_server

CI_EXAMPLES = 150
SOAK_EXAMPLES = 3000
STABLE = "/home/bob/stable.bin"
CANARY = b"committed before the fuzzing started"
RSS_LIMIT_KIB = 1_000_000  # the service idles near 100 MiB; a leak under fuzzing would blow through this

METHODS = ["GET", "HEAD", "PUT", "DELETE", "MKCOL", "MOVE", "COPY", "PROPFIND", "PROPPATCH", "LOCK", "UNLOCK",
           "OPTIONS", "POST", "PATCH", "TRACE", "FOO"]
HEADER_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f")
header_text = st.text(HEADER_CHARS, max_size=120)
segment = st.one_of(
    st.text(string.ascii_letters + string.digits + "-_.~%", min_size=1, max_size=20),
    st.sampled_from(["..", ".", "%2e%2e", "%2f", "%00", "%ff", "%c0%ae", "a%20b", "%", "%zz", "~alice", "é"]),
)
path = st.lists(segment, min_size=0, max_size=6).map(lambda parts: "/home/alice/fuzz/" + "/".join(parts))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=30,
)
NAMESPACE_ACTIONS = ["mkdir", "mv", "chmod", "chgrp", "set-xattr", "rm-xattr", "set-label", "rm-label", "qos",
                     "pin", "unpin", "frobnicate"]
json_action = st.fixed_dictionaries(
    {"action": st.sampled_from(NAMESPACE_ACTIONS)},
    optional={"name": st.text(max_size=40), "destination": st.text(max_size=60),
              "mode": json_values, "gid": json_values, "lifetime": json_values,
              "lifetime-unit": st.sampled_from(["DAYS", "SECONDS", "HOURS", "x", ""]),
              "attributes": json_values, "names": json_values, "label": json_values, "target": json_values,
              "mode-name": json_values},
)
xml_body = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda tag, inner: f'<?xml version="1.0"?><d:{tag} xmlns:d="DAV:">{inner}</d:{tag}>'.encode(),
              st.sampled_from(["propfind", "propertyupdate", "lockinfo", "prop", "x"]),
              st.text(string.printable, max_size=200)),
    st.integers(min_value=1, max_value=20000).map(lambda n: ("<a>" * n + "</a>" * n).encode()),
)
headers = st.fixed_dictionaries({}, optional={
    "Depth": st.sampled_from(["0", "1", "infinity", "2", "-1", "", "1,1"]) | header_text,
    "Overwrite": st.sampled_from(["T", "F", "t", "", "X"]),
    "Destination": st.one_of(path, header_text,
                             st.sampled_from(["http://[::1", "http://[::1]:0/x", "https://x:99999/a", "//a/b",
                                              "http://127.0.0.1:1/../../etc/passwd", "file:///etc/passwd"])),
    "Range": st.one_of(header_text, st.builds(lambda a, b: f"bytes={a}-{b}", st.integers(-5, 10**20),
                                              st.integers(-5, 10**20))),
    "Content-Type": st.sampled_from(["application/json", "application/xml", "text/plain",
                                     "application/macaroon-request", "multipart/form-data; boundary=x"]),
    "If": header_text, "If-Match": header_text, "If-None-Match": header_text,
    "Want-Digest": header_text, "Want-Repr-Digest": header_text, "Content-MD5": header_text,
    "Accept": st.sampled_from(["text/event-stream", "application/json", "*/*", "text/html;q=x", ""]),
    "Last-Event-ID": header_text, "Roles": header_text, "Timeout": header_text, "Lock-Token": header_text,
    "Source": header_text, "Credential": header_text, "TransferHeaderAuthorization": header_text,
})


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Iterator[DCacheServer]:
    server = start_server(tmp_path_factory.mktemp("fuzz"), "--allow-insecure-macaroons")
    auth = server.auth("alice")
    requests.request("MKCOL", f"{server.webdav}/home/alice/fuzz", auth=auth, timeout=30)
    requests.put(f"{server.webdav}/home/alice/fuzz/f.bin", data=os.urandom(4096), auth=auth, timeout=30)
    # Out of alice's reach for writes (bob's file, root's directory): survives whatever the fuzzer does.
    requests.put(f"{server.webdav}{STABLE}", data=os.urandom(4096), auth=server.auth("bob"), timeout=30)
    requests.put(f"{server.webdav}/canary.bin", data=CANARY, auth=server.auth("admin"), timeout=30)
    yield server
    assert server.process.poll() is None, "the service died under fuzzing"
    assert _rss_kib(server.process.pid) < RSS_LIMIT_KIB
    server.stop()


@pytest.fixture(scope="module")
def session(target) -> Iterator[requests.Session]:
    s = requests.Session()
    s.auth = target.auth("alice")
    yield s
    s.close()


def check(target: DCacheServer, r: requests.Response) -> None:
    assert r.status_code < 500 or r.status_code in (501, 502, 504), (r.status_code, r.reason, r.text[:300])
    assert target.process.poll() is None


def send(target, session, method, url, hdrs, body) -> None:
    try:
        r = session.request(method, url, headers=hdrs, data=body, timeout=30, allow_redirects=False, stream=True)
    except requests.exceptions.InvalidHeader:
        return  # requests refused to send it; nothing reached the service
    try:
        check(target, r)
    finally:
        r.close()


FUZZ = settings(max_examples=CI_EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
SOAK = settings(FUZZ, max_examples=SOAK_EXAMPLES)


def _door(target, session, method, p, hdrs, body):
    send(target, session, method, f"{target.webdav}{p}", hdrs, body)


def _json(target, session, endpoint, doc):
    url = {"namespace": f"{target.api}/namespace/home/alice/fuzz",
           "file": f"{target.api}/namespace/home/alice/fuzz/f.bin",
           "bulk": f"{target.api}/bulk-requests", "channels": f"{target.api}/events/channels",
           "stage": f"{target.api}/tape/stage", "archiveinfo": f"{target.api}/tape/archiveinfo",
           "macaroon": f"{target.webdav}/home/alice/fuzz"}[endpoint]
    ct = "application/macaroon-request" if endpoint == "macaroon" else "application/json"
    send(target, session, "POST", url, {"Content-Type": ct}, json.dumps(doc))


JSON_ENDPOINTS = st.sampled_from(["namespace", "file", "bulk", "channels", "stage", "archiveinfo", "macaroon"])


@FUZZ
@given(method=st.sampled_from(METHODS), p=path, hdrs=headers, body=st.binary(max_size=200) | xml_body)
def test_door_random_requests(target, session, method, p, hdrs, body):
    _door(target, session, method, p, hdrs, body)


@FUZZ
@given(endpoint=JSON_ENDPOINTS, doc=json_values | json_action)
def test_frontend_random_json(target, session, endpoint, doc):
    _json(target, session, endpoint, doc)


@FUZZ
@given(doc=json_action)
def test_namespace_actions(target, session, doc):
    _json(target, session, "file", doc)


@FUZZ
@given(method=st.sampled_from(["PROPFIND", "PROPPATCH", "LOCK"]), body=xml_body,
       depth=st.sampled_from(["0", "1", "infinity"]))
def test_xml_bodies(target, session, method, body, depth):
    send(target, session, method, f"{target.webdav}{STABLE}",
         {"Content-Type": "application/xml", "Depth": depth}, body)


@FUZZ
@given(rng=st.one_of(header_text, st.lists(st.tuples(st.integers(-10, 10**19), st.integers(-10, 10**19)),
                                           min_size=1, max_size=5).map(
    lambda rs: "bytes=" + ",".join(f"{a}-{b}" for a, b in rs))))
def test_ranges(target, session, rng):
    send(target, session, "GET", f"{target.webdav}{STABLE}", {"Range": rng}, None)


@FUZZ
@given(q=st.dictionaries(st.sampled_from(["children", "offset", "limit", "locality", "qos", "checksum", "xattr",
                                           "labels", "optional", "status", "path", "authz"]),
                         header_text, max_size=5))
def test_query_parameters(target, session, q):
    r = session.get(f"{target.api}/namespace/home/alice/fuzz", params=q, timeout=30)
    check(target, r)
    r = session.get(f"{target.api}/bulk-requests", params=q, timeout=30)
    check(target, r)


def test_billion_laughs_is_refused(target, session):
    lol = ('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
           + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(9))
           + ']><d:propfind xmlns:d="DAV:"><d:prop>&j;</d:prop></d:propfind>')
    r = session.request("PROPFIND", f"{target.webdav}/home/alice/fuzz/", data=lol.encode(),
                        headers={"Depth": "0", "Content-Type": "application/xml"}, timeout=30)
    assert r.status_code == 400


@pytest.mark.parametrize("depth", [10_000, 200_000])
def test_deep_xml(target, session, depth):
    body = b'<d:propfind xmlns:d="DAV:">' + b"<a>" * depth + b"</a>" * depth + b"</d:propfind>"
    r = session.request("PROPFIND", f"{target.webdav}/home/alice/fuzz/", data=body,
                        headers={"Depth": "0", "Content-Type": "application/xml"}, timeout=30)
    check(target, r)


@pytest.mark.soak
@SOAK
@given(method=st.sampled_from(METHODS), p=path, hdrs=headers, body=st.binary(max_size=2000) | xml_body)
def test_soak_door_random_requests(target, session, method, p, hdrs, body):
    _door(target, session, method, p, hdrs, body)


@pytest.mark.soak
@SOAK
@given(endpoint=JSON_ENDPOINTS, doc=json_values | json_action)
def test_soak_frontend_random_json(target, session, endpoint, doc):
    _json(target, session, endpoint, doc)


def test_the_process_survived(target):
    """Runs last in this module: the service is alive and still answers correctly."""
    assert target.process.poll() is None
    r = requests.get(f"{target.webdav}/canary.bin", auth=target.auth("alice"), timeout=30)
    assert r.status_code == 200 and r.content == CANARY
    assert len(requests.get(f"{target.webdav}{STABLE}", auth=target.auth("alice"), timeout=30).content) == 4096
    assert _rss_kib(target.process.pid) < RSS_LIMIT_KIB
