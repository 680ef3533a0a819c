"""Issue 16, "a facility day": every file version is processed exactly once, and results are never confused.

The real ``dags/dcache_ingest_pipeline.py`` on a real Airflow (scheduler, triggerer, dag-processor,
API server) and the two bundled sites, no mocks. ``alice`` does what a beamline does in a day:

* the same names in several run folders (``r01/dup.h5``, ``r02/dup.h5``, ...);
* overwrites within a second of the first upload, and overwrites while the earlier version's run is
  in flight (its ``replicate`` or ``wait_archived`` task running);
* deletes right after an upload; renames (MOVE) into the watched tree from outside it;
* a file called ``.h5`` and one with a 240-character name;
* uploads while the DAG is paused (one right after pausing, while the watcher still runs and commits
  its cursor; the rest after the watcher stopped), then unpause. What is true (asserted): both are
  processed after unpausing. The watcher's state (cursor, channel) survives the pause, so what came
  while it was stopped is replayed; what it reported while the DAG was paused queued no run, but
  Airflow gives the next asset-triggered run every asset event since the previous run, so it rides
  along with the first run after unpausing (it waits for a later upload to start one);
* two manual triggers (REST, ``conf.paths``) in the same second over the same files.

Then, for every version uploaded (its pnfsid and adler32 known from the upload and a stat): processed
exactly once (one lineage record) or reported with a reason (``skipped`` XCom, ``VersionChanged``);
every output's ``input_version`` is its lineage's input; no output shared, none without a lineage
record (a run that lost the race removes its own); no done-marker on an
unprocessed version; the newest version of each present path archived and processed; nothing left
under ``/data/work`` on the buffer. The table (scenario | versions | processed once | ... ) is printed.

Size: CI by default (22 versions, 16 of them processed; 3-4 minutes on 2 cores including start-up);
``DCACHE_SOAK=1`` runs the issue's full size (about 50 processed files in 10 run folders).

"unseen" in the table: a version replaced (or deleted) within milliseconds, before the watcher's stat
of its event, so no event ever carried its pnfsid (the event reports the newer version, or "gone").
It is neither processed nor lost: nothing was ever told about it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_dcache.demo import default_dags_folder
from airflow_dcache.demo.samples import write_cxi
from airflow_dcache.hooks import DCacheHook
from airflow_dcache.pipelines import design
from airflow_dcache.testing.airflow_stack import AirflowStack
from airflow_dcache.testing.sites import Sites, wait_for_watches
from airflow_dcache.triggers.storage_events import COMMIT_DELAY
from tests.e2e.facility import (
    FINAL,
    INGEST,
    Ledger,
    Version,
    details,
    gather,
    hook_json_reader,
    judge,
    lineage_records,
    marker_problems,
    misattributions,
    orphan_outputs,
    table,
)

INCOMING_ASSET = "dcache://main/data/incoming"
#: the example DAG's design in this run (the default unless $AIRFLOW_DCACHE_PIPELINE_DESIGN says otherwise)
DESIGN = design.from_env()
STAGING = "/data/staging-alice"  # outside the watched tree: the source of the renames
# inside the pipeline's allowed roots (a manual selection elsewhere is refused), but named *.hdf5, which
# the watcher's include (*.h5) does not match: only the manual runs pick these up
MANUAL_DIR = "/data/incoming/manual-day"
LONG_NAME = "long-" + "x" * 232 + ".h5"  # 240 characters
PAUSED_WINDOW_NOTE = ("uploaded after the pause while the watcher still ran: its asset event queued no run, "
                      "and rides along with the first run after unpausing (Airflow gives a run every asset "
                      "event since the previous run), so it waits for a later upload")


#: A defect this test found (reported, not fixed here): the only check that xfails instead of failing.

@dataclass(frozen=True)
class Size:
    """How many of each case: CI keeps every kind of case, the soak size is the issue's."""

    folders: int
    dup_names: int
    quick: int
    inflight: int
    deleted: int
    moved: int
    paused: int
    manual: int
    settle_timeout: float


CI = Size(folders=3, dup_names=1, quick=2, inflight=2, deleted=2, moved=2, paused=2, manual=2, settle_timeout=600)
SOAK = Size(folders=10, dup_names=3, quick=5, inflight=4, deleted=5, moved=5, paused=4, manual=4, settle_timeout=1800)
SIZE = SOAK if os.environ.get("DCACHE_SOAK") == "1" else CI


def _wait(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """Poll ``check`` until truthy (bounded); the value, or TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what}: not after {timeout:.0f} s")


class Beamline:
    """``alice`` uploading, overwriting, deleting and renaming; each new version is written to the ledger.

    Uploads go through ``alice``'s own connection (she owns her files, as at a facility); the version
    is read back with the pipeline's connection (a stat with checksums), so the ledger holds exactly
    what dCache says the version is.
    """

    def __init__(self, sites: Sites, tmp: Path, ledger: Ledger) -> None:
        self.alice = DCacheHook("dcache_alice")
        self.pipeline = DCacheHook("dcache_main")
        self.tmp = tmp
        self.ledger = ledger
        self.seed = 0

    def close(self) -> None:
        self.alice.close()
        self.pipeline.close()

    def _sample(self) -> Path:
        self.seed += 1  # a new seed per upload: every version has its own content and checksum
        return write_cxi(self.tmp / f"sample-{self.seed:04d}.h5", seed=self.seed, frames=2, height=32, width=32)

    def record(self, scenario: str, path: str, **fields: Any) -> Version:
        entry = self.pipeline.stat(path, checksum=True)
        assert entry.pnfsid and entry.checksums, (path, entry)
        return self.ledger.add(Version(scenario, path, entry.pnfsid, entry.checksums["adler32"].lower(), **fields))

    def put(self, scenario: str, path: str, *, as_pipeline: bool = False, **fields: Any) -> Version:
        (self.pipeline if as_pipeline else self.alice).upload(self._sample(), path)
        return self.record(scenario, path, **fields)

    def delete(self, version: Version) -> None:
        self.alice.delete(version.path)
        version.left = "deleted"

    def move_in(self, scenario: str, staging_path: str, path: str) -> Version:
        """Upload outside the watched tree, then MOVE in: the version is the same file under a new name."""
        self.alice.upload(self._sample(), staging_path)
        self.alice.move(staging_path, path)
        return self.record(scenario, path, note=f"moved in from {staging_path}")


class Pipeline:
    """The DAG through the REST API as an operator uses it: pause, unpause, re-parse, watchers, runs."""

    def __init__(self, stack: AirflowStack) -> None:
        self.api = stack.api
        self.token = self.api.dag(INGEST)["file_token"]
        self._units: dict[str, list[list[dict[str, Any]]]] = {}

    def set_paused(self, paused: bool) -> None:
        self.api.request("PATCH", f"/dags/{INGEST}", json={"is_paused": paused})
        # the watcher follows the pause only when the DAG file is parsed again: ask for that now
        self.api.request("PUT", f"/parseDagFile/{self.token}")

    def watchers(self) -> list[dict[str, Any]]:
        assets = self.api.request("GET", "/assets", params={"uri_pattern": INCOMING_ASSET, "limit": 100})["assets"]
        return [w for a in assets if a["uri"] == INCOMING_ASSET for w in a.get("watchers") or []]

    def units(self, run_id: str) -> list[list[dict[str, Any]]] | None:
        """The run's work items per map index (the design's units task: ``collect``, or ``chunk``), cached."""
        if run_id not in self._units:
            try:
                value = self.api.xcom(INGEST, run_id, DESIGN.units_task)
            except Exception:
                return None
            if value is None:
                return None
            self._units[run_id] = DESIGN.units(value)
        return self._units[run_id]

    def task_states(self, pnfsid: str) -> tuple[str, dict[str, str]] | None:
        """(run id, task id → state) of the mapped tasks working on ``pnfsid`` (its file or its chunk)."""
        for run in self.api.dag_runs(INGEST):
            for index, items in enumerate(self.units(run["dag_run_id"]) or []):
                if any(item.get("pnfsid") == pnfsid for item in items):
                    tis = self.api.task_instances(INGEST, run["dag_run_id"])
                    return run["dag_run_id"], {t["task_id"]: str(t["state"]) for t in tis
                                               if t.get("map_index") == index}
        return None


def overwrite_in_flight(beamline: Beamline, pipeline: Pipeline, firsts: list[tuple[Version, str]],
                        timeout: float) -> list[str]:
    """Overwrite each first version once its run's ``stage`` task runs (bounded; notes what happened).

    ``replicate`` is short, so a first version whose replicate is done but whose run is not is
    overwritten too (still in flight). A run already finished is a miss: the path is overwritten
    anyway (the newer version must still be processed) and the note says so.
    """
    notes = []
    pending = dict.fromkeys(v.pnfsid for v, _ in firsts)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for v, stage in firsts:
            if v.pnfsid not in pending:
                continue
            found = pipeline.task_states(v.pnfsid)
            if found is None:
                continue
            run_id, states = found
            stage_state = states.get(DESIGN.task(stage))
            done = states.get(DESIGN.task("record_lineage")) in FINAL or "failed" in states.values()
            in_flight = stage_state == "running" or (stage == "replicate" and stage_state == "success" and not done)
            if in_flight or done:
                what = f"{stage} {stage_state} in {run_id}" if in_flight else f"MISSED: {run_id} already ended"
                new = beamline.put(v.scenario, v.path, note=f"overwrote while {what}")
                v.note = f"overwritten while {what}"
                notes.append(f"{v.path}: {v.pnfsid} -> {new.pnfsid} while {what}")
                del pending[v.pnfsid]
        time.sleep(0.3)
    for v, stage in firsts:  # never seen running within the bound: overwrite anyway, say so
        if v.pnfsid in pending:
            beamline.put(v.scenario, v.path, note=f"overwrote after {timeout:.0f} s without seeing {stage}")
            notes.append(f"{v.path}: {stage} never seen within {timeout:.0f} s")
    return notes


def settle(stack: AirflowStack, ledger: Ledger, timeout: float) -> float:
    """Wait (bounded) until no run is active and nothing changes; returns the seconds waited.

    Done when every run is final, the newest version of every present path has a lineage record and
    the run list has been still for 8 s — or, with some still missing, still for 45 s (nothing more
    will come: the checks then name what was lost).
    """
    start = time.monotonic()
    deadline = start + timeout
    last: Any = None
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        runs = stack.api.dag_runs(INGEST)
        signature = sorted((r["dag_run_id"], r["state"]) for r in runs)
        if signature != last:
            last, still_since = signature, time.monotonic()
        if all(r["state"] in FINAL for r in runs):
            processed = {(r.get("input") or {}).get("pnfsid") for r in lineage_records(stack)}
            missing = [v for v in ledger.current() if v.pnfsid not in processed]
            still = time.monotonic() - still_since
            if (not missing and still >= 8) or still >= 45:
                return time.monotonic() - start
        time.sleep(2)
    raise TimeoutError(f"runs still active after {timeout:.0f} s: {[s for s in (last or []) if s[1] not in FINAL]}")


@pytest.fixture
def facility(dcache_sites: Sites, airflow_stack: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Sites,
                                                                                                        AirflowStack]]:
    """The sites and the real pipeline's Airflow; this process gets ``dcache_main``/``_buffer``/``_alice``."""
    sites = dcache_sites
    env = {**sites.connections(), "AIRFLOW_DCACHE_FUNCTION_RUNTIME": "local",
           # a transient copy failure retries after 5 s, not 30: the day must fit the test's bound
           "AIRFLOW_DCACHE_REPLICATE_RETRY_DELAY": "5"}
    stack = airflow_stack(default_dags_folder(), env, dag_ids=[INGEST])
    for key, value in sites.connections().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AIRFLOW_CONN_DCACHE_ALICE", json.dumps(sites.main.connection("alice",
                                                                                     sites.passwords["alice"])))
    wait_for_watches("dcache_main", 2)
    yield sites, stack


@pytest.mark.timeout(3600 if SIZE is SOAK else 900)  # the whole day, bounded; CI size takes 3-4 min
def test_facility_day_every_version_processed_once(facility: tuple[Sites, AirflowStack], tmp_path: Path) -> None:
    sites, stack = facility
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    ledger = Ledger()
    beamline = Beamline(sites, tmp_path / "samples", ledger)
    pipeline = Pipeline(stack)
    folders = [f"/data/incoming/r{i:02d}" for i in range(1, SIZE.folders + 1)]
    try:
        for d in (*folders, STAGING):
            beamline.alice.mkdir(d)
        beamline.pipeline.mkdir(MANUAL_DIR)
        time.sleep(2)  # the recursive watcher subscribes the new run folders

        # 6. paused: one upload while the watcher still runs, the rest after it stopped; then unpause
        t = time.monotonic()
        pipeline.api.request("PATCH", f"/dags/{INGEST}", json={"is_paused": True})
        beamline.put("paused: watcher up", f"{folders[0]}/paused-window.h5", note=PAUSED_WINDOW_NOTE)
        # as after a pause in the UI, the watcher keeps running until the DAG file is parsed again (up to
        # min_file_process_interval, 30 s): long enough to yield the event and commit its cursor (5 s)
        time.sleep(COMMIT_DELAY + 3)
        pipeline.set_paused(True)
        _wait("the watcher to stop after the pause", lambda: not pipeline.watchers(), 120)
        time.sleep(5)  # the triggerer cancels a trigger no asset references in its next loop
        for i in range(SIZE.paused):
            beamline.put("paused: watcher off", f"{folders[i % len(folders)]}/paused-{i}.h5")
        pipeline.set_paused(False)
        _wait("the watcher to come back after unpausing", pipeline.watchers, 120)
        timings["pause phase"] = time.monotonic() - t

        # the day's uploads
        t = time.monotonic()
        firsts = [(beamline.put("overwrite in flight", f"{folders[i % len(folders)]}/inflight.h5"),
                   ("replicate", "wait_archived")[i % 2]) for i in range(SIZE.inflight)]
        for folder in folders:  # 1. identical names in every run folder
            for d in range(SIZE.dup_names):
                beamline.put("same names", f"{folder}/{'dup' if d == 0 else f'dup{d}'}.h5")
        for i in range(SIZE.quick):  # 2a. overwritten within a second
            path = f"{folders[i % len(folders)]}/quick.h5"
            first = beamline.put("overwrite <1 s", path)
            second = beamline.put("overwrite <1 s", path)
            gap = second.uploaded - first.uploaded
            assert gap < 1.0, f"{path}: the overwrite came {gap:.2f} s after the first upload"
            first.note = f"overwritten {gap:.2f} s after upload"
        for i in range(SIZE.deleted):  # 3. deleted right after upload
            beamline.delete(beamline.put("delete after upload", f"{folders[i % len(folders)]}/gone-{i}.h5"))
        for i in range(SIZE.moved):  # 4. renamed into the watched tree from outside it
            beamline.move_in("rename into tree", f"{STAGING}/stage-{i}.h5", f"{folders[i % len(folders)]}/moved.h5")
        beamline.put("odd names", f"{folders[0]}/.h5")  # 5. a name that is all suffix, and a 240-character one
        beamline.put("odd names", f"{folders[-1]}/{LONG_NAME}")
        for i in range(SIZE.manual):  # 7. two manual triggers in one second over the same files
            beamline.put("two manual triggers", f"{MANUAL_DIR}/m-{i}.hdf5", as_pipeline=True)
        conf = {"paths": [f"{MANUAL_DIR}/m-*.hdf5"]}
        manual = [pipeline.api.trigger(INGEST, conf, note="facility day 1"),
                  pipeline.api.trigger(INGEST, conf, note="facility day 2")]
        timings["uploads"] = time.monotonic() - t
        print(f"manual runs: {manual}")

        # 2b. overwrites while the first version's run is in flight
        t = time.monotonic()
        for note in overwrite_in_flight(beamline, pipeline, firsts, timeout=240):
            print("in flight:", note)
        timings["in-flight overwrites"] = time.monotonic() - t

        t = time.monotonic()
        settle(stack, ledger, SIZE.settle_timeout)
        timings["settle"] = time.monotonic() - t

        # the checks
        t = time.monotonic()
        evidence = gather(stack)
        outcomes = judge(ledger, evidence)
        with DCacheHook("dcache_main") as main, DCacheHook("dcache_buffer") as buffer:
            misattributed, summaries = misattributions(ledger, evidence.lineage, hook_json_reader(main))
            markers, archive = marker_problems(ledger, outcomes, main)
            orphans = orphan_outputs(main, evidence.lineage)
            leftovers: list[str] = []
            try:
                _wait("the buffer's /data/work to be empty", lambda: not buffer.list_dir("/data/work"), 60, 2)
            except TimeoutError:
                leftovers = [f"{e.path} ({e.file_type})" for e in buffer.list_dir("/data/work")]
        timings["checks"] = time.monotonic() - t
    finally:
        beamline.close()
    timings["total"] = time.monotonic() - t0

    report = table(ledger, outcomes, misattributed)
    print("\nfacility day (" + ("soak" if SIZE is SOAK else "CI") + " size):\n" + report)
    print("\nper version:\n" + details(outcomes))
    print(f"\nruns: {len(evidence.runs)} "
          f"({sum(r['state'] == 'success' for r in evidence.runs)} success, "
          f"{sum(r['state'] == 'failed' for r in evidence.runs)} failed); lineage records: {len(evidence.lineage)}; "
          f"summaries read: {summaries}")
    print("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    for title, lines in (("misattributed", misattributed), ("markers", markers), ("archive", archive),
                         ("buffer leftovers", leftovers), ("orphan outputs", orphans),
                         ("failed tasks without VersionChanged", evidence.unexplained_failures)):
        if lines:
            print(f"\n{title}:\n  " + "\n  ".join(lines))

    twice = [o for o in outcomes if o.verdict == "processed twice"]
    lost = [o for o in outcomes if o.verdict == "lost"]
    failures = []
    if misattributed:
        failures.append(f"{len(misattributed)} misattributed: {misattributed[:5]}")
    if twice:
        failures.append("processed more than once: " + "; ".join(
            f"{o.version.path} {o.version.pnfsid} by {[r.get('run_id') for r in o.lineage]}" for o in twice))
    if lost:
        failures.append("lost: " + "; ".join(f"{o.version.scenario} {o.version.path} {o.version.pnfsid}"
                                             for o in lost))
    if markers:
        failures.append(f"done-markers: {markers}")
    if archive:
        failures.append(f"newest versions not on tape: {archive}")
    # Outputs a run published for a version before a later step refused it (VersionChanged) are removed
    # by the run's clean-up: every output left must be named by a lineage record.
    if orphans:
        failures.append(f"outputs under /data/processed that no lineage record names: {orphans[:10]}")
    if leftovers:
        failures.append(f"left under /data/work on the buffer: {leftovers}")
    assert not failures, "\n".join(failures)

