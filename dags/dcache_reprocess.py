"""dcache_reprocess: re-run a function with updated code over the files of one day, idempotently.

How it runs
    ``@daily`` with catchup off: each run selects the HDF5 files on ``main`` whose mtime falls in the
    run's data interval (``DCacheListOperator`` with ``mtime_after``/``mtime_before``) and runs the
    function on each. To reprocess a date range after a code change::

        airflow backfill create --dag-id dcache_reprocess --from-date 2026-11-01 --to-date 2026-11-07

Why a rerun is safe
    Outputs are *versioned by the function's digest* (the activation record's image digest, or for the
    ``local`` runtime the sha256 of the function's source tree): they go to
    ``/data/processed/reprocess/<path of the file>/<pnfsid>/<digest[:12]>/``. A rerun of unchanged code writes the same
    version again (identical content, same place); changed code writes a new folder and never
    overwrites results of another version, so old and new outputs can be compared.

The data interval
    The schedule is a ``CronDataIntervalTimetable``: the run of a day covers ``[day, next day)``. (A
    bare ``"@daily"`` would give Airflow 3's ``CronTriggerTimetable``, whose data interval is a single
    instant, so ``mtime_after == mtime_before`` and no file would ever be selected.) A backfill only
    creates runs whose interval has ended, so files are reprocessed from the day after their upload.
    ``$AIRFLOW_DCACHE_REPROCESS_SCHEDULE`` sets another cron cadence (the end-to-end tests use one
    minute, so that a backfill over files uploaded moments ago need not wait for midnight).
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import Param, dag
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_dcache.operators import DCacheFunctionOperator, DCacheListOperator
from airflow_dcache.retry_policy import DCacheRetryPolicy

MAIN = "dcache_main"
# the trees this DAG may act on: the directory param (UI, backfill conf) must lie inside them
ALLOWED_ROOTS = ["/data/incoming", "/data/archive", "/data/processed"]
RUNTIME = os.environ.get("AIRFLOW_DCACHE_FUNCTION_RUNTIME", "local")
SCHEDULE = os.environ.get("AIRFLOW_DCACHE_REPROCESS_SCHEDULE", "@daily")


def function_kwargs(record: dict) -> dict:
    """One function run per selected file version, its outputs in a folder of that version (by digest below it).

    The folder is the file's path and pnfsid, never its stem: ``a.h5`` and ``a.hdf5``, or a file
    re-uploaded under the same name, each keep their own results. The run refuses a file replaced
    between selection and processing.
    """
    from airflow_dcache.events.version import FileVersion
    from airflow_dcache.pipelines.steps import relative_path, version_folder

    version = FileVersion(pnfsid=record["pnfsid"], size=record.get("size")) if record.get("pnfsid") else None
    folder = f"{relative_path(record['path'], '/')}/{version_folder(version, record['path'])}"
    return {"inputs": record["path"], "output_dir": f"/data/processed/reprocess/{folder}",
            "expected_version": version.id if version else None}


# [START reprocess_dag]
@dag(
    schedule=CronDataIntervalTimetable(SCHEDULE, timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=3,
    render_template_as_native_obj=True,
    tags=["dcache", "reprocess", "example"],
    doc_md=__doc__,
    default_args={"retry_policy": DCacheRetryPolicy(), "allowed_roots": ALLOWED_ROOTS},
    params={
        "directory": Param("/data/incoming", type="string", title="Directory on main"),
        "name_glob": Param("*.h5", type="string", title="File names"),
        "function": Param("hdf5-preview", type="string", enum=["hdf5-preview"], title="Function"),
        "function_parameters": Param({}, type="object", title="Function parameters"),
    },
)
def dcache_reprocess() -> None:
    select = DCacheListOperator(
        task_id="select", dcache_conn_id=MAIN, path="{{ params.directory }}", name_glob="{{ params.name_glob }}",
        mtime_after="{{ data_interval_start }}", mtime_before="{{ data_interval_end }}", max_files=1000)
    DCacheFunctionOperator.partial(
        task_id="reprocess", dcache_conn_id=MAIN, runtime=RUNTIME, function="{{ params.function }}",
        parameters="{{ params.function_parameters }}", versioned=True, overwrite=True, timeout=300,
    ).expand_kwargs(select.output.map(function_kwargs))
# [END reprocess_dag]


dcache_reprocess()
