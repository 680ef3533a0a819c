"""The rest of the example pipelines end to end: real sites, a real scheduler + triggerer + dag-processor + API.

- ``dcache_reprocess``: backfills through ``airflow backfill create`` and ``POST /api/v2/backfills``
  (its own sites and Airflow, since the function directory is changed between backfills and the
  cadence is one minute);
- ``dcache_video_deshake`` on the docker runtime (its own sites and Airflow: the DAG reads the runtime
  when it is parsed);
- one shared facility (``main`` publishing billing to a tansu broker, ``buffer``, an Airflow with every
  example DAG including ``dcache_ingest_billing``) for stage-and-process, de-shake (local runtime),
  the Kafka-triggered ingest and, last, the secrets sweep over everything these runs left behind.

Each test prints ``MEASURE`` lines (durations, upload→processed latencies); run with ``-s`` to see them.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_dcache.demo import default_dags_folder
from airflow_dcache.demo.samples import write_cxi, write_shaky_video
from airflow_dcache.events import lineage_records
from airflow_dcache.testing.airflow_stack import AirflowStack, airflow_executable
from airflow_dcache.testing.sites import Sites, start_sites, wait_for_watches
from tests.functions.support import docker_url, function_image  # noqa: F401 - fixtures
from tests.kafka_broker import CONSUMER_DEFAULTS, KafkaBroker, unique_topic

INGEST, BILLING = "dcache_ingest_pipeline", "dcache_ingest_billing"
STAGE, DESHAKE, REPROCESS = "dcache_stage_and_process", "dcache_video_deshake", "dcache_reprocess"
PROCESSED = "dcache://main/data/processed"
FINAL = {"success", "failed"}
BILLING_GROUP = "e2e-ingest-billing"


def measure(name: str, **values: Any) -> None:
    print(f"MEASURE {name} " + " ".join(f"{k}={v}" for k, v in values.items()), flush=True)


def _iso(text: str | None) -> datetime:
    assert text, "missing timestamp"
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _wait(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not after {timeout:.0f} s")


def _wait_run(stack: AirflowStack, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
    run = _wait(lambda: (r := stack.api.dag_run(dag_id, run_id))["state"] in FINAL and r, timeout,
                f"{dag_id} run {run_id}", interval=2)
    return dict(run)


def _put(sites: Sites, user: str, local: Path, path: str) -> float:
    """Upload as ``user``; returns the wall-clock time the upload completed."""
    with open(local, "rb") as f:
        requests.put(f"{sites.main.webdav}{path}", data=f, auth=(user, sites.passwords[user]),
                     timeout=60).raise_for_status()
    return time.time()


def _lineage(stack: AirflowStack, dag_id: str) -> dict[str, list[dict[str, Any]]]:
    """Lineage records of ``dag_id`` by input path, each with the asset event's timestamp."""
    out: dict[str, list[dict[str, Any]]] = {}
    for ev in stack.api.asset_events(PROCESSED):
        for extra in lineage_records(ev.get("extra")):
            if extra.get("dag_id") == dag_id:
                out.setdefault(extra["input"]["path"], []).append({**extra, "_timestamp": ev["timestamp"]})
    return out


def _wait_lineage(stack: AirflowStack, dag_id: str, paths: set[str], timeout: float) -> dict[str, list[dict]]:
    def done() -> dict[str, list[dict]] | None:
        failed = [r["dag_run_id"] for r in stack.api.dag_runs(dag_id) if r["state"] == "failed"]
        assert not failed, f"{dag_id}: failed runs {failed}"
        seen = _lineage(stack, dag_id)
        return seen if paths <= set(seen) else None

    return dict(_wait(done, timeout, f"{dag_id}: lineage of {sorted(paths)}", interval=2))


def _p50_latency(uploaded: dict[str, float], lineage: dict[str, list[dict]]) -> float:
    lags = [_iso(lineage[p][0]["_timestamp"]).timestamp() - t for p, t in uploaded.items()]
    return round(statistics.median(lags), 2)


# ---------------------------------------------------------------------------------------- reprocess


def test_reprocess_schedule_has_a_real_data_interval() -> None:
    """Regression: a bare ``"@daily"`` is a zero-length interval in Airflow 3, so no mtime would ever match."""
    from airflow.dag_processing.dagbag import DagBag

    dagbag = DagBag(dag_folder=str(default_dags_folder() / "dcache_reprocess.py"))
    assert not dagbag.import_errors, dagbag.import_errors
    timetable = dagbag.dags[REPROCESS].timetable
    interval = timetable.infer_manual_data_interval(run_after=datetime(2026, 11, 2, 12, tzinfo=UTC))
    assert interval.end - interval.start == timedelta(days=1), interval


def test_lineage_from_the_function_operator_result_names_function_digest_and_record() -> None:
    """Regression: the lineage of the DAGs said ``unknown`` for the function and ``None`` for the record.

    The DAGs hand ``DCacheFunctionOperator``'s return value to ``build_lineage``; it carries
    ``function_digest`` and ``activation_record`` (a path), not the activation record's ``function``.
    """
    from airflow_dcache.pipelines.steps import build_lineage

    result = {"outputs": [{"path": "/data/processed/x/a.png", "size": 3, "checksums": {"adler32": "01"}}],
              "activation_record": "/data/processed/x/.activation-r.json", "function_digest": "sha256:" + "ab" * 32}
    item = {"key": "k", "path": "/data/incoming/a.h5", "site": "main", "pnfsid": "P", "checksums": {}}
    lineage = build_lineage(item, result, output_site="main", dag_id="d", run_id="r", function_name="hdf5-preview")
    assert lineage["function"] == {"name": "hdf5-preview", "digest": "sha256:" + "ab" * 32}
    assert lineage["activation_record"] == "/data/processed/x/.activation-r.json"
    record = {"function": {"name": "deshake", "digest": "sha256:cd"}, "outputs": [], "record_path": "/r.json"}
    assert build_lineage(item, record, output_site="main", dag_id="d", run_id="r")["function"]["name"] == "deshake"


def _read_json(hook: Any, path: str) -> Any:
    buf = io.BytesIO()
    hook.download(path, buf)
    return json.loads(buf.getvalue())


def _listing(hook: Any, path: str) -> dict[str, tuple[int | None, str]]:
    """``{relative path: (size, adler32)}`` of every file below ``path`` (directories as ``(None, "dir")``)."""
    out: dict[str, tuple[int | None, str]] = {}

    def walk(directory: str, prefix: str) -> None:
        for entry in hook.list_dir(directory):
            rel = f"{prefix}{entry.name}"
            if entry.file_type == "DIR":
                out[rel + "/"] = (None, "dir")
                walk(f"{directory}/{entry.name}", rel + "/")
            else:
                sums = hook.checksum(f"{directory}/{entry.name}", ("adler32",))
                out[rel] = (entry.size, str(sums.get("adler32")))

    walk(path, "")
    return out


def _backfill(stack: AirflowStack, start: datetime, end: datetime, conf: dict[str, Any], *, via: str) -> int:
    """A backfill of ``REPROCESS`` over ``[start, end]``, waited for until it completed.

    ``via="cli"``: ``airflow backfill create`` as docs/pipelines.md tells an operator to type it;
    ``via="api"``: ``POST /api/v2/backfills`` as the UI's backfill dialog sends it
    (``AirflowStack.backfill``). Both wait out a scheduler's write lock (the stack's SQLite busy
    timeout). A creation can still meet a locked database at once (a read in its savepoint that must
    become a write after another component committed); then the stack is recovered
    (``AirflowStack.recover_after_lock``) and the creation tried again, a bounded number of times.
    """
    if via == "api":
        backfill = stack.backfill(REPROCESS, start.isoformat(), end.isoformat(), dag_run_conf=conf,
                                  reprocess_behavior="completed")
        return int(backfill["id"])
    assert via == "cli", via
    cmd = [airflow_executable(), "backfill", "create", "--dag-id", REPROCESS,
           "--from-date", start.isoformat(), "--to-date", end.isoformat(),
           "--reprocess-behavior", "completed", "--dag-run-conf", json.dumps(conf)]
    locked = False
    for attempt in range(1, 5):
        before = {b["id"] for b in stack.api.paged("/backfills", "backfills", {"dag_id": REPROCESS})}
        proc = subprocess.run(cmd, env=stack.env, capture_output=True, text=True, timeout=240)
        output = proc.stdout[-2000:] + proc.stderr[-2000:]
        locked = locked or "database is locked" in output
        retry = "database is locked" in output or (locked and "AlreadyRunningBackfill" in output)
        if proc.returncode == 0 or not retry or attempt == 4:
            break
        print(output[-1500:], flush=True)
        measure("reprocess_cli_locked", attempt=attempt, **stack.recover_after_lock(REPROCESS))
        time.sleep(attempt)
    assert proc.returncode == 0, output
    backfills = stack.api.paged("/backfills", "backfills", {"dag_id": REPROCESS})
    created = [b["id"] for b in backfills if b["id"] not in before]
    assert len(created) == 1, (backfills, proc.stdout[-2000:])
    stack.wait_backfill(int(created[0]), timeout=400)
    return int(created[0])


def test_reprocess_backfill_versioned_idempotent_and_new_version_on_code_change(
        dcache_sites: Sites, airflow_stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_dcache.functions import registry
    from airflow_dcache.functions.registry import find_function
    from airflow_dcache.hooks import DCacheHook

    started = time.monotonic()
    sites = dcache_sites
    functions = tmp_path / "functions"
    shutil.copytree(registry.LIBRARY_DIR, functions)
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(default_dags_folder() / "dcache_reprocess.py", dags)
    stack = airflow_stack(dags, {
        **sites.connections(), "AIRFLOW_DCACHE_FUNCTION_RUNTIME": "local",
        "AIRFLOW_DCACHE_FUNCTIONS_DIR": str(functions),
        # One-minute intervals: a backfill over files uploaded a minute ago, instead of waiting a day.
        "AIRFLOW_DCACHE_REPROCESS_SCHEDULE": "* * * * *",
    }, dag_ids=[REPROCESS])
    for key, value in sites.connections().items():
        monkeypatch.setenv(key, value)
    directory = "/data/archive/reprocess-e2e"
    names = [f"rp-{i}.h5" for i in range(3)]
    with DCacheHook("dcache_main") as hook:
        hook.mkdir(directory)
        # All uploads inside one minute: start right after a minute boundary.
        if datetime.now(UTC).second > 40:
            time.sleep(61 - datetime.now(UTC).second)
        for i, name in enumerate(names):
            _put(sites, "pipeline", write_cxi(tmp_path / name, seed=200 + i, frames=3), f"{directory}/{name}")
        mtimes = {n: hook.stat(f"{directory}/{n}").mtime for n in names}
    minutes = {datetime.fromtimestamp(int(m or 0) / 1000, UTC).replace(second=0, microsecond=0)
               for m in mtimes.values()}
    assert len(minutes) == 1, mtimes
    (minute,) = minutes
    # Wait until the files' interval [minute, minute+1) has ended (backfills only cover ended intervals),
    # and until the scheduler's own run of that interval (default params: /data/incoming) is done.
    time.sleep(max(0.0, (minute + timedelta(minutes=1, seconds=3) - datetime.now(UTC)).total_seconds()))
    _wait(lambda: not [r for r in stack.api.dag_runs(REPROCESS) if r["state"] not in FINAL], 120,
          "scheduled runs finished")
    start, end = minute - timedelta(minutes=2), minute
    conf = {"directory": directory}

    def runs_in_range() -> list[dict[str, Any]]:
        return sorted((r for r in stack.api.dag_runs(REPROCESS)
                       if r.get("logical_date") and start <= _iso(r["logical_date"]) <= end),
                      key=lambda r: r["logical_date"])

    def selected() -> dict[str, list[str]]:
        return {r["dag_run_id"]: sorted(f["name"] for f in stack.api.xcom(REPROCESS, r["dag_run_id"], "select") or [])
                for r in runs_in_range()}

    t0 = time.monotonic()
    _backfill(stack, start, end, conf, via="cli")
    first_backfill = time.monotonic() - t0
    runs = runs_in_range()
    assert len(runs) == 3 and {r["state"] for r in runs} == {"success"}, runs
    assert {r["run_type"] for r in runs} == {"backfill"}, runs
    picks = selected()
    assert sorted(map(len, picks.values())) == [0, 0, 3], picks  # the upload minute, and only it
    assert sorted(next(v for v in picks.values() if v)) == names

    digest1 = find_function("hdf5-preview", functions).digest.split(":", 1)[1][:12]
    stems = [n.removesuffix(".h5") for n in names]
    with DCacheHook("dcache_main") as hook:
        # one folder per file version: the file's path and its pnfsid, never its stem alone
        folders = {n.removesuffix(".h5"): f"/data/processed/reprocess{directory}/{n}/"
                   f"{hook.stat(f'{directory}/{n}').pnfsid}" for n in names}
        first = {s: _listing(hook, folders[s]) for s in stems}
        for stem, files in first.items():
            assert f"{digest1}/" in files and {k for k in files if k.endswith("/")} == {f"{digest1}/"}, files
            assert {f"{digest1}/{stem}.preview.png", f"{digest1}/{stem}.summary.json"} <= set(files), files
            records = [k for k in files if k.startswith(f"{digest1}/.activation-")]
            assert len(records) == 1, files
            record = _read_json(hook, f"{folders[stem]}/{records[0]}")
            assert record["function"]["digest"].endswith(digest1) or digest1 in record["function"]["digest"]

        # The same range again: the same outputs in the same place, nothing else.
        t0 = time.monotonic()
        _backfill(stack, start, end, conf, via="api")
        second_backfill = time.monotonic() - t0
        assert {r["state"] for r in runs_in_range()} == {"success"}
        again = {s: _listing(hook, folders[s]) for s in stems}
        for stem in stems:
            assert set(again[stem]) == set(first[stem]), (stem, again[stem], first[stem])
            for name, (size, adler) in first[stem].items():
                if "/.activation-" not in name:  # the record's times differ; its name and place do not
                    assert again[stem][name] == (size, adler), name

        # One changed byte in the function's code: a new version folder, the old one untouched.
        main_py = functions / "hdf5-preview" / "main.py"
        main_py.write_bytes(main_py.read_bytes() + b"\n")
        digest2 = find_function("hdf5-preview", functions).digest.split(":", 1)[1][:12]
        assert digest2 != digest1
        _backfill(stack, start, end, conf, via="api")
        changed = {s: _listing(hook, folders[s]) for s in stems}
        for stem in stems:
            old = {k: v for k, v in changed[stem].items() if k.startswith(f"{digest1}/")}
            assert old == again[stem], stem  # byte-for-byte (size and adler32) the same, records included
            new = {k for k in changed[stem] if k.startswith(f"{digest2}/")}
            assert {f"{digest2}/", f"{digest2}/{stem}.preview.png", f"{digest2}/{stem}.summary.json"} <= new
            assert {k for k in changed[stem] if k.endswith("/")} == {f"{digest1}/", f"{digest2}/"}
    measure("reprocess", first_backfill_s=round(first_backfill, 1), second_backfill_s=round(second_backfill, 1),
            test_s=round(time.monotonic() - started, 1))


# ------------------------------------------------------------------------------------ deshake, docker


def test_video_deshake_on_the_docker_runtime(dcache_sites: Sites, airflow_stack: Any, docker_url: str,  # noqa: F811
                                              function_image: Callable[[str], str], tmp_path: Path,  # noqa: F811
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    function_image("deshake")  # built (cached by content hash) and tagged :latest, as make function-images does
    sites = dcache_sites
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(default_dags_folder() / "dcache_video_deshake.py", dags)
    stack = airflow_stack(dags, {**sites.connections(), "AIRFLOW_DCACHE_FUNCTION_RUNTIME": "docker",
                                 "DOCKER_HOST": docker_url}, dag_ids=[DESHAKE])
    for key, value in sites.connections().items():
        monkeypatch.setenv(key, value)
    wait_for_watches("dcache_main", 1)
    _check_deshake(sites, stack, tmp_path, "docker-shaky.mp4", "docker")
    measure("deshake_docker", test_s=round(time.monotonic() - started, 1))


def _check_deshake(sites: Sites, stack: AirflowStack, tmp_path: Path, name: str, runtime: str) -> None:
    from airflow_dcache.hooks import DCacheHook

    path = f"/data/videos/{name}"
    uploaded = _put(sites, "alice", write_shaky_video(tmp_path / name), path)
    lineage = _wait_lineage(stack, DESHAKE, {path}, timeout=400)
    (record,) = lineage[path]
    outputs = sorted(o["path"] for o in record["outputs"])
    stem = name.removesuffix(".mp4")
    assert [p.rsplit("/", 1)[1] for p in outputs] == [f"{stem}.deshaked.mp4", f"{stem}.split.mp4"], outputs
    assert all(p.startswith("/data/processed/videos/") for p in outputs), outputs
    assert record["function"]["name"] == "deshake" and record["function"]["digest"].startswith("sha256:")
    with DCacheHook("dcache_main") as hook:
        for out in record["outputs"]:
            entry = hook.stat(out["path"], checksum=True)
            assert entry.size and entry.size == out["size"], out
        activation = _read_json(hook, record["activation_record"])
        assert activation["status"] == "success" and activation["function"]["runtime"] == runtime
        assert "airflow_dcache.done.dcache_video_deshake" in (hook.stat(path, xattr=True).xattrs or {})
    measure(f"deshake_{runtime}", upload_to_lineage_s=round(_iso(record["_timestamp"]).timestamp() - uploaded, 2),
            function_s=activation.get("duration"))


# ------------------------------------------------------------------------------- the shared facility


def _wait_billing_consumer(broker: KafkaBroker, topic: str, stack: AirflowStack, timeout: float = 120) -> None:
    """Until the billing watcher's group has its start offset pinned (the trigger commits it on assignment).

    The trigger starts from ``latest``: uploads before its consumer is assigned would not be seen.
    """
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})

    def pinned() -> bool:
        try:
            futures = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(BILLING_GROUP, [TopicPartition(topic, 0)])], request_timeout=5)
            result = next(iter(futures.values())).result(timeout=10)
            if any(tp.offset >= 0 for tp in result.topic_partitions):
                return True
        except Exception:
            pass
        log = stack.log_path("triggerer").read_text(errors="replace")
        return f"group {BILLING_GROUP!r} had no committed offset" in log

    _wait(pinned, timeout, "billing consumer assigned", interval=1)


@pytest.fixture(scope="module")
def facility(tmp_path_factory: pytest.TempPathFactory, kafka_broker: KafkaBroker) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("facility")
    topic = unique_topic("billing-e2e")
    kafka_broker.create_topic(topic)
    started = time.monotonic()
    sites = start_sites(base / "sites", fast_hash=True, log_dir=base,
                        main_args=["--kafka-bootstrap", kafka_broker.bootstrap, "--kafka-topic", topic])
    kafka_conn = {"conn_type": "kafka", "extra": {
        "bootstrap.servers": kafka_broker.bootstrap, "group.id": BILLING_GROUP, "enable.auto.commit": False,
        **CONSUMER_DEFAULTS}}
    stack = AirflowStack(base / "airflow", default_dags_folder(), {
        **sites.connections(), "AIRFLOW_DCACHE_FUNCTION_RUNTIME": "local",
        "AIRFLOW_CONN_KAFKA_BILLING": json.dumps(kafka_conn), "AIRFLOW_DCACHE_BILLING_TOPIC": topic})
    saved = {k: os.environ.get(k) for k in sites.connections()}
    try:
        stack.start()
        stack.wait_dags([INGEST, BILLING, REPROCESS, STAGE, DESHAKE])
        os.environ.update(sites.connections())
        wait_for_watches("dcache_main", 2)  # incoming (ingest) and videos (deshake)
        _wait_billing_consumer(kafka_broker, topic, stack)
        measure("facility_start", seconds=round(time.monotonic() - started, 1))
        yield {"sites": sites, "stack": stack, "base": base, "broker": kafka_broker, "topic": topic}
    finally:
        stack.stop()
        sites.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_stage_and_process_tape_only_files(facility: dict[str, Any], tmp_path: Path) -> None:
    from airflow_dcache.hooks import DCacheHook

    started = time.monotonic()
    sites, stack = facility["sites"], facility["stack"]
    directory = "/data/archive/stage-e2e"
    names = [f"tape-{i}.h5" for i in range(3)]
    with DCacheHook("dcache_main") as hook:
        hook.mkdir(directory)
        for i, name in enumerate(names):
            _put(sites, "pipeline", write_cxi(tmp_path / name, seed=300 + i, frames=3), f"{directory}/{name}")
            hook.set_qos(f"{directory}/{name}", "tape")
        _wait(lambda: all(hook.stat(f"{directory}/{n}", locality=True).locality == "NEARLINE" for n in names), 120,
              "files on tape only")
    t0 = time.monotonic()
    run_id = stack.api.trigger(STAGE, {"paths": [f"{directory}/*.h5"]}, note="tape recall from the UI form")
    run = _wait_run(stack, STAGE, run_id, timeout=400)
    run_seconds = time.monotonic() - t0
    tis = stack.api.task_instances(STAGE, run_id)
    assert run["state"] == "success", [(t["task_id"], t["map_index"], t["state"]) for t in tis]
    by = {(t["task_id"], t["map_index"]): t for t in tis}
    assert {by[("file.wait_online", i)]["state"] for i in range(3)} == {"success"}
    assert {by[("file.preview", i)]["state"] for i in range(3)} == {"success"}
    for i in range(3):  # each file's preview waits for that file only
        assert _iso(by[("file.preview", i)]["start_date"]) >= _iso(by[("file.wait_online", i)]["end_date"])
    last_online = max(_iso(by[("file.wait_online", i)]["end_date"]) for i in range(3))
    first_preview = min(_iso(by[("file.preview", i)]["start_date"]) for i in range(3))
    with DCacheHook("dcache_main") as hook:
        for i, name in enumerate(names):
            result = stack.api.xcom(STAGE, run_id, "file.preview", map_index=i)
            stem = name.removesuffix(".h5")
            assert sorted(o.rsplit("/", 1)[1] if isinstance(o, str) else o["path"].rsplit("/", 1)[1]
                          for o in result["outputs"]) == [f"{stem}.preview.png", f"{stem}.summary.json"]
            assert "ONLINE" in (hook.stat(f"{directory}/{name}", locality=True).locality or "")
    measure("stage_and_process", run_s=round(run_seconds, 1), test_s=round(time.monotonic() - started, 1),
            preview_started_before_last_online=first_preview < last_online,
            overlap_s=round((last_online - first_preview).total_seconds(), 2))


def test_video_deshake_local_runtime(facility: dict[str, Any], tmp_path: Path) -> None:
    started = time.monotonic()
    _check_deshake(facility["sites"], facility["stack"], tmp_path, "local-shaky.mp4", "local")
    measure("deshake_local", test_s=round(time.monotonic() - started, 1))


def test_ingest_by_kafka_billing_each_file_once_per_dag(facility: dict[str, Any], tmp_path: Path) -> None:
    from airflow_dcache.hooks import DCacheHook

    started = time.monotonic()
    sites, stack = facility["sites"], facility["stack"]
    names = [f"billing-{i:02d}.h5" for i in range(5)]
    uploaded = {f"/data/incoming/{n}": _put(sites, "alice", write_cxi(tmp_path / n, seed=400 + i, frames=3),
                                            f"/data/incoming/{n}") for i, n in enumerate(names)}
    paths = set(uploaded)
    billing = _wait_lineage(stack, BILLING, paths, timeout=600)
    sse = _wait_lineage(stack, INGEST, paths, timeout=600)
    time.sleep(5)  # a duplicate run would show up right behind
    billing, sse = _lineage(stack, BILLING), _lineage(stack, INGEST)
    assert {p: len(billing[p]) for p in paths} == dict.fromkeys(paths, 1), billing
    assert {p: len(sse[p]) for p in paths} == dict.fromkeys(paths, 1), sse
    billing_runs = stack.api.dag_runs(BILLING)
    assert billing_runs and all(r["run_type"] == "asset_triggered" for r in billing_runs), billing_runs
    with DCacheHook("dcache_main") as hook:
        for path in paths:
            entry = hook.stat(path, locality=True, xattr=True)
            assert {"airflow_dcache.done.dcache_ingest_billing", "airflow_dcache.done.dcache_ingest_pipeline"} <= set(
                entry.xattrs or {})
            assert "NEARLINE" in (entry.locality or "")
            for out in billing[path][0]["outputs"]:
                assert hook.exists(out["path"]), out
    measure("ingest_billing", files=len(paths), billing_p50_upload_to_lineage_s=_p50_latency(uploaded, billing),
            sse_p50_upload_to_lineage_s=_p50_latency(uploaded, sse), billing_runs=len(billing_runs),
            test_s=round(time.monotonic() - started, 1))


def test_no_secret_anywhere_after_the_runs(facility: dict[str, Any]) -> None:
    """Issue 12, "Secrets": after the runs above, grep every place a secret could have been written."""
    from tests.security.test_pipeline_secrets import known_secrets, sweep_deployment

    started = time.monotonic()
    sites, stack, base = facility["sites"], facility["stack"], facility["base"]
    runs = {d: len(stack.api.dag_runs(d)) for d in (INGEST, BILLING, STAGE, DESHAKE)}
    assert runs[STAGE] and runs[DESHAKE] and runs[BILLING] and runs[INGEST], runs  # the runs to sweep
    secrets = known_secrets(sites, stack)
    report = sweep_deployment(sites, stack, service_logs=sorted(base.glob("dcache-*.log")), secrets=secrets)
    measure("secrets_sweep", **{k: v for k, v in report.counts.items()}, seconds=round(time.monotonic() - started, 1))
    assert not report.findings, "\n".join(report.findings[:50])
    # The sweep looked where it should: these places held data.
    assert report.counts["task_logs"] > 10 and report.counts["xcom_values"] > 10
    assert report.counts["rendered_fields"] > 10 and report.counts["activation_records"] >= 4
    # asset events: the watchers' batches and the lineage (the chunked ingest design emits one per chunk)
    assert report.counts["asset_events"] >= 5 and report.counts["trigger_rows"] >= 1
