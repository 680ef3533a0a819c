"""A real Airflow 3.3 deployment on SQLite in one directory: scheduler, triggerer, dag-processor, api-server.

The demo and the end-to-end tests need Airflow exactly as a site runs it: separate components,
the LocalExecutor, event triggers in a real triggerer, the REST API as the UI uses it. This module
starts the same ``airflow <component>`` commands ``airflow standalone`` would, but with a known admin
password, a free API port and every component in its own process group, so they can be restarted
(a triggerer restart is part of the delivery tests) and stopped with nothing left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from airflow_dcache.testing.dagrun import QUIET_SHORT_EXTRAS

COMPONENTS = ("scheduler", "triggerer", "dag-processor", "api-server")
ADMIN = "admin"

#: How long an SQLite connection of any component waits for another's write lock before "database is
#: locked" (Python's default is 5 s, which a scheduler loop on a loaded 2-core machine can outlast).
SQLITE_BUSY_TIMEOUT_S = 60.0
#: ``[database] sql_alchemy_connect_args`` (and ``…_async``) of the stack: import paths of these dicts.
#: Two dicts, since Airflow adds ``check_same_thread`` to the sync one in place.
SQLITE_CONNECT_ARGS: dict[str, Any] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
SQLITE_CONNECT_ARGS_ASYNC: dict[str, Any] = {"timeout": SQLITE_BUSY_TIMEOUT_S}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def airflow_executable() -> str:
    """The ``airflow`` next to this interpreter (a venv need not be on ``PATH``)."""
    candidate = Path(sys.executable).with_name("airflow")
    return str(candidate) if candidate.exists() else (shutil.which("airflow") or "airflow")


class AirflowAPI:
    """The REST API v2 as the UI uses it, authenticated as the admin with a JWT from ``/auth/token``."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = (username, password)
        self.session = requests.Session()
        self._token: str | None = None

    def login(self) -> None:
        user, password = self._credentials
        r = self.session.post(f"{self.base_url}/auth/token", json={"username": user, "password": password},
                              timeout=30)
        r.raise_for_status()
        self._token = r.json()["access_token"]
        self.session.headers["Authorization"] = f"Bearer {self._token}"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call ``/api/v2{path}`` and return its JSON; raises ``requests.HTTPError`` with the body on failure."""
        if self._token is None:
            self.login()
        kwargs.setdefault("timeout", 30)
        r = self.session.request(method, f"{self.base_url}/api/v2{path}", **kwargs)
        if r.status_code == 401:  # token expired: log in again once
            self.login()
            r = self.session.request(method, f"{self.base_url}/api/v2{path}", **kwargs)
        if r.status_code >= 400:
            raise requests.HTTPError(f"{method} {path}: {r.status_code} {r.text[:500]}", response=r)
        return r.json() if r.content else None

    def paged(self, path: str, key: str, params: Mapping[str, Any] | None = None, page: int = 100) -> list[Any]:
        """Every item of a listing: the API caps ``limit`` (``[api] maximum_page_limit``, 100), so page by offset."""
        items: list[Any] = []
        while True:
            doc = self.request("GET", path, params={**(params or {}), "limit": page, "offset": len(items)})
            batch = list(doc[key])
            items += batch
            if len(batch) < page or len(items) >= int(doc.get("total_entries", len(items))):
                return items

    def health(self) -> dict[str, Any]:
        return dict(requests.get(f"{self.base_url}/api/v2/monitor/health", timeout=10).json())

    def import_errors(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/importErrors")["import_errors"])

    def dag(self, dag_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/dags/{dag_id}"))

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, *, logical_date: str | None = None,
                note: str | None = None) -> str:
        """Create a manual run as the UI's trigger dialog does; returns its run id."""
        body: dict[str, Any] = {"logical_date": logical_date, "conf": dict(conf or {})}
        if note:
            body["note"] = note
        return str(self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.paged(f"/dags/{dag_id}/dagRuns", "dag_runs")

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}"))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.paged(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", "task_instances")

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        doc = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
                           params={"map_index": map_index, "deserialize": True})
        return doc.get("value")

    def asset_events(self, uri: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"order_by": "timestamp"}
        if uri is not None:
            assets = self.request("GET", "/assets", params={"uri_pattern": uri, "limit": 100})["assets"]
            ids = [a["id"] for a in assets if a["uri"] == uri]
            if not ids:
                return []
            params["asset_id"] = ids[0]
        return self.paged("/assets/events", "asset_events", params)

    def wait_for_runs(self, dag_id: str, done: Callable[[list[dict[str, Any]]], bool], *, timeout: float = 120,
                      interval: float = 1.0) -> list[dict[str, Any]]:
        """Poll the DAG's runs until ``done(runs)``; raises ``TimeoutError`` with the last state."""
        deadline = time.monotonic() + timeout
        runs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            runs = self.dag_runs(dag_id)
            if done(runs):
                return runs
            time.sleep(interval)
        states = [(r["dag_run_id"], r["state"]) for r in runs]
        raise TimeoutError(f"{dag_id}: runs not done after {timeout:.0f} s: {states}")

    def create_backfill(self, dag_id: str, from_date: str, to_date: str, *,
                        dag_run_conf: Mapping[str, Any] | None = None, reprocess_behavior: str = "none",
                        max_active_runs: int = 10) -> dict[str, Any]:
        """``POST /backfills`` as the UI's backfill dialog does; returns the backfill (once: see
        :meth:`AirflowStack.backfill` for the retries SQLite needs)."""
        body = {"dag_id": dag_id, "from_date": from_date, "to_date": to_date, "dag_run_conf": dict(dag_run_conf or {}),
                "reprocess_behavior": reprocess_behavior, "max_active_runs": max_active_runs}
        return dict(self.request("POST", "/backfills", json=body, timeout=120))




class AirflowStack:
    """Airflow components as separate processes sharing one ``AIRFLOW_HOME`` and SQLite database.

    :param home: the ``AIRFLOW_HOME`` (created; holds the DB, logs and the admin password file).
    :param dags_folder: the DAGs to load.
    :param env: extra environment, e.g. ``AIRFLOW_CONN_*`` connections and ``AIRFLOW__…`` options.
    :param api_port: port of the API server (0: a free one).
    :param parallelism: LocalExecutor slots; on a 2-core machine more only adds start-up contention.
    :param admin_password: the UI login password of ``admin`` (generated when not given).
    :param preload: write ``config/airflow_local_settings.py`` so the processes that fork tasks import this
        provider once (:mod:`airflow_dcache.preload`), as the docs advise a site; ``False`` measures without.
    :param commands: the components by name, each as its ``airflow`` arguments (default: one of each of
        :data:`COMPONENTS`, named after it). A deployment with several of a kind names them apart, e.g.
        ``{"triggerer-1": ["triggerer", "--skip-serve-logs"], ...}`` (:mod:`airflow_dcache.testing.topology`).
    """

    def __init__(self, home: Path, dags_folder: Path, env: Mapping[str, str] | None = None, *, api_port: int = 0,
                 parallelism: int = 8, admin_password: str | None = None,
                 plugins_folder: Path | None = None, commands: Mapping[str, Sequence[str]] | None = None,
                 preload: bool = True) -> None:
        self.home = Path(home).resolve()
        self.preload = preload
        self.dags_folder = Path(dags_folder).resolve()
        self.api_port = api_port or free_port()
        self.admin_password = admin_password or secrets.token_urlsafe(12)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.commands: dict[str, list[str]] = ({n: list(a) for n, a in commands.items()} if commands
                                               else {n: [n] for n in COMPONENTS})
        self.log_dir = self.home / "component-logs"
        self.env = self._environment(env or {}, parallelism, plugins_folder)
        self.api = AirflowAPI(self.base_url, ADMIN, self.admin_password)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _environment(self, extra: Mapping[str, str], parallelism: int, plugins: Path | None) -> dict[str, str]:
        from cryptography.fernet import Fernet

        secrets_file = self.home / "stack-secrets.json"
        if secrets_file.exists():  # a restarted stack keeps its keys, or stored connections become unreadable
            keys = json.loads(secrets_file.read_text())
        else:
            keys = {"fernet": Fernet.generate_key().decode(), "jwt": secrets.token_hex(32)}
            self.home.mkdir(parents=True, exist_ok=True)
            fd = os.open(secrets_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(keys, f)
        venv_bin = str(Path(sys.executable).parent)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update({
            "PATH": venv_bin + os.pathsep + env.get("PATH", ""),
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": keys["fernet"],
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt"],
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            **QUIET_SHORT_EXTRAS,
        })
        if plugins:
            env["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(Path(plugins).resolve())
        env.update(extra)
        if env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "sqlite").startswith("sqlite"):
            # Every component (and every CLI call with this env) waits out another's write lock.
            for key, name in (("SQL_ALCHEMY_CONNECT_ARGS", "SQLITE_CONNECT_ARGS"),
                              ("SQL_ALCHEMY_CONNECT_ARGS_ASYNC", "SQLITE_CONNECT_ARGS_ASYNC")):
                env.setdefault(f"AIRFLOW__DATABASE__{key}", f"airflow_dcache.testing.airflow_stack.{name}")
            # A task's call to the execution API can wait that long for the lock inside the API server.
            # Airflow's client gives up after 5 s and tries five times (about a minute in all), so calls
            # queued behind one long lock fail the task with nothing wrong in it. The client outwaits it.
            env.setdefault("AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT", str(SQLITE_BUSY_TIMEOUT_S + 30))
        return env

    def _run(self, *args: str, timeout: float = 300) -> None:
        log = self.log_dir / "setup.log"
        with open(log, "ab") as out:
            subprocess.run([airflow_executable(), *args], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                           check=True, timeout=timeout)

    def migrate(self) -> None:
        """Create the DB and the admin password file (idempotent)."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        pw_file = self.home / "passwords.json"
        fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({ADMIN: self.admin_password}, f)
        settings = self.home / "config" / "airflow_local_settings.py"
        if self.preload and not settings.exists():  # a site's own settings stay as they are
            from airflow_dcache.preload import LOCAL_SETTINGS

            settings.parent.mkdir(exist_ok=True)
            settings.write_text(LOCAL_SETTINGS)
        self._run("db", "migrate")

    def start_component(self, name: str) -> None:
        if name not in self.commands:
            raise ValueError(f"unknown component {name!r}; one of {', '.join(self.commands)}")
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            self.processes[name] = subprocess.Popen([airflow_executable(), *self.commands[name]], env=self.env,
                                                    stdout=log,
                                                    stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()

    def stop_component(self, name: str, *, timeout: float = 30) -> None:
        """SIGTERM the component's whole process group, SIGKILL what is left after ``timeout``."""
        proc = self.processes.pop(name, None)
        if proc is None:
            return
        _signal_group(proc, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
        _signal_group(proc, signal.SIGKILL)  # children (task runners, parsers) may outlive their parent
        proc.wait(timeout=10)

    def restart(self, name: str) -> None:
        self.stop_component(name)
        self.start_component(name)

    def start(self, components: Iterable[str] = COMPONENTS, *, timeout: float = 180) -> None:
        """Migrate, start the components and wait until the API answers and each reports healthy."""
        self.migrate()
        wanted = list(components)
        try:
            for name in wanted:
                self.start_component(name)
            self.wait_healthy(wanted, timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def wait_healthy(self, components: Iterable[str] = COMPONENTS, *, timeout: float = 180) -> None:
        keys = {"scheduler": "scheduler", "triggerer": "triggerer", "dag-processor": "dag_processor"}
        kinds = [self.commands.get(c, [c])[0] for c in components]  # "triggerer-2" runs a "triggerer"
        wanted = [keys[k] for k in kinds if k in keys]
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"airflow {name} exited with {proc.returncode}; see {self.log_path(name)}")
            try:
                last = self.api.health()
                if all((last.get(k) or {}).get("status") == "healthy" for k in wanted):
                    return
            except (requests.RequestException, ValueError) as exc:
                last = exc
            time.sleep(1)
        raise TimeoutError(f"Airflow not healthy after {timeout:.0f} s: {last}")

    def wait_dags(self, dag_ids: Iterable[str], *, timeout: float = 120) -> None:
        """Wait until every DAG is parsed (and unpause it); fail at once on an import error."""
        pending = set(dag_ids)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            errors = self.api.import_errors()
            if errors:
                raise RuntimeError("DAG import errors: " + "; ".join(
                    f"{e['filename']}: {e['stack_trace'][-500:]}" for e in errors))
            for dag_id in sorted(pending):
                try:
                    dag = self.api.dag(dag_id)
                except requests.HTTPError:
                    continue
                if dag.get("is_paused"):
                    self.api.unpause(dag_id)
                pending.discard(dag_id)
            if pending:
                time.sleep(1)
        if pending:
            raise TimeoutError(f"DAGs not parsed after {timeout:.0f} s: {sorted(pending)}")

    def revive(self) -> list[str]:
        """Start again each component whose process has exited, as a supervisor would; returns their names.

        Components stopped on purpose (:meth:`stop_component`) are not started again.
        """
        dead = [name for name, proc in self.processes.items() if proc.poll() is not None]
        for name in dead:
            self.stop_component(name)
            self.start_component(name)
        if dead:
            self.wait_healthy(list(self.processes))
        return dead

    def backfill(self, dag_id: str, from_date: str, to_date: str, *, dag_run_conf: Mapping[str, Any] | None = None,
                 reprocess_behavior: str = "none", max_active_runs: int = 10, attempts: int = 6,
                 timeout: float = 400) -> dict[str, Any]:
        """Create a backfill through the REST API and wait until it completed; returns it.

        On SQLite the creation can meet a locked database even with the busy timeout: a read in its
        savepoint that must become a write after another component committed fails at once. The API
        answers 503 (500 "Database error" when the lock hit its audit-log insert), after Airflow's own
        clean-up of the half-made backfill, which deletes the runs it had taken over and can crash a
        scheduler working on them. So after such an answer the stack is recovered
        (:meth:`recover_after_lock`) and the request sent again, up to ``attempts`` times in all; a 409
        (a backfill still running: one a lock left behind, or the previous one of the DAG whose
        completion the scheduler has not recorded yet) is waited out the same way. Airflow refuses a
        second running backfill of a DAG, so a retry cannot make two.
        """
        attempt = 0
        give_up = time.monotonic() + timeout
        while True:
            attempt += 1
            try:
                created = self.api.create_backfill(dag_id, from_date, to_date, dag_run_conf=dag_run_conf,
                                                   reprocess_behavior=reprocess_behavior,
                                                   max_active_runs=max_active_runs)
                break
            except requests.HTTPError as exc:
                conflict = exc.response is not None and exc.response.status_code == 409
                if conflict:
                    # the request that answered 503 may have made the backfill before the lock hit:
                    # that one is ours, so wait for it instead of asking again
                    ours = self._open_backfill(dag_id, from_date, to_date)
                    if ours is not None:
                        return self.wait_backfill(ours, timeout=max(1.0, give_up - time.monotonic()))
                if not (_database_locked(exc) or conflict) or (attempt >= attempts and not conflict) \
                        or time.monotonic() >= give_up:
                    raise
            self.recover_after_lock(dag_id)
            time.sleep(min(2 * attempt, 15))
        return self.wait_backfill(int(created["id"]), timeout=timeout)

    def _open_backfill(self, dag_id: str, from_date: str, to_date: str) -> int | None:
        """The id of the DAG's unfinished backfill over exactly this range, if there is one."""
        def instant(value: Any) -> datetime | None:
            try:
                return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            except ValueError:
                return None

        want = (instant(from_date), instant(to_date))
        for b in self.api.paged("/backfills", "backfills", {"dag_id": dag_id}):
            if not b.get("completed_at") and (instant(b.get("from_date")), instant(b.get("to_date"))) == want:
                return int(b["id"])
        return None

    def wait_backfill(self, backfill_id: int, *, timeout: float = 400) -> dict[str, Any]:
        """Wait until the backfill has ``completed_at`` (starting again any component that exits); returns it."""
        self._wait_reviving(lambda: self.api.request("GET", f"/backfills/{backfill_id}").get("completed_at"),
                            timeout, f"backfill {backfill_id} completed")
        return dict(self.api.request("GET", f"/backfills/{backfill_id}"))

    def recover_after_lock(self, dag_id: str, *, timeout: float = 300) -> dict[str, list[Any]]:
        """After a backfill creation met a locked database: restart what crashed, end what it left.

        Each unfinished backfill of the DAG is asked to cancel (best effort: the cancel can meet a
        locked database too), then this waits until the scheduler has marked every one completed (it
        does once their runs ended, or two minutes after one that got none) and no backfill run of the
        DAG is queued or running; components that exit meanwhile are started again. Returns
        ``{"revived": [...], "settled": [backfill ids]}``.
        """
        revived = self.revive()
        unfinished = [int(b["id"]) for b in self.api.paged("/backfills", "backfills", {"dag_id": dag_id})
                      if not b.get("completed_at")]
        for backfill_id in unfinished:
            with contextlib.suppress(requests.HTTPError):  # 409: completed meanwhile; 500/503: locked
                self.api.request("PUT", f"/backfills/{backfill_id}/cancel")

        def settled() -> bool:
            open_ids = [b["id"] for b in self.api.paged("/backfills", "backfills", {"dag_id": dag_id})
                        if not b.get("completed_at")]
            in_flight = [r for r in self.api.dag_runs(dag_id)
                         if r.get("run_type") == "backfill" and r.get("state") in ("queued", "running")]
            return not open_ids and not in_flight

        revived += self._wait_reviving(settled, timeout, f"{dag_id}: backfills settled")
        return {"revived": revived, "settled": unfinished}

    def _wait_reviving(self, predicate: Callable[[], Any], timeout: float, what: str,
                       interval: float = 2.0) -> list[str]:
        """Poll ``predicate`` until true, starting again any component that exits meanwhile."""
        deadline = time.monotonic() + timeout
        revived: list[str] = []
        last: Any = None
        while time.monotonic() < deadline:
            revived += self.revive()
            try:
                if predicate():
                    return revived
            except requests.RequestException as exc:  # a busy API server (2 cores): ask again
                last = exc
            time.sleep(interval)
        raise TimeoutError(f"not {what} after {timeout:.0f} s (last error: {last}; restarted: {revived})")

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def task_log(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, try_number: int = 1) -> str:
        """The task's log as files on disk (the LocalExecutor writes them under ``logs/``)."""
        base = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        if map_index >= 0:
            base = base / f"map_index={map_index}"
        path = base / f"attempt={try_number}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            self.stop_component(name)

    def __enter__(self) -> AirflowStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _database_locked(exc: requests.HTTPError) -> bool:
    """The API's answer to a database error: 503 where a route maps SQLite's lock, 500 "Database error"
    elsewhere (the detail is hidden, so any database error counts)."""
    response = exc.response
    if response is None:
        return False
    return response.status_code == 503 or (response.status_code == 500 and "Database error" in response.text)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
