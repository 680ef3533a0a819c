"""Shared fixtures: the real dCache-compatible server, started as a subprocess on free ports.

Tests talk to it over HTTP(S) only, exactly as clients of a production dCache would.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_dcache.server.storage.users import hash_password, new_password, write_users
from airflow_dcache.testing.server import DEFAULT_USERS, launch, stop_process

USERS = [dict(u) for u in DEFAULT_USERS]  # the same users as the pytest plugin's instances


@dataclass
class DCacheServer:
    """A running server: its URLs, data directory, user passwords and process."""

    webdav: str
    frontend: str
    api: str
    data_dir: Path
    passwords: dict[str, str]
    process: subprocess.Popen[str]
    cmd: list[str]
    ca_pem: str | None = None
    info: dict[str, object] = field(default_factory=dict)

    def restart(self) -> None:
        """Stop and start again on the same data directory (ports change)."""
        self.stop()
        self.process, info = launch(self.cmd)
        self.webdav, self.frontend, self.api, self.info = info["webdav"], info["frontend"], info["api"], info

    def auth(self, user: str) -> tuple[str, str]:
        return (user, self.passwords[user])

    def stop(self) -> None:
        stop_process(self.process)


def start_server(base: Path, *extra: str, tls: tuple[Path, Path] | None = None,
                 ca_pem: str | None = None, user_fields: dict[str, dict[str, object]] | None = None) -> DCacheServer:
    base.mkdir(parents=True, exist_ok=True)
    passwords = {str(u["username"]): new_password(12) for u in USERS}
    users_file = base / "users.json"
    # Few PBKDF2 rounds keep start-up and first logins fast; the format is the production one.
    write_users(users_file, [
        dict(u, password_hash=hash_password(passwords[str(u["username"])], iterations=1000),
             **(user_fields or {}).get(str(u["username"]), {}))
        for u in USERS
    ])
    cmd = [sys.executable, "-m", "airflow_dcache.cli", "server", "--data-dir", str(base / "data"),
           "--users", str(users_file), "--webdav-port", "0", "--frontend-port", "0", *extra]
    if tls:
        cmd += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    proc, info = launch(cmd)
    return DCacheServer(info["webdav"], info["frontend"], info["api"], base / "data", passwords, proc, cmd,
                        ca_pem, info)


def connection_json(server: Any, user: str | None = "alice", **extra: Any) -> str:
    """The JSON form of an Airflow connection for ``user`` (``None``: anonymous) on a bundled server."""
    value: dict[str, Any] = {"conn_type": "dcache", "host": server.webdav,
                             "extra": {"frontend_url": server.frontend, **extra}}
    if user is not None:
        value.update(login=user, password=server.passwords[user])
    if getattr(server, "ca_pem", None):
        value["extra"].setdefault("ca_bundle", str(server.ca_pem))
    return json.dumps(value)


@contextlib.contextmanager
def fresh_dir(hook: Any, prefix: str) -> Iterator[str]:
    """A new directory ``<prefix>-<random>`` made with ``hook`` and removed afterwards, so tests never
    see each other's files."""
    path = f"{prefix}-{uuid.uuid4().hex[:12]}"
    hook.mkdir(path)
    try:
        yield path
    finally:
        hook.delete(path, recursive=True, missing_ok=True)


@contextlib.contextmanager
def token_site(base: Path, issuer: Any, prefix: str, dirs: Sequence[str] = (), **issuer_fields: Any
               ) -> Iterator[DCacheServer]:
    """A server that accepts ``issuer``'s tokens below ``prefix`` (``issuer_fields`` go to its issuers
    file), with ``prefix`` and ``dirs`` below it made by admin, whose session is ``info["admin"]``."""
    issuers = issuer.write_issuers_file(base / "issuers.json", prefix=prefix, **issuer_fields)
    srv = start_server(base / "srv", "--allow-insecure-macaroons", "--token-issuers", str(issuers))
    admin = requests.Session()
    admin.auth = srv.auth("admin")
    try:
        for d in (prefix, *(f"{prefix}/{d}" for d in dirs)):
            assert admin.request("MKCOL", srv.webdav + d).status_code == 201
        srv.info["admin"] = admin
        yield srv
    finally:
        admin.close()
        srv.stop()


@pytest.fixture(scope="session")
def dcache_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DCacheServer]:
    """Plain HTTP, with macaroons allowed over HTTP (development flag)."""
    server = start_server(tmp_path_factory.mktemp("dcache"), "--allow-insecure-macaroons")
    yield server
    server.stop()


def openssl_dn(cert_pem: bytes) -> str:
    """A certificate's subject in OpenSSL's one-line form (/O=…/CN=…), as users files hold it."""
    from cryptography import x509

    subject = x509.load_pem_x509_certificate(cert_pem).subject
    return "".join("/" + attr.rfc4514_string() for rdn in subject.rdns for attr in rdn)


@pytest.fixture(scope="session")
def dcache_tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DCacheServer]:
    """HTTPS with a CA generated for the test run; ``ca_pem`` is the CA file for clients."""
    import trustme

    base = tmp_path_factory.mktemp("dcache-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = base / "cert.pem", base / "key.pem", base / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    # alice also holds an X.509 client certificate from the same CA, mapped by its subject DN.
    client = ca.issue_cert("alice@example.org", common_name="alice")
    client_pem = base / "alice-client.pem"
    client.private_key_and_cert_chain_pem.write_to_path(str(client_pem))
    dn = openssl_dn(client.cert_chain_pems[0].bytes())
    server = start_server(base, "--tls-client-ca", str(ca_file), tls=(cert_file, key_file), ca_pem=str(ca_file),
                          user_fields={"alice": {"dn": dn}})
    server.info["alice_client_pem"] = str(client_pem)
    stranger = ca.issue_cert("stranger@example.org", common_name="stranger")  # trusted CA, no user maps to it
    stranger_pem = base / "stranger-client.pem"
    stranger.private_key_and_cert_chain_pem.write_to_path(str(stranger_pem))
    server.info["unmapped_client_pem"] = str(stranger_pem)
    server.info["alice_dn"] = dn
    yield server
    server.stop()


@pytest.fixture
def start_dcache(tmp_path: Path) -> Iterator:
    """Factory for a server with custom flags, stopped at the end of the test."""
    started: list[DCacheServer] = []

    def factory(*extra: str, name: str = "custom",
                user_fields: dict[str, dict[str, object]] | None = None) -> DCacheServer:
        server = start_server(tmp_path / name, *extra, user_fields=user_fields)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()

pytest_plugins = ["tests.kafka_broker"]


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections for the whole test.

    The socket stays bound but never listens, so a connect gets a reset at once and no other process
    can take the port meanwhile (a port freed by closing a socket can be reused by anything).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: long soak/fuzz variant; runs only with DCACHE_SOAK=1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Soak variants (reliability, security) run on demand only: ``DCACHE_SOAK=1`` or ``scripts/soak``."""
    import os

    if os.environ.get("DCACHE_SOAK") == "1":
        return
    skip = pytest.mark.skip(reason="soak variant: set DCACHE_SOAK=1 (python -m tests.reliability.soak)")
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def docs_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documentation site, built once per run with ``mkdocs build --strict`` (plots generated first).

    Several tests read the built pages; one build serves them all.
    """
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "scripts" / "plot_benchmarks.py")], capture_output=True,
                          text=True, timeout=120, cwd=root)
    assert done.returncode == 0, done.stderr
    site = tmp_path_factory.mktemp("docs") / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          capture_output=True, text=True, timeout=300, cwd=root)
    assert done.returncode == 0, done.stderr[-5000:]
    return site
