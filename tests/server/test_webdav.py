"""The WebDAV door over real HTTP: status codes, headers and bodies as dCache sends them."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
import xml.etree.ElementTree as ET
import zlib

import pytest
import requests

DAV = "{DAV:}"


@pytest.fixture
def home(dcache_server, alice):
    """A fresh directory under alice's home for each test."""
    url = f"{dcache_server.webdav}/home/alice/t-{uuid.uuid4().hex[:8]}"
    assert alice.request("MKCOL", url).status_code == 201
    return url


def adler(data: bytes) -> str:
    return format(zlib.adler32(data) & 0xFFFFFFFF, "08x")


def test_put_get_head_roundtrip(alice, home):
    data = os.urandom(300_000)
    r = alice.put(f"{home}/f.bin", data=data)
    assert r.status_code == 201
    assert r.headers["Digest"] == f"adler32={adler(data)}"
    r = alice.get(f"{home}/f.bin")
    assert r.status_code == 200 and r.content == data
    assert r.headers["Content-Length"] == str(len(data))
    h = alice.head(f"{home}/f.bin", headers={"Want-Digest": "adler32"})
    assert h.status_code == 200
    assert h.headers["Content-Length"] == str(len(data))
    assert h.headers["Digest"] == f"adler32={adler(data)}"
    assert h.headers["Accept-Ranges"] == "bytes"
    assert h.headers["ETag"] == r.headers["ETag"]


def test_overwrite_returns_204_and_replaces(alice, home):
    assert alice.put(f"{home}/f", data=b"one").status_code == 201
    assert alice.put(f"{home}/f", data=b"two!").status_code == 204
    assert alice.get(f"{home}/f").content == b"two!"


def test_range_request_gives_206(alice, home):
    data = bytes(range(256)) * 100
    alice.put(f"{home}/r", data=data)
    r = alice.get(f"{home}/r", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206
    assert r.content == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"


def test_want_digest_md5_on_put_is_stored(alice, home):
    data = b"checksum me" * 1000
    r = alice.put(f"{home}/m", data=data, headers={"Want-Digest": "md5"})
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    assert r.headers["Digest"] == f"md5={md5}"
    h = alice.head(f"{home}/m", headers={"Want-Digest": "md5;q=0.5, adler32;q=1"})
    assert h.headers["Digest"] == f"adler32={adler(data)}"
    h = alice.head(f"{home}/m", headers={"Want-Digest": "md5, adler32"})
    assert h.headers["Digest"] == f"md5={md5}"  # equal q: dCache prefers md5 over adler32


def test_content_md5_mismatch_is_400_and_stores_nothing(alice, home):
    good = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    r = alice.put(f"{home}/bad", data=b"payload", headers={"Content-MD5": good})
    assert r.status_code == 400
    assert "Checksum mismatch" in r.reason
    assert alice.head(f"{home}/bad").status_code == 404


def test_content_md5_mismatch_keeps_previous_version(alice, home):
    alice.put(f"{home}/keep", data=b"original")
    bad = base64.b64encode(hashlib.md5(b"x").digest()).decode()
    assert alice.put(f"{home}/keep", data=b"replacement", headers={"Content-MD5": bad}).status_code == 400
    assert alice.get(f"{home}/keep").content == b"original"


def test_content_md5_match_is_accepted(alice, home):
    data = b"verified"
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    assert alice.put(f"{home}/ok", data=data, headers={"Content-MD5": md5}).status_code == 201


def test_xattr_query_on_upload(dcache_server, alice, home):
    alice.put(f"{home}/x?xattr.origin=airflow&xattr.run=42", data=b"1")
    path = home.removeprefix(dcache_server.webdav)
    doc = alice.get(f"{dcache_server.api}/namespace{path}/x?xattr=true").json()
    assert doc["extendedAttributes"] == {"origin": "airflow", "run": "42"}


def test_mkcol_statuses(alice, home):
    assert alice.request("MKCOL", f"{home}/d").status_code == 201
    assert alice.request("MKCOL", f"{home}/d").status_code == 405
    assert alice.request("MKCOL", f"{home}/missing/d").status_code == 409


def test_delete_file_and_directories(alice, home):
    alice.put(f"{home}/d/f", data=b"x")  # the upload creates the implied parent
    assert alice.delete(f"{home}/d/f").status_code == 204
    assert alice.head(f"{home}/d/f").status_code == 404
    alice.put(f"{home}/d/g", data=b"x")
    assert alice.delete(f"{home}/d").status_code == 204  # WebDAV delete of a collection is recursive
    assert alice.head(f"{home}/d").status_code == 404
    assert alice.delete(f"{home}/d").status_code == 404


def test_move_with_overwrite_rules(alice, home):
    alice.put(f"{home}/a", data=b"a")
    alice.put(f"{home}/b", data=b"b")
    r = alice.request("MOVE", f"{home}/a", headers={"Destination": f"{home}/c"})
    assert r.status_code == 201
    r = alice.request("MOVE", f"{home}/c", headers={"Destination": f"{home}/b", "Overwrite": "F"})
    assert r.status_code == 412
    r = alice.request("MOVE", f"{home}/c", headers={"Destination": f"{home}/b", "Overwrite": "T"})
    assert r.status_code == 204
    assert alice.get(f"{home}/b").content == b"a"
    assert alice.head(f"{home}/c").status_code == 404
    path_only = home.split("//", 1)[1].split("/", 1)[1]
    r = alice.request("MOVE", f"{home}/b", headers={"Destination": f"/{path_only}/d"})
    assert r.status_code == 201


def test_propfind_depth_0_and_1(alice, home):
    alice.put(f"{home}/one.txt", data=b"12345")
    alice.request("MKCOL", f"{home}/sub")
    r = alice.request("PROPFIND", home, headers={"Depth": "1"})
    assert r.status_code == 207
    root = ET.fromstring(r.content)
    responses = root.findall(f"{DAV}response")
    assert len(responses) == 3
    by_href = {x.findtext(f"{DAV}href"): x for x in responses}
    file_resp = next(v for k, v in by_href.items() if k.endswith("/one.txt"))
    assert file_resp.findtext(f".//{DAV}getcontentlength") == "5"
    assert file_resp.find(f".//{DAV}resourcetype/{DAV}collection") is None
    sub = next(v for k, v in by_href.items() if k.endswith("/sub/"))
    assert sub.find(f".//{DAV}resourcetype/{DAV}collection") is not None
    r0 = alice.request("PROPFIND", home, headers={"Depth": "0"})
    assert len(ET.fromstring(r0.content).findall(f"{DAV}response")) == 1


def test_propfind_checksums_property_by_name(alice, home):
    data = b"abc" * 7
    alice.put(f"{home}/c", data=data, headers={"Want-Digest": "md5"})
    body = ('<propfind xmlns="DAV:" xmlns:d="http://www.dcache.org/2013/webdav">'
            "<prop><d:Checksums/><getcontentlength/></prop></propfind>")
    r = alice.request("PROPFIND", f"{home}/c", data=body, headers={"Depth": "0"})
    assert r.status_code == 207
    value = ET.fromstring(r.content).findtext(".//{http://www.dcache.org/2013/webdav}Checksums")
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    assert value == f"md5={md5},adler32={adler(data)}"
    plain = alice.request("PROPFIND", f"{home}/c", headers={"Depth": "0"})
    assert b"Checksums" not in plain.content  # not part of allprop, as in dCache


def test_directory_get_redirects_and_lists(alice, home):
    alice.put(f"{home}/listed.txt", data=b"x")
    r = alice.get(home, allow_redirects=False)
    assert r.status_code == 301 and r.headers["Location"].endswith("/")
    r = alice.get(home + "/")
    assert r.status_code == 200 and "listed.txt" in r.text


def test_anonymous_is_refused_with_401(dcache_server):
    r = requests.get(f"{dcache_server.webdav}/home/alice/")
    assert r.status_code == 401
    assert "Basic" in r.headers["WWW-Authenticate"]


def test_wrong_password_is_401(dcache_server):
    r = requests.get(f"{dcache_server.webdav}/", auth=("alice", "wrong"))
    assert r.status_code == 401


def test_unix_permissions_enforced(dcache_server, alice):
    bob = requests.Session()
    bob.auth = dcache_server.auth("bob")
    alice.put(f"{dcache_server.webdav}/home/alice/private.txt", data=b"secret")
    # alice's home is 0755: bob may read but not write
    assert bob.get(f"{dcache_server.webdav}/home/alice/private.txt").status_code == 200
    assert bob.put(f"{dcache_server.webdav}/home/alice/intruder", data=b"x").status_code == 403
    assert bob.delete(f"{dcache_server.webdav}/home/alice/private.txt").status_code == 403
    r = alice.post(f"{dcache_server.api}/namespace/home/alice/private.txt", json={"action": "chmod", "mode": 0o600})
    assert r.status_code == 201
    assert bob.get(f"{dcache_server.webdav}/home/alice/private.txt").status_code == 403


def test_root_restricted_user_sees_only_their_tree(dcache_server):
    carol = requests.Session()
    carol.auth = dcache_server.auth("carol")
    assert carol.put(f"{dcache_server.webdav}/f.txt", data=b"c").status_code == 201
    admin = requests.Session()
    admin.auth = dcache_server.auth("admin")
    assert admin.get(f"{dcache_server.webdav}/home/carol/f.txt").content == b"c"
    # '..' is rejected outright, so the chroot cannot be escaped
    assert carol.get(f"{dcache_server.webdav}/../home/alice/").status_code in (400, 404)


def test_options_advertises_dav(dcache_server):
    r = requests.options(f"{dcache_server.webdav}/", auth=dcache_server.auth("alice"))
    assert r.status_code == 200 and "PROPFIND" in r.headers["Allow"]


def test_data_survives_restart(start_dcache):
    server = start_dcache()
    data = os.urandom(50_000)
    assert requests.put(f"{server.webdav}/home/alice/persist.bin", data=data,
                        auth=server.auth("alice")).status_code == 201
    server.restart()
    r = requests.get(f"{server.webdav}/home/alice/persist.bin", auth=server.auth("alice"))
    assert r.status_code == 200 and r.content == data


def test_x509_client_certificate_login(dcache_tls_server):
    s = dcache_tls_server
    cert = s.info["alice_client_pem"]
    doc = requests.get(f"{s.api}/user", cert=cert, verify=s.ca_pem).json()
    assert doc["status"] == "AUTHENTICATED" and doc["username"] == "alice"
    r = requests.put(f"{s.webdav}/home/alice/by-cert.txt", data=b"x509", cert=cert, verify=s.ca_pem)
    assert r.status_code in (201, 204)
    # an Authorization header wins over the certificate, as in dCache
    doc = requests.get(f"{s.api}/user", cert=cert, verify=s.ca_pem, auth=s.auth("bob")).json()
    assert doc["username"] == "bob"
    assert requests.get(f"{s.api}/user", verify=s.ca_pem).json() == {"status": "ANONYMOUS"}


def test_unmapped_client_certificate_is_401(dcache_tls_server):
    s = dcache_tls_server
    r = requests.get(f"{s.api}/namespace/home/alice", cert=s.info["unmapped_client_pem"], verify=s.ca_pem)
    assert r.status_code == 401 and "not mapped" in r.json()["detail"]


def test_certificate_from_untrusted_ca_is_refused(dcache_tls_server, tmp_path):
    import trustme

    other = trustme.CA().issue_cert("mallory@example.org", common_name="mallory")
    pem = tmp_path / "mallory.pem"
    other.private_key_and_cert_chain_pem.write_to_path(str(pem))
    s = dcache_tls_server
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        requests.get(f"{s.api}/user", cert=str(pem), verify=s.ca_pem)


XATTR_NS = "http://www.dcache.org/2020/xattr"


def _proppatch(session, url: str, inner: str) -> requests.Response:
    body = (f'<?xml version="1.0"?><d:propertyupdate xmlns:d="DAV:" xmlns:x="{XATTR_NS}">{inner}'
            "</d:propertyupdate>")
    return session.request("PROPPATCH", url, data=body)


def test_proppatch_sets_and_removes_xattrs(dcache_server, alice, home):
    alice.put(f"{home}/pp", data=b"x")
    r = _proppatch(alice, f"{home}/pp", "<d:set><d:prop><x:origin>beamline-7</x:origin><x:run>42</x:run>"
                   "</d:prop></d:set>")
    assert r.status_code == 207 and r.content.count(b"200 OK") == 2
    path = home.removeprefix(dcache_server.webdav)
    doc = alice.get(f"{dcache_server.api}/namespace{path}/pp?xattr=true").json()
    assert doc["extendedAttributes"] == {"origin": "beamline-7", "run": "42"}
    body = f'<propfind xmlns="DAV:" xmlns:x="{XATTR_NS}"><prop><x:origin/></prop></propfind>'
    found = alice.request("PROPFIND", f"{home}/pp", data=body, headers={"Depth": "0"})
    assert ET.fromstring(found.content).findtext(f".//{{{XATTR_NS}}}origin") == "beamline-7"
    r = _proppatch(alice, f"{home}/pp", "<d:remove><d:prop><x:run/><x:never-set/></d:prop></d:remove>")
    assert r.status_code == 207
    assert alice.get(f"{dcache_server.api}/namespace{path}/pp?xattr=true").json()["extendedAttributes"] == {
        "origin": "beamline-7"}


def test_proppatch_of_dead_property_changes_nothing(dcache_server, alice, home):
    alice.put(f"{home}/dead", data=b"x")
    r = _proppatch(alice, f"{home}/dead", "<d:set><d:prop><x:keep>1</x:keep><d:displayname>n</d:displayname>"
                   "</d:prop></d:set>")
    assert r.status_code == 207
    assert b"403 Forbidden" in r.content and b"424 Failed Dependency" in r.content
    path = home.removeprefix(dcache_server.webdav)
    assert alice.get(f"{dcache_server.api}/namespace{path}/dead?xattr=true").json()["extendedAttributes"] == {}


def test_proppatch_bad_input_and_permissions(dcache_server, alice, home):
    alice.put(f"{home}/pb", data=b"x")
    assert alice.request("PROPPATCH", f"{home}/pb", data=b"<oops").status_code == 400
    assert _proppatch(alice, f"{home}/pb", "").status_code == 400
    bob = requests.Session()
    bob.auth = dcache_server.auth("bob")
    r = _proppatch(bob, f"{home}/pb", "<d:set><d:prop><x:a>1</x:a></d:prop></d:set>")
    assert r.status_code == 403
