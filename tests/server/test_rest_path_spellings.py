"""The frontend's REST ``{path}`` in every spelling third-party clients send, against the real service.

dCache's frontend maps ``@Path("{path : .*}")`` and decodes the parameter once, so a path sent as
one ``%2F``-encoded segment (``quote(path, safe="")``, ``jq @uri``) or joined after ``/namespace/``
(``/namespace//data/x``) names the same file as ``/namespace/data/x``. Here the path is normalised
once, before any caveat or permission check, so no spelling gets past either: every escape attempt
below is refused, and the file it aimed at is untouched.

Requests go out byte for byte (``http.client``): ``requests``/urllib3 would remove dot segments
before sending.
"""

from __future__ import annotations

import http.client
import json
import time
import uuid
from urllib.parse import quote, urlsplit

import pytest
import requests

API = "/api/v1"
MACAROON_REQUEST = {"Content-Type": "application/macaroon-request"}


def send(server, method: str, target: str, headers: dict[str, str] | None = None,
         body: dict | None = None) -> tuple[int, dict]:
    """``target`` exactly as given; the JSON reply (or {})."""
    parts = urlsplit(server.frontend)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        data = None if body is None else json.dumps(body).encode()
        for k, v in {**(headers or {}), **({"Content-Type": "application/json"} if data else {})}.items():
            conn.putheader(k, v)
        if data is not None:
            conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw.strip() else {}
    finally:
        conn.close()


def basic(server, user: str) -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{server.passwords[user]}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def mint(server, caveats: list[str], user: str = "alice") -> str:
    r = requests.post(f"{server.webdav}/", data=json.dumps({"caveats": caveats, "validity": "PT10M"}),
                      headers=MACAROON_REQUEST, auth=server.auth(user))
    assert r.status_code == 200, (r.status_code, r.text[:200])
    return r.json()["macaroon"]


def same_path_spellings(path: str) -> dict[str, str]:
    """Request targets under /namespace that dCache resolves to ``path`` (absolute, no '.' or '..')."""
    one = quote(path, safe="")
    return {
        "plain": f"{API}/namespace{path}",
        "one-segment": f"{API}/namespace/{one}",
        "one-segment-lower": f"{API}/namespace/{one.replace('%2F', '%2f')}",
        "joined": f"{API}/namespace/{path}",  # /namespace//home/…
        "slashes": f"{API}/namespace{path.replace('/', '//')}",
        "mixed": f"{API}/namespace/{path.split('/')[1]}/{quote('/'.join(path.split('/')[2:]), safe='')}",
        "trailing": f"{API}/namespace{path}/",
    }


@pytest.fixture(scope="module")
def tree(dcache_server):
    """/home/alice/sp-…/{a/in.txt, b/secret.txt, private/p.txt (700 directory)}, with their PNFS-IDs."""
    auth = dcache_server.auth("alice")
    base = f"/home/alice/sp-{uuid.uuid4().hex[:8]}"
    for rel, data in (("a/in.txt", b"IN"), ("b/secret.txt", b"SECRET"), ("private/p.txt", b"P")):
        r = requests.put(f"{dcache_server.webdav}{base}/{rel}", data=data, auth=auth)
        assert r.status_code == 201, r.status_code
    r = requests.post(f"{dcache_server.api}/namespace{base}/private", json={"action": "chmod", "mode": 0o700},
                      auth=auth)
    assert r.status_code == 201
    ids = {rel: requests.get(f"{dcache_server.api}/namespace{base}/{rel}", auth=auth).json()["pnfsId"]
           for rel in ("a/in.txt", "b/secret.txt", "private/p.txt")}
    return {"base": base, "ids": ids}


def exists(server, path: str) -> bool:
    r = requests.get(f"{server.api}/namespace{path}", auth=server.auth("alice"))
    assert r.status_code in (200, 404), r.status_code
    return r.status_code == 200


# -- equivalent spellings --------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", list(same_path_spellings("/x/y")))
def test_every_spelling_of_a_path_names_the_same_file(dcache_server, tree, spelling):
    path = f"{tree['base']}/a/in.txt"
    target = same_path_spellings(path)[spelling]
    status, doc = send(dcache_server, "GET", target, basic(dcache_server, "alice"))
    assert status == 200, (target, status, doc)
    assert doc["pnfsId"] == tree["ids"]["a/in.txt"] and doc["size"] == 2


def test_quote_safe_empty_round_trip_for_post_and_delete(dcache_server, tree):
    """What a client built on ``quote(path, safe="")`` does: create, modify and delete, all one segment."""
    auth = basic(dcache_server, "alice")
    name = f"made-{uuid.uuid4().hex[:6]}"
    parent = quote(f"{tree['base']}/a", safe="")
    status, doc = send(dcache_server, "POST", f"{API}/namespace/{parent}", auth, {"action": "mkdir", "name": name})
    assert (status, doc) == (201, {"status": "success"})
    child = quote(f"{tree['base']}/a/{name}", safe="")
    status, _ = send(dcache_server, "POST", f"{API}/namespace/{child}", auth,
                     {"action": "set-xattr", "attributes": {"k": "v"}})
    assert status == 201
    doc = requests.get(f"{dcache_server.api}/namespace{tree['base']}/a/{name}?xattr=true",
                       auth=dcache_server.auth("alice")).json()
    assert doc["fileType"] == "DIR" and doc["extendedAttributes"] == {"k": "v"}
    status, doc = send(dcache_server, "DELETE", f"{API}/namespace/{child}", auth)
    assert (status, doc) == (200, {"status": "success"})
    assert not exists(dcache_server, f"{tree['base']}/a/{name}")


def test_root_in_every_spelling(dcache_server):
    auth = basic(dcache_server, "alice")
    docs = [send(dcache_server, "GET", f"{API}/namespace{tail}", auth) for tail in ("", "/", "//", "/%2F", "/%2f%2F")]
    assert {status for status, _ in docs} == {200}
    assert len({doc["pnfsId"] for _, doc in docs}) == 1


def test_encoded_path_is_relative_to_the_callers_root(dcache_server):
    """carol's root is /home/carol: '%2F' is her root, as '/' is, and nothing walks above it."""
    auth = basic(dcache_server, "carol")
    _, plain = send(dcache_server, "GET", f"{API}/namespace/", auth)
    status, encoded = send(dcache_server, "GET", f"{API}/namespace/%2F", auth)
    assert status == 200 and encoded["pnfsId"] == plain["pnfsId"]
    for tail in ("/%2E%2E%2Fhome", "/..%2F..%2Fetc", "/%2F..%2Fhome%2Falice", "//../home"):
        status, doc = send(dcache_server, "GET", f"{API}/namespace{tail}", auth)
        assert status == 400 and "traversal" in doc["detail"], (tail, status, doc)


def test_decoded_exactly_once(dcache_server, tree):
    """``%252F`` is the three characters ``%2F`` in a name, never a second separator."""
    auth = dcache_server.auth("alice")
    r = requests.put(f"{dcache_server.webdav}{tree['base']}/a/x%252Fy", data=b"literal", auth=auth)
    assert r.status_code == 201  # the door's name: x%2Fy
    listing = requests.get(f"{dcache_server.api}/namespace{tree['base']}/a?children=true", auth=auth).json()
    assert "x%2Fy" in {c["fileName"] for c in listing["children"]}
    status, doc = send(dcache_server, "GET", f"{API}/namespace{tree['base']}/a/x%252Fy", basic(dcache_server, "alice"))
    assert status == 200 and doc["size"] == 7
    status, _ = send(dcache_server, "GET", f"{API}/namespace{tree['base']}/a/x%2Fy", basic(dcache_server, "alice"))
    assert status == 404  # a/x/y: decoded once, '%2F' is a separator
    status, doc = send(dcache_server, "GET", f"{API}/namespace/{quote(tree['base'] + '/a/x%2Fy', safe='')}",
                       basic(dcache_server, "alice"))
    assert status == 200 and doc["size"] == 7  # quote() of the real name: %252F, decoded once


# -- no spelling gets past a caveat or a permission --------------------------------------------------


def escapes(base: str) -> dict[str, tuple[str, int]]:
    """Spellings that aim from ``base/a`` at ``base/b/secret.txt``, with the status each must get.

    400: a '.' or '..' segment after the one decoding. 403: the path really is /b, outside the caveat.
    404: a literal name inside a (decoded once, so never a separator or a '..').
    """
    b = f"{base}/b/secret.txt"
    return {
        "one-segment": (f"{API}/namespace/{quote(b, safe='')}", 403),
        "one-segment-lower": (f"{API}/namespace/{quote(b, safe='').replace('%2F', '%2f')}", 403),
        "joined": (f"{API}/namespace/{b}", 403),
        "slashes": (f"{API}/namespace{b.replace('/', '//')}", 403),
        "dotdot-raw": (f"{API}/namespace{base}/a/../b/secret.txt", 400),
        "dotdot-encoded": (f"{API}/namespace{base}/a/%2E%2E/b/secret.txt", 400),
        "dotdot-lower": (f"{API}/namespace{base}/a/%2e%2e/b/secret.txt", 400),
        "dotdot-half": (f"{API}/namespace{base}/a/.%2e/b/secret.txt", 400),
        "dot-then-dotdot": (f"{API}/namespace{base}/a/%2e/%2e%2e/b/secret.txt", 400),
        "slash-dotdot-slash": (f"{API}/namespace{base}/a%2F..%2Fb/secret.txt", 400),
        "slash-dotdot-slash-lower": (f"{API}/namespace{base}/a%2f..%2fb/secret.txt", 400),
        "dotdot-slash": (f"{API}/namespace{base}/a/..%2Fb/secret.txt", 400),
        "all-encoded": (f"{API}/namespace/{quote(base + '/a/../b/secret.txt', safe='')}", 400),
        "double-encoded-slash": (f"{API}/namespace{base}/a%252F..%252Fb/secret.txt", 403),
        "double-encoded-dots": (f"{API}/namespace{base}/a/%252E%252E/b/secret.txt", 404),
        "double-encoded-all": (f"{API}/namespace{base}/a/..%252Fb%252Fsecret.txt", 404),  # one name in a
        "nul": (f"{API}/namespace{base}/a/%00/../b/secret.txt", 400),
        "control": (f"{API}/namespace{base}/a/%0a%2F..%2Fb/secret.txt", 400),
        "backslash": (f"{API}/namespace{base}/a%5C..%5Cb/secret.txt", 400),
    }


ESCAPES = list(escapes("/base"))


@pytest.fixture(scope="module")
def a_only(dcache_server, tree):
    """A macaroon of alice's whose path caveat is base/a."""
    return bearer(mint(dcache_server, [f"path:{tree['base']}/a"]))


def test_caveat_allows_a_in_every_spelling(dcache_server, tree, a_only):
    for name, target in same_path_spellings(f"{tree['base']}/a/in.txt").items():
        status, doc = send(dcache_server, "GET", target, a_only)
        assert status == 200 and doc["pnfsId"] == tree["ids"]["a/in.txt"], (name, status, doc)


@pytest.mark.parametrize("spelling", ESCAPES)
def test_caveat_is_not_escaped_by_get(dcache_server, tree, a_only, spelling):
    target, expected = escapes(tree["base"])[spelling]
    status, doc = send(dcache_server, "GET", target, a_only)
    assert status == expected, (target, status, doc)
    assert tree["ids"]["b/secret.txt"] not in json.dumps(doc)


@pytest.mark.parametrize("spelling", ESCAPES)
def test_caveat_is_not_escaped_by_delete_or_post(dcache_server, tree, a_only, spelling):
    target, expected = escapes(tree["base"])[spelling]
    status, _ = send(dcache_server, "DELETE", target, a_only)
    assert status == expected, (target, status)
    status, _ = send(dcache_server, "POST", target, a_only, {"action": "set-xattr", "attributes": {"pwned": "1"}})
    assert status == expected, (target, status)
    doc = requests.get(f"{dcache_server.api}/namespace{tree['base']}/b/secret.txt?xattr=true",
                       auth=dcache_server.auth("alice")).json()
    assert doc["pnfsId"] == tree["ids"]["b/secret.txt"] and "pwned" not in doc.get("extendedAttributes", {})


def test_caveat_is_not_escaped_by_mkdir(dcache_server, tree, a_only):
    base = tree["base"]
    for target, expected in ((f"{API}/namespace/{quote(base + '/b', safe='')}", 403),
                             (f"{API}/namespace/{base}/b", 403),
                             (f"{API}/namespace{base}/a/%2E%2E/b", 400),
                             (f"{API}/namespace{base}/a%2F..%2Fb", 400),
                             (f"{API}/namespace{base}/a%252F..%252Fb", 403)):
        status, _ = send(dcache_server, "POST", target, a_only, {"action": "mkdir", "name": "pwned"})
        assert status == expected, (target, status)
    assert not exists(dcache_server, f"{base}/b/pwned")


def test_a_user_without_permission_is_refused_in_every_spelling(dcache_server, tree):
    """bob may not search alice's 700 directory, however the path is written."""
    path = f"{tree['base']}/private/p.txt"
    for name, target in same_path_spellings(path).items():
        status, doc = send(dcache_server, "GET", target, basic(dcache_server, "bob"))
        assert status == 403, (name, status, doc)
        status, _ = send(dcache_server, "DELETE", target, basic(dcache_server, "bob"))
        assert status == 403, (name, status)
    for target in (f"{API}/namespace/home/bob/%2E%2E/alice/{path.split('/', 3)[3]}",
                   f"{API}/namespace/home/bob%2F..%2F{quote(path.split('/', 2)[2], safe='')}"):
        status, _ = send(dcache_server, "GET", target, basic(dcache_server, "bob"))
        assert status == 400, (target, status)
    assert exists(dcache_server, path)
    for target in same_path_spellings(path).values():  # alice herself: every spelling works
        status, doc = send(dcache_server, "GET", target, basic(dcache_server, "alice"))
        assert status == 200 and doc["pnfsId"] == tree["ids"]["private/p.txt"]


# -- paths in JSON bodies: literal, never percent-decoded, resolved before the checks ------------------------


def test_mkdir_name_is_literal(dcache_server, tree):
    auth = basic(dcache_server, "alice")
    status, _ = send(dcache_server, "POST", f"{API}/namespace{tree['base']}/a", auth,
                     {"action": "mkdir", "name": "50%25"})
    assert status == 201
    names = {c["fileName"] for c in requests.get(f"{dcache_server.api}/namespace{tree['base']}/a?children=true",
                                                 auth=dcache_server.auth("alice")).json()["children"]}
    assert "50%25" in names and "50%" not in names
    for bad in ("%2e%2e", "a/b", "..", "nul\x00"):
        status, doc = send(dcache_server, "POST", f"{API}/namespace{tree['base']}/a", auth,
                           {"action": "mkdir", "name": bad})
        if bad == "%2e%2e":  # a literal name here, like dCache's FsPath.checkChildName
            assert status == 201
        else:
            assert status == 400, (bad, status, doc)


def test_mv_destination_collapses_slashes_and_refuses_dotdot(dcache_server, tree, a_only):
    auth = basic(dcache_server, "alice")
    src = f"{tree['base']}/a/mv-{uuid.uuid4().hex[:6]}"
    requests.put(f"{dcache_server.webdav}{src}", data=b"m", auth=dcache_server.auth("alice"))
    status, _ = send(dcache_server, "POST", f"{API}/namespace{src}", auth,
                     {"action": "mv", "destination": f"{tree['base']}//a///moved.txt"})
    assert status == 201 and exists(dcache_server, f"{tree['base']}/a/moved.txt")
    status, doc = send(dcache_server, "POST", f"{API}/namespace{tree['base']}/a/moved.txt", a_only,
                       {"action": "mv", "destination": f"{tree['base']}/a/../b/stolen.txt"})
    assert status == 400 and "traversal" in doc["detail"]
    status, _ = send(dcache_server, "POST", f"{API}/namespace{tree['base']}/a/moved.txt", a_only,
                     {"action": "mv", "destination": f"{tree['base']}//b/stolen.txt"})
    assert status == 403
    assert exists(dcache_server, f"{tree['base']}/a/moved.txt")
    assert not exists(dcache_server, f"{tree['base']}/b/stolen.txt")


def _bulk_finished(server, headers, rid: str) -> dict:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, doc = send(server, "GET", f"{API}/bulk-requests/{rid}", headers)
        assert status == 200, (status, doc)
        if doc["status"] in ("COMPLETED", "CANCELLED"):
            return doc
        time.sleep(0.1)
    raise AssertionError("bulk request did not finish")


def test_bulk_and_tape_targets_are_resolved_before_the_caveat(dcache_server, tree, a_only):
    """Bulk targets are JSON strings: '..' resolves (as dCache's FsPath.create) before the check, and
    '%2F' is literal. Neither reaches b."""
    base = tree["base"]
    targets = [f"{base}/a/../b/secret.txt", f"{base}/a%2F..%2Fb/secret.txt", f"{base}//b/secret.txt"]
    r = requests.post(f"{dcache_server.api}/bulk-requests", json={"activity": "DELETE", "target": targets},
                      headers=a_only)
    assert r.status_code == 201, r.text
    rid = r.headers["request-url"].rsplit("/", 1)[1]
    doc = _bulk_finished(dcache_server, a_only, rid)
    assert [t["state"] for t in doc["targets"]] == ["FAILED"] * 3, doc["targets"]
    assert exists(dcache_server, f"{base}/b/secret.txt")
    status, infos = send(dcache_server, "POST", f"{API}/tape/archiveinfo", a_only, {"paths": targets})
    assert status == 200 and all("error" in i and "locality" not in i for i in infos), infos


# -- labels: the same REST path rules ------------------------------------------------------------------


def test_label_virtual_directory_in_every_spelling(dcache_server, tree):
    auth = basic(dcache_server, "alice")
    label = f"lbl-{uuid.uuid4().hex[:6]}"
    status, _ = send(dcache_server, "POST", f"{API}/namespace{tree['base']}/a/in.txt", auth,
                     {"action": "set-label", "label": label})
    assert status == 201
    answers = [send(dcache_server, "GET", f"{API}/labels{tail}", auth)
               for tail in (f"/{label}", f"/%2F{label}", f"//{label}", f"/{label}/", f"/%2f{label}%2F")]
    assert {status for status, _ in answers} == {200}, answers
    assert all(doc == answers[0][1] for _, doc in answers)
    assert [c["fileName"] for c in answers[0][1]["children"]] == ["in.txt"]
    for tail in ("/%2e%2e", f"/{label}/..", "/..%2Fx"):
        status, _ = send(dcache_server, "GET", f"{API}/labels{tail}", auth)
        assert status == 400, (tail, status)
