"""Airflow's distributed engine on one machine: Postgres, Redis, Celery workers, two schedulers, two triggerers.

A facility outgrows SQLite and the LocalExecutor (:mod:`airflow_dcache.testing.airflow_stack`). Airflow's
own answer is Postgres as the metadata database, the CeleryExecutor with workers on several hosts, and
several schedulers and triggerers for availability. This module starts exactly that, from Debian's
``postgresql`` and ``redis-server`` packages and the ``celery`` extra, on loopback only (127.0.0.1, free
ports), so the tests can prove that the watchers, the burst design and the markers hold when the parts
are spread out and some of them die — and so a site engineer can read it as a recipe::

    make topology                      # or: airflow-dcache topology
    # prints the API/UI URL, the admin password, the Postgres/Redis URLs and every component's command

What runs (each its own process group, so a test can ``kill -9`` one and start it again):

- ``postgres``: a private cluster (``initdb`` in a temporary directory, run as the ``postgres`` user when
  started as root, since Postgres refuses root), password authentication, loopback TCP only;
- ``redis``: a private ``redis-server`` without persistence, the Celery broker;
- ``main`` and ``buffer``: the two dCache sites (:func:`airflow_dcache.testing.sites.start_sites`);
- Airflow (:class:`~airflow_dcache.testing.airflow_stack.AirflowStack` with named commands):
  ``scheduler-1``/``scheduler-2``, ``triggerer-1``/``triggerer-2``, ``worker-1``/``worker-2`` (Celery
  workers with their own hostnames and queues, as if on two hosts; both also serve ``default``), the
  ``dag-processor`` and the ``api-server``.

Set-up facts this harness encodes (each one failed before it was set):

- Airflow 3.3 on Postgres opens an async engine too: ``asyncpg`` must be installed beside psycopg2;
- with SQLAlchemy 2.1 the Celery result backend must name its driver: ``db+postgresql+psycopg2://…``;
- two triggerers or two workers on one host both want the log-server port: ``--skip-serve-logs``
  (the task logs are files in the shared ``AIRFLOW_HOME``; on separate hosts serve them instead);
- a Celery worker writes ``airflow-worker.pid`` into ``AIRFLOW_HOME``: two on one home need ``--pid``;
- recovery is bounded by Airflow's timeouts, which default to minutes: a killed worker's task is failed
  (and retried) after ``[scheduler] task_instance_heartbeat_timeout``, a dead scheduler's queued tasks
  are adopted every ``orphaned_tasks_check_interval``. The harness sets them short (``timeouts``).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from airflow_dcache.testing.airflow_stack import AirflowStack, free_port

#: The Airflow timeouts that bound recovery after a component dies (seconds), shortened from Airflow's
#: defaults (300, 300, 600, 30) so a killed worker's task is retried within a minute, not five.
DEFAULT_TIMEOUTS: dict[str, str] = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "45",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "30",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "180",
}


def postgres_bin_dir() -> Path:
    """Where ``initdb`` and ``postgres`` are: ``$AIRFLOW_DCACHE_PG_BIN``, else Debian's newest major version.

    Debian keeps them off ``PATH`` (``/usr/lib/postgresql/<major>/bin``).
    """
    explicit = os.environ.get("AIRFLOW_DCACHE_PG_BIN")
    if explicit:
        return Path(explicit)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise FileNotFoundError("no Postgres server binaries: install Debian's postgresql (scripts/system-deps) "
                            "or set $AIRFLOW_DCACHE_PG_BIN")


def _wait(predicate: Any, timeout: float, what: str, interval: float = 0.3) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception as exc:
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s (last error: {last})")


def _kill_group(proc: subprocess.Popen[Any] | None, sig: int = signal.SIGKILL, timeout: float = 30) -> None:
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    if proc.poll() is None:  # SIGTERM/SIGINT not honoured in time
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _kill_pids(pids: list[int]) -> None:
    """SIGKILL each process still alive (by pid: their groups may differ).

    No wait: orphans are reaped by init, and one that stays a zombie would hold a wait for nothing.
    """
    import psutil

    for pid in pids:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()


class Postgres:
    """A private Postgres cluster on ``127.0.0.1:port``: superuser and database ``airflow``, a random password.

    :param base: an empty directory for the cluster (created); made the ``postgres`` user's when run as
        root, so its parent must be traversable (a ``tempfile.mkdtemp`` under ``/tmp`` is).
    :param port: TCP port (0: a free one); kept across restarts, so the Airflow URLs stay valid.
    """

    def __init__(self, base: Path, *, port: int = 0, max_connections: int = 300) -> None:
        self.base = Path(base)
        self.data_dir = self.base / "data"
        self.port = port or free_port()
        self.password = secrets.token_urlsafe(16)
        self.max_connections = max_connections
        self.bin_dir = postgres_bin_dir()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.base / "postgres.log"
        # Postgres refuses to run as root: as root, the cluster belongs to Debian's `postgres` user
        self.user = "postgres" if os.geteuid() == 0 else None

    def url(self, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://airflow:{self.password}@127.0.0.1:{self.port}/airflow"

    def init(self) -> None:
        """``initdb`` (scram-sha-256, superuser ``airflow``) once, then start and create database ``airflow``."""
        self.base.mkdir(parents=True, exist_ok=True)
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.user:
            import pwd

            ent = pwd.getpwnam(self.user)
            for path in (self.base, pwfile):
                os.chown(path, ent.pw_uid, ent.pw_gid)
        os.chmod(pwfile, 0o600)
        subprocess.run([str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "airflow", "-E", "UTF8",
                        "--auth=scram-sha-256", f"--pwfile={pwfile}", "--no-sync"], user=self.user, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
        pwfile.unlink()
        self.start()
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="airflow", password=self.password,
                                dbname="postgres", connect_timeout=5)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("CREATE DATABASE airflow")
        finally:
            conn.close()

    def start(self, *, timeout: float = 60) -> None:
        """Start the postmaster (own process group) and wait until it accepts logins."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("postgres is still running")
        log = open(self.log, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self.process = subprocess.Popen(
                [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.base}",
                 "-c", f"max_connections={self.max_connections}"],
                user=self.user, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        _wait(self.ready, timeout, "postgres")

    def ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"postgres exited; see {self.log}")
        import psycopg2

        psycopg2.connect(host="127.0.0.1", port=self.port, user="airflow", password=self.password,
                         dbname="postgres", connect_timeout=2).close()
        return True

    def stop(self, *, timeout: float = 30) -> None:
        """"Fast" shutdown (SIGINT: open sessions are ended, then a checkpoint), as ``systemctl stop`` does."""
        _kill_group(self.process, signal.SIGINT, timeout)

    def kill(self) -> None:
        """``kill -9`` of the postmaster's group: crash recovery at the next start."""
        _kill_group(self.process, signal.SIGKILL)

    def restart(self) -> float:
        """Stop and start again on the same port; returns the seconds the database was unavailable."""
        t0 = time.monotonic()
        self.stop()
        self.start()
        return time.monotonic() - t0


class Redis:
    """A private ``redis-server`` on ``127.0.0.1:port`` without persistence: the Celery broker."""

    def __init__(self, base: Path, *, port: int = 0) -> None:
        self.base = Path(base)
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.base / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, timeout: float = 30) -> None:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.base.mkdir(parents=True, exist_ok=True)
        log = open(self.log, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self.process = subprocess.Popen(
                [exe, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
                 "--dir", str(self.base), "--protected-mode", "yes", "--daemonize", "no"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        _wait(self.ready, timeout, "redis")

    def ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited; see {self.log}")
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")

    def stop(self) -> None:
        _kill_group(self.process, signal.SIGTERM, 15)

    def kill(self) -> None:
        _kill_group(self.process, signal.SIGKILL)


def airflow_commands(*, schedulers: int = 2, triggerers: int = 2, workers: int = 2,
                     worker_concurrency: int = 4, home: Path | None = None) -> dict[str, list[str]]:
    """The Airflow components of the topology by name, each as its ``airflow`` arguments.

    Worker ``n`` is ``celery@worker-n`` and serves ``default`` plus its own queue ``host-n``, so a task can
    be pinned to one "host" (``queue="host-2"``) while ordinary tasks go to whichever worker is free.
    """
    cmds: dict[str, list[str]] = {}
    for i in range(1, schedulers + 1):
        cmds[f"scheduler-{i}"] = ["scheduler", "--skip-serve-logs"]
    for i in range(1, triggerers + 1):
        cmds[f"triggerer-{i}"] = ["triggerer", "--skip-serve-logs"]
    cmds["dag-processor"] = ["dag-processor"]
    cmds["api-server"] = ["api-server"]
    for i in range(1, workers + 1):
        pid = ["--pid", str(home / f"worker-{i}.pid")] if home else []
        cmds[f"worker-{i}"] = ["celery", "worker", "--celery-hostname", f"worker-{i}", "--queues", f"default,host-{i}",
                               "--concurrency", str(worker_concurrency), "--skip-serve-logs", *pid]
    return cmds


class Topology:
    """The whole distributed deployment on loopback: Postgres, Redis, both dCache sites and Airflow on Celery.

    :param base: a directory for the sites' data, ``AIRFLOW_HOME`` and the component logs; the Postgres
        cluster goes to a temporary directory of its own (its owner must be able to reach it).
    :param dags_folder: the DAGs to load.
    :param env: extra environment for every Airflow component (options, ``AIRFLOW_DCACHE_*``).
    :param schedulers: how many schedulers (Airflow runs them active-active on Postgres).
    :param triggerers: how many triggerers (each trigger is assigned to one; on its death another takes it).
    :param workers: how many Celery workers.
    :param worker_concurrency: task slots per worker.
    :param timeouts: the recovery timeouts (default :data:`DEFAULT_TIMEOUTS`).
    :param prepare: called with the started sites before Airflow starts (e.g. to make the watched
        folders, so the watchers subscribe at once instead of backing off).
    """

    def __init__(self, base: Path, dags_folder: Path, env: Mapping[str, str] | None = None, *, schedulers: int = 2,
                 triggerers: int = 2, workers: int = 2, worker_concurrency: int = 4,
                 timeouts: Mapping[str, str] | None = None, api_port: int = 0,
                 prepare: Callable[[Any], None] | None = None) -> None:
        self.base = Path(base).resolve()
        self.dags_folder = Path(dags_folder)
        self.extra_env = dict(env or {})
        self.timeouts = dict(DEFAULT_TIMEOUTS if timeouts is None else timeouts)
        self.api_port = api_port
        self.prepare = prepare
        self.counts = {"schedulers": schedulers, "triggerers": triggerers, "workers": workers,
                       "worker_concurrency": worker_concurrency}
        self._pg_base = Path(tempfile.mkdtemp(prefix="airflow-dcache-pg-"))
        self.postgres = Postgres(self._pg_base)
        self.redis = Redis(self.base / "redis")
        self.sites: Any = None  # airflow_dcache.testing.sites.Sites once started
        self.stack: AirflowStack | None = None
        self._cleanup = contextlib.ExitStack()
        self._cleanup.callback(shutil.rmtree, self._pg_base, True)  # last out: the cluster's directory

    # -- start / stop -------------------------------------------------------------------------------------------

    def airflow_env(self) -> dict[str, str]:
        """What makes Airflow distributed: Postgres, the CeleryExecutor on Redis, the result backend, timeouts."""
        return {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url(),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
            # SQLAlchemy 2.1 needs the driver named; plain db+postgresql:// fails in the worker
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.postgres.url("postgresql+psycopg2"),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.counts["worker_concurrency"]),
            **self.timeouts,
        }

    def start(self, *, timeout: float = 300) -> None:
        """Start everything in dependency order and wait until Airflow is healthy and the workers are ready.

        Anything already started is stopped again when a later part fails.
        """
        from airflow_dcache.testing.sites import start_sites

        try:
            self.base.mkdir(parents=True, exist_ok=True)
            self.postgres.init()
            self._cleanup.callback(self.postgres.stop)
            self.redis.start()
            self._cleanup.callback(self.redis.stop)
            self.sites = start_sites(self.base / "sites", fast_hash=True, log_dir=self.base)
            self._cleanup.callback(self.sites.stop)
            if self.prepare is not None:
                self.prepare(self.sites)
            home = self.base / "airflow"
            env = {**self.sites.connections(), **self.airflow_env(), **self.extra_env}
            commands = airflow_commands(home=home, **self.counts)
            self.stack = AirflowStack(home, self.dags_folder, env, commands=commands, api_port=self.api_port)
            self._cleanup.callback(self.stack.stop)
            self.stack.start(list(commands), timeout=timeout)
            self.wait_workers(timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop Airflow, the sites, Redis and Postgres (process groups; nothing left behind).

        Every Airflow component gets its SIGTERM at once (their shutdowns overlap instead of queueing);
        :meth:`AirflowStack.stop` then waits for each and kills what is left.
        """
        trees: list[int] = []
        if self.stack is not None:
            for name, proc in self.stack.processes.items():
                trees += self._tree(name)
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGTERM)
        try:
            self._cleanup.close()
        finally:
            _kill_pids(trees)  # task processes in groups of their own, if any outlived their worker

    def __enter__(self) -> Topology:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the components --------------------------------------------------------------------------------------

    @property
    def airflow(self) -> AirflowStack:
        if self.stack is None:
            raise RuntimeError("the topology is not started")
        return self.stack

    def components(self) -> list[str]:
        """Every component a test can kill: the Airflow ones, ``postgres``, ``redis``, ``main``, ``buffer``."""
        return [*self.airflow.commands, "postgres", "redis", "main", "buffer"]

    def pid(self, name: str) -> int | None:
        proc = self.airflow.processes.get(name)
        return proc.pid if proc is not None and proc.poll() is None else None

    def kill(self, name: str) -> None:
        """``kill -9`` of the component's whole process group (a crashed host, no clean shutdown)."""
        if name == "postgres":
            self.postgres.kill()
        elif name == "redis":
            self.redis.kill()
        elif name in ("main", "buffer"):
            getattr(self.sites, name).kill()
        else:
            proc = self.airflow.processes.get(name)
            if proc is None:
                raise KeyError(f"{name!r} is not running")
            # a crashed host takes every process with it: the group, and the task processes Airflow's
            # supervisor moved into groups of their own
            tree = self._tree(name)
            _kill_group(proc, signal.SIGKILL)
            _kill_pids(tree)

    def start_again(self, name: str) -> None:
        """Start a killed component again, as its supervisor (systemd, Kubernetes) would."""
        if name == "postgres":
            self.postgres.start()
        elif name == "redis":
            self.redis.start()
        elif name in ("main", "buffer"):
            getattr(self.sites, name).start()
        else:
            self.airflow.stop_component(name, timeout=5)
            self.airflow.start_component(name)

    def revive(self) -> list[str]:
        """Start again every Airflow component whose process exited (a supervisor's restart policy)."""
        dead = [n for n, p in self.airflow.processes.items() if p.poll() is not None]
        for name in dead:
            self.start_again(name)
        return dead

    def component_of(self, pid: int) -> str | None:
        """The Airflow component that ``pid`` descends from (a task's process: its worker).

        By ancestry, not process group: Airflow's task supervisor puts each task process in a group of
        its own (``setpgid``), so the worker's group does not contain its tasks.
        """
        import psutil

        leaders = {p.pid: n for n, p in self.airflow.processes.items() if p.poll() is None}
        try:
            proc: psutil.Process | None = psutil.Process(pid)
            for _ in range(32):  # bounded walk up the tree
                if proc is None:
                    return None
                if proc.pid in leaders:
                    return leaders[proc.pid]
                proc = proc.parent()
        except psutil.Error:
            return None
        return None

    def _tree(self, name: str) -> list[int]:
        """The pids of the component's process and all its descendants (task processes included)."""
        import psutil

        proc = self.airflow.processes.get(name)
        if proc is None or proc.poll() is not None:
            return []
        try:
            return [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
        except psutil.Error:
            return [proc.pid]

    def connected_to(self, port: int, prefix: str = "triggerer-") -> list[str]:
        """The components (named ``prefix…``) holding an established TCP connection to ``127.0.0.1:port``.

        The SSE stream of a storage-event watcher is such a connection to the site's frontend port: this
        shows which triggerer runs the watcher, from outside Airflow.
        """
        import psutil

        holders: set[str] = set()
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status != psutil.CONN_ESTABLISHED or not conn.raddr or conn.raddr.port != port or not conn.pid:
                continue
            name = self.component_of(conn.pid)
            if name and name.startswith(prefix):
                holders.add(name)
        return sorted(holders)

    def worker_ready(self, name: str) -> bool:
        """True once the Celery worker logged ``celery@<name> ready.`` after its latest start."""
        log = self.airflow.log_path(name)
        text = log.read_text(errors="replace") if log.exists() else ""
        last_start = text.rfind("-------------- celery@")  # the banner of the latest start
        return f"celery@{name} ready." in text[max(last_start, 0):]

    def wait_workers(self, names: list[str] | None = None, *, timeout: float = 180) -> None:
        wanted = names or [n for n in self.airflow.commands if n.startswith("worker-")]

        def ready() -> bool:
            for n in wanted:
                proc = self.airflow.processes.get(n)
                if proc is None or proc.poll() is not None:
                    raise RuntimeError(f"{n} exited; see {self.airflow.log_path(n)}")
            return all(self.worker_ready(n) for n in wanted)

        _wait(ready, timeout, f"celery workers {wanted}", interval=1.0)

    def endpoints(self) -> dict[str, str]:
        """What a person or a client connects to (secrets included: this is a private loopback stack)."""
        return {
            "Airflow UI / REST API": self.airflow.base_url,
            "admin password": self.airflow.admin_password,
            "Postgres": self.postgres.url(),
            "Celery broker (Redis)": self.redis.url,
            "dCache main WebDAV": self.sites.main.webdav,
            "dCache main frontend": self.sites.main.frontend,
            "dCache buffer WebDAV": self.sites.buffer.webdav,
            "dCache passwords": str(self.base / "sites" / "credentials.json"),
            "AIRFLOW_HOME": str(self.airflow.home),
            "component logs": str(self.airflow.log_dir),
        }

    def recipe(self) -> list[str]:
        """The commands this topology ran, one per component, as a site engineer would put them in units."""
        lines = [f"postgres -D {self.postgres.data_dir} -p {self.postgres.port} -c listen_addresses=127.0.0.1",
                 f"redis-server --bind 127.0.0.1 --port {self.redis.port} --save ''"]
        lines += [f"{name}: airflow {' '.join(args)}" for name, args in self.airflow.commands.items()]
        return lines


@contextlib.contextmanager
def running(base: Path, dags_folder: Path, env: Mapping[str, str] | None = None, **kwargs: Any) -> Iterator[Topology]:
    """``with running(base, dags) as topo:`` — the topology for the block, stopped afterwards."""
    topo = Topology(base, dags_folder, env, **kwargs)
    topo.start()
    try:
        yield topo
    finally:
        topo.stop()


# -- the command line: `airflow-dcache topology`, `make topology` -------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dags", type=Path, default=None, help="DAGs folder (default: the example DAGs)")
    parser.add_argument("--dir", type=Path, default=None, help="working directory (default: a temporary one)")
    parser.add_argument("--schedulers", type=int, default=2)
    parser.add_argument("--triggerers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-concurrency", type=int, default=4)
    parser.add_argument("--api-port", type=int, default=0, help="port of the Airflow UI/API (0: a free one)")
    parser.add_argument("--runtime", default="local", choices=("local", "docker"),
                        help="function runtime of the example pipelines ($AIRFLOW_DCACHE_FUNCTION_RUNTIME)")


def run(args: argparse.Namespace) -> int:
    """Start the topology, print its endpoints and commands, keep it up until Ctrl-C (or SIGTERM)."""
    from airflow_dcache.demo import default_dags_folder

    base = args.dir or Path(tempfile.mkdtemp(prefix="airflow-dcache-topology-"))
    env = {"AIRFLOW_DCACHE_FUNCTION_RUNTIME": args.runtime}
    topo = Topology(base, args.dags or default_dags_folder(), env, schedulers=args.schedulers,
                    triggerers=args.triggerers, workers=args.workers, worker_concurrency=args.worker_concurrency,
                    api_port=args.api_port)
    stop = {"now": False}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["now"] = True

    old = signal.signal(signal.SIGTERM, on_signal)
    try:
        print(f"starting Postgres, Redis, the dCache sites and Airflow on Celery in {base} ...", flush=True)
        topo.start()
        print("\nThe distributed topology is up (loopback only):")
        for key, value in topo.endpoints().items():
            print(f"  {key:24} {value}")
        print("\nComponents (each its own process group):")
        for line in topo.recipe():
            print(f"  {line}")
        print("\nCtrl-C stops everything.", flush=True)
        while not stop["now"]:
            for name in topo.revive():  # a supervisor's restart policy, reported
                print(f"  {name} exited and was started again", flush=True)
            time.sleep(2)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        print("stopping ...", flush=True)
        topo.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m airflow_dcache.testing.topology",
                                     description=(__doc__ or "").split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
