"""Two bundled dCache-compatible instances, ``main`` (with emulated tape) and ``buffer``, as a site runs them.

The demo and the end-to-end tests need the same picture of a facility: a main instance where
scientists upload and raw data is archived, and a buffer instance next to compute. Each instance is
the real service started as a subprocess, exactly as ``airflow-dcache server`` runs in production
trials, so everything built on it talks HTTP to it like to a dCache.

Identities:

- ``admin`` (uid 0): only used once to lay out the tree, as a site admin would;
- ``pipeline`` (uid 2000, group ``facility`` 2000): the identity of the Airflow connections, the site's
  data-management agent. It owns ``/data/processed`` and the buffer's ``/data`` and holds dCache's
  ``admin`` role, which its connections assert: changing the QoS of a scientist's file needs the
  owner's or an admin's right in dCache. The functions never see this identity — they get per-file
  macaroons minted from it;
- ``alice``, ``bob`` (group ``facility``): scientists who upload into ``/data/incoming`` and
  ``/data/videos`` (sticky, group-writable drop boxes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests

from airflow_dcache.server.storage.users import hash_password, new_password, write_users
from airflow_dcache.testing.server import launch, stop_process

FACILITY_GID = 2000
USERS: list[dict[str, object]] = [
    {"username": "admin", "uid": 0, "gids": [0], "home": "/", "roles": ["admin"]},
    {"username": "pipeline", "uid": 2000, "gids": [FACILITY_GID], "home": "/home/pipeline", "roles": ["admin"]},
    {"username": "alice", "uid": 1000, "gids": [1000, FACILITY_GID], "home": "/home/alice"},
    {"username": "bob", "uid": 1001, "gids": [1001, FACILITY_GID], "home": "/home/bob"},
]
#: Directories of each site, created by ``pipeline`` (so it owns them) under a ``/data`` the admin makes
#: group-writable for the facility: (path, mode). Drop boxes are sticky and world-writable.
LAYOUT: dict[str, list[tuple[str, int]]] = {
    "main": [("/data/incoming", 0o1777), ("/data/videos", 0o1777), ("/data/processed", 0o755),
             ("/data/archive", 0o755)],
    "buffer": [("/data/work", 0o755)],
}


@dataclass
class Site:
    """One running instance: its name, URLs and process."""

    name: str
    webdav: str
    api: str
    data_dir: Path
    process: subprocess.Popen[str]
    cmd: list[str] = field(repr=False)
    log: Path | None = field(default=None, repr=False)

    @property
    def frontend(self) -> str:
        return self.api.removesuffix("/api/v1")

    def connection(self, user: str, password: str, roles: tuple[str, ...] = ()) -> dict[str, object]:
        """The Airflow connection (JSON form) of ``user`` on this site, asserting ``roles`` at login."""
        extra: dict[str, object] = {"frontend_url": self.frontend, "site": self.name, "timeout": 30}
        if roles:
            extra["roles"] = ",".join(roles)
        return {"conn_type": "dcache", "host": self.webdav, "login": user, "password": password, "extra": extra}

    def stop(self) -> None:
        stop_process(self.process)

    def kill(self) -> None:
        """``kill -9``: the crash a fault test needs (no clean shutdown, no SSE ``SHUTDOWN`` event)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=15)

    def start(self) -> None:
        """Start the stopped instance again on the same ports and data, so clients' URLs stay valid.

        The URLs printed at the first start are reused as the ports: a restart that moved the
        instance would look like another site to every connection.
        """
        if self.process.poll() is None:
            raise RuntimeError(f"site {self.name!r} is still running")
        ports = [urlsplit(self.webdav).port, urlsplit(self.api).port]
        cmd = list(self.cmd)
        for flag, port in zip(("--webdav-port", "--frontend-port"), ports, strict=True):
            cmd[cmd.index(flag) + 1] = str(port)
        stderr = open(self.log, "ab") if self.log else None  # noqa: SIM115 - handed to the child, closed below
        try:
            self.process, _ = launch(cmd, stderr=stderr)
        finally:
            if stderr:
                stderr.close()


def credentials(base: Path, *, iterations: int | None = None) -> dict[str, str]:
    """Create the users file once and return the passwords; later calls reuse both.

    The passwords stay in a 0600 file beside the users file, since the service itself keeps only hashes.
    """
    cred_file = base / "credentials.json"
    if cred_file.exists():
        return dict(json.loads(cred_file.read_text()))
    base.mkdir(parents=True, exist_ok=True)
    passwords = {str(u["username"]): new_password(16) for u in USERS}
    extra = {} if iterations is None else {"iterations": iterations}
    write_users(base / "users.json", [
        dict(u, password_hash=hash_password(passwords[str(u["username"])], **extra), root="/") for u in USERS
    ])
    fd = os.open(cred_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(passwords, f, indent=2)
    return passwords


def start_site(name: str, base: Path, users_file: Path, *extra: str, ports: tuple[int, int] = (0, 0),
               log: Path | None = None) -> Site:
    """Start one instance and wait for the JSON line it prints once it listens."""
    data_dir = base / name
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "airflow_dcache.cli", "server", "--data-dir", str(data_dir), "--site", name,
           "--users", str(users_file), "--webdav-port", str(ports[0]), "--frontend-port", str(ports[1]),
           "--allow-insecure-macaroons", *extra]
    stderr = open(log, "ab") if log else None  # noqa: SIM115 - handed to the child, closed below
    try:
        proc, info = launch(cmd, stderr=stderr)
    except RuntimeError as exc:
        raise RuntimeError(f"dCache service {name!r} did not start; see {log}: {exc}") from None
    finally:
        if stderr:
            stderr.close()
    return Site(name, info["webdav"], info["api"], data_dir, proc, cmd, log)


def lay_out(site: Site, passwords: Mapping[str, str], dirs: Iterable[tuple[str, int]]) -> None:
    """Create the site's tree as a site would: the admin makes ``/data`` the facility's, ``pipeline`` the rest.

    dCache's frontend has no ``chown``, so ownership comes from who creates a directory (MKCOL).
    """
    admin, pipeline = ("admin", passwords["admin"]), ("pipeline", passwords["pipeline"])
    with requests.Session() as s:
        for path, who, mode in [("/data", admin, 0o775), *((p, pipeline, m) for p, m in dirs)]:
            r = s.request("MKCOL", site.webdav + path, auth=who, timeout=10)
            if r.status_code not in (201, 405):
                raise RuntimeError(f"MKCOL {path} on {site.name}: {r.status_code} {r.reason}")
            for doc in ({"action": "chgrp", "gid": FACILITY_GID}, {"action": "chmod", "mode": mode}):
                s.post(f"{site.api}/namespace{path}", json=doc, auth=who, timeout=10).raise_for_status()


@dataclass
class Sites:
    """The facility: ``main`` and ``buffer``, plus the passwords of their shared users file."""

    main: Site
    buffer: Site
    passwords: dict[str, str] = field(repr=False)

    def connections(self, user: str = "pipeline") -> dict[str, str]:
        """``AIRFLOW_CONN_*`` variables for both sites (JSON form) as ``user``."""
        pw = self.passwords[user]
        roles = tuple(str(r) for u in USERS if u["username"] == user for r in u.get("roles", []))  # type: ignore[attr-defined]
        return {
            "AIRFLOW_CONN_DCACHE_MAIN": json.dumps(self.main.connection(user, pw, roles)),
            "AIRFLOW_CONN_DCACHE_BUFFER": json.dumps(self.buffer.connection(user, pw, roles)),
        }

    def stop(self) -> None:
        for site in (self.buffer, self.main):
            site.stop()


def start_sites(base: Path, *, main_args: Iterable[str] = (), buffer_args: Iterable[str] = (),
                ports: Mapping[str, tuple[int, int]] | None = None, fast_hash: bool = False,
                log_dir: Path | None = None) -> Sites:
    """Start ``main`` (tape emulation with short delays) and ``buffer`` and lay out their trees.

    :param base: directory for users file, credentials and both instances' data.
    :param main_args: extra server flags for ``main`` (e.g. ``--kafka-bootstrap``).
    :param buffer_args: extra server flags for ``buffer``.
    :param ports: ``{"main": (webdav, frontend), ...}``; port 0 picks a free one.
    :param fast_hash: few PBKDF2 rounds (tests): same format, faster logins.
    :param log_dir: where the services' stderr goes (default: inherited).
    """
    passwords = credentials(base, iterations=1000 if fast_hash else None)
    ports = ports or {}
    logs = {n: (log_dir / f"dcache-{n}.log" if log_dir else None) for n in ("main", "buffer")}
    main = start_site("main", base, base / "users.json", "--tape-flush-delay", "1", "--tape-stage-delay", "1",
                      *main_args, ports=ports.get("main", (0, 0)), log=logs["main"])
    try:
        buffer = start_site("buffer", base, base / "users.json", *buffer_args, ports=ports.get("buffer", (0, 0)),
                            log=logs["buffer"])
    except BaseException:
        main.stop()
        raise
    sites = Sites(main, buffer, passwords)
    try:
        lay_out(main, passwords, LAYOUT["main"])
        lay_out(buffer, passwords, LAYOUT["buffer"])
    except BaseException:
        sites.stop()
        raise
    return sites


def wait_for_watches(conn_id: str, count: int, *, timeout: float = 90) -> None:
    """Wait until the connection's user holds ``count`` inotify subscriptions (the watchers are listening).

    Uploads made before a trigger subscribed are found only by a reconcile listing; demos and tests
    wait here instead, so every run starts from a live event.
    """
    import time

    from airflow_dcache.hooks import DCacheHook

    deadline = time.monotonic() + timeout
    found = 0
    with DCacheHook(conn_id) as hook:
        while time.monotonic() < deadline:
            found = sum(1 for ch in hook.list_channels() for sub in hook.list_subscriptions(ch)
                        if "/subscriptions/inotify/" in sub)
            if found >= count:
                return
            time.sleep(0.5)
    raise TimeoutError(f"{found} of {count} storage-event watches subscribed after {timeout:.0f} s "
                       "(see the triggerer's log)")
