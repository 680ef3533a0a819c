"""Issue 17, "least privilege end to end": Airflow roles x entry points x targets on a real deployment.

One real Airflow for the whole module (scheduler, dag-processor, API server with the dCache plugin; no
triggerer: no watcher may start runs of its own) on the two bundled sites, with the repository's own
``dags/dcache_ingest_pipeline.py`` and ``dags/dcache_reprocess.py``.

Who
    SimpleAuthManager users, one per role: ``viewer`` (VIEWER), ``alice`` (USER), ``op`` (OP) and
    ``admin`` (ADMIN). Only ``alice`` is mapped to a dCache identity of her own
    (``[dcache] user_connections`` → ``dcache_alice``, dCache user ``alice``); the others act through
    the site connection without its roles. The CLI has no Airflow role: its runs carry the OS login.

Entry points
    the view's browse, file details, live events and event status routes; the view's trigger route;
    REST ``POST /dags/{id}/dagRuns`` with ``conf.paths``; ``airflow dags trigger -c`` with the same conf;
    a backfill (``POST /backfills``). The ingest DAG is asset-scheduled, so Airflow refuses to backfill
    it (checked, reported as an observation); the backfill cells use ``dcache_reprocess`` (``directory``
    in ``dag_run_conf``), on one-minute intervals (``$AIRFLOW_DCACHE_REPROCESS_SCHEDULE``).

Targets (all made by dCache user ``bob``)
    1. ``inside``: a file in the ingest pipeline's selection root ``/data/incoming``, readable by all;
    2. ``private``: bob's 0700 directory *inside* the roots (``/data/incoming/bobpriv<tok>``) with two
       files: neither the pipeline's plain login nor dCache ``alice`` may list or read it;
    3. ``outside``: bob's 0700 ``/home/bob`` with two files, outside every root.

What a deny must leave behind
    view: a 403 JSON naming none of bob's hidden files (their names, pnfsids, owner fields); trigger
    entry points: Airflow's 403 (no run), the view's 403 (no run), or a run whose ``collect``/``select``
    failed with no ``return_value`` (no XCom of the run names a hidden file) and no hidden name in the
    task log (fetched through the REST API, and from disk). For all of them: dCache unchanged (a stat of
    every target object with xattrs, QoS, checksums, mode and mtime, before and after) and *nothing
    read or listed*: a witness, bob's own inotify channel on both private directories, must see no
    open/read/access/attribute event while the cells run (dCache reports a listing as IN_OPEN +
    IN_CLOSE_NOWRITE on the directory and a read as IN_OPEN/IN_ACCESS on the file).

Allowed triggers on target 1 only need to be accepted and ``collect`` to succeed: the file carries the
ingest pipeline's done-marker, so ``collect`` selects it, reports it as already processed (XCom
``skipped``) and the run has nothing more to do.

The matrix is printed as a table (with counts) at the end of the module; each cell is its own test
item. Cells that show a privilege hole are listed in ``KNOWN_HOLES`` with the evidence and xfail;
any other unexpected allow fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_dcache.testing.airflow_stack import AirflowStack, airflow_executable
from airflow_dcache.testing.sites import Sites, start_sites

pytestmark = pytest.mark.timeout(900)

REPO = Path(__file__).resolve().parents[2]
INGEST = "dcache_ingest_pipeline"
REPROCESS = "dcache_reprocess"
CONN = "dcache_main"
ROLES = {"viewer": "VIEWER", "alice": "USER", "op": "OP", "admin": "ADMIN"}
MAPPED = {"alice": "dcache_alice"}
VIEW_ENTRIES = ("view_browse", "view_details", "view_live", "view_status")
RUN_ENTRIES = ("plugin_trigger", "rest_trigger", "backfill")
CLI = "cli_trigger"
CLI_ROLE = "cli"  # the CLI has no Airflow role; its runs carry the OS login name
TARGETS = ("inside", "private", "outside")
FINAL = {"success", "failed", "upstream_failed", "skipped", "removed"}
HDF5 = b"\x89HDF\r\n\x1a\n"
MODULE_DEADLINE_S = 600

CELLS: list[tuple[str, str, str]] = [
    *((role, entry, target) for role in ROLES for entry in (*VIEW_ENTRIES, *RUN_ENTRIES) for target in TARGETS),
    *((CLI_ROLE, CLI, target) for target in TARGETS),
]

#: ``DCACHE_MATRIX_ASSERT_ROLES=always``: the pipeline's connections assert their dCache ``admin`` role on
#: every call (extra ``assert_roles: always``, the behaviour before issue 17's "admin only where dCache
#: requires it"). A check that the matrix finds a hole: the backfill cells on bob's private tree then
#: ALLOW (``select`` lists it with the role) and xfail with the evidence below.
CANARY = os.environ.get("DCACHE_MATRIX_ASSERT_ROLES") == "always"

#: Cells expected to deny that are known to ALLOW: (role, entry, target) -> the hole. They xfail with the
#: run's evidence; every other unexpected allow fails. Empty on the default configuration.
KNOWN_HOLES: dict[tuple[str, str, str], str] = {
    (role, "backfill", "private"): (
        "a backfill of dcache_reprocess with dag_run_conf.directory = bob's 0700 directory inside its "
        "ALLOWED_ROOTS: DCacheListOperator 'select' lists it with the pipeline connection asserting its dCache "
        "admin role (no person's identity, no plain login), so bob's file names land in XCom")
    for role in ("alice", "op", "admin")
} if CANARY else {}


def expected(role: str, entry: str, target: str) -> str:
    if target != "inside":
        return "deny"
    if entry in VIEW_ENTRIES or entry == CLI:
        return "allow"
    return "deny" if role == "viewer" else "allow"


# ------------------------------------------------------------------------------------------ model


@dataclass
class Target:
    key: str
    directory: str
    file: str  # what details / status ask for
    pattern: str  # what the triggers select (a glob for bob's trees: the names stay hidden from the caller)
    names: tuple[str, ...] = ()  # bob's file names in the tree (hidden from every deny)
    pnfsids: tuple[str, ...] = ()

    def hidden(self, entry: str) -> list[str]:
        """Tokens a deny of ``entry`` must not reveal (a details/status request names its own file)."""
        named = self.file.rsplit("/", 1)[-1] if entry in ("view_details", "view_status") else None
        return [n for n in self.names if n != named] + list(self.pnfsids)


@dataclass
class Cell:
    role: str
    entry: str
    target: str
    outcome: str = "pending"  # allow | deny | error
    how: str = ""  # which layer decided (for the table)
    evidence: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # a deny that leaked, an allow without proof, …
    run: tuple[str, str] | None = None  # (dag_id, run_id) to evaluate
    task: str = "collect"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.role, self.entry, self.target)


@dataclass
class Matrix:
    cells: dict[tuple[str, str, str], Cell]
    observations: list[str]
    untouched_problems: list[str]
    witness_quiet: list[str]  # events on bob's trees while the non-backfill cells ran
    witness_backfill: list[str]  # events while the backfill cells ran
    runtime_s: float
    attempts_quiet: Counter[str] = field(default_factory=Counter)  # requests on bob's trees: "user roles method"
    attempts_backfill: Counter[str] = field(default_factory=Counter)
    table: str = ""


# ------------------------------------------------------------------------------------------ helpers


class Witness:
    """bob's own inotify channel on his private directories: every listing/read/change of them shows here.

    dCache reports a listing as IN_OPEN + IN_CLOSE_NOWRITE of the directory, a read as IN_OPEN +
    IN_ACCESS + IN_CLOSE_NOWRITE of the file (to the directory's watch, with the file's name), an xattr or
    QoS change as IN_ATTRIB. A stat reports nothing, so the test's own before/after stats stay silent.
    """

    def __init__(self, conn_id: str, paths: list[str]) -> None:
        from airflow_dcache.hooks import DCacheHook

        self.conn_id = conn_id
        self.control = DCacheHook(conn_id)
        self.channel = self.control.create_channel("privilege-matrix-witness")
        self.control.set_channel_timeout(self.channel, 3600)
        self.paths = {self.control.subscribe_inotify(self.channel, path): path for path in paths}
        self.events: list[tuple[float, str]] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="matrix-witness", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from airflow_dcache.hooks import DCacheHook

        try:
            with DCacheHook(self.conn_id) as hook:
                for event in hook.stream_events(self.channel, read_timeout=None):
                    payload = event.payload
                    if event.is_system or not isinstance(payload, dict):
                        continue
                    where = self.paths.get(event.subscription or "", event.subscription or "?")
                    name = f"/{payload['name']}" if payload.get("name") else ""
                    self.events.append((time.time(), f"{'|'.join(payload.get('mask') or [])} {where}{name}"))
        except BaseException as exc:  # the channel is deleted at the end: the stream ends
            self.error = exc

    def mark(self) -> int:
        return len(self.events)

    def since(self, start: int, end: int | None = None) -> list[str]:
        return [text for _, text in self.events[start:end]]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.control.delete_channel(self.channel)
        self._thread.join(timeout=10)
        self.control.close()


def _put(sites: Sites, user: str, path: str, data: bytes) -> None:
    r = requests.put(sites.main.webdav + path, data=data, auth=(user, sites.passwords[user]), timeout=30)
    assert r.status_code in (200, 201, 204), (path, r.status_code, r.text)


def _mkcol(sites: Sites, user: str, path: str) -> None:
    r = requests.request("MKCOL", sites.main.webdav + path, auth=(user, sites.passwords[user]), timeout=30)
    assert r.status_code in (201, 405), (path, r.status_code, r.text)


def _chmod(sites: Sites, user: str, path: str, mode: int) -> None:
    requests.post(f"{sites.main.api}/namespace{path}", json={"action": "chmod", "mode": mode},
                  auth=(user, sites.passwords[user]), timeout=30).raise_for_status()


def _snapshot(hook: Any, paths: list[str]) -> dict[str, Any]:
    """Everything a deny must leave as it was (no listing: a stat emits no event for the witness)."""
    out: dict[str, Any] = {}
    for path in paths:
        e = hook.stat(path, qos=True, checksum=True, xattr=True, labels=True)
        out[path] = {"type": e.file_type, "size": e.size, "mtime": e.mtime, "mode": e.mode, "pnfsid": e.pnfsid,
                     "current_qos": e.current_qos, "target_qos": e.target_qos, "checksums": e.checksums,
                     "xattrs": e.xattrs, "labels": e.labels}
    return out


def _access(path: Path) -> list[dict[str, Any]]:
    """The main site's access log: one JSON object per authenticated request (method, path, user, roles)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def _touching(lines: list[dict[str, Any]], targets: dict[str, Target]) -> list[dict[str, Any]]:
    """Requests on bob's trees by anyone but bob and the test's own audit login (``admin``)."""
    marks = [targets["private"].directory, "/home/bob"]
    return [ln for ln in lines if ln.get("user") not in ("bob", "admin")
            and any(m in str(ln.get("path")) for m in marks)]


def _minute(ms: int | None) -> datetime:
    return datetime.fromtimestamp(int(ms or 0) / 1000, UTC).replace(second=0, microsecond=0)


class Stack:
    """The deployment under test, as the cells reach it."""

    def __init__(self, sites: Sites, stack: AirflowStack, tmp: Path) -> None:
        self.sites, self.stack, self.tmp = sites, stack, tmp
        self.api = stack.api
        self.base = stack.base_url
        self._tokens: dict[str, str] = {}

    def token(self, user: str) -> str:
        if user not in self._tokens:
            pw = json.loads((self.stack.home / "passwords.json").read_text())[user]
            r = requests.post(f"{self.base}/auth/token", json={"username": user, "password": pw}, timeout=30)
            r.raise_for_status()
            self._tokens[user] = str(r.json()["access_token"])
        return self._tokens[user]

    def session(self, user: str) -> requests.Session:
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {self.token(user)}"
        return s

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """``self.api.request`` with patience: a single API worker behind a busy SQLite can take a while."""
        kwargs.setdefault("timeout", 90)
        for attempt in range(3):
            try:
                return self.api.request(method, path, **kwargs)
            except (requests.ConnectionError, requests.Timeout):
                if attempt == 2:
                    raise
                time.sleep(2)
        return None

    def paged(self, path: str, key: str, params: dict[str, Any] | None = None) -> list[Any]:
        items: list[Any] = []
        while True:
            doc = self.call("GET", path, params={**(params or {}), "limit": 100, "offset": len(items)})
            items += list(doc[key])
            if len(doc[key]) < 100:
                return items

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.paged(f"/dags/{dag_id}/dagRuns", "dag_runs")

    def ti_state(self, dag_id: str, run_id: str, task_id: str) -> str | None:
        try:
            return self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}").get("state")
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                return None
            raise

    def ti_states(self, dag_id: str, task_id: str) -> dict[str, str | None]:
        """run id -> state of ``task_id`` in every run of the DAG (one request per 100 runs)."""
        out: dict[str, str | None] = {}
        while True:
            doc = self.call("GET", f"/dags/{dag_id}/dagRuns/~/taskInstances",
                            params={"task_id": task_id, "limit": 100, "offset": len(out)})
            for ti in doc["task_instances"]:
                out[ti["dag_run_id"]] = ti.get("state")
            if len(doc["task_instances"]) < 100:
                return out

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str) -> tuple[bool, Any]:
        try:
            doc = self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
                            params={"map_index": -1, "deserialize": True})
            return True, doc.get("value")
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                return False, None
            raise

    def run_xcoms(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every XCom of the run, with its value."""
        out = []
        for entry in self.paged(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/~/xcomEntries", "xcom_entries"):
            found, value = self.xcom(dag_id, run_id, entry["task_id"], entry["key"]) \
                if int(entry.get("map_index", -1)) < 0 else (True, "<mapped>")
            out.append({"task_id": entry["task_id"], "key": entry["key"], "value": value if found else None})
        return out

    def task_log(self, dag_id: str, run_id: str, task_id: str) -> str:
        """The task's log through the REST API (as the UI shows it), plus the file on disk."""
        text = ""
        try:
            r = self.api.session.get(f"{self.base}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
                                     "/logs/1", params={"full_content": True, "map_index": -1},
                                     headers={"Accept": "application/json"}, timeout=90)
            text = r.text if r.status_code == 200 else f"<REST log {r.status_code}>"
        except requests.RequestException as exc:
            text = f"<REST log: {exc}>"
        return text + "\n" + self.stack.task_log(dag_id, run_id, task_id)


# ------------------------------------------------------------------------------------------ the cells


def _view_cell(st: Stack, cell: Cell, t: Target) -> None:
    s = st.session(cell.role)
    endpoint, params = {
        "view_browse": ("browse", {"path": t.directory}),
        "view_details": ("file", {"path": t.file}),
        "view_status": ("events/status", {"path": t.file, "kind": "closed_after_write"}),
        "view_live": ("events", {"path": t.directory}),
    }[cell.entry]
    url = f"{st.base}/dcache/api/{endpoint}"
    body = ""
    with contextlib.closing(s.get(url, params={"conn": CONN, **params}, stream=True, timeout=(10, 90))) as r:
        status = r.status_code
        if status == 200 and cell.entry == "view_live":
            deadline = time.monotonic() + 30
            lines = []
            for line in r.iter_lines(decode_unicode=True):
                lines.append(line or "")
                if line == "event: ready" or time.monotonic() > deadline:
                    break
            body = "\n".join(lines)
            ready = "event: ready" in lines
        else:
            body = r.text
            ready = False
    if status == 200:
        cell.outcome, cell.how = "allow", "200" + (" + stream ready" if ready else "")
        if cell.entry == "view_live" and not ready:
            cell.problems.append("live view answered 200 but sent no 'ready' event within 30 s")
        return
    if status == 403:
        cell.outcome = "deny"
        try:
            doc = json.loads(body)
        except ValueError:
            cell.problems.append(f"403 is not JSON: {body[:200]!r}")
            doc = {}
        detail = str(doc.get("detail", ""))
        cell.how = "403 dCache" if detail.startswith("dCache:") else (
            "403 view roots" if "roots" in doc else "403 view")
        cell.evidence.append(f"403 {detail[:160]}")
        for token in [*t.hidden(cell.entry), '"owner"', '"mode"', '"children"', "adler32"]:
            if token in body:
                cell.problems.append(f"the refusal reveals {token!r}: {body[:300]}")
        return
    cell.outcome, cell.how = "error", f"HTTP {status}"
    cell.problems.append(f"{cell.entry}: unexpected {status}: {body[:300]}")


def _plugin_trigger(st: Stack, cell: Cell, t: Target) -> None:
    r = st.session(cell.role).post(f"{st.base}/dcache/api/trigger", timeout=120, json={
        "dag_id": INGEST, "paths": [t.pattern], "conn": CONN, "note": f"privilege matrix {cell.key}"})
    if r.status_code == 200:
        cell.run = (INGEST, str(r.json()["run_id"]))
        cell.evidence.append(f"view created run {cell.run[1]}")
    elif r.status_code == 403:
        doc = r.json()
        cell.outcome = "deny"
        cell.how = "403 view roots" if "roots" in doc else "403 Airflow (may_trigger)"
        cell.evidence.append(f"403 {str(doc.get('detail'))[:160]}")
        if any(tok in r.text for tok in t.hidden(cell.entry)):
            cell.problems.append(f"the refusal reveals a hidden name: {r.text[:300]}")
    else:
        cell.outcome, cell.how = "error", f"HTTP {r.status_code}"
        cell.problems.append(f"plugin trigger: {r.status_code} {r.text[:300]}")


def _rest_trigger(st: Stack, cell: Cell, t: Target, suffix: str = "") -> None:
    run_id = f"matrix__rest__{cell.role}__{cell.target}{suffix}"
    r = st.session(cell.role).post(f"{st.base}/api/v2/dags/{INGEST}/dagRuns", timeout=120, json={
        "dag_run_id": run_id, "logical_date": None, "conf": {"paths": [t.pattern]}})
    if r.status_code == 200:
        cell.run = (INGEST, run_id)
        cell.evidence.append(f"REST created run {run_id}")
    elif r.status_code == 403:
        cell.outcome, cell.how = "deny", "403 Airflow"
        cell.evidence.append(f"403 {r.text[:160]}")
    else:
        cell.outcome, cell.how = "error", f"HTTP {r.status_code}"
        cell.problems.append(f"REST trigger: {r.status_code} {r.text[:300]}")


def _finish_cli(proc: subprocess.Popen) -> tuple[int, str]:
    """The CLI's exit code and output once it ended (killed after 240 s).

    Returned together: the exit code exists only after the wait, so a caller reading ``proc.returncode``
    beside this call (as an argument evaluated first) would read ``None``."""
    try:
        out, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return proc.returncode, out or ""


def _record_cli(cell: Cell, run_id: str, returncode: int, out: str) -> None:
    """What ``airflow dags trigger`` did for ``cell``: a run to judge, or an error with its output."""
    if returncode == 0:
        cell.run = (INGEST, run_id)
        cell.evidence.append(f"airflow dags trigger created {run_id}")
    else:
        cell.outcome, cell.how = "error", f"CLI rc={returncode}"
        cell.problems.append(f"airflow dags trigger failed: {out[-600:]}")


def _cli_trigger(st: Stack, run_id: str, pattern: str, extra_env: dict[str, str] | None = None
                 ) -> subprocess.Popen[str]:
    env = {**st.stack.env, **(extra_env or {})}
    return subprocess.Popen([airflow_executable(), "dags", "trigger", INGEST, "-r", run_id,
                             "-c", json.dumps({"paths": [pattern]})],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _backfill_body(directory: str, minute: datetime) -> dict[str, Any]:
    return {"dag_id": REPROCESS, "from_date": minute.isoformat(), "to_date": minute.isoformat(),
            "dag_run_conf": {"directory": directory}, "max_active_runs": 1, "reprocess_behavior": "none"}


def _undecided(cell: Cell) -> bool:
    """The deployment, not the privilege rules, decided the cell: an error, or a failure without a refusal."""
    return cell.outcome == "error" or any("no recognised refusal" in p for p in cell.problems)


def _backfill_cell(st: Stack, cell: Cell, directory: str, slot: datetime, created: list[int],
                   reprocess: str) -> bool:
    """A backfill of ``slot`` as the cell's role; ``True`` when Airflow created it (its id appended)."""
    cell.task = "select"
    body = {**_backfill_body(directory, slot), "reprocess_behavior": reprocess}
    resp = _create_backfill(st, cell.role, body)
    if resp.status_code == 403:
        cell.outcome, cell.how = "deny", "403 Airflow"
        cell.evidence.append(f"403 {resp.text[:160]}")
        return False
    if resp.status_code != 200:
        cell.outcome, cell.how = "error", f"HTTP {resp.status_code}"
        cell.problems.append(f"backfill: {resp.status_code} {resp.text[:300]}")
        return False
    backfill = resp.json()
    created.append(int(backfill["id"]))
    cell.evidence.append(f"backfill {backfill['id']} over {slot:%H:%M} (reprocess {reprocess})")
    return True


def _backfill_started(st: Stack, cell: Cell, slot: datetime, backfill_id: int) -> None:
    """Until the backfill's run leaves the queue (bounded); then the backfill is ended, since a DAG has only
    one unfinished backfill at a time (its started run goes on)."""
    try:
        run = _wait(lambda: (lambda r: r if r and r["state"] != "queued" else None)(
            _run_for(st, REPROCESS, slot)), 90, "backfill run started")
        cell.run = (REPROCESS, run["dag_run_id"])
    except TimeoutError as exc:
        cell.outcome, cell.how = "error", str(exc)
        cell.problems.append(str(exc))
    with contextlib.suppress(requests.HTTPError):
        st.call("PUT", f"/backfills/{backfill_id}/cancel")


def _create_backfill(st: Stack, user: str, body: dict[str, Any], attempts: int = 5) -> requests.Response:
    """``POST /backfills`` as ``user``; a locked SQLite (503/500) or a not yet cancelled backfill (409): again."""
    s = st.session(user)
    r = s.post(f"{st.base}/api/v2/backfills", json=body, timeout=120)
    for attempt in range(1, attempts):
        if r.status_code not in (409, 500, 503):
            break
        for b in st.paged("/backfills", "backfills", {"dag_id": REPROCESS}):
            if not b.get("completed_at"):
                with contextlib.suppress(requests.HTTPError):
                    st.call("PUT", f"/backfills/{b['id']}/cancel")
        time.sleep(attempt)
        r = s.post(f"{st.base}/api/v2/backfills", json=body, timeout=120)
    return r


def _run_for(st: Stack, dag_id: str, logical: datetime) -> dict[str, Any] | None:
    for run in st.runs(dag_id):
        if run.get("logical_date") and datetime.fromisoformat(run["logical_date"].replace("Z", "+00:00")) == logical:
            return run
    return None


def _wait(predicate: Any, timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"not {what} after {timeout:.0f} s")


def _wait_tasks(st: Stack, cells: list[Cell], timeout: float) -> None:
    """Until the deciding task (``collect`` / ``select``) of every cell's run is final (bounded); then the
    run is marked failed, so nothing after the deciding task runs (and the DAG's max_active_runs frees)."""
    pending = [c for c in cells if c.run and c.outcome == "pending"]
    deadline = time.monotonic() + timeout
    states: dict[str, str | None] = {}
    while pending and time.monotonic() < deadline:
        for dag_id, task_id in {(c.run[0], c.task) for c in pending if c.run}:
            try:
                states.update(st.ti_states(dag_id, task_id))
            except requests.RequestException as exc:  # busy: ask again
                print(f"{time.strftime('%X')} polling {dag_id}.{task_id}: {exc}", flush=True)
        for c in list(pending):
            assert c.run
            if states.get(c.run[1]) in FINAL:
                pending.remove(c)
                with contextlib.suppress(requests.RequestException):
                    st.call("PATCH", f"/dags/{c.run[0]}/dagRuns/{c.run[1]}", json={"state": "failed"})
        if pending:
            time.sleep(3)
    for c in pending:
        assert c.run
        c.outcome, c.how = "error", f"{c.task} not final after {timeout:.0f} s ({states.get(c.run[1])})"
        c.problems.append(c.how)


def _judge_run(st: Stack, cell: Cell, t: Target) -> None:
    """A run's deciding task: success = allow (with proof it selected), failure = deny (with nothing left)."""
    if cell.outcome != "pending" or cell.run is None:
        return
    dag_id, run_id = cell.run
    state = st.ti_state(dag_id, run_id, cell.task)
    run = st.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
    cell.evidence.append(f"run {run_id} by {run.get('triggering_user_name')!r} ({run.get('run_type')}): "
                         f"{cell.task} {state}")
    log = st.task_log(dag_id, run_id, cell.task)
    has_return, value = st.xcom(dag_id, run_id, cell.task, "return_value")
    if state == "success":
        cell.outcome = "allow"
        if dag_id == INGEST:
            _, skipped = st.xcom(dag_id, run_id, cell.task, "skipped")
            picked = [i.get("path") for i in (value or [])] + [i.get("path") for i in (skipped or [])]
            cell.how = f"run, {cell.task} ok"
            cell.evidence.append(f"selected {picked}")
            if t.key == "inside" and t.file not in picked:
                cell.problems.append(f"collect succeeded without selecting {t.file}: {value} / {skipped}")
        else:
            names = sorted(str(r.get("name")) for r in (value or []) if isinstance(r, dict))
            cell.how = f"run, {cell.task} ok ({len(names)} file(s))"
            cell.evidence.append(f"select XCom return_value names {names}")
        leaked = [tok for tok in t.names if tok in json.dumps(value, default=str) or tok in log]
        if leaked:
            cell.evidence.append(f"bob's hidden names in the run's XCom/log: {leaked}")
        return
    if state in ("failed", "upstream_failed"):
        cell.outcome = "deny"
        kinds = [k for k in ("OutsideAllowedRoots", "PermissionDenied", "nothing matches", "Forbidden")
                 if k in log]
        cell.how = f"run, {cell.task} failed" + (f" ({kinds[0]})" if kinds else "")
        if has_return:
            cell.problems.append(f"{cell.task} failed but left XCom return_value {value!r}"[:300])
        xcoms = st.run_xcoms(dag_id, run_id)
        text = json.dumps(xcoms, default=str)
        for token in t.hidden(cell.entry):
            if token in text:
                cell.problems.append(f"an XCom of the run reveals {token!r}: {text[:300]}")
            if token in log:
                cell.problems.append(f"the {cell.task} log reveals {token!r}")
        if not kinds:
            errors = [ln for ln in log.splitlines() if '"level":"error"' in ln or "Traceback" in ln]
            cell.problems.append(f"{cell.task} failed for no recognised refusal; log errors: "
                                 f"{' | '.join(errors)[-900:] or 'none'}; log tail: {log[-400:]}")
        return
    cell.outcome, cell.how = "error", f"{cell.task} {state}"
    cell.problems.append(f"{cell.task} ended {state}")


# ------------------------------------------------------------------------------------------ the fixture


def _set_up_targets(sites: Sites, tok: str) -> dict[str, Target]:
    inside = Target("inside", "/data/incoming", f"/data/incoming/open{tok}.h5", f"/data/incoming/open{tok}.h5")
    _put(sites, "bob", inside.file, HDF5 + b"open to all")
    priv_dir = f"/data/incoming/bobpriv{tok}"
    _mkcol(sites, "bob", priv_dir)
    priv_names = (f"bobsecret{tok}a.h5", f"bobsecret{tok}b.h5")
    for name in priv_names:
        _put(sites, "bob", f"{priv_dir}/{name}", HDF5 + b"bob's private " + name.encode())
    _chmod(sites, "bob", priv_dir, 0o700)
    private = Target("private", priv_dir, f"{priv_dir}/{priv_names[0]}", f"{priv_dir}/*.h5", priv_names)
    # bob's home outside every root: the site admin makes /home, bob his own 0700 directory in it
    _mkcol(sites, "admin", "/home")
    _chmod(sites, "admin", "/home", 0o1777)
    _mkcol(sites, "bob", "/home/bob")
    home_names = (f"bobhome{tok}a.h5", f"bobhome{tok}b.h5")
    for name in home_names:
        _put(sites, "bob", f"/home/bob/{name}", HDF5 + b"bob's home " + name.encode())
    _chmod(sites, "bob", "/home/bob", 0o700)
    _chmod(sites, "admin", "/home", 0o755)
    outside = Target("outside", "/home/bob", f"/home/bob/{home_names[0]}", "/home/bob/*.h5", home_names)
    return {"inside": inside, "private": private, "outside": outside}


def _run_matrix(st: Stack, targets: dict[str, Target], witness: Witness, audit: Any, bob: Any,
                anchor: int, minute: datetime, before: dict[str, Any], access_log: Path) -> Matrix:
    started = time.monotonic()
    cells = {key: Cell(*key) for key in CELLS}
    observations: list[str] = []

    # ---- runs first (they take longest): the view's trigger, REST, the CLI
    procs: dict[str, subprocess.Popen[str]] = {}
    cli_runs = {t: f"matrix__cli__{t}" for t in TARGETS}
    for target, run_id in cli_runs.items():
        procs[run_id] = _cli_trigger(st, run_id, targets[target].pattern)
    # the CLI's triggering user is the OS login: one more run, with $USER/$LOGNAME claiming "alice"
    procs["matrix__cli__as_alice"] = _cli_trigger(st, "matrix__cli__as_alice", targets["private"].pattern,
                                                   {"USER": "alice", "LOGNAME": "alice"})
    for role in ROLES:
        for target in TARGETS:
            _plugin_trigger(st, cells[(role, "plugin_trigger", target)], targets[target])
            _rest_trigger(st, cells[(role, "rest_trigger", target)], targets[target])
    print(f"{time.strftime('%X')} triggers sent", flush=True)

    # ---- the view, while the runs run
    for role in ROLES:
        for entry in VIEW_ENTRIES:
            for target in TARGETS:
                _view_cell(st, cells[(role, entry, target)], targets[target])
    print(f"{time.strftime('%X')} view cells done", flush=True)

    for run_id, proc in procs.items():
        returncode, out = _finish_cli(proc)
        cli_target = next((t for t, r in cli_runs.items() if r == run_id), None)
        if cli_target is not None:
            _record_cli(cells[(CLI_ROLE, CLI, cli_target)], run_id, returncode, out)
        elif returncode != 0:
            observations.append(f"CLI as $USER=alice: airflow dags trigger failed rc={returncode}: {out[-300:]}")
    spoof = Cell(CLI_ROLE, "cli_trigger($USER=alice)", "private")
    if procs["matrix__cli__as_alice"].returncode == 0:
        spoof.run = (INGEST, "matrix__cli__as_alice")

    ingest_cells = [c for c in cells.values() if c.run and c.run[0] == INGEST]
    _wait_tasks(st, [*ingest_cells, spoof], timeout=240)
    print(f"{time.strftime('%X')} ingest collects final", flush=True)
    for c in ingest_cells:
        _judge_run(st, c, targets[c.target])
    if spoof.run:
        _judge_run(st, spoof, targets["private"])
        run = st.call("GET", f"/dags/{INGEST}/dagRuns/matrix__cli__as_alice")
        observations.append(
            f"CLI trigger with $USER/$LOGNAME=alice: triggering_user_name={run.get('triggering_user_name')!r}, "
            f"collect → {spoof.outcome} ({spoof.how}). The CLI's triggering user is the OS login name "
            "(getpass.getuser), so whoever runs the CLI picks the mapped dCache identity used for the selection "
            "(no escalation beyond CLI access, which already holds every connection's secret).")
    # A cell the deployment failed to decide (SQLite's write lock held past its 60 s busy timeout answers a
    # trigger with 500/502, or fails a task before it ran) is asked once more; the first attempt is kept
    # as evidence and listed as an observation.
    retry = [c for c in cells.values() if c.entry in (*VIEW_ENTRIES, "plugin_trigger", "rest_trigger", CLI)
             and _undecided(c)]
    if retry:
        observations.append("asked again after an infrastructure failure: " + "; ".join(
            f"{c.key} {c.how} {str(c.problems[:1])[:160]}" for c in retry))
        for old in retry:
            cell = cells[old.key] = Cell(*old.key)
            cell.evidence.append(f"second attempt (first: {old.how}; {str(old.problems[:1])[:300]})")
            t = targets[cell.target]
            if cell.entry in VIEW_ENTRIES:
                _view_cell(st, cell, t)
            elif cell.entry == "plugin_trigger":
                _plugin_trigger(st, cell, t)
            elif cell.entry == CLI:
                run_id = f"matrix__cli__{cell.target}__again"
                proc = _cli_trigger(st, run_id, t.pattern)
                _record_cli(cell, run_id, *_finish_cli(proc))
            else:
                _rest_trigger(st, cell, t, suffix="__again")
        again = [cells[c.key] for c in retry if cells[c.key].run]
        _wait_tasks(st, again, timeout=180)
        for c in again:
            _judge_run(st, c, targets[c.target])
    for c in (cells[(CLI_ROLE, CLI, t)] for t in TARGETS):
        if c.run:
            with contextlib.suppress(requests.HTTPError):
                who = st.call("GET", f"/dags/{INGEST}/dagRuns/{c.run[1]}").get("triggering_user_name")
                c.evidence.append(f"CLI run's triggering_user_name={who!r} (the OS login)")

    quiet_until = witness.mark()
    witness_quiet = witness.since(anchor, quiet_until)
    access_quiet = len(_access(access_log))
    print(f"{time.strftime('%X')} judged; backfills next", flush=True)

    # ---- backfills (dcache_reprocess): the ingest DAG cannot be backfilled
    r = st.session("admin").post(f"{st.base}/api/v2/backfills", timeout=120, json={
        "dag_id": INGEST, "from_date": minute.isoformat(), "to_date": minute.isoformat(),
        "dag_run_conf": {"paths": [targets["private"].pattern]}})
    observations.append(f"POST /backfills for {INGEST} (asset-scheduled) as admin: {r.status_code} "
                        f"{r.text[:160]} — the backfill cells use {REPROCESS} and its 'directory' param")
    # bob's files' minute must have ended: a backfill only creates runs of ended intervals
    time.sleep(max(0.0, (minute + timedelta(minutes=1, seconds=2) - datetime.now(UTC)).total_seconds()))
    directories = {t: targets[t].directory for t in TARGETS}
    # one interval per backfill (a second backfill of the same interval would reuse the first's run);
    # alice's backfill of bob's tree gets the minute of bob's uploads, so a leak shows as names in XCom
    slots: dict[tuple[str, str], datetime] = {("alice", "private"): minute}
    offset = 1
    for role in ROLES:
        for target in TARGETS:
            if (role, target) not in slots:
                slots[(role, target)] = minute - timedelta(minutes=offset)
                offset += 1
    order = [("alice", "private"), *(k for k in slots if k != ("alice", "private"))]
    unpaused = False
    created_backfills: list[int] = []  # all by roles that may create them
    for role, target in order:
        cell = cells[(role, "backfill", target)]
        if _backfill_cell(st, cell, directories[target], slots[(role, target)], created_backfills, "none"):
            if not unpaused:  # backfill runs start only while the DAG is active; unpaused after the first
                # backfill exists, so the scheduler's own run never takes the minute of bob's uploads
                st.call("PATCH", f"/dags/{REPROCESS}", json={"is_paused": False})
                unpaused = True
            _backfill_started(st, cell, slots[(role, target)], created_backfills[-1])

    # the same hole through a plain REST trigger of dcache_reprocess (no backfill): an observation
    info = Cell("alice", "rest_trigger(dcache_reprocess)", "private", task="select")
    r = st.session("alice").post(f"{st.base}/api/v2/dags/{REPROCESS}/dagRuns", timeout=120, json={
        "dag_run_id": "matrix__rest_reprocess__alice__private",
        "logical_date": (minute + timedelta(minutes=1, milliseconds=500)).isoformat(),
        "data_interval_start": minute.isoformat(), "data_interval_end": (minute + timedelta(minutes=1)).isoformat(),
        "conf": {"directory": targets["private"].directory}})
    if r.status_code == 200:
        info.run = (REPROCESS, "matrix__rest_reprocess__alice__private")
    else:
        observations.append(f"REST trigger of {REPROCESS} on bob's tree as alice: {r.status_code} {r.text[:160]}")

    backfill_cells = [c for c in cells.values() if c.entry == "backfill"]
    _wait_tasks(st, [*backfill_cells, info], timeout=180)
    print(f"{time.strftime('%X')} backfill selects final", flush=True)
    for c in backfill_cells:
        _judge_run(st, c, targets[c.target])
    # A backfill cell the deployment failed to decide (a select that ended failed with no refusal in its
    # log: the task's final state lost to SQLite's write lock under load) is asked once more, by a backfill
    # of the same interval that reprocesses the failed run (the same run, cleared), as the others are.
    again = [c for c in backfill_cells if c.run and _undecided(c)]
    if again:
        observations.append("backfill cells asked again after an infrastructure failure: " + "; ".join(
            f"{c.key} {c.how} {str(c.problems[:1])[:160]}" for c in again))
        for old in again:
            cell = cells[old.key] = Cell(*old.key, task="select")
            cell.evidence.append(f"second attempt (first: {old.how}; {str(old.problems[:1])[:300]})")
            slot = slots[(cell.role, cell.target)]
            if _backfill_cell(st, cell, directories[cell.target], slot, created_backfills, "failed"):
                _backfill_started(st, cell, slot, created_backfills[-1])
        backfill_cells = [c for c in cells.values() if c.entry == "backfill"]
        _wait_tasks(st, backfill_cells, timeout=180)
        for c in backfill_cells:
            _judge_run(st, c, targets[c.target])
    if info.run:
        _judge_run(st, info, targets["private"])
        observations.append(f"REST trigger of {REPROCESS} (directory = bob's 0700 tree) as alice (USER): "
                            f"select → {info.outcome.upper()} ({info.how}); {'; '.join(info.evidence)}")
    # stop what the allowed runs would go on doing (function runs on the selected files)
    for c in [*backfill_cells, info]:
        if c.run:
            with contextlib.suppress(requests.HTTPError):
                st.call("PATCH", f"/dags/{c.run[0]}/dagRuns/{c.run[1]}", json={"state": "failed"})
    with contextlib.suppress(requests.HTTPError):
        st.call("PATCH", f"/dags/{REPROCESS}", json={"is_paused": True})
    time.sleep(2)  # the witness gets the last events
    witness_backfill = witness.since(quiet_until)

    # ---- Airflow's own denies created nothing
    runs = st.runs(INGEST) + st.runs(REPROCESS)
    by_viewer = [r["dag_run_id"] for r in runs if r.get("triggering_user_name") == "viewer"]
    backfills = st.paged("/backfills", "backfills", {"dag_id": REPROCESS})
    made = len(created_backfills)
    for c in cells.values():
        if c.role == "viewer" and c.entry in RUN_ENTRIES and by_viewer:
            c.problems.append(f"runs triggered by the viewer exist: {by_viewer}")
        if c.role == "viewer" and c.entry == "backfill" and len(backfills) != made:
            c.problems.append(f"{len(backfills)} backfills exist, {made} made by allowed roles")

    # ---- dCache unchanged
    untouched: list[str] = []
    after = _snapshot(audit, list(before))
    for path, was in before.items():
        now = after[path]
        if now != was:
            untouched.append(f"{path} changed: {was} -> {now}")
        if any(k.startswith("airflow_dcache") for k in (now.get("xattrs") or {})):
            untouched.append(f"{path} carries a pipeline marker: {now['xattrs']}")
    for t in (targets["private"], targets["outside"]):
        listed = sorted(e.name for e in bob.list_dir(t.directory))
        if listed != sorted(t.names):
            untouched.append(f"{t.directory} now holds {listed}, was {sorted(t.names)}")
    derived = []
    with contextlib.suppress(Exception):
        from airflow_dcache.selection import Criteria, select

        derived = [r["path"] for r in select(audit.list_dir, "/data/processed", Criteria(), recursive=True,
                                             max_files=10000) if "bobpriv" in r["path"] or "bobhome" in r["path"]]
    if derived:
        observations.append(f"outputs derived from bob's private files under /data/processed: {derived}")

    def summary(lines: list[dict[str, Any]]) -> Counter[str]:
        return Counter(f"{ln.get('user')} roles={ln.get('roles')} {ln.get('method')}" for ln in lines)

    lines = _access(access_log)
    m = Matrix(cells, observations, untouched, witness_quiet, witness_backfill, time.monotonic() - started,
               summary(_touching(lines[:access_quiet], targets)), summary(_touching(lines[access_quiet:], targets)))
    elevated = [k for k in m.attempts_quiet if "roles=[]" not in k]
    if elevated:
        m.untouched_problems.append(f"requests asserting a role reached bob's trees: {elevated}")
    return m


def _table(m: Matrix) -> str:
    roles = [*ROLES, CLI_ROLE]
    rows = []
    head = f"{'role':<16}{'entry point':<16}" + "".join(f"{t:<50}" for t in TARGETS)
    rows.append(head)
    rows.append("-" * len(head))
    for role in roles:
        for entry in (*VIEW_ENTRIES, *RUN_ENTRIES, CLI):
            if (role, entry, TARGETS[0]) not in m.cells:
                continue
            label = f"{role}({ROLES[role]})" if role in ROLES else "cli(OS login)"
            line = f"{label:<16}{entry:<16}"
            for target in TARGETS:
                c = m.cells[(role, entry, target)]
                exp = expected(role, entry, target)
                mark = "" if c.outcome == exp else ("  HOLE" if c.outcome == "allow" else "  !!")
                line += f"{(c.outcome.upper() + ' ' + c.how)[:44] + mark:<50}"
            rows.append(line)
    counts = Counter(c.outcome for c in m.cells.values())
    unexpected = [c for c in m.cells.values() if c.outcome == "allow" and expected(*c.key) == "deny"]
    unknown = [c for c in unexpected if c.key not in KNOWN_HOLES]
    rows.append("")
    rows.append(f"cells={len(m.cells)} allowed={counts['allow']} denied={counts['deny']} errors={counts['error']} "
                f"unexpected allows={len(unexpected)} (known holes {len(unexpected) - len(unknown)}, "
                f"new {len(unknown)}) runtime={m.runtime_s:.0f}s")
    rows.append(f"witness (bob's channel on his private trees): {len(m.witness_quiet)} event(s) during the "
                f"view/trigger/CLI cells, {len(m.witness_backfill)} during the backfill cells")
    rows.append(f"requests on bob's trees by others (main's access log; all refused unless a HOLE says so): "
                f"view/trigger/CLI cells {dict(m.attempts_quiet)}; backfill cells {dict(m.attempts_backfill)}")
    rows.append(f"dCache targets unchanged: {'yes' if not m.untouched_problems else m.untouched_problems}")
    for line in m.observations:
        rows.append(f"observation: {line}")
    for c in unexpected:
        rows.append(f"HOLE {c.key}: {c.how}; {'; '.join(c.evidence)}")
    return "\n".join(rows)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    from airflow_dcache.events.version import FileVersion
    from airflow_dcache.hooks import DCacheHook
    from airflow_dcache.pipelines import steps

    t0 = time.monotonic()
    tmp = tmp_path_factory.mktemp("matrix")
    access_log = tmp / "main-access.jsonl"  # every authenticated request to main: user, path, asserted roles
    sites = start_sites(tmp / "sites", fast_hash=True, log_dir=tmp, main_args=("--access-log", str(access_log)))
    stack: AirflowStack | None = None
    witness: Witness | None = None
    mp = pytest.MonkeyPatch()
    try:
        for key, value in sites.connections().items():
            mp.setenv(key, value)
        mp.setenv("AIRFLOW_CONN_DCACHE_BOB", json.dumps(sites.main.connection("bob", sites.passwords["bob"])))
        # the test's own eyes: the site admin asserting its role on every call (sees everything)
        audit_conn = sites.main.connection("admin", sites.passwords["admin"], roles=("admin",))
        audit_conn["extra"] = {**audit_conn["extra"], "assert_roles": "always"}  # type: ignore[dict-item]
        mp.setenv("AIRFLOW_CONN_DCACHE_AUDIT", json.dumps(audit_conn))
        tok = secrets.token_hex(3)
        targets = _set_up_targets(sites, tok)
        with DCacheHook(CONN) as pipeline:  # as the pipeline marks a file it processed (its role if needed)
            entry = pipeline.stat(targets["inside"].file, checksum=True)
            assert steps.mark_processed(pipeline, entry.path or targets["inside"].file, INGEST,
                                        f"{INGEST}/matrix__premarked", version=FileVersion.of(entry))
        with DCacheHook("dcache_audit") as audit:
            assert audit.whoami().roles == ["admin"]
            for key in ("private", "outside"):
                t = targets[key]
                t.pnfsids = tuple(str(audit.stat(f"{t.directory}/{n}").pnfsid) for n in t.names)
            objects = [f"{targets[k].directory}/{n}" for k in ("private", "outside") for n in targets[k].names]
            before = _snapshot(audit, [targets["private"].directory, "/home/bob", *objects])
            minute = _minute(audit.stat(targets["private"].file).mtime)
        # the witness: bob's channel; an anchor listing by bob shows it is live
        witness = Witness("dcache_bob", [targets["private"].directory, "/home/bob"])
        # (repeated: the stream attaches some moments after the thread starts, and dCache replays nothing)
        deadline = time.monotonic() + 30
        while not any("IN_CLOSE_NOWRITE" in text for _, text in witness.events):
            assert time.monotonic() < deadline and witness.error is None, f"witness not live: {witness.error!r}"
            r = requests.request("PROPFIND", sites.main.webdav + targets["private"].directory + "/",
                                 headers={"Depth": "1"}, auth=("bob", sites.passwords["bob"]), timeout=30)
            assert r.status_code == 207, r.status_code
            time.sleep(1)
        time.sleep(0.5)
        anchor = witness.mark()

        dags = tmp / "dags"
        dags.mkdir()
        for name in (INGEST, REPROCESS):
            shutil.copy(REPO / "dags" / f"{name}.py", dags)
        pipeline_conns = sites.connections()
        if CANARY:
            for key, value in pipeline_conns.items():
                conn = json.loads(value)
                conn["extra"]["assert_roles"] = "always"
                pipeline_conns[key] = json.dumps(conn)
        env = {
            **pipeline_conns,
            "AIRFLOW_CONN_DCACHE_ALICE": json.dumps(sites.main.connection("alice", sites.passwords["alice"])),
            "AIRFLOW__DCACHE__USER_CONNECTIONS": json.dumps(MAPPED),
            "AIRFLOW__DCACHE__UI_EXTRA_ROOTS": "/data/incoming,/data/processed",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r.lower()}" for u, r in ROLES.items()),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW_DCACHE_FUNCTION_RUNTIME": "local",
            "AIRFLOW_DCACHE_REPROCESS_SCHEDULE": "* * * * *",
        }
        # 4 task slots: on a 2-core machine more only make the components wait for SQLite's write lock
        stack = AirflowStack(tmp / "airflow", dags, env, parallelism=4)
        stack.start(("scheduler", "dag-processor", "api-server"))

        def parsed() -> bool:
            errors = stack.api.import_errors()  # type: ignore[union-attr]
            if errors:
                raise RuntimeError(f"DAG import errors: {errors}")
            ids = {d["dag_id"] for d in stack.api.request("GET", "/dags")["dags"]}  # type: ignore[union-attr]
            return {INGEST, REPROCESS} <= ids

        _wait(parsed, 180, "DAGs parsed", interval=1)
        stack.api.unpause(INGEST)  # manual runs run; no triggerer, so its watcher starts nothing
        st = Stack(sites, stack, tmp)
        setup_s = time.monotonic() - t0
        with DCacheHook("dcache_audit") as audit, DCacheHook("dcache_bob") as bob:
            m = _run_matrix(st, targets, witness, audit, bob, anchor, minute, before, access_log)
        import getpass

        m.observations.insert(0, f"setup (sites, trees, Airflow) {setup_s:.0f}s; the CLI runs as OS login "
                                 f"{getpass.getuser()!r}")
    except BaseException:
        if stack is not None:  # the component logs are the only place a scheduler's or task's error shows
            for log in sorted(stack.log_dir.glob("*.log")):
                print(f"---- {log.name} (tail)\n{log.read_text(errors='replace')[-3000:]}")
        raise
    finally:  # the cells are decided: nothing of the deployment is needed by the tests below
        if witness is not None:
            witness.close()
        if stack is not None:
            stack.stop()
        sites.stop()
        mp.undo()
    m.runtime_s = time.monotonic() - t0
    m.table = _table(m)
    (tmp / "matrix.txt").write_text(m.table)
    yield m


# ------------------------------------------------------------------------------------------ the tests


@pytest.mark.parametrize(("role", "entry", "target"), CELLS, ids=["-".join(c) for c in CELLS])
def test_cell(matrix: Matrix, role: str, entry: str, target: str) -> None:
    cell = matrix.cells[(role, entry, target)]
    want = expected(role, entry, target)
    summary = f"{cell.key}: {cell.outcome} ({cell.how}); evidence: {cell.evidence}; problems: {cell.problems}"
    if want == "deny" and cell.outcome == "allow" and cell.key in KNOWN_HOLES:
        pytest.xfail(f"PRIVILEGE HOLE: {KNOWN_HOLES[cell.key]} — this run: {'; '.join(cell.evidence)}")
    assert cell.outcome == want, summary
    assert not cell.problems, summary
    if want == "deny" and target != "inside":
        # nothing read, listed or changed in dCache by any deny (the view's and the triggers' alike)
        if entry != "backfill":
            assert not matrix.witness_quiet, f"bob's trees were listed/read meanwhile: {matrix.witness_quiet}"
        assert not matrix.untouched_problems, matrix.untouched_problems


def test_matrix_table(matrix: Matrix, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole matrix in the test log, with its counts; no unexpected allow beyond the known holes."""
    with capsys.disabled():
        print("\n\nprivilege matrix (issue 17)\n" + matrix.table + "\n")
    unexpected = [c.key for c in matrix.cells.values() if c.outcome == "allow" and expected(*c.key) == "deny"]
    assert [k for k in unexpected if k not in KNOWN_HOLES] == [], matrix.table
    assert len(matrix.cells) == len(CELLS)
