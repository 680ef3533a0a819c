"""Start the bundled dCache-compatible service for a test: free ports, known users, optional TLS.

The service runs as a subprocess (``python -m airflow_dcache.cli server``), exactly as in production
trials, so code under test talks HTTP(S) to it as it would to a dCache; nothing is patched in-process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

START_TIMEOUT = 30.0

#: The users of a test instance (uid 0 is the site admin, who bypasses permissions as in Chimera).
DEFAULT_USERS: tuple[dict[str, Any], ...] = (
    {"username": "admin", "uid": 0, "gids": [0], "home": "/", "roles": ["admin"]},
    {"username": "alice", "uid": 1000, "gids": [1000, 3000], "home": "/home/alice"},
    {"username": "bob", "uid": 1001, "gids": [1001, 3000], "home": "/home/bob"},
    {"username": "carol", "uid": 1002, "gids": [1002], "home": "/", "root": "/home/carol"},
)


@dataclass
class DCacheTestServer:
    """A running instance: URLs, data directory, users' passwords and the CA file when it speaks TLS."""

    webdav: str
    frontend: str
    api: str
    data_dir: Path
    passwords: dict[str, str] = field(repr=False)
    process: subprocess.Popen[str] = field(repr=False)
    cmd: list[str] = field(repr=False)
    ca_file: Path | None = None
    site: str | None = None
    info: dict[str, Any] = field(default_factory=dict, repr=False)

    def auth(self, user: str) -> tuple[str, str]:
        """``(user, password)`` for ``requests``' ``auth=``.

        :param user: one of the server's users (``admin``, ``alice``, ``bob``, ``carol`` by default).
        """
        return (user, self.passwords[user])

    def connection(self, user: str = "alice", **extra: Any) -> dict[str, Any]:
        """The Airflow connection of ``user`` on this instance, in Airflow's JSON form.

        :param user: whose credentials the connection carries.
        :param extra: further connection extras (e.g. ``site="main"``, ``roles="admin"``).
        """
        extras: dict[str, Any] = {"frontend_url": self.frontend, "timeout": 30, **extra}
        if self.site and "site" not in extras:
            extras["site"] = self.site
        if self.ca_file is not None:
            extras.setdefault("ca_bundle", str(self.ca_file))
        return {"conn_type": "dcache", "host": self.webdav, "login": user, "password": self.passwords[user],
                "extra": extras}

    def connection_json(self, user: str = "alice", **extra: Any) -> str:
        """:meth:`connection` as the JSON string an ``AIRFLOW_CONN_<ID>`` variable holds.

        :param user: whose credentials the connection carries.
        :param extra: further connection extras.
        """
        return json.dumps(self.connection(user, **extra))

    def restart(self) -> None:
        """Stop and start again on the same data directory (the ports change)."""
        self.stop()
        self.process, info = launch(self.cmd)
        self.webdav, self.frontend, self.api, self.info = info["webdav"], info["frontend"], info["api"], info

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s; idempotent."""
        stop_process(self.process)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15) -> None:
    """Stop a service cleanly: SIGTERM, then SIGKILL after ``timeout`` seconds; idempotent.

    :param proc: the service process.
    :param timeout: seconds to wait for a clean exit.
    """
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def _tls_files(base: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1/localhost (needs ``trustme``)."""
    try:
        import trustme
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("tls=True needs trustme: pip install 'airflow-dcache[testing]'") from exc
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = base / "cert.pem", base / "key.pem", base / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    return cert_file, key_file, ca_file


def start_server(base: Path, *flags: str, tls: bool = False, site: str | None = None,
                 users: Iterable[Mapping[str, Any]] = DEFAULT_USERS, password_iterations: int = 1000,
                 host: str = "127.0.0.1") -> DCacheTestServer:
    """Start one instance under ``base`` on free ports and wait until it listens.

    :param base: directory for the users file, TLS files and the instance's data (created).
    :param flags: extra ``airflow-dcache server`` flags, e.g. ``"--tape-flush-delay", "1"``.
    :param tls: serve HTTPS with a CA generated for the test; ``ca_file`` is then the CA for clients.
        Without TLS, macaroons are allowed over plain HTTP (``--allow-insecure-macaroons``).
    :param site: the instance's site name (``--site``), also the connections' ``site`` extra.
    :param users: user records (``username``, ``uid``, ``gids``, ``home``, optional ``root``/``roles``);
        each gets a random password, found in ``passwords``.
    :param password_iterations: PBKDF2 rounds of the users file; few keep logins fast in tests.
    :param host: the loopback address to listen on.
    """
    from airflow_dcache.server.storage.users import hash_password, new_password, write_users

    base.mkdir(parents=True, exist_ok=True)
    records = [dict(u) for u in users]
    passwords = {str(u["username"]): new_password(12) for u in records}
    users_file = base / "users.json"
    write_users(users_file, [dict(u, password_hash=hash_password(passwords[str(u["username"])],
                                                                   iterations=password_iterations))
                             for u in records])
    cmd = [sys.executable, "-m", "airflow_dcache.cli", "server", "--data-dir", str(base / "data"),
           "--users", str(users_file), "--host", host, "--webdav-port", "0", "--frontend-port", "0"]
    if site:
        cmd += ["--site", site]
    ca_file: Path | None = None
    if tls:
        cert_file, key_file, ca_file = _tls_files(base)
        cmd += ["--tls-cert", str(cert_file), "--tls-key", str(key_file)]
    else:
        cmd.append("--allow-insecure-macaroons")
    cmd += list(flags)
    proc, info = launch(cmd)
    return DCacheTestServer(info["webdav"], info["frontend"], info["api"], base / "data", passwords, proc, cmd,
                            ca_file, site, info)


def launch(cmd: list[str], stderr: Any = None) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start ``cmd`` and read the one JSON line the service prints once it listens (bounded in time).

    :param cmd: the ``airflow-dcache server`` command line.
    :param stderr: where the service's log goes (default: inherited).
    """
    import selectors

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True)
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(START_TIMEOUT)
    line = proc.stdout.readline() if ready else ""
    if not line:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        raise RuntimeError(f"dCache test service did not start within {START_TIMEOUT:.0f}s "
                           f"(exit {proc.returncode}): {' '.join(cmd)}")
    return proc, dict(json.loads(line))
