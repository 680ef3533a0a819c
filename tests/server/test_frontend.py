"""Frontend REST (/api/v1) over real HTTP, in dCache's JSON shapes and status codes."""

from __future__ import annotations

import uuid
import zlib

import pytest
import requests


@pytest.fixture
def base(dcache_server, alice):
    """(namespace URL, WebDAV URL) of a fresh directory in alice's home."""
    name = f"f-{uuid.uuid4().hex[:8]}"
    r = alice.post(f"{dcache_server.api}/namespace/home/alice", json={"action": "mkdir", "name": name})
    assert r.status_code == 201 and r.json() == {"status": "success"}
    return f"{dcache_server.api}/namespace/home/alice/{name}", f"{dcache_server.webdav}/home/alice/{name}"


def test_user_authenticated_and_anonymous(dcache_server, alice):
    doc = alice.get(f"{dcache_server.api}/user").json()
    assert doc == {"status": "AUTHENTICATED", "uid": 1000, "gids": [1000, 3000], "username": "alice",
                   "homeDirectory": "/home/alice", "rootDirectory": "/"}
    assert requests.get(f"{dcache_server.api}/user").json() == {"status": "ANONYMOUS"}
    admin = requests.get(f"{dcache_server.api}/user", auth=dcache_server.auth("admin")).json()
    assert admin["unassertedRoles"] == ["admin"] and "roles" not in admin  # held, not asked for
    for how in ({"auth": ("admin#admin", dcache_server.passwords["admin"])},
                {"auth": dcache_server.auth("admin"), "headers": {"Roles": "admin"}}):
        admin = requests.get(f"{dcache_server.api}/user", **how).json()
        assert admin["roles"] == ["admin"] and "unassertedRoles" not in admin


@pytest.mark.parametrize("how", ["suffix", "header"])
def test_asserting_a_role_one_does_not_hold_fails_the_login(dcache_server, how):
    user, password = dcache_server.auth("alice")
    kwargs = ({"auth": (f"{user}#admin", password)} if how == "suffix"
              else {"auth": (user, password), "headers": {"Roles": "admin"}})
    for url in (f"{dcache_server.api}/user", f"{dcache_server.webdav}/home/alice/"):
        r = requests.get(url, **kwargs)
        assert r.status_code == 401, (url, r.status_code)
    assert "not authorised to assert role admin" in requests.get(f"{dcache_server.api}/user", **kwargs).text


def test_admin_only_endpoint_needs_the_role_asserted(dcache_server, alice):
    alice.put(f"{dcache_server.webdav}/home/alice/byid-role", data=b"x")
    pnfsid = alice.get(f"{dcache_server.api}/namespace/home/alice/byid-role").json()["pnfsId"]
    plain = requests.get(f"{dcache_server.api}/id/{pnfsid}", auth=dcache_server.auth("admin"))
    assert plain.status_code == 403  # root by uid, but the admin role was not asserted
    asserted = requests.get(f"{dcache_server.api}/id/{pnfsid}", auth=dcache_server.auth("admin"),
                            headers={"Roles": "admin"})
    assert asserted.status_code == 200 and asserted.json()["path"] == "/home/alice/byid-role"


def test_get_file_attributes_with_flags(alice, base):
    ns, dav = base
    data = b"0123456789" * 10
    alice.put(f"{dav}/clip.mp4", data=data)
    doc = alice.get(f"{ns}/clip.mp4?locality=true&qos=true&checksum=true&locations=true").json()
    assert doc["fileType"] == "REGULAR" and doc["size"] == 100 and doc["fileMimeType"] == "video/mp4"
    assert len(doc["pnfsId"]) == 36 and doc["pnfsId"] == doc["pnfsId"].upper()
    assert doc["fileLocality"] == "ONLINE" and doc["currentQos"] == "disk"
    assert doc["checksums"] == [{"type": "ADLER32", "value": format(zlib.adler32(data), "08x")}]
    assert doc["locations"] and doc["nlink"] == 1 and doc["mode"] == 0o644
    assert {"creationTime", "mtime"} <= doc.keys()
    plain = alice.get(f"{ns}/clip.mp4").json()
    assert "checksums" not in plain and "fileLocality" not in plain


def test_children_listing_with_paging(alice, base):
    ns, dav = base
    for i in range(5):
        alice.put(f"{dav}/f{i}", data=b"x")
    doc = alice.get(f"{ns}?children=true").json()
    assert doc["fileType"] == "DIR" and doc["fileMimeType"] == "application/vnd.dcache.folder"
    assert [c["fileName"] for c in doc["children"]] == [f"f{i}" for i in range(5)]
    page = alice.get(f"{ns}?children=true&offset=1&limit=2").json()
    assert [c["fileName"] for c in page["children"]] == ["f1", "f2"]


def test_mv_relative_to_parent_and_absolute(alice, base):
    ns, dav = base
    alice.put(f"{dav}/a", data=b"x")
    assert alice.post(f"{ns}/a", json={"action": "mv", "destination": "b"}).status_code == 201
    assert alice.head(f"{dav}/b").status_code == 200
    absolute = dav.split("//", 1)[1].split("/", 1)[1]
    assert alice.post(f"{ns}/b", json={"action": "mv", "destination": f"/{absolute}/c"}).status_code == 201
    assert alice.head(f"{dav}/c").status_code == 200


def test_xattr_modes_and_labels(alice, base):
    ns, dav = base
    alice.put(f"{dav}/f", data=b"x")
    ok = alice.post(f"{ns}/f", json={"action": "set-xattr", "attributes": {"k": "v"}, "mode": "CREATE"})
    assert ok.status_code == 201
    again = alice.post(f"{ns}/f", json={"action": "set-xattr", "attributes": {"k": "w"}, "mode": "CREATE"})
    assert again.status_code == 409 and "Attribute already exist" in again.json()["detail"]
    missing = alice.post(f"{ns}/f", json={"action": "set-xattr", "attributes": {"z": "1"}, "mode": "MODIFY"})
    assert missing.status_code == 409
    assert alice.post(f"{ns}/f", json={"action": "rm-xattr", "names": "k"}).status_code == 201
    assert alice.post(f"{ns}/f", json={"action": "rm-xattr", "names": ["k"]}).status_code == 409
    assert alice.post(f"{ns}/f", json={"action": "set-label", "label": "raw"}).status_code == 201
    assert alice.get(f"{ns}/f?labels=true").json()["labels"] == ["raw"]
    assert alice.post(f"{ns}/f", json={"action": "rm-label", "label": "raw"}).status_code == 201
    assert alice.get(f"{ns}/f?labels=true&xattr=true").json()["labels"] == []


def test_chmod_and_chgrp(alice, base):
    ns, dav = base
    alice.put(f"{dav}/f", data=b"x")
    assert alice.post(f"{ns}/f", json={"action": "chmod", "mode": 0o640}).status_code == 201
    assert alice.get(f"{ns}/f").json()["mode"] == 0o640
    assert alice.post(f"{ns}/f", json={"action": "chgrp", "gid": 3000}).status_code == 201
    assert alice.get(f"{ns}/f?optional=true").json()["group"] == 3000
    assert alice.post(f"{ns}/f", json={"action": "chgrp", "gid": 4242}).status_code == 403


def test_delete_file_and_nonempty_dir(alice, base):
    ns, dav = base
    alice.put(f"{dav}/d/f", data=b"x")
    r = alice.delete(f"{ns}/d")
    assert r.status_code == 400 and "not empty" in r.json()["detail"]
    assert alice.delete(f"{ns}/d/f").json() == {"status": "success"}
    assert alice.delete(f"{ns}/d").status_code == 200
    assert alice.get(f"{ns}/d").status_code == 404


def test_error_body_shape(alice, dcache_server):
    r = alice.get(f"{dcache_server.api}/namespace/no/such/path")
    assert r.status_code == 404
    doc = r.json()
    assert doc["status"] == "404" and doc["title"] == "Not Found" and "no/such/path" in doc["detail"]


def test_anonymous_namespace_is_401(dcache_server):
    assert requests.get(f"{dcache_server.api}/namespace/").status_code == 401


def test_permission_denied_is_403(dcache_server, alice, base):
    ns, dav = base
    alice.put(f"{dav}/f", data=b"x")
    r = requests.post(f"{ns}/f", json={"action": "chmod", "mode": 0o777}, auth=dcache_server.auth("bob"))
    assert r.status_code == 403


def test_who_bypasses_permissions(start_dcache):
    """Root by uid always; anyone else only with the admin role asserted, as dCache (Chimera + roles)."""
    server = start_dcache("--allow-insecure-macaroons", user_fields={"bob": {"roles": ["admin"]}})
    private = f"{server.webdav}/home/alice/private"
    assert requests.request("MKCOL", private, auth=server.auth("alice")).status_code == 201
    assert requests.post(f"{server.api}/namespace/home/alice/private", auth=server.auth("alice"),
                         json={"action": "chmod", "mode": 0o700}).status_code == 201
    bob, bob_pw = server.auth("bob")
    assert requests.put(f"{private}/b1", data=b"x", auth=(bob, bob_pw)).status_code == 403  # role not asserted
    assert requests.put(f"{private}/b2", data=b"x", auth=(f"{bob}#admin", bob_pw)).status_code == 201
    assert requests.put(f"{private}/b3", data=b"x", auth=(bob, bob_pw),
                        headers={"Roles": "admin"}).status_code == 201
    assert requests.put(f"{private}/r1", data=b"x", auth=server.auth("admin")).status_code == 201  # uid 0
    # a macaroon minted by root acts as root, narrowed by its caveats: modes do not stop it, caveats do
    minted = requests.post(f"{server.webdav}/home/alice/private/r1", auth=server.auth("admin"),
                           headers={"Content-Type": "application/macaroon-request"},
                           data='{"caveats": ["activity:DOWNLOAD"]}').json()["macaroon"]
    bearer = {"Authorization": f"Bearer {minted}"}
    assert requests.get(f"{private}/r1", headers=bearer).content == b"x"
    assert requests.put(f"{private}/r1", data=b"y", headers=bearer).status_code == 403
    # a macaroon never carries roles: a Roles header on it asserts nothing
    bob_token = requests.post(f"{server.webdav}/home/bob", auth=(bob, bob_pw),
                              headers={"Content-Type": "application/macaroon-request"}, data="{}").json()["macaroon"]
    r = requests.put(f"{private}/b4", data=b"x", headers={"Authorization": f"Bearer {bob_token}", "Roles": "admin"})
    assert r.status_code == 403
