"""JWT bearer tokens against the real service: each WLCG scope grants exactly its activities on its path.

The service runs with ``--token-issuers`` trusting a :class:`TokenIssuer` (prefix ``/tok``); a
second, untrusted issuer forges the wrong-issuer case. Everything goes over HTTP as a client would.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_dcache.testing.token_issuer import TokenIssuer
from tests.conftest import DCacheServer, start_server, token_site

PREFIX = "/tok"
TOKEN_UID, GROUP_GID = 2000, 4000


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenIssuer]:
    with TokenIssuer(tmp_path_factory.mktemp("issuer"), serve=True) as it:
        yield it


@pytest.fixture(scope="module")
def server(issuer: TokenIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DCacheServer]:
    identity = {"username": "tokenuser", "uid": TOKEN_UID, "gids": [TOKEN_UID]}
    with token_site(tmp_path_factory.mktemp("tokensrv"), issuer, PREFIX, dirs=("other", "grp"),
                    authz_id=identity, non_authz_id=identity,
                    subjects={"alice-sub": "alice"}, groups={"/physics": GROUP_GID}) as srv:
        admin: requests.Session = srv.info["admin"]  # type: ignore[assignment]
        admin.put(f"{srv.webdav}{PREFIX}/other/o.txt", data=b"other").raise_for_status()
        admin.put(f"{srv.webdav}{PREFIX}/grp/secret.txt", data=b"group data").raise_for_status()
        for action in ({"action": "chgrp", "gid": GROUP_GID}, {"action": "chmod", "mode": 0o640}):
            admin.post(f"{srv.api}/namespace{PREFIX}/grp/secret.txt", json=action).raise_for_status()
        yield srv


@pytest.fixture
def area(server: DCacheServer) -> str:
    """A fresh directory below the prefix (namespace path) holding ``f.txt``, owned by admin (mode 755/644)."""
    admin: requests.Session = server.info["admin"]  # type: ignore[assignment]
    path = f"{PREFIX}/a-{uuid.uuid4().hex[:10]}"
    assert admin.request("MKCOL", server.webdav + path).status_code == 201
    admin.put(f"{server.webdav}{path}/f.txt", data=b"payload").raise_for_status()
    return path


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def scoped(issuer: TokenIssuer, scope: str, **claims: Any) -> dict[str, str]:
    return bearer(issuer.mint(scope=scope, **claims))


def rel(path: str) -> str:
    """The scope path of a namespace path below the issuer's prefix."""
    return path[len(PREFIX):]


class Client:
    """The operations of the activity matrix, each returning the HTTP status."""

    def __init__(self, server: DCacheServer, headers: dict[str, str]) -> None:
        self.s, self.h = server, headers

    def read(self, path: str) -> int:
        return requests.get(self.s.webdav + path, headers=self.h, timeout=30).status_code

    def stat(self, path: str) -> int:
        return requests.request("PROPFIND", self.s.webdav + path, headers={**self.h, "Depth": "0"},
                                timeout=30).status_code

    def list(self, path: str) -> int:
        return requests.get(f"{self.s.api}/namespace{path}", params={"children": "true"}, headers=self.h,
                            timeout=30).status_code

    def upload(self, path: str) -> int:
        return requests.put(self.s.webdav + path, data=b"new", headers=self.h, timeout=30).status_code

    def mkdir(self, path: str) -> int:
        return requests.request("MKCOL", self.s.webdav + path, headers=self.h, timeout=30).status_code

    def delete(self, path: str) -> int:
        return requests.delete(self.s.webdav + path, headers=self.h, timeout=30).status_code

    def move(self, src: str, dst: str) -> int:
        return requests.request("MOVE", self.s.webdav + src, headers={**self.h, "Destination": self.s.webdav + dst},
                                timeout=30).status_code

    def stage(self, path: str) -> int:
        return requests.post(f"{self.s.api}/namespace{path}", json={"action": "pin", "lifetime": 60},
                             headers=self.h, timeout=30).status_code


OTHER = f"{PREFIX}/other/o.txt"


def test_read_scope_grants_download_and_list_on_its_path_only(server: DCacheServer, issuer: TokenIssuer,
                                                              area: str) -> None:
    c = Client(server, scoped(issuer, f"storage.read:{rel(area)}"))
    assert c.read(f"{area}/f.txt") == 200
    assert c.stat(f"{area}/f.txt") == 207
    assert c.list(area) == 200
    assert c.read(OTHER) == 403  # outside the path
    assert c.upload(f"{area}/new.txt") == 403
    assert c.mkdir(f"{area}/sub") == 403
    assert c.delete(f"{area}/f.txt") == 403
    assert c.move(f"{area}/f.txt", f"{area}/g.txt") == 403
    assert c.stage(f"{area}/f.txt") == 403


def test_create_scope_uploads_new_files_but_never_reads_overwrites_or_deletes(
        server: DCacheServer, issuer: TokenIssuer, area: str) -> None:
    c = Client(server, scoped(issuer, f"storage.create:{rel(area)}"))
    assert c.upload(f"{area}/new.txt") == 201  # in a directory owned by admin: scopes, not mode bits
    assert c.mkdir(f"{area}/sub") == 201
    assert c.stat(f"{area}/new.txt") == 207
    assert c.read(f"{area}/new.txt") == 403
    assert c.upload(f"{area}/f.txt") == 403  # overwriting needs DELETE
    assert c.delete(f"{area}/new.txt") == 403
    # dCache allows LIST on the ancestors of an authorised path, the path itself included, not below it
    assert c.list(area) == 200
    assert c.list(f"{area}/sub") == 403
    assert c.stage(f"{area}/f.txt") == 403
    assert c.upload(f"{PREFIX}/other/new.txt") == 403


def test_modify_scope_writes_overwrites_deletes_and_renames_but_never_reads(
        server: DCacheServer, issuer: TokenIssuer, area: str) -> None:
    c = Client(server, scoped(issuer, f"storage.modify:{rel(area)}"))
    assert c.upload(f"{area}/new.txt") == 201
    assert c.upload(f"{area}/f.txt") in (201, 204)
    assert c.move(f"{area}/new.txt", f"{area}/moved.txt") == 201
    assert c.delete(f"{area}/moved.txt") == 204
    assert c.mkdir(f"{area}/sub") == 201
    assert c.list(area) == 200
    assert c.read(f"{area}/f.txt") == 403
    assert c.stage(f"{area}/f.txt") == 403
    assert c.upload(f"{PREFIX}/other/new.txt") == 403
    assert c.delete(OTHER) == 403
    assert c.move(f"{area}/f.txt", f"{PREFIX}/other/stolen.txt") == 403  # MANAGE at the destination too


def test_stage_scope_reads_and_stages_on_its_path_only(server: DCacheServer, issuer: TokenIssuer, area: str) -> None:
    c = Client(server, scoped(issuer, f"storage.stage:{rel(area)}"))
    assert c.stage(f"{area}/f.txt") in (200, 201, 204)
    assert c.read(f"{area}/f.txt") == 200
    assert c.stage(OTHER) == 403
    assert c.read(OTHER) == 403
    assert c.upload(f"{area}/new.txt") == 403
    assert c.delete(f"{area}/f.txt") == 403


def test_scopes_on_different_paths_do_not_mix(server: DCacheServer, issuer: TokenIssuer, area: str) -> None:
    """read:/A modify:/B must not allow writing A or reading B (a macaroon could not express this)."""
    b_dir = area + "-b"
    admin: requests.Session = server.info["admin"]  # type: ignore[assignment]
    assert admin.request("MKCOL", server.webdav + b_dir).status_code == 201
    admin.put(f"{server.webdav}{b_dir}/f.txt", data=b"b").raise_for_status()
    c = Client(server, scoped(issuer, f"storage.read:{rel(area)} storage.modify:{rel(b_dir)} openid"))
    assert c.read(f"{area}/f.txt") == 200
    assert c.upload(f"{b_dir}/n.txt") == 201
    assert c.upload(f"{area}/n.txt") == 403
    assert c.read(f"{b_dir}/f.txt") == 403
    assert c.move(f"{b_dir}/n.txt", f"{area}/n.txt") == 403
    # the parents of an authorised path may be looked at, their other children not
    assert c.stat(PREFIX) == 207
    assert c.read(OTHER) == 403


def test_scope_paths_are_below_the_prefix_and_cannot_climb_out(server: DCacheServer, issuer: TokenIssuer) -> None:
    c = Client(server, scoped(issuer, "storage.read:/../other"))
    assert c.read(OTHER) == 200  # /../other is /other below the prefix, i.e. /tok/other
    c = Client(server, scoped(issuer, "storage.read:/../../home"))
    home = requests.Session()
    home.auth = server.auth("alice")
    home.put(f"{server.webdav}/home/alice/private.txt", data=b"x").raise_for_status()
    assert c.read("/home/alice/private.txt") == 403


def test_token_without_storage_scope_acts_as_its_mapped_user(server: DCacheServer, issuer: TokenIssuer) -> None:
    alice = requests.Session()
    alice.auth = server.auth("alice")
    alice.put(f"{server.webdav}/home/alice/mine.txt", data=b"alice's").raise_for_status()
    c = Client(server, scoped(issuer, "openid profile", sub="alice-sub"))
    assert c.read("/home/alice/mine.txt") == 200
    who = requests.get(f"{server.api}/user", headers=c.h, timeout=30).json()
    assert who["username"] == "alice"


def test_group_claims_map_to_gids(server: DCacheServer, issuer: TokenIssuer) -> None:
    secret = f"{PREFIX}/grp/secret.txt"  # mode 640, group GROUP_GID, owned by admin
    member = Client(server, scoped(issuer, "openid", groups=["/physics"]))
    outsider = Client(server, scoped(issuer, "openid", groups=["/chemistry"]))
    assert member.read(secret) == 200
    assert outsider.read(secret) == 403
    who = requests.get(f"{server.api}/user", headers=member.h, timeout=30).json()
    assert who["uid"] == TOKEN_UID and GROUP_GID in who["gids"]


def _assert_refused(server: DCacheServer, token: str, why: str) -> None:
    for url in (f"{server.webdav}{OTHER}", f"{server.api}/user"):
        r = requests.get(url, headers=bearer(token), timeout=30)
        assert r.status_code == 401, (why, r.status_code, r.text)
        assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
        body = r.json()
        assert body["status"] == "401" and why in body["detail"]
        assert all(part not in r.text for part in token.split(".") if part)


def _b64(doc: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("case", ["expired", "not-yet-valid", "wrong-audience", "no-audience", "future-iat",
                                  "unknown-kid", "tampered-signature", "tampered-payload", "alg-none",
                                  "hs256-with-public-key", "alg-other-than-the-keys", "wrong-issuer",
                                  "wlcg-ver"])
def test_bad_tokens_are_refused_with_401(server: DCacheServer, issuer: TokenIssuer, tmp_path: Path,
                                         case: str) -> None:
    import time

    scope = "storage.read:/other"
    now = time.time()
    if case == "expired":
        token, why = issuer.mint(scope=scope, lifetime=-3600), "has expired"
    elif case == "not-yet-valid":
        token, why = issuer.mint(scope=scope, nbf=now + 3600, lifetime=7200), "not yet valid"
    elif case == "wrong-audience":
        token, why = issuer.mint(scope=scope, aud="https://elsewhere.example"), "aud"
    elif case == "no-audience":
        token, why = issuer.mint(scope=scope, aud=None), "audience"
    elif case == "future-iat":
        token, why = issuer.mint(scope=scope, iat=now + 3600), "future"
    elif case == "unknown-kid":
        other = TokenIssuer(tmp_path / "forger", issuer.issuer)
        token, why = other.mint(scope=scope), "no key"
    elif case == "tampered-signature":
        head, payload, sig = issuer.mint(scope=scope).split(".")
        sig = ("A" if sig[0] != "A" else "B") + sig[1:]
        token, why = f"{head}.{payload}.{sig}", "signature"
    elif case == "tampered-payload":
        head, _, sig = issuer.mint(scope=scope).split(".")
        token, why = f"{head}.{_b64(issuer.claims(scope='storage.modify:/'))}.{sig}", "signature"
    elif case == "alg-none":
        token, why = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(issuer.claims(scope=scope))}.", "algorithm"
    elif case == "hs256-with-public-key":
        import hashlib
        import hmac

        pem = issuer.public_pem  # the classic confusion: the public key used as an HMAC secret
        signing = f"{_b64({'alg': 'HS256', 'kid': issuer.kid})}.{_b64(issuer.claims(scope=scope))}"
        sig = base64.urlsafe_b64encode(hmac.new(pem, signing.encode(), hashlib.sha256).digest()).rstrip(b"=")
        token, why = f"{signing}.{sig.decode()}", "algorithm"
    elif case == "alg-other-than-the-keys":
        token, why = issuer.mint(scope=scope, alg="RS384"), "is for RS256"
    elif case == "wrong-issuer":
        other = TokenIssuer(tmp_path / "other", "https://untrusted.example")
        token, why = other.mint(scope=scope), "untrusted issuer"
    else:
        token, why = issuer.mint(scope=scope, **{"wlcg.ver": "2.0"}), "wlcg.ver"
    _assert_refused(server, token, why)


def test_a_bearer_token_that_is_neither_macaroon_nor_jwt_is_refused(server: DCacheServer) -> None:
    r = requests.get(f"{server.api}/user", headers=bearer("not-a-token"), timeout=30)
    assert r.status_code == 401 and r.json()["status"] == "401"


def test_macaroons_keep_working_and_a_scoped_token_cannot_become_one(server: DCacheServer,
                                                                     issuer: TokenIssuer, area: str) -> None:
    admin: requests.Session = server.info["admin"]  # type: ignore[assignment]
    r = admin.post(f"{server.webdav}{area}/f.txt", headers={"Content-Type": "application/macaroon-request"},
                   json={"caveats": ["activity:DOWNLOAD"]})
    r.raise_for_status()
    macaroon = r.json()["macaroon"]
    assert requests.get(f"{server.webdav}{area}/f.txt", headers=bearer(macaroon), timeout=30).status_code == 200
    r = requests.post(f"{server.webdav}{area}/f.txt", headers={**scoped(issuer, f"storage.read:{rel(area)}"),
                                                                "Content-Type": "application/macaroon-request"},
                      json={"caveats": ["activity:DOWNLOAD"]}, timeout=30)
    assert r.status_code == 400 and "MultiTargetedRestriction" in r.text


def test_keys_can_come_from_the_issuers_discovery_document(issuer: TokenIssuer, tmp_path: Path) -> None:
    """No ``jwks`` in the issuers file: the service finds jwks_uri at <iss>/.well-known/openid-configuration."""
    cfg = issuer.issuer_config(prefix=PREFIX, authz_id={"username": "t", "uid": TOKEN_UID, "gids": []})
    del cfg["jwks"]
    path = tmp_path / "issuers.json"
    path.write_text(json.dumps({"issuers": [cfg]}))
    srv = start_server(tmp_path / "srv", "--allow-insecure-macaroons", "--token-issuers", str(path))
    try:
        r = requests.get(f"{srv.api}/user", headers=scoped(issuer, "storage.read:/"), timeout=30)
        assert r.status_code == 200 and r.json()["username"] == "t"
    finally:
        srv.stop()


@pytest.mark.parametrize("doc, message", [
    ({"issuers": []}, "non-empty 'issuers'"),
    ({"issuers": [{"issuer": "ftp://x", "audiences": ["a"]}]}, "issuers[0].issuer"),
    ({"issuers": [{"issuer": "https://x", "prefix": "rel", "audiences": ["a"]}]}, "issuers[0].prefix"),
    ({"issuers": [{"issuer": "https://x"}]}, "issuers[0].audiences"),
    ({"issuers": [{"issuer": "https://x", "audiences": ["a"], "groups": {"g": "x"}}]}, "issuers[0].groups"),
])
def test_a_bad_issuers_file_stops_the_server_naming_the_field(tmp_path: Path, doc: dict[str, Any],
                                                              message: str) -> None:
    import subprocess
    import sys

    path = tmp_path / "issuers.json"
    path.write_text(json.dumps(doc))
    proc = subprocess.run([sys.executable, "-m", "airflow_dcache.cli", "server", "--data-dir", str(tmp_path / "d"),
                           "--token-issuers", str(path), "--webdav-port", "0", "--frontend-port", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "--token-issuers" in proc.stderr and message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_bulk_request_keeps_the_tokens_per_path_scopes(server: DCacheServer, issuer: TokenIssuer, area: str) -> None:
    """Bulk targets run later as the submitter: the stored login must still hold the scopes, per path."""
    import time

    headers = scoped(issuer, f"storage.stage:{rel(area)} storage.read:/other")
    r = requests.post(f"{server.api}/bulk-requests", headers=headers, timeout=30,
                      json={"activity": "PIN", "target": [f"{area}/f.txt", OTHER]})
    assert r.status_code == 201, r.text
    url = r.headers["request-url"]
    deadline = time.monotonic() + 20
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        doc = requests.get(url, headers=headers, timeout=30).json()
        if doc.get("status") in ("COMPLETED", "CANCELLED"):
            break
        time.sleep(0.1)
    states = {t["target"]: t["state"] for t in doc["targets"]}
    assert states == {f"{area}/f.txt": "COMPLETED", OTHER: "FAILED"}  # read does not allow STAGE


def test_storage_events_show_a_token_only_what_its_scopes_cover(server: DCacheServer, issuer: TokenIssuer,
                                                                area: str) -> None:
    from tests.server.test_events_support import Events, inotify

    admin: requests.Session = server.info["admin"]  # type: ignore[assignment]
    events = Events(server, "tokenuser", token=issuer.mint(scope=f"storage.read:{rel(area)}/sub"))
    try:
        channel = events.channel()
        events.subscribe(channel, {"path": area})  # an ancestor of the scope path: LIST is allowed there
        with events.stream(channel) as sse:
            admin.put(f"{server.webdav}{area}/outside.txt", data=b"x").raise_for_status()
            assert admin.request("MKCOL", f"{server.webdav}{area}/sub").status_code == 201
            got = inotify(sse.collect(until=lambda e: e.event == "inotify" and e.doc["event"].get("name") == "sub"))
            got += inotify(sse.quiet(0.3))
    finally:
        events.cleanup()
    names = {name for name, _ in got}
    assert "sub" in names and "outside.txt" not in names


def test_a_jwks_url_is_fetched_again_for_an_unknown_kid_at_a_bounded_rate(tmp_path: Path) -> None:
    """Key rotation at the issuer is picked up; forged kids do not make the service hammer the issuer."""
    from airflow_dcache.server.services.bearer_tokens import BearerTokenService, InvalidBearerToken, load_issuers

    with TokenIssuer(tmp_path / "rot", serve=True) as it:
        cfg = load_issuers(it.write_issuers_file(tmp_path / "i.json", use_url=True,
                                                 authz_id={"username": "t", "uid": 7, "gids": [7]}))[0]
        service = BearerTokenService([cfg], {})
        keys = service.keys[cfg.issuer]
        keys.min_refresh = 0
        assert service.login(it.mint(scope="storage.read:/")).username == "t"
        fetched = it.jwks_fetches
        it.rotate()
        assert service.login(it.mint(scope="storage.read:/")).username == "t"
        assert it.jwks_fetches == fetched + 1
        keys.min_refresh = 3600
        for _ in range(5):
            with pytest.raises(InvalidBearerToken, match="no key"):
                service.login(it.mint(scope="storage.read:/", kid="forged"))
        assert it.jwks_fetches == fetched + 1
