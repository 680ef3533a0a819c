"""A plain consumer DAG: ``schedule=[asset]``, an SSE watcher on ``$E2E_WATCH_DIR`` at the ``main`` site.

The watcher is declared the common-messaging way, ``MessageQueueTrigger(scheme="dcache+sse", ...)``, so the
e2e test proves the provider's ``queues`` entry drives a DAG (the stored trigger is the concrete
``DCacheStorageEventTrigger``; the example DAGs use that class directly).

The task flattens ``triggering_asset_events`` with the contract's helper and claims each event with the
contract's marker (an xattr set with mode CREATE), so a redelivered event is skipped, not redone.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
from airflow.sdk import Asset, AssetWatcher, dag, task

WATCH = os.environ.get("E2E_WATCH_DIR", "/data/incoming/e2e")

incoming = Asset(
    f"dcache://main{WATCH}",
    watchers=[AssetWatcher(name="storage_consumer_watch", trigger=MessageQueueTrigger(
        scheme="dcache+sse", dcache_conn_id="dcache_main", paths=[WATCH], events=["IN_CLOSE_WRITE"],
        reconnect_backoff_max=5.0))],
)


# Retries: the fault tests restart the dCache service while runs are claiming markers on it; a run
# that meets the restart must retry, not drop its batch.
@dag(schedule=[incoming], dag_id="storage_consumer", max_active_runs=16,
     default_args={"retries": 8, "retry_delay": timedelta(seconds=2)})
def storage_consumer() -> None:
    @task
    def process(triggering_asset_events=None, run_id=None) -> dict[str, object]:
        from airflow_dcache.events import events_from_asset_events
        from airflow_dcache.hooks import DCacheHook
        from airflow_dcache.pipelines.steps import mark_processed

        started = time.time()
        done, skipped = [], []
        with DCacheHook("dcache_main") as hook:
            for event in events_from_asset_events(triggering_asset_events):
                claimed = mark_processed(hook, event.path, "storage_consumer", str(run_id))
                (done if claimed else skipped).append(event.path)  # not claimed: a redelivery
        return {"done": done, "skipped": skipped, "started": started}

    process()


storage_consumer()
