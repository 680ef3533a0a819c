"""Fault-test consumer of Kafka billing records: claims each file with the contract's marker, like a pipeline.

Kafka delivery is at least once: after a broker or triggerer restart, records read but not yet
committed come again. Processing stays exactly once because the task claims each event with the
contract's marker (an xattr set with mode CREATE on the dCache file); a redelivered event finds the
marker and is counted as ``skipped``. Topic and connections come from the test's environment.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

from airflow.sdk import Asset, AssetWatcher, dag, task

from airflow_dcache.triggers.billing import DCacheBillingEventTrigger

TOPIC = os.environ.get("BILLING_E2E_TOPIC", "billing")
WATCH = os.environ.get("E2E_WATCH_DIR", "/data/incoming/e2e")

incoming = Asset(f"dcache://main{WATCH}", watchers=[AssetWatcher(
    name="billing_consumer", trigger=DCacheBillingEventTrigger(
        kafka_config_id="kafka_billing_e2e", topics=[TOPIC], include=[WATCH], site="main",
        group_id="e2e-billing-consumer", start_from="earliest"))])


@dag(schedule=[incoming], dag_id="billing_consumer", max_active_runs=16,
     default_args={"retries": 8, "retry_delay": timedelta(seconds=2)})
def billing_consumer() -> None:
    @task
    def process(triggering_asset_events=None, run_id=None) -> dict[str, object]:  # type: ignore[no-untyped-def]
        from airflow_dcache.events import events_from_asset_events
        from airflow_dcache.hooks import DCacheHook
        from airflow_dcache.pipelines.steps import mark_processed

        started = time.time()
        done, skipped = [], []
        with DCacheHook("dcache_main") as hook:
            for event in events_from_asset_events(triggering_asset_events):
                claimed = mark_processed(hook, event.path, "billing_consumer", str(run_id))
                (done if claimed else skipped).append(event.path)  # not claimed: a redelivery
        return {"done": done, "skipped": skipped, "started": started}

    process()


billing_consumer()
