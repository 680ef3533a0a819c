"""The consumer DAG of the distributed tests: an SSE watcher, work on any Celery worker, exactly-once markers.

A run gets the files of its batch of storage events (``$DIST_WATCH_DIR`` on ``main``, ``*.dat``). For each
file the ``process`` task checks the version is still there, writes an output next to the run
(``/data/processed/dist/<run>/<name>.out``), then claims the version with the pipeline's done-marker
(``airflow_dcache.done.distributed_consumer``, compare-and-set on the version, the same helper the
ingest pipeline's ``record_lineage`` uses). A claimed file gets a lineage record in the run's asset
event on ``dcache://main/data/processed/dist``; a file another run claimed first (a redelivered event)
has its output removed and is reported as skipped. The task lasts ``$DIST_TASK_SECONDS`` at least, so a
fault test can kill a worker while it runs; retries (short delays) carry a run over a killed worker, a
restarted Postgres or a scheduler that died.
"""

from __future__ import annotations

import io
import os
import time
from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, AssetWatcher, dag, task

from airflow_dcache.triggers import DCacheStorageEventTrigger

WATCH = os.environ.get("DIST_WATCH_DIR", "/data/incoming/dist")
OUTPUT_ROOT = "/data/processed/dist"
TASK_SECONDS = float(os.environ.get("DIST_TASK_SECONDS", "2"))
DAG_ID = "distributed_consumer"


def worker_name() -> str:
    """The Celery worker this task runs under (``--celery-hostname`` of an ancestor process), or ``?``."""
    import psutil

    proc: psutil.Process | None = psutil.Process()
    for _ in range(16):
        if proc is None:
            break
        cmd = proc.cmdline()
        if "--celery-hostname" in cmd:
            return cmd[cmd.index("--celery-hostname") + 1]
        title = " ".join(cmd)  # celery sets the process title: "[celeryd: celery@worker-1:ForkPoolWorker-1]"
        if "celery@" in title:
            return title.split("celery@", 1)[1].split(":", 1)[0].split()[0]
        proc = proc.parent()
    return "?"

incoming = Asset(
    f"dcache://main{WATCH}",
    watchers=[AssetWatcher(name="distributed_watch", trigger=DCacheStorageEventTrigger(
        dcache_conn_id="dcache_main", paths=[WATCH], events=["IN_CLOSE_WRITE"], include=["*.dat"],
        reconnect_backoff_max=5.0))],
)
processed = Asset("dcache://main/data/processed/dist")


@dag(dag_id=DAG_ID, schedule=[incoming], max_active_runs=32, catchup=False,
     default_args={"retries": 8, "retry_delay": timedelta(seconds=3)})
def distributed_consumer() -> None:
    @task(outlets=[processed])
    def process(triggering_asset_events: Any = None, run_id: str | None = None, ti: Any = None,
                outlet_events: Any = None) -> dict[str, Any]:
        from airflow_dcache.events import events_from_asset_events
        from airflow_dcache.events.version import FileVersion
        from airflow_dcache.exceptions import NotFound
        from airflow_dcache.hooks import DCacheHook
        from airflow_dcache.pipelines.steps import mark_processed

        started = time.time()
        worker = worker_name()
        folder = f"{OUTPUT_ROOT}/{str(run_id).replace(':', '_').replace('+', '_')}"
        records: list[dict[str, Any]] = []
        skipped: list[str] = []
        paths = sorted({e.path for e in events_from_asset_events(triggering_asset_events)})
        with DCacheHook("dcache_main") as hook:
            hook.mkdir(folder)
            for path in paths:
                try:
                    entry = hook.stat(path, checksum=True)
                except NotFound:
                    skipped.append(path)
                    continue
                version = FileVersion.of(entry)
                out = f"{folder}/{path.rsplit('/', 1)[1]}.out"
                hook.upload(io.BytesIO(f"{path} {entry.pnfsid} {run_id} try {ti.try_number}\n".encode()), out)
                if mark_processed(hook, path, DAG_ID, f"{DAG_ID}/{run_id}", version=version):
                    records.append({"input": path, "pnfsid": entry.pnfsid, "output": out,
                                    "worker": worker, "try": ti.try_number})
                else:  # another run claimed this version first: its result stands
                    hook.delete(out, missing_ok=True)
                    skipped.append(path)
        rest = TASK_SECONDS - (time.time() - started)
        if rest > 0:
            time.sleep(rest)
        outlet_events[processed].extra = {"schema": "distributed-test/v1", "run_id": run_id, "records": records}
        return {"records": len(records), "skipped": skipped, "started": started, "ended": time.time()}

    process()


distributed_consumer()
