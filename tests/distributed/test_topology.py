"""The provider on Airflow's distributed engine: Postgres, Redis, 2 Celery workers, 2 schedulers, 2 triggerers.

One topology for the module (:mod:`airflow_dcache.testing.topology`, both dCache sites included) and the
consumer DAG of ``dags/``: an SSE watcher on ``/data/incoming/dist``, a task on any worker that writes an
output and claims each file version with the done-marker, a lineage record per claimed file.

- the watcher runs once across the two triggerers: one trigger row, one triggerer holding the SSE
  stream, one subscription at the site, every file once;
- a stream of uploads while a worker (in the middle of a task), the triggerer holding the watcher and a
  scheduler are killed with ``kill -9`` and Postgres is restarted: every file version processed
  exactly once (marker, one lineage record, one output), no run stuck or failed; the recovery times
  are printed as a table. CI size: 120 uploads over 60 s; ``DCACHE_SOAK=1`` adds 500 over 2 min.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from airflow_dcache.testing.sites import Sites, wait_for_watches
from airflow_dcache.testing.topology import Topology
from tests.distributed.conftest import missing_parts

# CI sets AIRFLOW_DCACHE_REQUIRE_TOPOLOGY=1: there a missing part fails these tests instead of skipping them
REQUIRED = os.environ.get("AIRFLOW_DCACHE_REQUIRE_TOPOLOGY") == "1"
if REQUIRED and missing_parts():
    raise RuntimeError(f"AIRFLOW_DCACHE_REQUIRE_TOPOLOGY=1, but the topology needs: {', '.join(missing_parts())}")
pytestmark = [pytest.mark.distributed,
              pytest.mark.skipif(bool(missing_parts()), reason=f"topology needs: {', '.join(missing_parts())}")]

DAGS = Path(__file__).parent / "dags"
DAG_ID = "distributed_consumer"
WATCH = "/data/incoming/dist"
OUTPUTS = "/data/processed/dist"
MARKER = f"airflow_dcache.done.{DAG_ID}"
LINEAGE_URI = "dcache://main/data/processed/dist"
TASK_SECONDS = 3.0
TOPOLOGY: Topology | None = None  # read by conftest's failure report (component logs)


def _prepare(sites: Sites) -> None:
    """The watched folder and the output root exist before the watcher subscribes."""
    auth = ("pipeline", sites.passwords["pipeline"])
    for path in (WATCH, OUTPUTS):
        r = requests.request("MKCOL", f"{sites.main.webdav}{path}", auth=auth, timeout=30)
        assert r.status_code in (201, 405), (path, r.status_code)


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    global TOPOLOGY
    base = tmp_path_factory.mktemp("distributed")
    t0 = time.monotonic()
    topology = Topology(base, DAGS, {"DIST_WATCH_DIR": WATCH, "DIST_TASK_SECONDS": str(TASK_SECONDS)},
                        prepare=_prepare)
    saved = {k: os.environ.get(k) for k in ("AIRFLOW_CONN_DCACHE_MAIN", "AIRFLOW_CONN_DCACHE_BUFFER")}
    try:
        topology.start()
        TOPOLOGY = topology
        topology.airflow.wait_dags([DAG_ID])
        os.environ.update(topology.sites.connections())  # the test's own DCacheHook calls
        wait_for_watches("dcache_main", 1, timeout=120)
        print(f"\ntopology up and watching after {time.monotonic() - t0:.1f} s")
        yield topology
    finally:
        TOPOLOGY = None
        t1 = time.monotonic()
        topology.stop()
        print(f"\ntopology stopped in {time.monotonic() - t1:.1f} s")
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# -- observing the outcome -------------------------------------------------------------------------------------

def _sql(topology: Topology, query: str) -> list[tuple[Any, ...]]:
    import psycopg2

    pg = topology.postgres
    conn = psycopg2.connect(host="127.0.0.1", port=pg.port, user="airflow", password=pg.password, dbname="airflow",
                            connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            return list(cur.fetchall())
    finally:
        conn.close()


def _markers(prefix: str) -> dict[str, str]:
    """The done-marker of every file named ``prefix*`` in the watched folder (``""``: none yet)."""
    from airflow_dcache.hooks import DCacheHook

    with DCacheHook("dcache_main") as hook:
        return {e.path: (e.xattrs or {}).get(MARKER, "") for e in hook.list_dir(WATCH, xattr=True)
                if e.name.startswith(prefix)}


def _lineage(topology: Topology, prefix: str) -> dict[str, list[dict[str, Any]]]:
    """Lineage records by input path, from the DAG's asset events (one event per successful task)."""
    out: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for ev in topology.airflow.api.asset_events(LINEAGE_URI):
        extra = ev.get("extra") or {}
        if extra.get("schema") == "distributed-test/v1":
            for record in extra["records"]:
                if record["input"].rsplit("/", 1)[1].startswith(prefix):
                    out[record["input"]].append({**record, "run_id": extra["run_id"]})
    return dict(out)


def _outputs(prefix: str) -> collections.Counter[str]:
    """How many outputs exist per input name, over every run's output folder."""
    from airflow_dcache.hooks import DCacheHook

    counts: collections.Counter[str] = collections.Counter()
    with DCacheHook("dcache_main") as hook:
        for folder in hook.list_dir(OUTPUTS):
            for entry in hook.list_dir(folder.path):
                if entry.name.startswith(prefix):
                    counts[entry.name.removesuffix(".out")] += 1
    return counts


def _one_holder(topology: Topology, timeout: float = 90) -> str:
    """Wait until exactly one triggerer holds the watcher's SSE stream; fail at once if two ever do.

    Zero is transient (a reconnect, a trigger being reassigned), two would be the watcher running twice.
    """
    port = int(urlsplit(topology.sites.main.frontend).port or 0)
    deadline = time.monotonic() + timeout
    holders: list[str] = []
    while time.monotonic() < deadline:
        holders = topology.connected_to(port)
        assert len(holders) <= 1, f"the watcher's stream is held by {holders}"
        if len(holders) == 1:
            return holders[0]
        time.sleep(0.5)
    raise AssertionError(f"no triggerer holds the watcher's stream after {timeout:.0f} s")


def _unfinished_runs(topology: Topology) -> list[tuple[str, str]]:
    return [(r["dag_run_id"], r["state"]) for r in topology.airflow.api.dag_runs(DAG_ID)
            if r["state"] not in ("success", "failed")]


@dataclass(eq=False)  # a Thread must stay hashable (threading keeps it in a dict while it starts)
class Uploader(threading.Thread):
    """Uploads ``count`` files named ``prefix-NNNN.dat`` paced over ``seconds`` (bounded: each PUT ≤ 60 s)."""

    sites: Sites
    prefix: str
    count: int
    seconds: float
    done: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(daemon=True, name=f"uploads-{self.prefix}")

    def run(self) -> None:
        auth = ("pipeline", self.sites.passwords["pipeline"])
        start = time.monotonic()
        with requests.Session() as s:
            for i in range(self.count):
                path = f"{WATCH}/{self.prefix}-{i:04d}.dat"
                for _attempt in range(5):  # the site is never killed here; a retry only covers a slow moment
                    try:
                        s.put(f"{self.sites.main.webdav}{path}", data=os.urandom(512) + path.encode(), auth=auth,
                              timeout=60).raise_for_status()
                        self.done.append(path)
                        break
                    except requests.RequestException as exc:
                        self.errors.append(f"{path}: {exc}")
                        time.sleep(1)
                wait = start + (i + 1) * self.seconds / self.count - time.monotonic()
                if wait > 0:
                    time.sleep(wait)


def _wait_all_processed(topology: Topology, paths: list[str], prefix: str, *, timeout: float,
                        supervise: Callable[[], None] = lambda: None) -> float:
    """Until every path has its marker and no run of the DAG is queued or running; returns the seconds."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    missing: list[str] = list(paths)
    unfinished: list[tuple[str, str]] = []
    while time.monotonic() < deadline:
        supervise()
        with contextlib.suppress(requests.RequestException):
            markers = _markers(prefix)
            missing = [p for p in paths if not markers.get(p)]
            unfinished = _unfinished_runs(topology)
            if not missing and not unfinished:
                return time.monotonic() - t0
        time.sleep(2)
    port = int(urlsplit(topology.sites.main.frontend).port or 0)
    triggers = _sql(topology, "SELECT id, triggerer_id, classpath FROM trigger")
    raise AssertionError(f"after {timeout:.0f} s: {len(missing)} of {len(paths)} files without a marker "
                         f"({missing[:5]}...), unfinished runs {unfinished[:5]}; SSE held by "
                         f"{topology.connected_to(port)}; triggers {triggers}")


def _assert_exactly_once(topology: Topology, paths: list[str], prefix: str) -> dict[str, int]:
    """Every version: a marker naming a successful run, one lineage record from that run, one output."""
    markers = _markers(prefix)
    lineage = _lineage(topology, prefix)
    outputs = _outputs(prefix)
    runs = {r["dag_run_id"]: r["state"] for r in topology.airflow.api.dag_runs(DAG_ID)}
    lost = [p for p in paths if not markers.get(p) or p not in lineage]
    twice = [p for p in paths if len(lineage.get(p, [])) > 1 or outputs[p.rsplit("/", 1)[1]] > 1]
    for path in paths:
        if path in lost or path in twice:
            continue
        (record,) = lineage[path]
        assert record["run_id"] in markers[path], (path, record, markers[path])  # the marker names that run
        assert outputs[path.rsplit("/", 1)[1]] == 1, path
    failed = [r for r, s in runs.items() if s != "success"]
    assert not lost, f"lost: {lost[:10]}"
    assert not twice, f"processed twice: {[(p, lineage.get(p)) for p in twice[:5]]}"
    assert not failed, f"runs not successful: {[(r, runs[r]) for r in failed]}"
    return {"files": len(paths), "runs": len(runs), "lost": len(lost), "twice": len(twice)}


# -- the tests -------------------------------------------------------------------------------------------------

@pytest.mark.timeout(400)
def test_the_watcher_runs_once_across_two_triggerers(topo: Topology) -> None:
    alive = _sql(topo, "SELECT id FROM job WHERE job_type = 'TriggererJob' AND state = 'running'")
    assert len(alive) == 2, alive
    triggers = _sql(topo, "SELECT id, triggerer_id FROM trigger WHERE classpath LIKE '%DCacheStorageEventTrigger'")
    assert len(triggers) == 1 and triggers[0][1] in {a[0] for a in alive}, (triggers, alive)
    _one_holder(topo)  # exactly one triggerer holds the SSE stream

    from airflow_dcache.hooks import DCacheHook

    with DCacheHook("dcache_main") as hook:
        subs = [s for ch in hook.list_channels() for s in hook.list_subscriptions(ch) if "/inotify/" in s]
    assert len(subs) == 1, subs

    uploads = Uploader(topo.sites, "once", 20, 5.0)
    uploads.start()
    uploads.join(timeout=120)
    assert len(uploads.done) == 20, uploads.errors
    took = _wait_all_processed(topo, uploads.done, "once", timeout=240)
    summary = _assert_exactly_once(topo, uploads.done, "once")
    workers = collections.Counter(r["worker"] for v in _lineage(topo, "once").values() for r in v)
    print(f"\n20 uploads processed once in {took:.1f} s after the last upload; {summary}; by worker {dict(workers)}")
    _one_holder(topo)


@dataclass
class Fault:
    """One component killed during the stream, and how the system came back."""

    component: str
    due: float  # seconds into the stream
    killed_at: float | None = None  # monotonic
    killed_wall: datetime | None = None
    in_flight: int = 0
    recovered_after: float | None = None
    note: str = ""


class Scenario:
    """The stream of uploads with its faults, a supervisor's restart policy, and the recovery table."""

    RESTART_AFTER = 5.0  # seconds a supervisor (systemd RestartSec, a pod restart) waits before a restart

    def __init__(self, topology: Topology, prefix: str, count: int, seconds: float) -> None:
        self.topo = topology
        self.prefix = prefix
        self.uploads = Uploader(topology.sites, prefix, count, seconds)
        self.seconds = seconds
        self.frontend_port = int(urlsplit(topology.sites.main.frontend).port or 0)
        # the worker first: while the watcher is away (~30-40 s after the triggerer's kill) no new runs start,
        # so a task to kill mid-way is surest early in the stream
        self.faults = [Fault("celery worker (mid-task)", 0.12 * seconds), Fault("triggerer (watcher's)", 0.3 * seconds),
                       Fault("scheduler", 0.5 * seconds), Fault("postgres (restart)", 0.7 * seconds)]
        self.dead_since: dict[str, float] = {}
        self.revived: list[tuple[float, str]] = []
        self.t0 = 0.0
        self.worker_ti: tuple[str, int] | None = None
        self.lock = threading.Lock()  # the supervisor and the faults both start and stop components

    # a supervisor: components that exited are started again after RESTART_AFTER
    def supervise(self) -> None:
        now = time.monotonic()
        for name, proc in list(self.topo.airflow.processes.items()):
            if proc.poll() is None:
                self.dead_since.pop(name, None)
                continue
            since = self.dead_since.setdefault(name, now)
            if now - since >= self.RESTART_AFTER:
                self.topo.start_again(name)
                self.revived.append((now - self.t0, name))
                self.dead_since.pop(name, None)

    def in_flight(self) -> int:
        with contextlib.suppress(requests.RequestException):
            markers = _markers(self.prefix)
            return sum(1 for p in list(self.uploads.done) if not markers.get(p))
        return -1

    def _running_task(self) -> tuple[str, str, int, int] | None:
        """(worker, run_id, try_number, pid) of a running ``process`` task, if any."""
        with contextlib.suppress(requests.RequestException):
            tis = self.topo.airflow.api.request("GET", f"/dags/{DAG_ID}/dagRuns/~/taskInstances",
                                                params={"state": "running", "limit": 100})["task_instances"]
            for ti in tis:
                worker = self.topo.component_of(int(ti["pid"])) if ti.get("pid") else None
                if worker and worker.startswith("worker-"):
                    return worker, ti["dag_run_id"], int(ti["try_number"]), int(ti["pid"])
        return None

    def kill(self, fault: Fault) -> None:
        fault.in_flight = self.in_flight()
        if fault.component.startswith("triggerer"):
            name = _one_holder(self.topo, timeout=60)
        elif fault.component.startswith("celery worker"):
            found = None
            for _ in range(180):  # a task lasts TASK_SECONDS: one is running within seconds (bound: ~90 s)
                found = self._running_task()
                if found:
                    break
                time.sleep(0.5)
            assert found, "no task running on a worker to kill"
            name, run_id, try_number, _pid = found
            self.worker_ti = (run_id, try_number)
            fault.note = f"task of {run_id} try {try_number}"
        elif fault.component == "scheduler":
            name = "scheduler-1"
        else:
            name = "postgres"
        with self.lock:
            fault.killed_at = time.monotonic()
            fault.killed_wall = datetime.now(UTC)
            if name == "postgres":
                down = self.topo.postgres.restart()
                fault.note = f"unavailable {down:.1f} s"
            else:
                self.topo.kill(name)
                fault.note = (fault.note + f" {name}").strip()

    def recovered(self, fault: Fault) -> bool:
        if fault.component.startswith("triggerer"):
            return bool(self.topo.connected_to(self.frontend_port))
        api = self.topo.airflow.api
        if fault.component.startswith("celery worker"):
            assert self.worker_ti is not None
            run_id, _ = self.worker_ti
            (ti,) = [t for t in api.task_instances(DAG_ID, run_id) if t["task_id"] == "process"]
            return bool(ti["state"] == "success")
        # scheduler, postgres: a task ended successfully that started after the fault (work flows again)
        since = fault.killed_wall.isoformat() if fault.killed_wall else ""
        tis = api.request("GET", f"/dags/{DAG_ID}/dagRuns/~/taskInstances",
                          params={"state": "success", "start_date_gte": since, "limit": 1})
        return bool(tis["total_entries"])

    def _supervisor(self, stop: threading.Event) -> None:
        while not stop.wait(0.5):
            with self.lock:
                self.supervise()

    def _measure(self, fault: Fault, deadline: float) -> None:
        """Poll ``recovered`` every 0.5 s in a thread of its own, so no fault's wait delays another's clock."""
        while time.monotonic() < deadline and fault.recovered_after is None:
            with contextlib.suppress(requests.RequestException, ValueError):
                if self.recovered(fault):
                    assert fault.killed_at is not None
                    fault.recovered_after = time.monotonic() - fault.killed_at
                    print(f"  {time.monotonic() - self.t0:6.1f} s  {fault.component} recovered after "
                          f"{fault.recovered_after:.1f} s", flush=True)
                    return
            time.sleep(0.5)

    def run(self, timeout: float) -> list[Fault]:
        """The stream, each fault at its time, a supervisor thread and a recovery clock per fault."""
        self.t0 = time.monotonic()
        deadline = self.t0 + timeout
        stop = threading.Event()
        supervisor = threading.Thread(target=self._supervisor, args=(stop,), daemon=True, name="supervisor")
        clocks: list[threading.Thread] = []
        self.uploads.start()
        supervisor.start()
        try:
            for fault in self.faults:
                time.sleep(max(0.0, self.t0 + fault.due - time.monotonic()))
                self.kill(fault)
                print(f"  {time.monotonic() - self.t0:6.1f} s  killed {fault.component}: {fault.note}; "
                      f"{fault.in_flight} in flight", flush=True)
                clock = threading.Thread(target=self._measure, args=(fault, deadline), daemon=True)
                clock.start()
                clocks.append(clock)
            for clock in clocks:
                clock.join(timeout=max(1.0, deadline - time.monotonic()))
            self.uploads.join(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            stop.set()
            supervisor.join(timeout=30)
        pending = [(f.component, f.note) for f in self.faults if f.recovered_after is None]
        assert not pending, f"faults not recovered within {timeout:.0f} s: {pending}"
        return self.faults

    def table(self, summary: dict[str, int]) -> str:
        lines = ["| component killed | files in flight | recovered after | lost | twice |",
                 "|---|---|---|---|---|"]
        for f in self.faults:
            rec = f"{f.recovered_after:.1f} s" if f.recovered_after is not None else "-"
            lines.append(f"| {f.component} ({f.note}) | {f.in_flight} | {rec} | {summary['lost']} "
                         f"| {summary['twice']} |")
        return "\n".join(lines)


def _fault_test(topo: Topology, prefix: str, count: int, seconds: float) -> None:
    t0 = time.monotonic()
    scenario = Scenario(topo, prefix, count, seconds)
    print(f"\n{count} uploads over {seconds:.0f} s with faults:")
    scenario.run(timeout=seconds + 300)
    scenario.uploads.join(timeout=60)
    assert len(scenario.uploads.done) == count, scenario.uploads.errors[-5:]
    tail = _wait_all_processed(topo, scenario.uploads.done, prefix, timeout=300, supervise=scenario.supervise)
    print(f"upload retries: {len(scenario.uploads.errors)}")
    summary = _assert_exactly_once(topo, scenario.uploads.done, prefix)
    print(scenario.table(summary))
    print(f"all {count} processed exactly once; {summary['runs']} runs in all; drained {tail:.1f} s after "
          f"the faults recovered; restarted by the supervisor: {scenario.revived}; "
          f"scenario {time.monotonic() - t0:.0f} s")
    _one_holder(topo)  # again exactly one triggerer holds the stream


@pytest.mark.timeout(900)
def test_every_upload_processed_exactly_once_while_components_die(topo: Topology) -> None:
    _fault_test(topo, "ci", 120, 60.0)


@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_soak_500_uploads_while_components_die(topo: Topology) -> None:
    _fault_test(topo, "soak", 500, 120.0)
