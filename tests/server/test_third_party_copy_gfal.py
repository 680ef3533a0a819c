"""Interop: gfal2 (the client FTS and WLCG sites use for HTTP-TPC) drives copies between two instances.

gfal2's HTTP plugin (through davix) sends the COPY with ``Source``/``Destination``, ``Credential:
none``, ``TransferHeaderAuthorization`` and ``RequireChecksumVerification``, reads the perf-marker
stream, and checks adler32 on both ends itself. Streaming fallback is switched off in the Python
API tests, so only a real third-party copy can succeed. gfal2 lives in Debian's system Python
(python3-gfal2), not in the venv, so it runs in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
import uuid
import zlib
from pathlib import Path

import pytest
import requests

from tests.conftest import DCacheServer

SYSTEM_PYTHON = "/usr/bin/python3"


def _gfal2_available() -> bool:
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gfal2"], capture_output=True, timeout=60)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _gfal2_available(), reason="python3-gfal2 not installed (scripts/system-deps)")

GFAL_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import gfal2

    cfg = json.loads(sys.argv[1])
    ctx = gfal2.creat_context()
    for prefix, token in cfg["tokens"].items():
        ctx.cred_set(prefix, gfal2.cred_new("BEARER", token))
    ctx.set_opt_string("HTTP PLUGIN", "DEFAULT_COPY_MODE", cfg["mode"])
    ctx.set_opt_boolean("HTTP PLUGIN", "ENABLE_STREAM_COPY", False)
    ctx.set_opt_boolean("HTTP PLUGIN", "ENABLE_FALLBACK_TPC_COPY", False)
    params = ctx.transfer_parameters()
    params.overwrite = True
    params.timeout = 60
    params.set_checksum(gfal2.checksum_mode.both, "ADLER32", "")
    try:
        ctx.filecopy(params, cfg["src"], cfg["dst"])
        result = {"ok": True, "checksum": ctx.checksum(cfg["dst"], "ADLER32")}
    except gfal2.GError as err:
        result = {"ok": False, "error": str(err)}
    print(json.dumps(result), flush=True)
    os._exit(0)  # skip gfal2's noisy interpreter shutdown
""")


def mint(server: DCacheServer, path: str, activities: str) -> str:
    body = {"caveats": [f"activity:{activities}"], "validity": "PT10M"}
    r = requests.post(f"{server.webdav}{path}", data=json.dumps(body), auth=server.auth("alice"), timeout=10,
                      headers={"Content-Type": "application/macaroon-request"})
    assert r.status_code == 200, (r.status_code, r.reason)
    return r.json()["macaroon"]


def gfal_copy(tmp_path: Path, mode: str, src: str, dst: str, tokens: dict[str, str]) -> dict:
    script = tmp_path / "gfal_tpc.py"
    script.write_text(GFAL_SCRIPT)
    cfg = json.dumps({"mode": mode, "src": src, "dst": dst, "tokens": tokens})
    proc = subprocess.run([SYSTEM_PYTHON, str(script), cfg], capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    return json.loads(lines[-1])


@pytest.fixture
def pair(start_dcache):
    a = start_dcache("--allow-insecure-macaroons", "--tpc-marker-period", "0.2", name="main")
    b = start_dcache("--allow-insecure-macaroons", "--site", "buffer", "--tpc-marker-period", "0.2",
                     name="buffer")
    return a, b


def adler(data: bytes) -> str:
    return format(zlib.adler32(data) & 0xFFFFFFFF, "08x")


def test_gfal2_pull_and_push_with_bearer_macaroons(pair, tmp_path):
    a, b = pair
    data = os.urandom(300_000)
    name = f"g-{uuid.uuid4().hex[:8]}"
    r = requests.put(f"{b.webdav}/home/alice/{name}", data=data, auth=b.auth("alice"), timeout=30)
    assert r.status_code == 201

    # pull: gfal2 sends COPY to A with Source=B, A's macaroon as Authorization, B's in TransferHeader
    tokens = {a.webdav: mint(a, "/home/alice", "UPLOAD,DELETE,READ_METADATA"),
              b.webdav: mint(b, "/home/alice", "DOWNLOAD,READ_METADATA")}
    result = gfal_copy(tmp_path, "3rd pull", f"{b.webdav}/home/alice/{name}", f"{a.webdav}/home/alice/pulled",
                       tokens)
    assert result == {"ok": True, "checksum": adler(data)}, result
    got = requests.get(f"{a.webdav}/home/alice/pulled", auth=a.auth("alice"), timeout=30)
    assert got.content == data

    # push: gfal2 sends COPY to A with Destination=B; A's macaroon reads, B's macaroon writes
    tokens = {a.webdav: mint(a, "/home/alice", "DOWNLOAD,READ_METADATA"),
              b.webdav: mint(b, "/home/alice", "UPLOAD,DELETE,READ_METADATA")}
    result = gfal_copy(tmp_path, "3rd push", f"{a.webdav}/home/alice/pulled", f"{b.webdav}/home/alice/pushed",
                       tokens)
    assert result == {"ok": True, "checksum": adler(data)}, result
    got = requests.get(f"{b.webdav}/home/alice/pushed", auth=b.auth("alice"), timeout=30)
    assert got.content == data


def test_gfal2_reports_a_failed_copy(pair, tmp_path):
    """A's macaroon may not upload: the COPY is refused before any transfer and gfal2 fails."""
    a, b = pair
    r = requests.put(f"{b.webdav}/home/alice/src", data=b"x" * 1000, auth=b.auth("alice"), timeout=30)
    assert r.status_code == 201
    tokens = {a.webdav: mint(a, "/home/alice", "READ_METADATA,LIST"),
              b.webdav: mint(b, "/home/alice", "DOWNLOAD,READ_METADATA")}
    result = gfal_copy(tmp_path, "3rd pull", f"{b.webdav}/home/alice/src", f"{a.webdav}/home/alice/denied",
                       tokens)
    assert result["ok"] is False
    assert requests.head(f"{a.webdav}/home/alice/denied", auth=a.auth("alice"), timeout=10).status_code == 404


@pytest.mark.skipif(shutil.which("gfal-copy") is None, reason="gfal-copy not installed (scripts/system-deps)")
def test_gfal_copy_command_with_preauthorised_urls(pair):
    """The gfal-copy command line with ``?authz=`` URLs: credentials travel inside the URLs."""
    a, b = pair
    data = b"gfal-copy command line\n" * 500
    r = requests.put(f"{b.webdav}/home/alice/cli-src", data=data, auth=b.auth("alice"), timeout=30)
    assert r.status_code == 201
    src = f"{b.webdav}/home/alice/cli-src?authz={mint(b, '/home/alice', 'DOWNLOAD,READ_METADATA')}"
    dst = f"{a.webdav}/home/alice/cli-dst?authz={mint(a, '/home/alice', 'UPLOAD,DELETE,READ_METADATA')}"
    env = dict(os.environ, GFAL_PYTHONBIN=SYSTEM_PYTHON)
    proc = subprocess.run(["gfal-copy", "-vvv", "-K", "ADLER32", "--copy-mode", "pull", "--no-delegation", src, dst],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Copy succeeded using mode 3rd pull" in proc.stdout + proc.stderr
    got = requests.get(f"{a.webdav}/home/alice/cli-dst", auth=a.auth("alice"), timeout=30)
    assert got.content == data
