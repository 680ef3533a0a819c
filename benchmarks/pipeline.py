"""Pipeline latency: upload → outputs published and → archived, per file, over a burst, through real Airflow.

For each design of the ingest pipeline (``per_file``: a task group mapped over files; ``chunked``: mapped
over chunks of files, see docs/pipelines.md) it starts what ``make demo`` starts (two sites, a real
scheduler/triggerer/dag-processor/API server, the example DAGs, ``$AIRFLOW_DCACHE_PIPELINE_DESIGN`` set),
uploads ``--files`` CXI runs as fast as it can, and reads from Airflow's REST API when each file's
stages ended: the run's creation (the storage event reached Airflow), its outputs' publication on
``main``, its archiving (on tape, lineage recorded). Per-file design: the end of the file's
``file.publish`` and ``file.record_lineage`` tasks; chunked design: the per-file timings of the run's
``report`` (XCom ``outcomes``). Also counted: task instances per run, and the speed-up of the chunked
design to the last output (burst start → last file's outputs published).

    .venv/bin/airflow-dcache bench pipeline [--files 20] [--design per_file|chunked|both] [--chunk-files N]
        [--runtime local|docker]
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

DAG_ID = "dcache_ingest_pipeline"
DESIGNS = ("per_file", "chunked")


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def run(files: int, runtime: str, timeout: float, design: str = "per_file",
        chunk_files: int | None = None) -> dict[str, Any]:
    """One design over one burst of ``files`` uploads, on its own sites and Airflow."""
    import requests

    from airflow_dcache.demo import default_dags_folder
    from airflow_dcache.demo.samples import write_cxi
    from airflow_dcache.testing.airflow_stack import AirflowStack
    from airflow_dcache.testing.sites import start_sites, wait_for_watches

    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        base = Path(tmp)
        sites = start_sites(base / "sites", fast_hash=True, log_dir=base)
        stack = AirflowStack(base / "airflow", default_dags_folder(),
                             {**sites.connections(), "AIRFLOW_DCACHE_FUNCTION_RUNTIME": runtime,
                              "AIRFLOW_DCACHE_PIPELINE_DESIGN": design,
                              **({"AIRFLOW_DCACHE_CHUNK_MAX_FILES": str(chunk_files)} if chunk_files else {})})
        try:
            t0 = time.monotonic()
            stack.start()
            stack.wait_dags([DAG_ID])
            os.environ.update(sites.connections())
            wait_for_watches("dcache_main", 2)
            startup = time.monotonic() - t0
            uploaded: dict[str, float] = {}
            locals_ = [write_cxi(base / f"bench-{i:03d}.h5", seed=i, frames=4) for i in range(files)]
            auth = ("alice", sites.passwords["alice"])
            with requests.Session() as s:
                for path in locals_:
                    with open(path, "rb") as f:
                        s.put(f"{sites.main.webdav}/data/incoming/{path.name}", data=f, auth=auth,
                              timeout=60).raise_for_status()
                    uploaded[path.name] = time.time()
            burst = max(uploaded.values()) - min(uploaded.values())
            stages, task_counts = _wait(stack, set(uploaded), timeout, design)
        finally:
            stack.stop()
            sites.stop()
    result = summarise(design, files, runtime, startup, burst, uploaded, stages, task_counts)
    return {**result, "chunk_max_files": chunk_files or 50} if design == "chunked" else result


def summarise(design: str, files: int, runtime: str, startup: float, burst: float, uploaded: dict[str, float],
              stages: dict[str, dict[str, Any]], task_counts: dict[str, int]) -> dict[str, Any]:
    """Latencies per file (p50/p99/max) and per burst (to the last output, to all archived)."""
    rows: dict[str, list[float]] = {"run created": [], "outputs published": [], "archived + lineage": []}
    for name, t in stages.items():
        rows["run created"].append(t["run"] - uploaded[name])
        rows["outputs published"].append(t["published"] - uploaded[name])
        rows["archived + lineage"].append(t["lineage"] - uploaded[name])
    first = min(uploaded.values())
    return {"design": design, "files": files, "runtime": runtime, "startup_seconds": startup, "burst_seconds": burst,
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
                      "lineage": timings["record_lineage"][1]}
    return done


def _wait(stack: Any, names: set[str], timeout: float,
          design: str) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """Until every uploaded file is processed: its stage times, and the task instances of each run."""
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
            done.update(read(stack, run, names))
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
    return format_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--design", choices=[*DESIGNS, "both"], default="both")
    parser.add_argument("--runtime", choices=["local", "docker"], default="local")
    parser.add_argument("--chunk-files", type=int, help="chunked design: files per chunk (default: the DAG's, 50)")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not 1 <= args.files <= 500:
        parser.error("--files must be 1..500")
    designs = DESIGNS if args.design == "both" else (args.design,)
    results = []
    for design in designs:
        print(f"{design}: {args.files} files ...", flush=True)
        results.append(run(args.files, args.runtime, args.timeout, design, args.chunk_files))
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
