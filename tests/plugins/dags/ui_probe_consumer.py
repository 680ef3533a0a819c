"""A small consumer of storage events for the dCache view's tests (the view's subject, not under test).

Watches ``/data/videos`` on ``main`` for ``*.mp4`` (close-after-write / moved-in) and marks every
file of its run processed (the contract §6 done-marker), except files with ``hold`` in their name,
which stay "waiting" for ever — so the view's per-event status and lag have real runs to show.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, AssetWatcher, dag, task

from airflow_dcache.triggers import DCacheStorageEventTrigger

videos = Asset("dcache://main/data/videos", watchers=[AssetWatcher(name="videos_mp4", trigger=DCacheStorageEventTrigger(
    dcache_conn_id="dcache_main", paths=["/data/videos"], include=["*.mp4"], batch_quiet=0.2,
    batch_max_latency=1.0, batch_min_interval=1.0))])


@dag(schedule=[videos], catchup=False, tags=["dcache", "test"])
def ui_probe_consumer() -> None:
    @task
    def mark(run_id: str, dag_run: Any = None, triggering_asset_events: Any = None) -> list[str]:
        from airflow_dcache.events import events_from_asset_events
        from airflow_dcache.hooks import DCacheHook
        from airflow_dcache.pipelines import steps

        done = []
        with DCacheHook("dcache_main") as hook:
            for event in events_from_asset_events(triggering_asset_events):
                if "hold" not in event.name:
                    steps.mark_processed(hook, event.path, dag_run.dag_id, f"{dag_run.dag_id}/{run_id}")
                    done.append(event.path)
        return done

    mark()


ui_probe_consumer()
