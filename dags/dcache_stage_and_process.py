"""dcache_stage_and_process: bring tape-resident files back to disk and process each as soon as it is online.

How to run it
    From the UI (*Trigger*) with ``paths``: dCache paths or globs of files on ``main`` whose data is
    on tape only (locality NEARLINE). One bulk ``STAGE`` request asks dCache for all of them at once,
    so the tape system can order the recalls; the run does not wait for the whole batch.

What it does
    1. ``select``: resolves the paths/globs to files;
    2. ``stage``: one bulk STAGE request (``DCacheStageOperator``, returns at once with its id);
    3. per file (a mapped task group, each file on its own): ``wait_online`` — a deferrable sensor in
       the triggerer until *that* file's locality includes ONLINE — then ``preview`` runs the function
       on it, with pre-authorised URLs only, while other files are still being recalled.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import Param, dag, task, task_group

from airflow_dcache.operators import DCacheFunctionOperator, DCacheStageOperator
from airflow_dcache.retry_policy import DCacheRetryPolicy
from airflow_dcache.sensors import DCacheFileSensor

MAIN = "dcache_main"
# the trees this DAG may act on: files are chosen below SELECT_ROOTS; results go to /data/processed
SELECT_ROOTS = ["/data/archive"]
ALLOWED_ROOTS = ["/data/archive", "/data/processed"]
RUNTIME = os.environ.get("AIRFLOW_DCACHE_FUNCTION_RUNTIME", "local")


@dag(
    schedule=None,
    catchup=False,
    render_template_as_native_obj=True,
    tags=["dcache", "tape", "example"],
    doc_md=__doc__,
    default_args={"retry_policy": DCacheRetryPolicy(), "allowed_roots": ALLOWED_ROOTS},
    params={
        "paths": Param(["/data/archive/*.h5"], type="array", items={"type": "string"}, title="Files on tape",
                       description="dCache paths or globs on main"),
        "function": Param("hdf5-preview", type="string", enum=["hdf5-preview"], title="Function"),
    },
)
def dcache_stage_and_process() -> None:
    @task
    def select(params: dict[str, Any], run_id: str, dag_run: Any = None) -> list[dict[str, Any]]:
        from airflow_dcache.pipelines import steps

        # the person's own dCache identity when mapped, else a plain login; only below SELECT_ROOTS
        selector, person = steps.person_selector(MAIN, dag_run, params, SELECT_ROOTS)
        with selector as hook:
            records = steps.select_records(hook, steps.split_patterns(params["paths"], SELECT_ROOTS))
            if person:
                for rec in records:
                    steps.check_readable(hook, rec["path"], person)
        if not records:
            raise ValueError(f"paths: nothing matches {params['paths']}")
        # one output folder per file version (its path and pnfsid), never per stem
        items = steps.work_items_from_selection(records, site="main", run_id=run_id, buffer_root="/data/work",
                                                output_root="/data/processed/staged")
        return [{"path": i["path"], "output_dir": i["output_dir"], "version": i["version"]} for i in items]

    # [START stage_and_process]
    files = select()
    stage = DCacheStageOperator(task_id="stage", dcache_conn_id=MAIN, api="bulk",
                                path="{{ ti.xcom_pull(task_ids='select') | map(attribute='path') | list }}",
                                disk_lifetime=3600, wait_for_completion=False)

    @task_group(group_id="file")
    def per_file(path: str, output_dir: str, version: dict[str, Any]) -> None:
        online = DCacheFileSensor(task_id="wait_online", dcache_conn_id=MAIN, path=path, condition="online",
                                  expected_version=version, deferrable=True, poke_interval=2, timeout=3600)
        preview = DCacheFunctionOperator(task_id="preview", dcache_conn_id=MAIN, runtime=RUNTIME,
                                         function="{{ params.function }}", inputs=path, output_dir=output_dir,
                                         expected_version=version)
        online >> preview

    group = per_file.expand_kwargs(files)
    files >> stage >> group
    # [END stage_and_process]


dcache_stage_and_process()
