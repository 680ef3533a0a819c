"""Two consumer DAGs of ``tests/e2e/test_watcher_start.py``: one SSE watcher per ``start_from`` policy.

``start_existing`` watches ``$E2E_START_ROOT/existing`` with ``start_from="existing"``, ``start_now``
watches ``$E2E_START_ROOT/now`` with the default ``"now"``. Each has its own asset and directory (one
watcher per asset, as docs/triggers.md §3 asks). The task claims every event with the contract's
marker, so a redelivered event is skipped, and returns what it saw, including how each event was
found (a listing at start, a reconcile listing, or a live event).
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import Asset, AssetWatcher, dag, task

from airflow_dcache.triggers import DCacheStorageEventTrigger

ROOT = os.environ.get("E2E_START_ROOT", "/data/incoming/e2e-start")


def consumer(mode: str) -> None:
    """The DAG ``start_<mode>``: ``schedule=[asset]`` on a watcher with ``start_from=mode``."""
    dag_id = f"start_{mode}"
    asset = Asset(f"dcache://main{ROOT}/{mode}", watchers=[AssetWatcher(
        name=f"{dag_id}_watch", trigger=DCacheStorageEventTrigger(
            dcache_conn_id="dcache_main", paths=[f"{ROOT}/{mode}"], events=["IN_CLOSE_WRITE"],
            start_from=mode, reconnect_backoff_max=5.0))])

    @dag(schedule=[asset], dag_id=dag_id, max_active_runs=16,
         default_args={"retries": 4, "retry_delay": timedelta(seconds=2)})
    def start_consumer() -> None:
        @task
        def process(triggering_asset_events=None, run_id=None) -> dict[str, object]:
            from airflow_dcache.events import events_from_asset_events
            from airflow_dcache.hooks import DCacheHook
            from airflow_dcache.pipelines.steps import mark_processed

            done: list[str] = []
            skipped: list[str] = []
            listed: list[str] = []
            reconciled: list[str] = []
            try:  # how many asset events (batches) this run covers: >1 when earlier ones were stranded
                batches = sum(len(list(v)) for v in triggering_asset_events.values())
            except Exception:
                batches = -1
            with DCacheHook("dcache_main") as hook:
                for event in events_from_asset_events(triggering_asset_events):
                    if event.extra.get("listed") == "start_from":
                        listed.append(event.path)
                    elif event.extra.get("reconciled"):
                        reconciled.append(event.path)
                    claimed = mark_processed(hook, event.path, dag_id, str(run_id))
                    (done if claimed else skipped).append(event.path)  # not claimed: a redelivery
            return {"done": done, "skipped": skipped, "listed": listed, "reconciled": reconciled,
                    "asset_events": batches}

        process()

    start_consumer()


consumer("existing")
consumer("now")
