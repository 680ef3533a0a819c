"""Redirects to pool movers, as dCache's doors do: GET → 302, PUT with 100-continue → 307."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import zlib
from urllib.parse import parse_qs, urlsplit

import pytest
import requests


@pytest.fixture(scope="module")
def redirecting(tmp_path_factory):
    from tests.conftest import start_server

    server = start_server(tmp_path_factory.mktemp("redirect"), "--redirect-reads", "--redirect-writes")
    yield server
    server.stop()


def test_get_redirects_to_single_use_pool_url(redirecting):
    auth = redirecting.auth("alice")
    data = os.urandom(100_000)
    assert requests.put(f"{redirecting.webdav}/home/alice/r.bin", data=data, auth=auth).status_code == 201
    r = requests.get(f"{redirecting.webdav}/home/alice/r.bin", auth=auth, allow_redirects=False)
    assert r.status_code == 302
    location = r.headers["Location"]
    parts = urlsplit(location)
    assert parts.path == "/home/alice/r.bin" and location.startswith(redirecting.info["pool"])
    query = parse_qs(parts.query)
    assert len(query["dcache-http-uuid"][0]) == 36 and query["dcache-http-ref"] == [redirecting.webdav]
    got = requests.get(location, headers={"Want-Digest": "adler32"})  # no credentials at the pool
    assert got.status_code == 200 and got.content == data
    assert got.headers["Digest"] == f"adler32={zlib.adler32(data):08x}"
    assert requests.get(location).status_code == 404  # single use


def test_clients_following_redirects_just_work(redirecting):
    auth = redirecting.auth("alice")
    requests.put(f"{redirecting.webdav}/home/alice/follow.txt", data=b"followed", auth=auth)
    assert requests.get(f"{redirecting.webdav}/home/alice/follow.txt", auth=auth).content == b"followed"


def test_pool_url_is_bound_to_path(redirecting):
    auth = redirecting.auth("alice")
    requests.put(f"{redirecting.webdav}/home/alice/p1", data=b"1", auth=auth)
    location = requests.get(f"{redirecting.webdav}/home/alice/p1", auth=auth, allow_redirects=False).headers[
        "Location"]
    forged = location.replace("/home/alice/p1", "/home/bob/hello.txt")
    assert requests.get(forged).status_code == 400
    assert requests.get(f"{redirecting.info['pool']}/home/alice/p1").status_code == 400  # no uuid


def test_put_without_expect_is_proxied(redirecting):
    r = requests.put(f"{redirecting.webdav}/home/alice/proxied", data=b"p", auth=redirecting.auth("alice"))
    assert r.status_code == 201


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_expect_100_continue_follows_307(redirecting, tmp_path):
    src = tmp_path / "up.bin"
    data = os.urandom(2_000_000)
    src.write_bytes(data)
    user, pw = redirecting.auth("alice")
    out = subprocess.run(
        ["curl", "-sS", "-L", "--expect100-timeout", "30", "-H", "Expect: 100-continue", "-u", f"{user}:{pw}",
         "-T", str(src), "-o", "/dev/null", "-w", "%{http_code} %{num_redirects}",
         f"{redirecting.webdav}/home/alice/curl-307.bin"],
        capture_output=True, text=True, timeout=60, check=True).stdout
    assert out == "201 1"
    got = requests.get(f"{redirecting.webdav}/home/alice/curl-307.bin", auth=(user, pw))
    assert got.content == data


def test_redirected_put_is_refused_at_the_door(redirecting):
    r = requests.put(f"{redirecting.webdav}/home/alice/denied", data=b"x", auth=redirecting.auth("bob"),
                     headers={"Expect": "100-continue"}, allow_redirects=False)
    assert r.status_code == 403


def test_pool_upload_computes_the_checksum_the_client_wants(redirecting):
    auth = redirecting.auth("alice")
    url = f"{redirecting.webdav}/home/alice/sha.bin"
    data = os.urandom(50_000)
    door = requests.put(url, data=b"", auth=auth, headers={"Expect": "100-continue"}, allow_redirects=False)
    assert door.status_code == 307
    sha = base64.b64encode(hashlib.sha256(data).digest()).decode()
    r = requests.put(door.headers["Location"], data=data, headers={"Want-Digest": "sha-256"})
    assert r.status_code == 201 and r.headers["Digest"] == f"sha-256={sha}"
    assert requests.head(url, auth=auth, headers={"Want-Digest": "sha-256"}).headers["Digest"] == f"sha-256={sha}"
