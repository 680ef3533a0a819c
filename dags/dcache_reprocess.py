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

In chunks
    A day can hold thousands of files: the selected files are cut into chunks (``chunk_max_files``,
    default 50, at most ``chunk_max_count`` chunks, default 12, bigger chunks beyond) and ``reprocess``
    is mapped over the chunks, not the files. Inside a chunk each file is its own activation (own
    macaroons, output folder and activation record) on a few warm instances of the function; a file
    that fails (or was replaced since the selection) fails alone, and ``report`` fails the run naming
    every failed file with its reason.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_dcache.operators import DCacheListOperator
from airflow_dcache.pipelines import chunks
from airflow_dcache.retry_policy import DCacheRetryPolicy

MAIN = "dcache_main"
# the trees this DAG may act on: the directory param (UI, backfill conf) must lie inside them
ALLOWED_ROOTS = ["/data/incoming", "/data/archive", "/data/processed"]
RUNTIME = os.environ.get("AIRFLOW_DCACHE_FUNCTION_RUNTIME", "local")
SCHEDULE = os.environ.get("AIRFLOW_DCACHE_REPROCESS_SCHEDULE", "@daily")


def work_item(record: dict) -> dict:
    """A selected file as a work item: its version and the output folder of that version (by digest below it).

    The version is the pnfsid and the checksum the listing reported (``select`` lists with checksums), so
    a file rewritten in place with as many bytes is a different version. The folder is the file's path
    and pnfsid, never its stem: ``a.h5`` and ``a.hdf5``, or a file re-uploaded under the same name, each
    keep their own results. The run refuses a file replaced between selection and processing.
    """
    from airflow_dcache.events.version import FileVersion
    from airflow_dcache.pipelines.steps import relative_path, version_folder

    version = FileVersion.of(record) if record.get("pnfsid") else None
    folder = f"{relative_path(record['path'], '/')}/{version_folder(version, record['path'])}"
    return {"path": record["path"], "pnfsid": record.get("pnfsid"), "size": record.get("size") or 0,
            "version": version.to_json() if version else None, "output_dir": f"/data/processed/reprocess/{folder}"}


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
        "chunk_max_files": Param(chunks.DEFAULT_MAX_FILES, type="integer", minimum=1,
                                 title="Files per chunk (at most)"),
        "chunk_max_count": Param(chunks.DEFAULT_MAX_CHUNKS, type="integer", minimum=1,
                                 title="Chunks per run (at most)"),
    },
)
def dcache_reprocess() -> None:
    select = DCacheListOperator(
        task_id="select", dcache_conn_id=MAIN, path="{{ params.directory }}", name_glob="{{ params.name_glob }}",
        mtime_after="{{ data_interval_start }}", mtime_before="{{ data_interval_end }}", max_files=1000,
        with_checksums=True)  # each file's version is its pnfsid and checksum

    @task
    def chunk(records: list[dict], params: dict) -> list[dict]:
        """The selected files as work items, in chunks: the run's task instances grow with chunks, not files."""
        from airflow_dcache.pipelines.chunks import make_chunks

        return make_chunks([work_item(r) for r in records], params["chunk_max_files"],
                           max_chunks=params["chunk_max_count"])

    @task(retries=2, retry_delay=timedelta(seconds=30))  # retried only when main is unreachable
    def reprocess(chunk: dict, params: dict, run_id: str, ti=None) -> dict:
        """The function once per file of the chunk (warm), outputs versioned by the function's digest."""
        from airflow_dcache.functions.activation import ActivationOptions
        from airflow_dcache.pipelines import chunk_steps as cs

        ids = {"dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": run_id, "map_index": ti.map_index}
        return cs.run_function(
            chunk, cs.Config(main=MAIN, buffer=MAIN, allowed_roots=ALLOWED_ROOTS), MAIN,
            lambda item: (item["path"], item["output_dir"]), runtime=RUNTIME, function=params["function"],
            parameters=params["function_parameters"], ids=ids, stage="reprocess", check_version=True,
            options=ActivationOptions(timeout=300, versioned=True, overwrite=True))

    @task(trigger_rule="all_done", retries=0)
    def report(ti=None) -> dict:
        """Per-file outcomes (XCom); fails the run naming every failed file and its reason."""
        from airflow_dcache.pipelines import chunk_steps as cs

        return cs.report(ti, group=None, stages=["reprocess"], selection_task="select")

    reprocess.expand(chunk=chunk(select.output)) >> report()
# [END reprocess_dag]


dcache_reprocess()
