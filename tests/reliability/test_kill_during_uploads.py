"""``kill -9`` of the service in the middle of uploads, repeated: nothing half-visible, nothing acknowledged lost.

Each round commits a few uploads (acknowledged with 201, content hash remembered), starts a few
more that stop half-way through their body, and kills the process with SIGKILL while those are in
flight; then the service is restarted on the same data directory and checked:

* every acknowledged file is there, byte-identical, with the adler32 the server reported at upload;
* no interrupted upload is visible: no name in a listing, no size, no inotify event on a watch
  that was open during the round;
* at the end the namespace database passes ``PRAGMA integrity_check`` and namespace and pool agree
  (every file has its replica, no replica without a file, no ``.part`` left).

CI runs 10 kills; the soak variant (``DCACHE_SOAK=1``) runs 100.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import sqlite3
import time
import uuid
import zlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
import requests

from tests.server.test_events_support import Events

DIR = "/home/alice/crash"


@dataclass
class Ledger:
    committed: dict[str, tuple[str, str]] = field(default_factory=dict)  # path → (sha256, adler32)
    interrupted: set[str] = field(default_factory=set)
    kills: int = 0
    leaked_events: int = 0


def _start_partial_upload(server, path: str, size: int) -> socket.socket:
    """Send the headers and half the body of a PUT, and keep the connection open."""
    url = urlsplit(server.webdav)
    user, password = server.auth("alice")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    sock = socket.create_connection((url.hostname, url.port), timeout=10)
    head = (f"PUT {path} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Basic {token}\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    sock.sendall(head + os.urandom(size // 2))
    return sock


def _commit(server, path: str, data: bytes) -> tuple[str, str]:
    r = requests.put(f"{server.webdav}{path}", data=data, auth=server.auth("alice"), timeout=30)
    assert r.status_code == 201, (r.status_code, r.text)
    adler = format(zlib.adler32(data) & 0xFFFFFFFF, "08x")
    return hashlib.sha256(data).hexdigest(), adler


def _listing(server) -> dict[str, int]:
    r = requests.get(f"{server.api}/namespace{DIR}?children=true", auth=server.auth("alice"), timeout=30)
    assert r.status_code == 200, r.text
    return {c["fileName"]: c.get("size", 0) for c in r.json()["children"]}


def _verify(server, ledger: Ledger) -> None:
    listing = _listing(server)
    for path in ledger.interrupted:
        name = path.rsplit("/", 1)[1]
        assert name not in listing, f"interrupted upload {name} is visible"
        assert requests.head(f"{server.webdav}{path}", auth=server.auth("alice"), timeout=30).status_code == 404
    for path, (sha, adler) in ledger.committed.items():
        r = requests.get(f"{server.webdav}{path}", auth=server.auth("alice"), timeout=30,
                         headers={"Want-Digest": "adler32"})
        assert r.status_code == 200, (path, r.status_code)
        assert hashlib.sha256(r.content).hexdigest() == sha, f"{path} changed"
        assert r.headers.get("Digest") == f"adler32={adler}", (path, r.headers.get("Digest"))
    assert set(listing) == {p.rsplit("/", 1)[1] for p in ledger.committed}


def _round(server, ledger: Ledger, n: int) -> None:
    events = Events(server, "alice")
    channel = events.channel()
    events.subscribe(channel, {"path": DIR, "flags": ["IN_CREATE", "IN_CLOSE_WRITE", "IN_MOVED_TO"]})
    with events.stream(channel) as sse:
        for i in range(3):
            path = f"{DIR}/ok-{n}-{i}"
            ledger.committed[path] = _commit(server, path, os.urandom(50_000 + i))
        partial = [f"{DIR}/cut-{n}-{i}-{uuid.uuid4().hex[:4]}" for i in range(3)]
        sockets = [_start_partial_upload(server, p, 2_000_000) for p in partial]
        ledger.interrupted.update(partial)
        time.sleep(0.2)  # the bodies are being received
        server.process.kill()  # SIGKILL: no shutdown handler runs
        server.process.wait(timeout=30)
        ledger.kills += 1
        seen = {e.doc["event"].get("name") for e in sse.collect(timeout=1.0) if e.event == "inotify"}
        leaked = seen & {p.rsplit("/", 1)[1] for p in partial}
        ledger.leaked_events += len(leaked)
        assert not leaked, f"events for uploads that never completed: {leaked}"
    for s in sockets:
        s.close()
    server.restart()
    _verify(server, ledger)


def _consistency(server) -> None:
    server.stop()
    data = server.data_dir
    conn = sqlite3.connect(str(data / "namespace.db"), timeout=10)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        files = {row[0] for row in conn.execute("SELECT id FROM inode WHERE type='REGULAR' AND on_disk=1")}
        orphans = conn.execute("SELECT COUNT(*) FROM inode c WHERE c.parent IS NOT NULL AND NOT EXISTS "
                               "(SELECT 1 FROM inode p WHERE p.id = c.parent)").fetchone()[0]
    finally:
        conn.close()
    assert orphans == 0
    pool = next((data / "pools").iterdir())
    replicas = {p.name for p in (pool / "data").iterdir()}
    assert files == replicas, (files ^ replicas)


def run(server, kills: int) -> Ledger:
    requests.request("MKCOL", f"{server.webdav}{DIR}", auth=server.auth("alice"), timeout=30)
    ledger = Ledger()
    for n in range(kills):
        _round(server, ledger, n)
    _consistency(server)
    server.restart()  # and once more after the DB check: still serving
    _verify(server, ledger)
    return ledger


def test_kill_9_during_uploads_x10(start_dcache):
    server = start_dcache("--allow-insecure-macaroons", name="crash")
    ledger = run(server, 10)
    assert ledger.kills == 10 and len(ledger.committed) == 30 and ledger.leaked_events == 0
    print(f"\nkill -9 during uploads: kills={ledger.kills} committed={len(ledger.committed)} lost=0 "
          f"interrupted={len(ledger.interrupted)} visible=0")


@pytest.mark.soak
def test_soak_kill_9_during_uploads_x100(start_dcache):
    server = start_dcache("--allow-insecure-macaroons", name="crash-soak")
    ledger = run(server, 100)
    assert ledger.kills == 100 and ledger.leaked_events == 0
