"""A real, independent WebDAV client (rclone) against the door: uploads, listings, moves, deletes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import pytest

pytestmark = pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone not installed (scripts/system-deps)")


def rclone(server, *args: str, user: str = "alice") -> subprocess.CompletedProcess[str]:
    obscured = subprocess.run(["rclone", "obscure", "--", server.passwords[user]], capture_output=True, text=True,
                              check=True).stdout.strip()
    remote = f":webdav,url='{server.webdav}',vendor=other,user={user},pass={obscured}:"
    cmd = ["rclone", "--config", "/dev/null", "--retries", "1", "--low-level-retries", "1",
           *[a.replace("REMOTE:", remote) for a in args]]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_rclone_roundtrip(dcache_server, tmp_path):
    base = f"REMOTE:home/alice/rc-{uuid.uuid4().hex[:6]}"
    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    files = {"a.bin": os.urandom(200_000), "nested/b.txt": b"hello rclone\n", "empty": b""}
    for name, data in files.items():
        (src / name).write_bytes(data)

    r = rclone(dcache_server, "copy", str(src), base)
    assert r.returncode == 0, r.stderr
    r = rclone(dcache_server, "lsjson", "-R", base)
    assert r.returncode == 0, r.stderr
    listed = {e["Path"]: e for e in json.loads(r.stdout)}
    for name, data in files.items():
        assert listed[name]["Size"] == len(data)
    assert listed["nested"]["IsDir"]

    r = rclone(dcache_server, "check", str(src), base, "--size-only")
    assert r.returncode == 0, r.stderr
    r = rclone(dcache_server, "cat", f"{base}/nested/b.txt")
    assert r.stdout == "hello rclone\n"

    r = rclone(dcache_server, "moveto", f"{base}/a.bin", f"{base}/nested/moved.bin")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    r = rclone(dcache_server, "copy", base, str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "nested" / "moved.bin").read_bytes() == files["a.bin"]

    r = rclone(dcache_server, "purge", base)
    assert r.returncode == 0, r.stderr
    r = rclone(dcache_server, "lsjson", base)
    assert r.returncode != 0  # directory is gone


def test_rclone_permission_error_is_reported(dcache_server, tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    r = rclone(dcache_server, "copyto", str(tmp_path / "f"), "REMOTE:home/alice/not-bobs", user="bob")
    assert r.returncode != 0
    assert "403" in r.stderr or "Permission denied" in r.stderr
