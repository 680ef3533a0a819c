"""Function start-up: N files through ``hdf5-preview``, cold (one start per file) vs warm (one instance).

What a chunk of the ingest pipeline pays per file in its ``preview`` stage, measured the way the stage
runs it: one :class:`~airflow_dcache.functions.activation.Activation` per file (stat, per-file
macaroons, private output area, the function run, output checks, move into place, activation record)
against the bundled dCache service on loopback, with the ``local`` runtime (a subprocess) and the
``docker`` runtime (a container on the project's engine, images from ``make function-images``).

- **cold**: every file starts the function anew (a process, or a container), as a per-file task does;
- **warm**: one long-lived instance takes one task document per file (:mod:`airflow_dcache.functions.warm`).

Files run one after the other, so per-file times are not blurred by two files sharing the 2 cores.
Reported per runtime and mode: the instances started and their cold start (spawn → the function's
``ready``, imports included), the function run per file (the runtime's part: p50/p99), the whole
activation per file (p50/p99), the total and files/s; the JSON adds every file's times.

    .venv/bin/python benchmarks/functions.py [--files 50] [--runtimes local,docker] [--frames 4] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) not in sys.path:  # also importable as benchmarks.functions
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import busy_warning, default_results_path, format_table, machine_info, write_json

FUNCTION = "hdf5-preview"
CONN_ID = "bench_functions"
MODES = ("cold", "warm")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def write_cxi(path: Path, frames: int, seed: int) -> None:
    """A small CXI-style file: ``/entry_1/data_1/data`` frames x 64 x 64, uint16."""
    import h5py
    import numpy as np

    data = np.random.default_rng(seed).poisson(5, size=(frames, 64, 64)).astype(np.uint16)
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry_1/data_1/data", data=data, chunks=(1, 64, 64))


def run_mode(runtime: str, mode: str, paths: list[str], out_root: str, docker_url: str | None) -> dict[str, Any]:
    """Run every file through one activation each; the row's numbers and per-file times."""
    from airflow_dcache.functions.activation import Activation, ActivationOptions, FunctionFailed, RunIds
    from airflow_dcache.functions.credentials import connection_extras
    from airflow_dcache.functions.factory import runtime_factory
    from airflow_dcache.functions.warm import WarmPool
    from airflow_dcache.hooks.dcache import DCacheHook

    options: dict[str, Any] = {"docker_url": docker_url} if runtime == "docker" else {}
    files: list[dict[str, Any]] = []
    errors: list[str] = []
    with DCacheHook(CONN_ID) as hook, WarmPool(runtime_factory(runtime, FUNCTION, **options),
                                               1 if mode == "warm" else 0) as pool:
        extras = connection_extras(hook)
        pool.identify()  # a missing or stale image fails the row here, before the clock starts
        began = time.monotonic()
        for i, path in enumerate(paths):
            activation = Activation(hook, pool, FUNCTION, ActivationOptions(timeout=120), connection_extras=extras)
            start = time.monotonic()
            try:
                result = activation.run([path], output_dir=f"{out_root}/{runtime}-{mode}/{i}",
                                        ids=RunIds(run_id=f"bench-{i}"))
            except FunctionFailed as exc:
                errors.append(f"{path}: {str(exc)[:300]}")
                continue
            elapsed = time.monotonic() - start
            raw = __import__("io").BytesIO()
            hook.download(result["activation_record"], raw)
            record = json.loads(raw.getvalue())
            files.append({"path": path, "activation_s": elapsed, "run_s": record["duration"],
                          "warm": record["warm"], "instance": (record["warm_instance"] or {}).get("id")})
        total = time.monotonic() - began
        stats = pool.stats()
    runs = [f["run_s"] for f in files]
    acts = [f["activation_s"] for f in files]
    return {
        "runtime": runtime, "mode": mode, "files": len(paths), "ok": len(files), "errors": errors,
        "instances_started": stats["instances_started"] if mode == "warm" else len(files),
        "cold_start_s": stats["cold_start_seconds"]["p50"], "total_s": total,
        "run_p50_s": percentile(runs, 50) if runs else None, "run_p99_s": percentile(runs, 99) if runs else None,
        "activation_p50_s": percentile(acts, 50) if acts else None,
        "activation_p99_s": percentile(acts, 99) if acts else None,
        "files_per_s": len(files) / total if total > 0 else None, "per_file": files,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="functions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=50, help="files per runtime and mode (default 50)")
    parser.add_argument("--runtimes", default="local,docker", help="comma list of local, docker")
    parser.add_argument("--frames", type=int, default=4, help="64x64 frames per CXI file (default 4)")
    parser.add_argument("--out", type=Path, help="JSON result file (default benchmarks/results/functions-*.json)")
    args = parser.parse_args(argv)
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    if not 1 <= args.files <= 2000 or not 1 <= args.frames <= 1000 or not set(runtimes) <= {"local", "docker"}:
        parser.error("--files must be 1..2000, --frames 1..1000, --runtimes a list of local, docker")

    from airflow_dcache.functions.container import docker_available
    from airflow_dcache.functions.images import engine_url
    from airflow_dcache.hooks.dcache import DCacheHook
    from airflow_dcache.testing.server import start_server

    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    warning = busy_warning()
    with tempfile.TemporaryDirectory(prefix="bench-functions-") as tmp:
        server = start_server(Path(tmp) / "server")
        os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = server.connection_json("alice")
        try:
            root = f"/home/alice/bench-fn-{uuid.uuid4().hex[:8]}"
            paths = []
            with DCacheHook(CONN_ID) as hook:
                hook.mkdir(f"{root}/in")
                for i in range(args.files):
                    local = Path(tmp) / f"run{i:04d}.cxi"
                    write_cxi(local, args.frames, seed=i)
                    hook.upload(local, f"{root}/in/{local.name}")
                    paths.append(f"{root}/in/{local.name}")
            for runtime in runtimes:
                docker_url = engine_url() if runtime == "docker" else None
                if runtime == "docker" and not docker_available(docker_url):
                    skipped[runtime] = "no Docker engine answers (scripts/docker-engine starts one)"
                    continue
                try:
                    run_mode(runtime, "cold", paths[:1], f"{root}/warmup", docker_url)  # page cache, untimed
                    for mode in MODES:
                        rows.append(run_mode(runtime, mode, paths, f"{root}/out", docker_url))
                except Exception as exc:  # e.g. a stale image: say how to fix it, go on with the rest
                    skipped[runtime] = f"{type(exc).__name__}: {exc}"
        finally:
            server.stop()

    def ms(value: float | None) -> str:
        return f"{value * 1000:.0f}" if value is not None else "-"

    table = format_table(
        ["runtime", "mode", "files", "starts", "cold start ms", "run p50 ms", "run p99 ms", "file p50 ms",
         "file p99 ms", "total s", "files/s"],
        [[r["runtime"], r["mode"], f"{r['ok']}/{r['files']}", r["instances_started"], ms(r["cold_start_s"]),
          ms(r["run_p50_s"]), ms(r["run_p99_s"]), ms(r["activation_p50_s"]), ms(r["activation_p99_s"]),
          f"{r['total_s']:.1f}", f"{r['files_per_s']:.1f}" if r["files_per_s"] else "-"] for r in rows])
    print(table)
    summary: dict[str, Any] = {}
    for runtime in runtimes:
        by_mode = {r["mode"]: r for r in rows if r["runtime"] == runtime}
        if set(by_mode) == set(MODES) and by_mode["cold"]["run_p50_s"] and by_mode["warm"]["run_p50_s"]:
            cold, warm = by_mode["cold"], by_mode["warm"]
            summary[runtime] = {
                "cold_start_s": warm["cold_start_s"],
                "start_cost_per_file_s": cold["run_p50_s"] - warm["run_p50_s"],
                "speedup_total": cold["total_s"] / warm["total_s"] if warm["total_s"] else None,
            }
            print(f"{runtime}: cold start {ms(warm['cold_start_s'])} ms; a cold file's run costs "
                  f"{ms(summary[runtime]['start_cost_per_file_s'])} ms more than a warm one's (p50); "
                  f"warm is {summary[runtime]['speedup_total']:.1f}x faster in total")
    for runtime, reason in skipped.items():
        print(f"{runtime}: not measured: {reason}")
    if warning:
        print(warning)
    errors = [e for r in rows for e in r["errors"]]
    path = write_json(args.out or default_results_path("functions"), {
        "benchmark": "functions", "function": FUNCTION, "files": args.files, "frames": args.frames,
        "rows": rows, "summary": summary, "skipped": skipped, "errors": errors, "table": table,
        "machine": machine_info(), "busy": warning,
    })
    print(f"\nresults: {path}")
    return 2 if errors or (skipped and not rows) else 0


if __name__ == "__main__":
    sys.exit(main())
