"""davix, the HTTP/WebDAV library inside ROOT and gfal2's HTTP plug-in, against the door.

davix 0.8 (neon backend, as Debian ships it) never answers a ``WWW-Authenticate`` challenge: on a 401
it gives up, whatever the challenge says (checked against a bare server that sends only
``Basic realm=...``). So davix authenticates the ways grid users run it against dCache: a bearer
token (macaroon) or preemptive credentials in an ``Authorization`` header (``-H``), or X.509. The
401 itself carries dCache's one challenge, ``WWW-Authenticate: Basic realm="dCache"``, which curl
``--anyauth``, cadaver and rclone answer.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import uuid

import pytest
import requests

pytestmark = pytest.mark.skipif(shutil.which("davix-ls") is None, reason="davix not installed (scripts/system-deps)")


def davix(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool, "--retry", "0", *args], capture_output=True, text=True, timeout=60)


def basic_header(server, user: str = "alice") -> list[str]:
    name, password = server.auth(user)
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return ["-H", f"Authorization: Basic {token}"]


def bearer_header(server, path: str, caveats: list[str]) -> list[str]:
    r = requests.post(f"{server.webdav}{path}", data=json.dumps({"caveats": caveats, "validity": "PT10M"}),
                      headers={"Content-Type": "application/macaroon-request"}, auth=server.auth("alice"))
    assert r.status_code == 200, r.text
    return ["-H", f"Authorization: Bearer {r.json()['macaroon']}"]


def test_401_has_one_basic_challenge_as_dcache(dcache_server):
    r = requests.request("PROPFIND", f"{dcache_server.webdav}/home/alice/", headers={"Depth": "0"})
    assert r.status_code == 401
    assert r.raw.headers.getlist("WWW-Authenticate") == ['Basic realm="dCache"']


def test_suppress_www_authenticate_as_dcache(dcache_server):
    r = requests.get(f"{dcache_server.webdav}/home/alice/", headers={"Suppress-WWW-Authenticate": "1"})
    assert r.status_code == 401
    assert "WWW-Authenticate" not in r.headers and r.headers["Suppress-WWW-Authenticate"] == "suppressed"


def test_curl_anyauth_answers_the_challenge(dcache_server, tmp_path):
    user, password = dcache_server.auth("alice")
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--anyauth", "-u",
                          f"{user}:{password}", "-X", "PROPFIND", "-H", "Depth: 0",
                          f"{dcache_server.webdav}/home/alice/"], capture_output=True, text=True, timeout=60)
    assert out.stdout == "207"


def test_davix_put_ls_get_rm_with_basic_header(dcache_server, tmp_path):
    d = f"{dcache_server.webdav}/home/alice/davix-{uuid.uuid4().hex[:6]}"
    local = tmp_path / "up.bin"
    local.write_bytes(b"davix payload\n" * 100)
    auth = basic_header(dcache_server)
    assert davix("davix-mkdir", *auth, d).returncode == 0
    put = davix("davix-put", *auth, str(local), f"{d}/f.bin")
    assert put.returncode == 0, put.stderr
    ls = davix("davix-ls", "-l", *auth, f"{d}/")
    assert ls.returncode == 0 and "f.bin" in ls.stdout and "1400" in ls.stdout, ls.stdout + ls.stderr
    back = tmp_path / "down.bin"
    get = davix("davix-get", *auth, f"{d}/f.bin", str(back))
    assert get.returncode == 0 and back.read_bytes() == local.read_bytes(), get.stderr
    assert davix("davix-rm", *auth, f"{d}/f.bin").returncode == 0
    ls = davix("davix-ls", *auth, f"{d}/")
    assert ls.returncode == 0 and "f.bin" not in ls.stdout


def test_davix_with_a_macaroon(dcache_server, tmp_path):
    d = f"/home/alice/davix-m-{uuid.uuid4().hex[:6]}"
    requests.request("MKCOL", f"{dcache_server.webdav}{d}", auth=dcache_server.auth("alice")).raise_for_status()
    token = bearer_header(dcache_server, d, ["activity:UPLOAD,DOWNLOAD,LIST"])
    local = tmp_path / "m.txt"
    local.write_text("via macaroon\n")
    put = davix("davix-put", *token, str(local), f"{dcache_server.webdav}{d}/m.txt")
    assert put.returncode == 0, put.stderr
    ls = davix("davix-ls", *token, f"{dcache_server.webdav}{d}/")
    assert ls.returncode == 0 and "m.txt" in ls.stdout, ls.stderr
    rm = davix("davix-rm", *token, f"{dcache_server.webdav}{d}/m.txt")  # no DELETE in the macaroon
    assert rm.returncode != 0
    assert requests.get(f"{dcache_server.webdav}{d}/m.txt", auth=dcache_server.auth("alice")).text == "via macaroon\n"


def test_davix_wrong_password_is_refused(dcache_server):
    token = base64.b64encode(b"alice:wrong").decode()
    ls = davix("davix-ls", "-H", f"Authorization: Basic {token}", f"{dcache_server.webdav}/home/alice/")
    assert ls.returncode != 0 and "401" in ls.stderr
