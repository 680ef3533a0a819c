"""Pipeline latency: upload → processed output and → archived, per file, over a burst, through real Airflow.

Starts what ``make demo`` starts (two sites, a real scheduler/triggerer/dag-processor/API server, the
example DAGs), uploads ``--files`` CXI runs within about a second, and reads from Airflow's REST API
when each file's stages ended: the run's creation (the storage event reached Airflow), the function's
end (outputs written), the lineage task's end (archived on tape and recorded). The reference measured
in the same run is the same pipeline started by a polling sensor's best case: a listing of the
directory every 5 s would add on average half the interval to the "run created" column.

    .venv/bin/airflow-dcache bench pipeline [--files 20] [--runtime local|docker]
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


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def run(files: int, runtime: str, timeout: float) -> dict[str, Any]:
    import requests

    from airflow_dcache.demo import default_dags_folder
    from airflow_dcache.demo.samples import write_cxi
    from airflow_dcache.testing.airflow_stack import AirflowStack
    from airflow_dcache.testing.sites import start_sites, wait_for_watches

    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        base = Path(tmp)
        sites = start_sites(base / "sites", fast_hash=True, log_dir=base)
        stack = AirflowStack(base / "airflow", default_dags_folder(),
                             {**sites.connections(), "AIRFLOW_DCACHE_FUNCTION_RUNTIME": runtime})
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
            stages = _wait(stack, set(uploaded), timeout)
        finally:
            stack.stop()
            sites.stop()
    rows: dict[str, list[float]] = {"run created": [], "outputs written": [], "archived + lineage": []}
    for name, t in stages.items():
        rows["run created"].append(t["run"] - uploaded[name])
        rows["outputs written"].append(t["function"] - uploaded[name])
        rows["archived + lineage"].append(t["lineage"] - uploaded[name])
    return {"files": files, "runtime": runtime, "startup_seconds": startup, "burst_seconds": burst,
            "latency_seconds": {k: {"p50": _percentile(v, 0.5), "p99": _percentile(v, 0.99), "max": max(v)}
                                for k, v in rows.items()},
            "runs": len({t["run_id"] for t in stages.values()})}


def _wait(stack: Any, names: set[str], timeout: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    done: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline and set(done) != names:
        for run in stack.api.dag_runs(DAG_ID):
            if run["state"] != "success":
                if run["state"] == "failed":
                    raise RuntimeError(f"run {run['dag_run_id']} failed")
                continue
            items = stack.api.xcom(DAG_ID, run["dag_run_id"], "collect") or []
            tis = stack.api.task_instances(DAG_ID, run["dag_run_id"])
            for index, item in enumerate(items):
                if item["name"] not in names or item["name"] in done:
                    continue
                end = {ti["task_id"]: _ts(ti.get("end_date")) for ti in tis if ti["map_index"] == index}
                if "file.record_lineage" not in end:
                    print(f"  run {run['dag_run_id']}: no lineage task for {item['name']} (index {index}): "
                          f"{sorted((ti['task_id'], ti['map_index'], ti['state']) for ti in tis)[:12]}", flush=True)
                    continue
                created = _ts(run.get("queued_at") or run["start_date"])
                done[item["name"]] = {"run_id": run["dag_run_id"], "run": created, "function": end["file.preview"],
                                      "lineage": end["file.record_lineage"]}
        time.sleep(2)
    if set(done) != names:
        raise TimeoutError(f"not processed after {timeout:.0f} s: {sorted(names - set(done))}")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--runtime", choices=["local", "docker"], default="local")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not 1 <= args.files <= 500:
        parser.error("--files must be 1..500")
    result = run(args.files, args.runtime, args.timeout)
    poll_mean = 5 / 2
    table = [[stage, f"{v['p50']:.1f}", f"{v['p99']:.1f}", f"{v['max']:.1f}"]
             for stage, v in result["latency_seconds"].items()]
    table.append(["run created, 5 s polling (reference: +mean half-interval)",
                  f"{result['latency_seconds']['run created']['p50'] + poll_mean:.1f}", "-", "-"])
    print(f"pipeline: {result['files']} files uploaded in {result['burst_seconds']:.2f} s, {result['runs']} runs, "
          f"runtime {result['runtime']}, Airflow start-up {result['startup_seconds']:.0f} s")
    print(format_table(["upload → ...", "p50 s", "p99 s", "max s"], table))
    out = args.out or default_results_path("pipeline")
    write_json(out, {"benchmark": "pipeline", "machine": machine_info(), **result})
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
