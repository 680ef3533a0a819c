"""Macaroons over real HTTP: minting as dCache does, and caveats enforced on every request.

Tokens are minted by the server, then attenuated or tampered with on the client side exactly
as an attacker holding a token could; each case states the status the door must answer.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests

from airflow_dcache.macaroons import add_first_party_caveat, deserialize, serialize

MACAROON_REQUEST = {"Content-Type": "application/macaroon-request"}


def mint(server, path: str, caveats: list[str] | None = None, validity: str | None = "PT10M",
         user: str = "alice") -> str:
    body: dict[str, object] = {"caveats": caveats or []}
    if validity:
        body["validity"] = validity
    r = requests.post(f"{server.webdav}{path}", data=json.dumps(body), headers=MACAROON_REQUEST,
                      auth=server.auth(user))
    assert r.status_code == 200, (r.status_code, r.reason)
    return r.json()["macaroon"]


def attenuate(token: str, *caveats: str) -> str:
    m = deserialize(token)
    for c in caveats:
        m = add_first_party_caveat(m, c)
    return serialize(m)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def tree(dcache_server):
    """alice's files: /home/alice/mac/{a.txt, sub/b.txt} and a sibling /home/alice/other.txt."""
    auth = dcache_server.auth("alice")
    base = f"{dcache_server.webdav}/home/alice/mac"
    requests.request("MKCOL", base, auth=auth)
    requests.put(f"{base}/a.txt", data=b"A", auth=auth)
    requests.put(f"{base}/sub/b.txt", data=b"B", auth=auth)
    requests.put(f"{dcache_server.webdav}/home/alice/other.txt", data=b"O", auth=auth)
    return "/home/alice/mac"


def test_mint_response_shape(dcache_server, tree):
    r = requests.post(f"{dcache_server.webdav}{tree}/a.txt", data=json.dumps({"caveats": ["activity:DOWNLOAD"]}),
                      headers=MACAROON_REQUEST, auth=dcache_server.auth("alice"))
    doc = r.json()
    token = doc["macaroon"]
    assert "=" not in token and "+" not in token and "/" not in token  # URL-safe, unpadded
    assert doc["uri"]["target"] == f"{dcache_server.webdav}{tree}/a.txt"
    assert doc["uri"]["base"] == f"{dcache_server.webdav}/"
    assert doc["uri"]["targetWithMacaroon"] == f"{dcache_server.webdav}{tree}/a.txt?authz={token}"
    assert doc["uri"]["baseWithMacaroon"] == f"{dcache_server.webdav}/?authz={token}"
    m = deserialize(token)
    caveats = m.first_party_caveats
    assert [c.split(":", 1)[0] for c in caveats] == ["iid", "id", "before", "home", "path", "activity"]
    assert caveats[1] == "id:1000;1000,3000;alice"
    assert caveats[4] == f"path:{tree}/a.txt"
    assert len(m.identifier) == 8
    assert r.text.startswith("{\n    ")  # dCache indents by four spaces


def test_presigned_url_works_without_other_credentials(dcache_server, tree):
    r = requests.post(f"{dcache_server.webdav}{tree}/a.txt", data=json.dumps({"caveats": ["activity:DOWNLOAD"]}),
                      headers=MACAROON_REQUEST, auth=dcache_server.auth("alice"))
    url = r.json()["uri"]["targetWithMacaroon"]
    got = requests.get(url)
    assert got.status_code == 200 and got.content == b"A"


def test_files_created_with_macaroon_belong_to_minter(dcache_server, tree):
    token = mint(dcache_server, tree, ["activity:UPLOAD,LIST"])
    name = f"up-{uuid.uuid4().hex[:6]}"
    assert requests.put(f"{dcache_server.webdav}{tree}/{name}", data=b"x", headers=bearer(token)).status_code == 201
    doc = requests.get(f"{dcache_server.api}/namespace{tree}/{name}?optional=true",
                       auth=dcache_server.auth("admin")).json()
    assert doc["owner"] == 1000


def _cases():
    """(id, caveats to mint with, local attenuations, method, path below tree, expected status)."""
    # Built at collection: "future" must outlive a long suite, so a day rather than minutes.
    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    past = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return [
        ("plain-get", [], [], "GET", "/a.txt", 200),
        ("download-allows-get", ["activity:DOWNLOAD"], [], "GET", "/a.txt", 200),
        ("download-denies-put", ["activity:DOWNLOAD"], [], "PUT", "/new1", 403),
        ("download-denies-delete", ["activity:DOWNLOAD"], [], "DELETE", "/a.txt", 403),
        ("download-allows-head", ["activity:DOWNLOAD"], [], "HEAD", "/a.txt", 200),
        ("list-only-denies-get", ["activity:LIST"], [], "GET", "/a.txt", 403),
        ("list-allows-propfind", ["activity:LIST"], [], "PROPFIND", "", 207),
        ("read-metadata-denies-list", ["activity:READ_METADATA"], [], "PROPFIND", "", 403),
        ("upload-allows-put", ["activity:UPLOAD"], [], "PUT", "/new2", 201),
        ("upload-denies-overwrite", ["activity:UPLOAD"], [], "PUT", "/a.txt", 403),
        ("manage-allows-mkcol", ["activity:MANAGE"], [], "MKCOL", "/newdir", 201),
        ("upload-denies-mkcol", ["activity:UPLOAD"], [], "MKCOL", "/newdir2", 403),
        ("path-inside", ["path:/home/alice/mac/sub"], [], "GET", "/sub/b.txt", 200),
        ("path-outside", ["path:/home/alice/mac/sub"], [], "GET", "/a.txt", 403),
        ("path-ancestor-stat", ["path:/home/alice/mac/sub"], [], "HEAD", "", 200),
        ("path-ancestor-get-denied", ["path:/home/alice/mac/sub"], [], "GET", "/a.txt", 403),
        ("path-widened-by-second-caveat", ["path:/home/alice/mac/sub"], ["path:/home/alice/mac"], "GET",
         "/a.txt", 403),
        ("path-second-caveat-is-relative", ["path:/home/alice/mac"], ["path:/sub"], "GET", "/sub/b.txt", 200),
        ("path-second-caveat-narrows", ["path:/home/alice/mac"], ["path:/sub"], "GET", "/a.txt", 403),
        ("activity-narrowed-locally", ["activity:DOWNLOAD,LIST"], ["activity:LIST"], "GET", "/a.txt", 403),
        ("activity-escalation", ["activity:DOWNLOAD"], ["activity:DOWNLOAD,DELETE"], "DELETE", "/a.txt", 401),
        ("activity-escalation-get", ["activity:LIST"], ["activity:DOWNLOAD"], "GET", "/a.txt", 401),
        ("unknown-activity", [], ["activity:FLY"], "GET", "/a.txt", 401),
        ("expired-before", [], [f"before:{past}"], "GET", "/a.txt", 401),
        ("earlier-before-ok", [], [f"before:{future}"], "GET", "/a.txt", 200),
        ("ip-loopback", ["ip:127.0.0.0/8"], [], "GET", "/a.txt", 200),
        ("ip-other-subnet", ["ip:192.0.2.0/24"], [], "GET", "/a.txt", 401),
        ("ip-and-across-caveats", ["ip:127.0.0.1,192.0.2.1"], ["ip:192.0.2.0/24"], "GET", "/a.txt", 401),
        ("ip-or-within-caveat", ["ip:192.0.2.0/24,127.0.0.1"], [], "GET", "/a.txt", 200),
        ("ip-bad-subnet", [], ["ip:not-an-ip"], "GET", "/a.txt", 401),
        ("unknown-caveat-key", [], ["colour:blue"], "GET", "/a.txt", 401),
        ("second-id", [], ["id:0;0;root"], "GET", "/a.txt", 401),
        ("second-iid", [], ["iid:AAAAAAAA"], "GET", "/a.txt", 401),
        ("root-rebases-absolute-paths", ["root:/home/alice/mac"], [], "GET", "/a.txt", 404),
        ("max-upload-small", ["max-upload:2"], [], "PUT", "/big", 413),
        ("max-upload-ok", ["max-upload:100"], [], "PUT", "/small", 201),
    ]


@pytest.mark.parametrize(("caveats", "extra", "method", "sub", "expected"),
                         [c[1:] for c in _cases()], ids=[c[0] for c in _cases()])
def test_caveat_enforcement(dcache_server, tree, caveats, extra, method, sub, expected):
    token = attenuate(mint(dcache_server, "/", caveats), *extra)
    suffix = f"-{uuid.uuid4().hex[:6]}" if method in ("PUT", "MKCOL") and expected < 300 else ""
    url = f"{dcache_server.webdav}{tree}{sub}{suffix}"
    data = b"0123456789" if method == "PUT" else None
    headers = bearer(token) | ({"Depth": "1"} if method == "PROPFIND" else {})
    r = requests.request(method, url, data=data, headers=headers)
    assert r.status_code == expected, (r.status_code, r.reason)


def test_root_caveat_chroots_requests(dcache_server, tree):
    token = mint(dcache_server, "/", ["root:/home/alice/mac"])
    assert requests.get(f"{dcache_server.webdav}/a.txt", headers=bearer(token)).content == b"A"
    assert requests.get(f"{dcache_server.webdav}/home/alice/other.txt", headers=bearer(token)).status_code == 404


def test_tampered_signature_is_401(dcache_server, tree):
    token = mint(dcache_server, "/")
    bad = dataclasses.replace(deserialize(token), signature=bytes(32))
    r = requests.get(f"{dcache_server.webdav}{tree}/a.txt", headers=bearer(serialize(bad)))
    assert r.status_code == 401


def test_tampered_caveat_text_is_401(dcache_server, tree):
    token = mint(dcache_server, tree + "/sub", ["activity:DOWNLOAD"])
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    forged = raw.replace(b"activity:DOWNLOAD", b"activity:DOWNLOAX")
    assert forged != raw
    r = requests.get(f"{dcache_server.webdav}{tree}/sub/b.txt",
                     headers=bearer(base64.urlsafe_b64encode(forged).decode().rstrip("=")))
    assert r.status_code == 401


@pytest.mark.parametrize("cut", [10, 40, -5])
def test_truncated_token_is_401(dcache_server, tree, cut):
    token = mint(dcache_server, "/")
    r = requests.get(f"{dcache_server.webdav}{tree}/a.txt", headers=bearer(token[:cut]))
    assert r.status_code == 401


def test_token_from_other_instance_is_401(dcache_server, start_dcache, tree):
    other = start_dcache("--allow-insecure-macaroons")
    foreign = mint(other, "/")
    r = requests.get(f"{dcache_server.webdav}{tree}/a.txt", headers=bearer(foreign))
    assert r.status_code == 401
    assert "Invalid macaroon" in r.json()["detail"]


def test_authz_query_parameter(dcache_server, tree):
    token = mint(dcache_server, tree, ["activity:DOWNLOAD"])
    assert requests.get(f"{dcache_server.webdav}{tree}/a.txt?authz={token}").status_code == 200
    r = requests.get(f"{dcache_server.webdav}{tree}/a.txt?authz={token}", headers=bearer(token))
    assert r.status_code == 400


def test_macaroon_works_on_frontend(dcache_server, tree):
    token = mint(dcache_server, tree, ["activity:LIST"])
    doc = requests.get(f"{dcache_server.api}/namespace{tree}?children=true", headers=bearer(token)).json()
    assert {"a.txt", "sub"} <= {c["fileName"] for c in doc["children"]}
    user = requests.get(f"{dcache_server.api}/user", headers=bearer(token)).json()
    assert user["username"] == "alice" and user["uid"] == 1000


def test_server_side_attenuation_cannot_widen(dcache_server, tree):
    narrow = mint(dcache_server, tree + "/sub", ["activity:DOWNLOAD,LIST"])
    r = requests.post(f"{dcache_server.webdav}{tree}", data=json.dumps({"caveats": []}),
                      headers=MACAROON_REQUEST | bearer(narrow))
    assert r.status_code == 400 and "not within existing path" in r.reason
    r = requests.post(f"{dcache_server.webdav}{tree}/sub", data=json.dumps({"caveats": ["activity:DOWNLOAD"]}),
                      headers=MACAROON_REQUEST | bearer(narrow))
    assert r.status_code == 200
    child = deserialize(r.json()["macaroon"]).first_party_caveats
    assert any(c.startswith("activity:") and "DELETE" not in c for c in child)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('{"caveats": ["nocolon"]}', "Missing ':'"),
        ('{"caveats": ["colour:blue"]}', "Unknown caveat"),
        ('{"validity": "P1W"}', "Bad validity value"),
        ('{"validity": "PT200H"}', "beyond maximum"),
        ('{"caveats": ["before:2001-01-01T00:00:00Z"]}', "expiry in past"),
        ("{not json", "Unable to parse JSON"),
    ],
)
def test_mint_errors(dcache_server, body, needle):
    r = requests.post(f"{dcache_server.webdav}/home/alice", data=body, headers=MACAROON_REQUEST,
                      auth=dcache_server.auth("alice"))
    assert r.status_code == 400 and needle in r.reason


def test_mint_requires_exact_content_type(dcache_server):
    r = requests.post(f"{dcache_server.webdav}/home/alice", data="{}", auth=dcache_server.auth("alice"),
                      headers={"Content-Type": "application/macaroon-request; charset=utf-8"})
    assert r.status_code == 405


def test_mint_anonymous_is_401(dcache_server):
    r = requests.post(f"{dcache_server.webdav}/home/alice", data="{}", headers=MACAROON_REQUEST)
    assert r.status_code == 401


def test_plain_http_refuses_macaroons_without_dev_flag(start_dcache):
    strict = start_dcache()
    r = requests.post(f"{strict.webdav}/", data="{}", headers=MACAROON_REQUEST, auth=strict.auth("alice"))
    assert r.status_code == 400 and r.reason == "Not secure transport"
    r = requests.get(f"{strict.webdav}/home/alice/", headers=bearer("abc"))
    assert r.status_code == 401 and "unencrypted" in r.json()["detail"]


def test_macaroons_over_https(dcache_tls_server):
    s = dcache_tls_server
    r = requests.post(f"{s.webdav}/home/alice", data='{"caveats":["activity:LIST"]}', headers=MACAROON_REQUEST,
                      auth=s.auth("alice"), verify=s.ca_pem)
    assert r.status_code == 200 and r.json()["uri"]["base"].startswith("https://")
    token = r.json()["macaroon"]
    listing = requests.request("PROPFIND", f"{s.webdav}/home/alice", headers=bearer(token) | {"Depth": "1"},
                               verify=s.ca_pem)
    assert listing.status_code == 207
    assert requests.get(f"{s.api}/user", headers=bearer(token), verify=s.ca_pem).json()["username"] == "alice"
