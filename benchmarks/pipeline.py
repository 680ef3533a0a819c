"""Pipeline latency: upload → outputs published and → archived, per file, over a burst, through real Airflow.

For each design of the ingest pipeline (``per_file``: a task group mapped over files; ``chunked``: mapped
over chunks of files, the default, see docs/pipelines.md) it starts what ``make demo`` starts (two
sites, a real scheduler/triggerer/dag-processor/API server, the example DAGs,
``$AIRFLOW_DCACHE_PIPELINE_DESIGN`` set), uploads ``--files`` CXI runs, and reads from Airflow's REST API
when each file's stages ended: the run's creation (the storage event reached Airflow), its outputs'
publication on ``main``, its archiving (on tape, lineage recorded). Per-file design: the end of the
file's ``file.publish`` and ``file.record_lineage`` tasks; chunked design: the per-file timings of the
run's ``report`` (XCom ``outcomes``). Also counted: task instances per run, the speed-up of the chunked
design to the last output (burst start → last file's outputs published), and the scheduler's loop
time (Airflow's own ``scheduler.scheduler_loop_duration`` timer, received over statsd on loopback).

Two shapes of load:

- a **burst** (default): ``--files`` uploads as fast as one client sends them;
- **sustained** (``--rate R --duration S``): R uploads per second for S seconds, spread evenly; the
  report adds the backlog (files uploaded but not yet published) sampled every 10 s, which must stay
  bounded rather than grow with time.

    .venv/bin/airflow-dcache bench pipeline [--files 20] [--design per_file|chunked|both] [--chunk-files N]
        [--runtime local|docker] [--rate 10 --duration 300]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) not in sys.path:  # also importable as benchmarks.pipeline
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import default_results_path, format_table, machine_info, write_json

from airflow_dcache.pipelines.chunks import DEFAULT_MAX_FILES

DAG_ID = "dcache_ingest_pipeline"
#: the example DAG's parse-time knobs a benchmark run may set in its own environment
PASSED_THROUGH = ("AIRFLOW_DCACHE_BATCH_MIN_INTERVAL", "AIRFLOW_DCACHE_CHUNK_MAX_COUNT",
                  "AIRFLOW_DCACHE_CHUNK_CONCURRENCY", "AIRFLOW_DCACHE_CHUNK_MAX_BYTES", "AIRFLOW_DCACHE_WARM_INSTANCES")
DESIGNS = ("per_file", "chunked")
#: Above this many files the per-file design is not run: 8 task instances per file swamp a 2-core scheduler
#: (and ``[core] max_map_length``, 1,024, caps it anyway).
PER_FILE_MAX = 500
#: The statsd timer of one scheduler loop (Airflow's name, with the default ``airflow`` prefix).
LOOP_METRIC = b"airflow.scheduler.scheduler_loop_duration:"


class LoopTimes:
    """A statsd sink on loopback that keeps the scheduler's loop durations (ms) as they arrive."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.samples: list[tuple[float, float]] = []  # (time.time(), milliseconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="statsd-sink", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except OSError:
                continue
            for line in data.splitlines():
                if line.startswith(LOOP_METRIC):
                    try:
                        self.samples.append((time.time(), float(line[len(LOOP_METRIC):].split(b"|")[0])))
                    except ValueError:
                        continue

    def env(self) -> dict[str, str]:
        return {"AIRFLOW__METRICS__STATSD_ON": "True", "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
                "AIRFLOW__METRICS__STATSD_PORT": str(self.port), "AIRFLOW__METRICS__STATSD_PREFIX": "airflow"}

    def summary(self, start: float, end: float) -> dict[str, Any]:
        """Loop durations (ms) between ``start`` and ``end`` (epoch seconds): count, p50, p99, max."""
        values = [ms for t, ms in self.samples if start <= t <= end]
        if not values:
            return {"loops": 0}
        return {"loops": len(values), "p50_ms": _percentile(values, 0.5), "p99_ms": _percentile(values, 0.99),
                "max_ms": max(values)}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def cpu_seconds(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) so far of each named process tree, the scheduler's tasks apart.

    Exact for processes that ended: a reaped child's time is in its parent's ``children_*`` times, so the
    sum over the *live* processes of a tree of their own and their reaped children's times covers
    every task process the LocalExecutor's workers forked and waited for, however short it lived. The
    scheduler's descendants (workers, task supervisors, tasks and the functions they start) are
    ``tasks``, the scheduler process itself is ``scheduler``.
    """
    import psutil

    def total(proc: psutil.Process) -> float:
        t = proc.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    result: dict[str, float] = {}
    for name, pid in roots.items():
        try:
            root = psutil.Process(pid)
            own = total(root)
            below = sum(total(child) for child in root.children(recursive=True))
        except psutil.Error:  # a component that is gone counts nothing (the run's other numbers say why)
            continue
        if name == "scheduler":
            result["scheduler"], result["tasks"] = own, below
        else:
            result[name] = own + below
    return result


def cpu_report(before: dict[str, float], after: dict[str, float], files: int, seconds: float) -> dict[str, Any]:
    """CPU seconds per component between two :func:`cpu_seconds`, per file, and the machine's share used."""
    used = {k: max(0.0, after.get(k, 0.0) - before.get(k, 0.0)) for k in after}
    cores = os.cpu_count() or 1
    return {"cpu_seconds": used, "cpu_ms_per_file": {k: 1000 * v / files for k, v in used.items()},
            "cpu_ms_per_file_total": 1000 * sum(used.values()) / files, "seconds": seconds, "cores": cores,
            "utilisation": sum(used.values()) / (seconds * cores) if seconds > 0 else None}


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def run(files: int, runtime: str, timeout: float, design: str = "chunked", chunk_files: int | None = None,
        rate: float | None = None) -> dict[str, Any]:
    """One design over one load (``files`` uploads; at ``rate`` per second when given), on its own stack."""
    import requests

    from airflow_dcache.demo import default_dags_folder
    from airflow_dcache.demo.samples import write_cxi
    from airflow_dcache.testing.airflow_stack import AirflowStack
    from airflow_dcache.testing.sites import start_sites, wait_for_watches

    loops = LoopTimes()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        base = Path(tmp)
        sites = start_sites(base / "sites", fast_hash=True, log_dir=base)
        stack = AirflowStack(base / "airflow", default_dags_folder(),
                             {**sites.connections(), "AIRFLOW_DCACHE_FUNCTION_RUNTIME": runtime,
                              "AIRFLOW_DCACHE_PIPELINE_DESIGN": design, **loops.env(),
                              **({"AIRFLOW_DCACHE_CHUNK_MAX_FILES": str(chunk_files)} if chunk_files else {}),
                              # the DAG's other knobs as set for this benchmark (e.g. the watcher's pacing)
                              **{k: v for k, v in os.environ.items() if k in PASSED_THROUGH}})
        try:
            t0 = time.monotonic()
            stack.start()
            stack.wait_dags([DAG_ID])
            os.environ.update(sites.connections())
            wait_for_watches("dcache_main", 2)
            startup = time.monotonic() - t0
            roots = {**{name: proc.pid for name, proc in stack.processes.items()},
                     **{f"site {site.name}": site.process.pid for site in (sites.main, sites.buffer)}}
            cpu_before, cpu_t0 = cpu_seconds(roots), time.monotonic()
            uploaded: dict[str, float] = {}
            # a few distinct samples, copied: 2,000 files need not be 2,000 HDF5 writes (content differs by name)
            samples = [write_cxi(base / f"sample-{i}.h5", seed=i, frames=4).read_bytes() for i in range(min(files, 16))]
            auth = ("alice", sites.passwords["alice"])
            began = time.time()
            with requests.Session() as s:
                for i in range(files):
                    if rate:  # spread evenly: upload i goes at began + i / rate
                        time.sleep(max(0.0, began + i / rate - time.time()))
                    name = f"bench-{i:04d}.h5"
                    s.put(f"{sites.main.webdav}/data/incoming/{name}", data=samples[i % len(samples)], auth=auth,
                          timeout=60).raise_for_status()
                    uploaded[name] = time.time()
            burst = max(uploaded.values()) - min(uploaded.values())
            stages, task_counts = _wait(stack, set(uploaded), timeout, design)
            cpu = cpu_report(cpu_before, cpu_seconds(roots), files, time.monotonic() - cpu_t0)
            loop = loops.summary(began, max(t["lineage"] for t in stages.values()))
        finally:
            stack.stop()
            sites.stop()
            loops.close()
    result = summarise(design, files, runtime, startup, burst, uploaded, stages, task_counts)
    result["scheduler_loop"] = loop
    result["cpu"] = cpu
    if rate:
        result["sustained"] = {"rate_per_s": rate, "duration_s": files / rate, **backlog(uploaded, stages)}
    return {**result, "chunk_max_files": chunk_files or DEFAULT_MAX_FILES} if design == "chunked" else result


def backlog(uploaded: dict[str, float], stages: dict[str, dict[str, Any]], step: float = 10.0) -> dict[str, Any]:
    """Files uploaded but not yet published, every ``step`` seconds from the first upload to the last output."""
    first = min(uploaded.values())
    last = max(t["published"] for t in stages.values())
    samples = []
    t = first
    while t <= last + step:
        pending = sum(1 for name, up in uploaded.items() if up <= t and stages[name]["published"] > t)
        samples.append({"t": round(t - first, 1), "backlog": pending})
        t += step
    upload_end = max(uploaded.values())
    during = [s["backlog"] for s in samples if s["t"] <= upload_end - first]
    half = len(during) // 2
    return {"backlog_samples": samples, "backlog_max": max(s["backlog"] for s in samples),
            "backlog_first_half_max": max(during[:half] or [0]), "backlog_second_half_max": max(during[half:] or [0]),
            "drained_seconds_after_last_upload": round(last - upload_end, 1)}


def summarise(design: str, files: int, runtime: str, startup: float, burst: float, uploaded: dict[str, float],
              stages: dict[str, dict[str, Any]], task_counts: dict[str, int]) -> dict[str, Any]:
    """Latencies per file (p50/p99/max) and per burst (to the last output, to all archived)."""
    rows: dict[str, list[float]] = {"run created": [], "outputs published": [], "archived + lineage": []}
    for name, t in stages.items():
        rows["run created"].append(t["run"] - uploaded[name])
        rows["outputs published"].append(t["published"] - uploaded[name])
        rows["archived + lineage"].append(t["lineage"] - uploaded[name])
    first = min(uploaded.values())
    per_step: dict[str, list[float]] = {}
    for t in stages.values():
        for step, seconds in (t.get("steps") or {}).items():
            per_step.setdefault(step, []).append(seconds)
    return {"design": design, "files": files, "runtime": runtime, "startup_seconds": startup, "burst_seconds": burst,
            # the chunked design's per-file step durations (from its report): where a file's time went
            "step_seconds": {k: {"p50": _percentile(v, 0.5), "p99": _percentile(v, 0.99), "max": max(v)}
                             for k, v in per_step.items()},
            "latency_seconds": {k: {"p50": _percentile(v, 0.5), "p99": _percentile(v, 0.99), "max": max(v)}
                                for k, v in rows.items()},
            "last_output_seconds": max(t["published"] for t in stages.values()) - first,
            "all_archived_seconds": max(t["lineage"] for t in stages.values()) - first,
            "runs": len(task_counts), "task_instances": sum(task_counts.values()),
            "task_instances_per_run": task_counts}


def _per_file_times(stack: Any, run: dict[str, Any], names: set[str]) -> dict[str, dict[str, Any]]:
    items = stack.api.xcom(DAG_ID, run["dag_run_id"], "collect") or []
    tis = stack.api.task_instances(DAG_ID, run["dag_run_id"])
    created = _ts(run.get("queued_at") or run["start_date"])
    done = {}
    for index, item in enumerate(items):
        if item["name"] not in names:
            continue
        end = {ti["task_id"]: _ts(ti.get("end_date")) for ti in tis if ti["map_index"] == index}
        if "file.record_lineage" not in end:
            raise RuntimeError(f"run {run['dag_run_id']}: no lineage task for {item['name']} (index {index})")
        done[item["name"]] = {"run_id": run["dag_run_id"], "run": created, "published": end["file.publish"],
                              "lineage": end["file.record_lineage"]}
    return done


def _chunked_times(stack: Any, run: dict[str, Any], names: set[str]) -> dict[str, dict[str, Any]]:
    outcomes = stack.api.xcom(DAG_ID, run["dag_run_id"], "report", key="outcomes") or {"files": []}
    created = _ts(run.get("queued_at") or run["start_date"])
    done = {}
    for f in outcomes["files"]:
        name = str(f["path"]).rsplit("/", 1)[-1]
        if name not in names:
            continue
        if f["outcome"] != "processed":
            raise RuntimeError(f"run {run['dag_run_id']}: {f['path']} {f['outcome']}: {f.get('failed')}")
        timings = f["timings"]
        done[name] = {"run_id": run["dag_run_id"], "run": created, "published": timings["publish"][1],
                      "lineage": timings["record_lineage"][1],
                      "steps": {step: end - start for step, (start, end) in timings.items()}}
    return done


def _wait(stack: Any, names: set[str], timeout: float,
          design: str) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """Until every uploaded file is processed, once: its stage times, and the task instances of each run."""
    deadline = time.monotonic() + timeout
    done: dict[str, dict[str, Any]] = {}
    task_counts: dict[str, int] = {}
    read = _chunked_times if design == "chunked" else _per_file_times
    while time.monotonic() < deadline and set(done) != names:
        for run in stack.api.dag_runs(DAG_ID):
            if run["dag_run_id"] in task_counts or run["state"] not in ("success", "failed"):
                continue
            if run["state"] == "failed":
                raise RuntimeError(f"run {run['dag_run_id']} failed")
            found = read(stack, run, names)
            twice = sorted(set(found) & set(done))
            if twice:  # every file version is processed exactly once, or the numbers mean nothing
                raise RuntimeError(f"processed again in run {run['dag_run_id']} (first in "
                                   f"{done[twice[0]]['run_id']}): {twice[:10]}")
            done.update(found)
            task_counts[run["dag_run_id"]] = len(stack.api.task_instances(DAG_ID, run["dag_run_id"]))
        time.sleep(2)
    if set(done) != names:
        raise TimeoutError(f"not processed after {timeout:.0f} s: {sorted(names - set(done))[:10]}")
    return done, task_counts


def table(results: list[dict[str, Any]]) -> str:
    headers = ["design", "upload → ...", "p50 s", "p99 s", "max s"]
    rows: list[list[object]] = []
    for r in results:
        for stage, v in r["latency_seconds"].items():
            rows.append([r["design"], stage, f"{v['p50']:.1f}", f"{v['p99']:.1f}", f"{v['max']:.1f}"])
        rows.append([r["design"], "burst start → last output published", f"{r['last_output_seconds']:.1f}", "-", "-"])
        rows.append([r["design"], "burst start → all archived", f"{r['all_archived_seconds']:.1f}", "-", "-"])
        rows.append([r["design"], f"task instances ({r['runs']} runs)", str(r["task_instances"]), "-", "-"])
        loop = r.get("scheduler_loop") or {}
        if loop.get("loops"):
            rows.append([r["design"], f"scheduler loop ms ({loop['loops']} loops)", f"{loop['p50_ms']:.0f}",
                         f"{loop['p99_ms']:.0f}", f"{loop['max_ms']:.0f}"])
        if r.get("sustained"):
            b = r["sustained"]
            rows.append([r["design"], "backlog (files) 1st / 2nd half of uploads, max",
                         str(b["backlog_first_half_max"]), str(b["backlog_second_half_max"]), str(b["backlog_max"])])
        for step, v in (r.get("step_seconds") or {}).items():
            rows.append([r["design"], f"step {step}", f"{v['p50']:.2f}", f"{v['p99']:.2f}", f"{v['max']:.2f}"])
        cpu = r.get("cpu") or {}
        if cpu.get("cpu_ms_per_file"):
            parts = ", ".join(f"{k} {v:.0f}" for k, v in sorted(cpu["cpu_ms_per_file"].items(), key=lambda kv: -kv[1]))
            rows.append([r["design"], f"CPU ms per file: {cpu['cpu_ms_per_file_total']:.0f} ({parts})",
                         f"{100 * (cpu.get('utilisation') or 0):.0f}% of {cpu['cores']} cores", "-", "-"])
    return format_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--design", choices=[*DESIGNS, "both"], default="both")
    parser.add_argument("--runtime", choices=["local", "docker"], default="local")
    parser.add_argument("--chunk-files", type=int, help="chunked design: files per chunk (default: the DAG's, 50)")
    parser.add_argument("--rate", type=float, help="sustained load: uploads per second (with --duration)")
    parser.add_argument("--duration", type=float, help="sustained load: seconds of uploads (with --rate)")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if (args.rate is None) != (args.duration is None):
        parser.error("--rate and --duration go together")
    if args.rate is not None:
        if not (0 < args.rate <= 100 and 0 < args.duration <= 3600):
            parser.error("--rate must be in (0, 100] per second and --duration in (0, 3600] seconds")
        args.files = max(1, round(args.rate * args.duration))
    if not 1 <= args.files <= 5000:
        parser.error("--files must be 1..5000")
    designs = DESIGNS if args.design == "both" else (args.design,)
    if args.files > PER_FILE_MAX and "per_file" in designs:
        if args.design == "per_file":
            parser.error(f"--design per_file runs at most {PER_FILE_MAX} files (8 task instances per file)")
        designs = ("chunked",)
        print(f"per_file: not run over {args.files} files (at most {PER_FILE_MAX}: 8 task instances per file)")
    results = []
    for design in designs:
        print(f"{design}: {args.files} files" + (f" at {args.rate}/s" if args.rate else "") + " ...", flush=True)
        results.append(run(args.files, args.runtime, args.timeout, design, args.chunk_files, args.rate))
        r = results[-1]
        print(f"  uploaded in {r['burst_seconds']:.2f} s, {r['runs']} runs, {r['task_instances']} task instances, "
              f"Airflow start-up {r['startup_seconds']:.0f} s", flush=True)
    # the first design's numbers also at the top level, where earlier reports had them
    report: dict[str, Any] = {"benchmark": "pipeline", "machine": machine_info(), **results[0], "designs": results}
    by_design = {r["design"]: r for r in results}
    if len(by_design) == 2:
        report["speedup_last_output"] = (by_design["per_file"]["last_output_seconds"]
                                         / by_design["chunked"]["last_output_seconds"])
    print(table(results))
    if "speedup_last_output" in report:
        print(f"chunked vs per_file, burst start → last output published: {report['speedup_last_output']:.1f}x")
    out = args.out or default_results_path("pipeline")
    write_json(out, report)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
