"""E2E consumer DAG for the Kafka billing trigger: a plain ``schedule=[asset]`` DAG that records every file.

The topic, the connection and the output file come from the environment the test gives the stack, so the
trigger kwargs stay deterministic for one test run.
"""

from __future__ import annotations

import os

from airflow.sdk import Asset, AssetWatcher, dag, task

from airflow_dcache.triggers.billing import DCacheBillingEventTrigger

TOPIC = os.environ.get("BILLING_E2E_TOPIC", "billing")

incoming = Asset("dcache://main/home/alice/burst", watchers=[AssetWatcher(
    name="billing_burst", trigger=DCacheBillingEventTrigger(
        kafka_config_id="kafka_billing_e2e", topics=[TOPIC], include=["/home/alice/burst"], site="main",
        group_id="e2e-billing", start_from="earliest"))])


@dag(schedule=[incoming], dag_id="billing_burst")
def billing_burst() -> None:
    @task
    def process(triggering_asset_events=None) -> list[str]:  # type: ignore[no-untyped-def]
        from airflow_dcache.events import events_from_asset_events

        paths = [e.path for e in events_from_asset_events(triggering_asset_events)]
        with open(os.environ["BILLING_E2E_OUT"], "a", encoding="utf-8") as out:
            out.writelines(f"{p}\n" for p in paths)
        return paths

    process()


billing_burst()
