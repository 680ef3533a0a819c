"""cadaver, a real neon-based WebDAV client, drives the door including LOCK/UNLOCK (it sends If: on a locked PUT)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("cadaver") is None, reason="cadaver not installed (scripts/system-deps)")


def cadaver(server, home: Path, script: str) -> str:
    user, password = server.auth("alice")
    home.mkdir(exist_ok=True)
    netrc = home / ".netrc"
    host = server.webdav.split("//", 1)[1].rsplit(":", 1)[0]
    netrc.write_text(f"machine {host}\nlogin {user}\npassword {password}\n")
    netrc.chmod(0o600)
    done = subprocess.run(["cadaver", f"{server.webdav}/home/alice/"], input=script + "quit\n", text=True,
                          capture_output=True, timeout=60, env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
    return done.stdout + done.stderr


def test_cadaver_session_with_locks(dcache_server, alice, tmp_path):
    local = tmp_path / "local.txt"
    local.write_bytes(b"written by cadaver\n")
    d = f"cad-{uuid.uuid4().hex[:6]}"
    out = cadaver(dcache_server, tmp_path / "home", "\n".join([
        f"mkcol {d}", f"cd {d}", f"put {local} f.txt", "lock f.txt", "showlocks", f"put {local} f.txt",
        "unlock f.txt", "propget f.txt", "ls", "",
    ]))
    for step in (f"Creating `{d}': succeeded", "Uploading", "Locking `f.txt': succeeded",
                 "Unlocking `f.txt': succeeded", "Listing collection"):
        assert step in out, out
    assert "Timeout: 0 seconds" in out and "failed" not in out.lower(), out
    got = alice.get(f"{dcache_server.webdav}/home/alice/{d}/f.txt")
    assert got.status_code == 200 and got.content == b"written by cadaver\n"
