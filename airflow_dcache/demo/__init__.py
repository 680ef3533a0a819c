"""``airflow-dcache demo``: a facility in a box, with files going from upload to tape through Airflow.

It starts what a site runs — two dCache-compatible instances (``main`` with emulated tape,
``buffer`` next to compute), Airflow 3.3 (scheduler, triggerer, dag-processor, API server) with this
provider and the example DAGs of ``dags/`` — then uploads sample data as a scientist would. The
uploads alone start the pipelines (storage events → asset watcher → DAG run); the demo only
watches, through Airflow's REST API, and prints each file's stages and a summary table.

``--once`` stops everything afterwards and exits 0 only if every sample passed every stage.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_DIR = Path("var/demo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DIR,
                        help="where the sites, Airflow and logs live (wiped at start; default var/demo)")
    parser.add_argument("--airflow-port", type=int, default=8080, help="Airflow UI/API port (0: a free one)")
    parser.add_argument("--h5-files", type=int, default=3, help="number of HDF5 sample runs to upload")
    parser.add_argument("--no-video", action="store_true", help="skip the de-shake video sample")
    parser.add_argument("--runtime", choices=["auto", "docker", "local"], default="auto",
                        help="function runtime (auto: docker if an engine and the images are there)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the samples")
    parser.add_argument("--once", action="store_true",
                        help="stop after the summary; exit 0 only if every sample passed every stage")


def run(args: argparse.Namespace) -> int:
    from airflow_dcache.demo.runner import DemoRunner

    base = args.data_dir.resolve()
    if base.exists():
        shutil.rmtree(base)
    runner = DemoRunner(base, airflow_port=args.airflow_port, h5_files=args.h5_files, video=not args.no_video,
                        runtime=args.runtime, timeout=args.timeout)
    stop_requested: list[Any] = []

    def _terminate(signum: int, frame: Any) -> None:
        stop_requested.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        ok = runner.run()
        if args.once:
            return 0 if ok else 1
        print("\nEverything keeps running: explore the UI, upload more files "
              f"(see {base / 'README.txt'}). Press Ctrl-C to stop.", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0 if not stop_requested else 128 + int(stop_requested[0])
    finally:
        runner.stop()


def checkout_root() -> Path:
    """The checkout the demo runs from: ``$AIRFLOW_DCACHE_CHECKOUT``, else the current directory.

    The demo shows the checkout's example DAGs and uses its engine scripts, which an installed package
    does not carry; it is told where they are instead of guessing from where this module happens to be.
    """
    root = Path(os.environ.get("AIRFLOW_DCACHE_CHECKOUT") or Path.cwd())
    if not (root / "dags").is_dir():
        raise SystemExit(f"the demo runs from an airflow-dcache checkout: {root} has no dags/ folder "
                         "(run `make demo` in the checkout, or set AIRFLOW_DCACHE_CHECKOUT)")
    return root


def default_dags_folder() -> Path:
    """``$AIRFLOW_DCACHE_DAGS``, else the checkout's example DAGs."""
    env = os.environ.get("AIRFLOW_DCACHE_DAGS")
    return Path(env) if env else checkout_root() / "dags"


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
