"""dcache_video_deshake: the seed's live demo — a shaky phone video uploaded to dCache comes back steady.

How it starts
    An upload of ``*.mp4`` into ``/data/videos`` on ``main`` (SSE storage event, close-after-write or
    moved-in). Or by hand from the UI with ``paths`` (paths or globs of videos on ``main``).

What it does, per video
    1. ``deshake``: the ``deshake`` function runs with pre-authorised URLs only (DOWNLOAD on the video,
       UPLOAD on a private output area): ffmpeg ``vidstabdetect`` + ``vidstabtransform`` in two
       passes, then a split-screen video (left the original, right the stabilised one). Both
       artefacts land in ``/data/processed/videos/<run>/<video>/`` with the activation record;
    2. ``record_lineage``: marks the video version processed and emits the lineage record as an asset
       event on ``dcache://main/data/processed``.

In the 2019 demo the function ran on OpenWhisk; here it is the same idea on Airflow: an event, a
containerised function that never holds the user's credential, and outputs next to the input.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import Asset, AssetWatcher, Param, dag, task, task_group

from airflow_dcache.operators import DCacheFunctionOperator
from airflow_dcache.retry_policy import DCacheRetryPolicy
from airflow_dcache.triggers import DCacheStorageEventTrigger

MAIN = "dcache_main"
# the trees this DAG may act on: videos are chosen below SELECT_ROOTS; results go to /data/processed/videos
SELECT_ROOTS = ["/data/videos"]
ALLOWED_ROOTS = ["/data/videos", "/data/processed/videos"]
RUNTIME = os.environ.get("AIRFLOW_DCACHE_FUNCTION_RUNTIME", "local")
OUTPUT_ROOT = "/data/processed/videos"

# [START video_asset]
videos = Asset(
    "dcache://main/data/videos",
    watchers=[AssetWatcher(name="videos_mp4", trigger=DCacheStorageEventTrigger(
        dcache_conn_id=MAIN, paths=["/data/videos"], recursive=False,
        events=["IN_CLOSE_WRITE", "IN_MOVED_TO"], include=["*.mp4"]))],
)
processed = Asset("dcache://main/data/processed")
# [END video_asset]


@dag(
    schedule=[videos],
    catchup=False,
    default_args={"retry_policy": DCacheRetryPolicy(), "allowed_roots": ALLOWED_ROOTS},
    render_template_as_native_obj=True,
    tags=["dcache", "video", "example"],
    doc_md=__doc__,
    params={
        "paths": Param([], type="array", items={"type": "string"}, title="Videos (manual runs)",
                       description="dCache paths or globs on main; empty: the triggering uploads"),
        "function_parameters": Param({}, type="object", title="Function parameters",
                                     description='e.g. {"shakiness": 8, "smoothing": 20}'),
        "reprocess": Param(False, type="boolean", title="Reprocess videos already done"),
    },
)
def dcache_video_deshake() -> None:
    @task
    def collect(params: dict[str, Any], run_id: str, dag_run: Any = None,
                triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        """One entry per video: the work item and, for the operator's templated fields, its paths."""
        from airflow_dcache.hooks import DCacheHook
        from airflow_dcache.pipelines import steps

        selector, person = steps.person_selector(MAIN, dag_run, params, SELECT_ROOTS)
        with DCacheHook(MAIN, allowed_roots=SELECT_ROOTS) as hook, selector:
            items = steps.collect_work_items(hook, params, triggering_asset_events, consumer="dcache_video_deshake",
                                             site="main", run_id=run_id, buffer_root="/data/work",
                                             output_root=OUTPUT_ROOT, source_root="/data/videos",
                                             allowed_roots=SELECT_ROOTS, selector=selector, selector_name=person)
        return [{"item": i, "path": i["path"], "output_dir": i["output_dir"], "version": i["version"]} for i in items]

    @task_group(group_id="video")
    def per_video(item: dict[str, Any], path: str, output_dir: str, version: dict[str, Any]) -> None:
        # [START video_deshake]
        deshake = DCacheFunctionOperator(
            task_id="deshake", dcache_conn_id=MAIN, runtime=RUNTIME, function="deshake",
            inputs=path, output_dir=output_dir, expected_version=version,
            parameters="{{ params.function_parameters }}", timeout=600)
        # [END video_deshake]

        @task(outlets=[processed])
        def record_lineage(item: dict[str, Any], result: dict[str, Any], run_id: str, dag_run: Any = None,
                           outlet_events: Any = None) -> dict[str, Any]:
            from airflow_dcache.hooks import DCacheHook
            from airflow_dcache.pipelines import steps

            # the checksums of the version collected (the path may hold a newer upload by now)
            lineage = steps.build_lineage(item, result, output_site="main", dag_id=dag_run.dag_id, run_id=run_id,
                                          function_name="deshake")
            with DCacheHook(MAIN, allowed_roots=ALLOWED_ROOTS) as hook:
                claimed = steps.mark_processed(hook, item["path"], dag_run.dag_id, f"{dag_run.dag_id}/{run_id}",
                                               version=item["version"])
                if not claimed:  # another run processed this version first: its result stands, ours goes
                    steps.discard_outputs(hook, item)
            if not claimed:
                from airflow.sdk.exceptions import AirflowSkipException

                raise AirflowSkipException(f"{item['path']} was processed by another run first")
            outlet_events[processed].extra = lineage
            return lineage

        record_lineage(item, deshake.output)

    per_video.expand_kwargs(collect())


dcache_video_deshake()
