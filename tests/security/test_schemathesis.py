"""Schemathesis against the live service, driven by the service's own ``/api/v1/swagger.json``.

A private instance takes the run. Two principals, each confined by the server itself so that every
destructive call (DELETE, mv, bulk DELETE of ``/``) stays in a scratch tree and the run is repeatable:

* ``carol``, a normal user whose root is ``/home/carol`` (a chroot, as the users file sets it);
* ``admin`` with the admin role asserted (``Roles: admin``), given the root ``/scratch-admin`` for this
  instance: uid 0 bypasses every permission, so only a chroot keeps it off the rest of the tree.

Before the run each principal gets real objects (a file with a label, a directory, a bulk request, a
stage request, an archived request, an event channel with a subscription); their names and ids are
mixed into the generated path parameters (tests/security/schemathesis_hooks.py), so the cases reach
the handlers' logic and not only 404s. The CLI runs every phase (schema examples, coverage, fuzzing,
stateful sequences) with the checks: no 5xx, declared status codes, response schemas and headers, and
a Content-Type the operation produces on every response with a body. Afterwards the process is alive
and a canary outside both roots (bob's file) is intact.

CI runs a bounded number of examples (``CI_EXAMPLES`` per operation and phase, a fixed seed);
``DCACHE_SOAK=1`` runs the soak variant with ``SOAK_EXAMPLES`` and a fresh seed. ``DCACHE_ST_SEED``
overrides the seed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import DCacheServer, start_server
from tests.security.test_fuzz import _rss_kib

ROOT = Path(__file__).resolve().parents[2]
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CI_EXAMPLES = 8
SOAK_EXAMPLES = 200
CI_SEED = 20261202
CANARY_PATH = "/home/bob/canary.bin"
CANARY = b"written before schemathesis started; no principal of the run may reach it"
ADMIN_ROOT = "/scratch-admin"
CHECKS = ("not_a_server_error,status_code_conformance,response_schema_conformance,response_headers_conformance,"
          "content_type_with_body")
PRINCIPALS = {"carol": {}, "admin": {"Roles": "admin"}}
RSS_LIMIT_KIB = 1_000_000

pytestmark = pytest.mark.skipif(not SCHEMATHESIS.exists(), reason="schemathesis is not installed (dev extra)")


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DCacheServer]:
    server = start_server(tmp_path_factory.mktemp("schemathesis"), "--allow-insecure-macaroons",
                          "--bulk-archive-after", "1", "--tape-stage-delay", "0.2", "--tape-flush-delay", "0.2",
                          user_fields={"admin": {"root": ADMIN_ROOT, "home": "/"}})
    r = requests.put(f"{server.webdav}{CANARY_PATH}", data=CANARY, auth=server.auth("bob"), timeout=30)
    assert r.status_code == 201, r.text
    yield server
    alive = server.process.poll() is None
    server.stop()
    assert alive, "the service died under schemathesis"


def _ok(r: requests.Response, *codes: int) -> requests.Response:
    assert r.status_code in codes, (r.request.method, r.url, r.status_code, r.text[:300])
    return r


def seed_objects(server: DCacheServer, user: str, headers: dict[str, str]) -> dict[str, list[str]]:
    """Real objects in the principal's root; returns path-parameter name -> values that exist."""
    s = requests.Session()
    s.auth = server.auth(user)
    s.headers.update(headers)
    api = server.api
    _ok(s.put(f"{server.webdav}/f.bin", data=os.urandom(2048), timeout=30), 201, 204)
    _ok(s.request("MKCOL", f"{server.webdav}/d", timeout=30), 201, 405)
    _ok(s.put(f"{server.webdav}/d/g.txt", data=b"hello", timeout=30), 201, 204)
    _ok(s.post(f"{api}/namespace/f.bin", json={"action": "set-label", "label": "lbl"}, timeout=30), 201)
    _ok(s.post(f"{api}/namespace/f.bin", json={"action": "set-xattr", "attributes": {"k": "v"}}, timeout=30), 201)
    pnfsid = _ok(s.get(f"{api}/namespace/f.bin", timeout=30), 200).json()["pnfsId"]
    bulk = _ok(s.post(f"{api}/bulk-requests", json={"activity": "PIN", "target": ["/f.bin", "/d/g.txt"]},
                      timeout=30), 201).headers["request-url"].rsplit("/", 1)[1]
    archived = _ok(s.post(f"{api}/bulk-requests", json={"activity": "LOG_TARGET", "target": ["/d"]}, timeout=30),
                   201).headers["request-url"].rsplit("/", 1)[1]
    stage = _ok(s.post(f"{api}/tape/stage", json={"files": [{"path": "/f.bin"}, {"path": "/d/g.txt"}]},
                       timeout=30), 201).json()["requestId"]
    channel = _ok(s.post(f"{api}/events/channels", json={"client-id": f"st-{user}"}, timeout=30),
                  201).headers["Location"].rsplit("/", 1)[1]
    sub = _ok(s.post(f"{api}/events/channels/{channel}/subscriptions/inotify", json={"path": "/d"}, timeout=30),
              201).headers["Location"].rsplit("/", 1)[1]
    deadline = time.monotonic() + 30
    while _ok(s.get(f"{api}/bulk-requests/archived/{archived}", timeout=30), 200, 404).status_code == 404:
        assert time.monotonic() < deadline, "the LOG_TARGET request was never archived"
        time.sleep(0.5)
    s.close()
    return {"path": ["f.bin", "d", "lbl", ""], "pnfsid": [pnfsid], "id": [bulk, stage, archived, channel],
            "channel_id": [channel], "subscription_id": [sub], "type": ["inotify", "metronome"],
            "qos": ["disk", "tape", "disk+tape", "volatile"]}


def run_schemathesis(server: DCacheServer, user: str, headers: dict[str, str], known: dict[str, list[str]],
                     work: Path, examples: int, seed: int, timeout: float) -> dict[str, Any]:
    known_file = work / "known.json"
    known_file.write_text(json.dumps(known))
    report = work / "report"
    cmd = [str(SCHEMATHESIS), "run", f"{server.api}/swagger.json", "--auth", f"{user}:{server.passwords[user]}",
           "--checks", CHECKS, "--max-examples", str(examples), "--seed", str(seed), "--workers", "1",
           "--request-timeout", "15", "--no-color", "--report", os.environ.get("DCACHE_ST_REPORT", "junit"),
           "--report-dir", str(report),
           "--suppress-health-check", "all", "--warnings", "off"]
    for name, value in headers.items():
        cmd += ["--header", f"{name}: {value}"]
    env = dict(os.environ, SCHEMATHESIS_HOOKS="tests.security.schemathesis_hooks", DCACHE_ST_KNOWN=str(known_file),
               PYTHONPATH=str(ROOT), NO_COLOR="1")
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.monotonic() - started
    out = done.stdout + done.stderr
    generated = re.search(r"(\d+) generated", out)
    stats = {"user": user, "seed": seed, "max_examples": examples, "returncode": done.returncode,
             "cases": int(generated.group(1)) if generated else None, "seconds": round(seconds, 1),
             "operations": re.search(r"Tested: (\d+)", out).group(1) if "Tested:" in out else None}
    print(f"\nschemathesis as {user}: {stats}")
    return {"stats": stats, "output": out}


def _run_and_check(target: DCacheServer, user: str, tmp_path: Path, examples: int, seed: int,
                   timeout: float) -> None:
    headers = PRINCIPALS[user]
    known = seed_objects(target, user, headers)
    result = run_schemathesis(target, user, headers, known, tmp_path, examples, seed, timeout)
    out = result["output"]
    assert result["stats"]["cases"], out[-5000:]
    assert result["stats"]["returncode"] == 0, out[-20000:]
    assert target.process.poll() is None, "the service died under schemathesis"
    r = requests.get(f"{target.webdav}{CANARY_PATH}", auth=target.auth("bob"), timeout=30)
    assert r.status_code == 200 and r.content == CANARY


@pytest.mark.parametrize("user", list(PRINCIPALS))
def test_schemathesis(target, user, tmp_path):
    seed = int(os.environ.get("DCACHE_ST_SEED", CI_SEED))
    _run_and_check(target, user, tmp_path, CI_EXAMPLES, seed, timeout=240)


@pytest.mark.soak
@pytest.mark.parametrize("user", list(PRINCIPALS))
def test_soak_schemathesis(target, user, tmp_path):
    seed = int(os.environ.get("DCACHE_ST_SEED", int.from_bytes(os.urandom(4), "big")))
    _run_and_check(target, user, tmp_path, SOAK_EXAMPLES, seed, timeout=1800)


def test_the_process_survived(target):
    """Runs last in this module: the service is alive, answers, and the canary is intact."""
    assert target.process.poll() is None
    r = requests.get(f"{target.webdav}{CANARY_PATH}", auth=target.auth("bob"), timeout=30)
    assert r.status_code == 200 and r.content == CANARY
    r = requests.get(f"{target.api}/user", auth=target.auth("alice"), timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "AUTHENTICATED"
    assert _rss_kib(target.process.pid) < RSS_LIMIT_KIB
