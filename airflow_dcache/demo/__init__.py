"""``airflow-dcache demo``: the bundled service with sample users and data, ready for curl and rclone.

The service runs as a child process exactly as a user would start it, and the sample data is
written through its WebDAV door, so the demo exercises the same paths as real clients.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import requests

from airflow_dcache.server.storage.users import hash_password, new_password, write_users

SAMPLE_USERS = [
    {"username": "admin", "uid": 0, "gids": [0], "home": "/", "roles": ["admin"]},
    {"username": "alice", "uid": 1000, "gids": [1000, 2000], "home": "/home/alice"},
    {"username": "bob", "uid": 1001, "gids": [1001, 2000], "home": "/home/bob"},
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=Path("var/demo"))
    parser.add_argument("--webdav-port", type=int, default=2880)
    parser.add_argument("--frontend-port", type=int, default=3880)
    parser.add_argument("--once", action="store_true", help="seed, check, print and stop (for scripts)")


def _credentials(data_dir: Path) -> dict[str, str]:
    """Create the demo users once; later runs reuse the same passwords."""
    cred_file = data_dir / "credentials.json"
    if cred_file.exists():
        return dict(json.loads(cred_file.read_text()))
    data_dir.mkdir(parents=True, exist_ok=True)
    passwords = {str(u["username"]): new_password(12) for u in SAMPLE_USERS}
    write_users(data_dir / "users.json", [
        dict(u, password_hash=hash_password(passwords[str(u["username"])]), root="/") for u in SAMPLE_USERS
    ])
    fd = os.open(cred_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(passwords, f, indent=2)
    return passwords


def _seed(webdav: str, api: str, passwords: dict[str, str]) -> None:
    """Idempotently create the sample tree through the door, as any client would."""
    admin = ("admin", passwords["admin"])
    with requests.Session() as s:
        for d in ("/data", "/data/incoming", "/data/processed"):
            r = s.request("MKCOL", webdav + d, auth=admin, timeout=10)
            if r.status_code not in (201, 405):
                raise RuntimeError(f"MKCOL {d}: {r.status_code} {r.reason}")
        for d in ("/data/incoming", "/data/processed"):  # shared drop boxes, like a facility's
            s.post(f"{api}/namespace{d}", json={"action": "chmod", "mode": 0o1777}, auth=admin,
                   timeout=10).raise_for_status()
        for user in ("alice", "bob"):
            s.put(f"{webdav}/home/{user}/hello.txt", data=f"hello {user}\n".encode(),
                  auth=(user, passwords[user]), timeout=10).raise_for_status()
        s.put(f"{webdav}/data/incoming/sample-001.dat", data=os.urandom(64 * 1024), auth=admin,
              timeout=10).raise_for_status()


def run(args: argparse.Namespace) -> int:
    data_dir = args.data_dir.resolve()
    passwords = _credentials(data_dir)
    cmd = [sys.executable, "-m", "airflow_dcache.cli", "server", "--data-dir", str(data_dir),
           "--users", str(data_dir / "users.json"), "--webdav-port", str(args.webdav_port),
           "--frontend-port", str(args.frontend_port), "--allow-insecure-macaroons"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            print("error: the service did not start (is the port in use?)", file=sys.stderr)
            return proc.wait() or 1
        urls = json.loads(line)
        _seed(urls["webdav"], urls["api"], passwords)
        who = requests.get(urls["api"] + "/user", auth=("alice", passwords["alice"]), timeout=10).json()
        print(f"""
dCache-compatible service is running (data in {data_dir})
  WebDAV door : {urls['webdav']}
  Frontend    : {urls['api']}
  users       : {', '.join(f'{u}/{p}' for u, p in passwords.items())}
  (credentials are kept in {data_dir / 'credentials.json'})

Try:
  curl -u alice:{passwords['alice']} {urls['webdav']}/home/alice/hello.txt
  curl -u alice:{passwords['alice']} -T README.md {urls['webdav']}/home/alice/README.md
  curl -u alice:{passwords['alice']} '{urls['api']}/namespace/home/alice?children=true&checksum=true'
  curl -u alice:{passwords['alice']} -X POST -H 'Content-Type: application/macaroon-request' \\
       -d '{{"caveats":["activity:DOWNLOAD"],"validity":"PT10M"}}' {urls['webdav']}/home/alice/hello.txt
  rclone lsl :webdav,url={urls['webdav']},user=alice,pass=$(rclone obscure -- {passwords['alice']}):/home/alice

identity check: {who.get('status')} as {who.get('username')}
""" + ("" if args.once else "Press Ctrl-C to stop."), flush=True)
        if args.once:
            return 0
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)
