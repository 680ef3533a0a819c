"""Macaroon attacks over real HTTP: ≥ 30 cases, each its own test, 0 accepted.

Every token is minted by the service for alice, then abused the way a holder (or a thief) could:
tampering, truncation, widening caveats appended by the holder, escalation of activity, path escapes,
forgeries with another secret. "Refused" means a 4xx, and — for writes — that nothing changed.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests

from airflow_dcache.macaroons import add_first_party_caveat, deserialize, serialize
from airflow_dcache.macaroons.codec import CaveatPacket, create

MACAROON_REQUEST = {"Content-Type": "application/macaroon-request"}


def mint(server, path: str, caveats: list[str], user: str = "alice") -> str:
    r = requests.post(f"{server.webdav}{path}", data=json.dumps({"caveats": caveats, "validity": "PT10M"}),
                      headers=MACAROON_REQUEST, auth=server.auth(user), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["macaroon"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def attenuate(token: str, *caveats: str) -> str:
    m = deserialize(token)
    for c in caveats:
        m = add_first_party_caveat(m, c)
    return serialize(m)


def refused(r: requests.Response) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:200])


@pytest.fixture(scope="module")
def tree(dcache_server) -> str:
    auth = dcache_server.auth("alice")
    base = f"/home/alice/attack-{uuid.uuid4().hex[:6]}"
    requests.request("MKCOL", f"{dcache_server.webdav}{base}", auth=auth)
    requests.put(f"{dcache_server.webdav}{base}/a.txt", data=b"A", auth=auth)
    requests.put(f"{dcache_server.webdav}{base}/sub/b.txt", data=b"B", auth=auth)
    requests.put(f"{dcache_server.webdav}{base}/outside.txt", data=b"O", auth=auth)
    bob = dcache_server.auth("bob")
    requests.put(f"{dcache_server.webdav}/home/bob/private-{base[-6:]}", data=b"bob's secret", auth=bob)
    requests.post(f"{dcache_server.api}/namespace/home/bob/private-{base[-6:]}", json={"action": "chmod",
                  "mode": 0o600}, auth=bob)
    return base


@pytest.fixture(scope="module")
def download(dcache_server, tree) -> str:
    """A DOWNLOAD,LIST macaroon for the tree: the token the escalation attacks start from."""
    return mint(dcache_server, tree, ["activity:DOWNLOAD,LIST"])


def unchanged(server, path: str, content: bytes) -> None:
    r = requests.get(f"{server.webdav}{path}", auth=server.auth("alice"), timeout=30)
    assert r.status_code == 200 and r.content == content


# -- tampering -------------------------------------------------------------------------------------
def test_control_the_untampered_token_works(dcache_server, tree, download):
    r = requests.get(f"{dcache_server.webdav}{tree}/a.txt", headers=bearer(download))
    assert r.status_code == 200 and r.content == b"A"


@pytest.mark.parametrize("position", [0, 15, 31])
def test_tampered_signature(dcache_server, tree, download, position):
    m = deserialize(download)
    sig = bytearray(m.signature)
    sig[position] ^= 0x01
    token = serialize(dataclasses.replace(m, signature=bytes(sig)))
    assert requests.get(f"{dcache_server.webdav}{tree}/a.txt", headers=bearer(token)).status_code == 401


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_truncated_token(dcache_server, tree, download, keep):
    token = download[: int(len(download) * keep)]
    assert requests.get(f"{dcache_server.webdav}{tree}/a.txt", headers=bearer(token)).status_code == 401


def test_garbage_appended(dcache_server, tree, download):
    assert requests.get(f"{dcache_server.webdav}{tree}/a.txt", headers=bearer(download + "AAAA")).status_code == 401


def test_caveat_edited_in_place(dcache_server, tree, download):
    m = deserialize(download)
    edited = tuple(CaveatPacket(c.cid.replace(b"DOWNLOAD,LIST", b"DELETE,UPLOAD")) for c in m.caveats)
    token = serialize(dataclasses.replace(m, caveats=edited))
    r = requests.delete(f"{dcache_server.webdav}{tree}/a.txt", headers=bearer(token))
    assert r.status_code == 401
    unchanged(dcache_server, f"{tree}/a.txt", b"A")


def test_caveat_removed(dcache_server, tree, download):
    m = deserialize(download)
    kept = tuple(c for c in m.caveats if not c.text.startswith("activity:"))
    token = serialize(dataclasses.replace(m, caveats=kept))
    assert requests.put(f"{dcache_server.webdav}{tree}/x", data=b"x", headers=bearer(token)).status_code == 401


def test_caveats_reordered(dcache_server, tree, download):
    m = deserialize(download)
    token = serialize(dataclasses.replace(m, caveats=tuple(reversed(m.caveats))))
    assert requests.get(f"{dcache_server.webdav}{tree}/a.txt", headers=bearer(token)).status_code == 401


def test_forged_with_another_secret(dcache_server, tree, download):
    """Same identifier and caveats, HMAC chain from another instance's (random) secret."""
    real = deserialize(download)
    forged = create(secrets.token_bytes(32), real.identifier, real.location)
    for c in real.first_party_caveats:
        forged = add_first_party_caveat(forged, c.replace("DOWNLOAD,LIST", "DOWNLOAD,LIST,DELETE"))
    assert requests.delete(f"{dcache_server.webdav}{tree}/a.txt", headers=bearer(serialize(forged))).status_code == 401
    unchanged(dcache_server, f"{tree}/a.txt", b"A")


def test_macaroon_of_another_instance(dcache_server, start_dcache, tree):
    other = start_dcache("--allow-insecure-macaroons", name="other-instance")
    token = mint(other, "/home/alice", [])
    assert requests.get(f"{dcache_server.webdav}{tree}/a.txt", headers=bearer(token)).status_code == 401


# -- widening by the holder ------------------------------------------------------------------------
def test_second_path_outside_the_first(dcache_server, tree):
    token = attenuate(mint(dcache_server, f"{tree}/sub", []), f"path:{tree}")
    assert requests.get(f"{dcache_server.webdav}{tree}/a.txt", headers=bearer(token)).status_code == 403


def test_second_path_to_root(dcache_server, tree):
    token = attenuate(mint(dcache_server, f"{tree}/sub", []), "path:/")
    assert requests.get(f"{dcache_server.webdav}{tree}/outside.txt", headers=bearer(token)).status_code == 403


def test_extra_activity_appended(dcache_server, tree, download):
    token = attenuate(download, "activity:DOWNLOAD,LIST,DELETE,UPLOAD,MANAGE")
    r = requests.delete(f"{dcache_server.webdav}{tree}/a.txt", headers=bearer(token))
    refused(r)
    unchanged(dcache_server, f"{tree}/a.txt", b"A")


def test_expired_before_caveat(dcache_server, tree, download):
    past = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    token = attenuate(download, f"before:{past}")
    assert requests.get(f"{dcache_server.webdav}{tree}/a.txt", headers=bearer(token)).status_code == 401


def test_later_before_cannot_extend(dcache_server, tree):
    soon = (datetime.now(UTC) - timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    late = (datetime.now(UTC) + timedelta(days=3650)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    token = attenuate(mint(dcache_server, tree, []), f"before:{soon}", f"before:{late}")
    assert requests.get(f"{dcache_server.webdav}{tree}/a.txt", headers=bearer(token)).status_code == 401


def test_wrong_ip(dcache_server, tree, download):
    token = attenuate(download, "ip:192.0.2.0/24")
    assert requests.get(f"{dcache_server.webdav}{tree}/a.txt", headers=bearer(token)).status_code == 401


def test_id_caveat_appended_to_become_root(dcache_server, tree, download):
    token = attenuate(download, "id:0;0;root")
    assert requests.get(f"{dcache_server.webdav}/home/bob/", headers=bearer(token)).status_code == 401


def test_root_caveat_cannot_be_widened(dcache_server, tree):
    token = attenuate(mint(dcache_server, "/", [f"root:{tree}/sub"]), "root:/")
    r = requests.get(f"{dcache_server.webdav}{tree}/a.txt", headers=bearer(token))
    assert r.status_code in (401, 403, 404) and r.content != b"A"


def test_root_caveat_dotdot_escape(dcache_server, tree):
    token = mint(dcache_server, "/", [f"root:{tree}/sub"])
    for target in ("/../a.txt", "/%2e%2e/a.txt", "/..%2fa.txt"):
        r = requests.get(f"{dcache_server.webdav}{target}", headers=bearer(token))
        assert r.status_code in (400, 403, 404) and r.content != b"A", target


# -- escalation of a DOWNLOAD,LIST token -----------------------------------------------------------
def test_download_cannot_put(dcache_server, tree, download):
    refused(requests.put(f"{dcache_server.webdav}{tree}/new", data=b"x", headers=bearer(download)))


def test_download_cannot_overwrite_with_authz_query(dcache_server, tree, download):
    refused(requests.put(f"{dcache_server.webdav}{tree}/a.txt?authz={download}", data=b"evil"))
    unchanged(dcache_server, f"{tree}/a.txt", b"A")


def test_download_cannot_delete(dcache_server, tree, download):
    refused(requests.delete(f"{dcache_server.webdav}{tree}/a.txt", headers=bearer(download)))
    unchanged(dcache_server, f"{tree}/a.txt", b"A")


def test_download_cannot_mkcol(dcache_server, tree, download):
    refused(requests.request("MKCOL", f"{dcache_server.webdav}{tree}/newdir", headers=bearer(download)))


def test_download_cannot_move(dcache_server, tree, download):
    refused(requests.request("MOVE", f"{dcache_server.webdav}{tree}/a.txt",
                             headers={**bearer(download), "Destination": f"{tree}/moved.txt"}))
    unchanged(dcache_server, f"{tree}/a.txt", b"A")


def test_download_cannot_copy_locally(dcache_server, tree, download):
    refused(requests.request("COPY", f"{dcache_server.webdav}{tree}/a.txt",
                             headers={**bearer(download), "Destination": f"{tree}/copied.txt"}))


def test_download_cannot_proppatch(dcache_server, tree, download):
    body = ('<?xml version="1.0"?><d:propertyupdate xmlns:d="DAV:" xmlns:x="http://www.dcache.org/2020/xattr">'
            "<d:set><d:prop><x:k>v</x:k></d:prop></d:set></d:propertyupdate>")
    refused(requests.request("PROPPATCH", f"{dcache_server.webdav}{tree}/a.txt", data=body,
                             headers={**bearer(download), "Content-Type": "application/xml"}))


def test_download_cannot_chmod(dcache_server, tree, download):
    refused(requests.post(f"{dcache_server.api}/namespace{tree}/a.txt", json={"action": "chmod", "mode": 0o777},
                          headers=bearer(download)))


def test_download_cannot_change_qos(dcache_server, tree, download):
    refused(requests.post(f"{dcache_server.api}/namespace{tree}/a.txt", json={"action": "qos", "target": "tape"},
                          headers=bearer(download)))


def test_download_cannot_bulk_delete(dcache_server, tree, download):
    r = requests.post(f"{dcache_server.api}/bulk-requests", headers=bearer(download),
                      json={"activity": "DELETE", "target": [f"{tree}/a.txt"]})
    if r.status_code == 201:  # accepted as a request: its targets must fail, nothing deleted
        url = r.headers["request-url"]
        for _ in range(50):
            doc = requests.get(url, headers=bearer(download)).json()
            if doc.get("status") in ("COMPLETED", "CANCELLED"):
                break
            import time
            time.sleep(0.1)
    else:
        refused(r)
    unchanged(dcache_server, f"{tree}/a.txt", b"A")


def test_download_cannot_start_a_pull_tpc(dcache_server, tree, download):
    refused(requests.request("COPY", f"{dcache_server.webdav}{tree}/pulled",
                             headers={**bearer(download), "Source": "http://127.0.0.1:9/x"}))


def test_download_cannot_mint_a_wider_macaroon(dcache_server, tree, download):
    r = requests.post(f"{dcache_server.webdav}{tree}", data=json.dumps({"caveats": ["activity:DELETE,UPLOAD"]}),
                      headers={**MACAROON_REQUEST, **bearer(download)})
    if r.status_code == 200:  # dCache attenuates server-side: the new token may never exceed the old one
        token = r.json()["macaroon"]
        refused(requests.delete(f"{dcache_server.webdav}{tree}/a.txt", headers=bearer(token)))
        unchanged(dcache_server, f"{tree}/a.txt", b"A")
    else:
        refused(r)


def test_list_only_cannot_open_an_sse_channel_on_a_file(dcache_server, tree):
    token = mint(dcache_server, tree, ["activity:UPLOAD"])  # neither LIST nor READ_METADATA
    r = requests.post(f"{dcache_server.api}/events/channels", headers=bearer(token))
    if r.status_code == 201:
        channel = r.headers["Location"]
        refused(requests.post(f"{channel}/subscriptions/inotify", json={"path": tree}, headers=bearer(token)))
        requests.delete(channel, headers=bearer(token))
    else:
        refused(r)


# -- paths -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("escape", ["/sub/../a.txt", "/sub/%2e%2e/a.txt", "/sub/%252e%252e/a.txt",
                                    "/sub/..%2fa.txt", "/sub/%2e%2e%2fa.txt", "/sub/.%2e/a.txt"])
def test_path_caveat_escape(dcache_server, tree, escape):
    token = mint(dcache_server, f"{tree}/sub", [])
    r = requests.get(f"{dcache_server.webdav}{tree}{escape}", headers=bearer(token))
    assert 400 <= r.status_code < 500 and r.content != b"A", (escape, r.status_code)


def test_move_destination_outside_the_caveat(dcache_server, tree):
    token = mint(dcache_server, f"{tree}/sub", ["activity:DOWNLOAD,LIST,UPLOAD,MANAGE,DELETE"])
    r = requests.request("MOVE", f"{dcache_server.webdav}{tree}/sub/b.txt",
                         headers={**bearer(token), "Destination": f"{dcache_server.webdav}{tree}/stolen.txt"})
    refused(r)
    unchanged(dcache_server, f"{tree}/sub/b.txt", b"B")


def test_copy_destination_outside_the_caveat(dcache_server, tree):
    token = mint(dcache_server, f"{tree}/sub", ["activity:DOWNLOAD,LIST,UPLOAD,MANAGE,DELETE"])
    r = requests.request("COPY", f"{dcache_server.webdav}{tree}/sub/b.txt",
                         headers={**bearer(token), "Destination": f"{tree}/copied-out.txt"})
    refused(r)
    r = requests.get(f"{dcache_server.webdav}{tree}/copied-out.txt", auth=dcache_server.auth("alice"))
    assert r.status_code == 404


def test_alice_macaroon_on_bobs_private_file(dcache_server, tree):
    token = mint(dcache_server, "/", [])
    r = requests.get(f"{dcache_server.webdav}/home/bob/private-{tree[-6:]}", headers=bearer(token))
    assert r.status_code == 403 and b"secret" not in r.content


def test_macaroon_carries_no_roles(dcache_server, tree):
    token = mint(dcache_server, "/", [], user="admin")
    attacker = attenuate(token, "activity:DOWNLOAD")
    r = requests.get(f"{dcache_server.api}/user", headers={**bearer(attacker), "Roles": "admin"})
    assert r.status_code == 200 and "admin" not in r.json().get("roles", [])


def test_header_and_query_credentials_together(dcache_server, tree, download):
    r = requests.get(f"{dcache_server.webdav}{tree}/a.txt?authz={download}", headers=bearer(download))
    assert r.status_code == 400
