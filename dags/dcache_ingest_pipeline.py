"""dcache_ingest_pipeline: every HDF5 run uploaded to ``/data/incoming`` on ``main`` is processed and archived.

How it starts
    By itself: an ``AssetWatcher`` on ``dcache://main/data/incoming`` runs a
    ``DCacheStorageEventTrigger`` (dCache's SSE storage events: close-after-write and moved-in of
    ``*.h5``). A burst of uploads arrives as batches of events; the run covers every file of every
    triggering event. Or by hand: *Trigger* in the UI with ``paths`` (paths or globs on ``main``) —
    the same tasks, the same function, the seed's "same code interactive and automatic".

What it does to each file
    1. ``validate``: the file is still this version, non-empty, has a checksum, starts with the HDF5
       signature (8 bytes read through a pre-authorised URL);
    2. ``replicate``: HTTP third-party copy ``main`` → ``buffer`` (next to compute), each side
       authorised by a macaroon for that one file, checksums compared;
    3. ``preview``: the ``hdf5-preview`` function runs at the buffer site with pre-authorised URLs only
       (DOWNLOAD on its input, UPLOAD on a private output area) and writes a PNG and a JSON summary;
    4. ``publish``: third-party copy of the outputs to ``/data/processed/<run>/<file>/`` on ``main``;
    5. ``archive_rule``: the rule update — QoS of the raw file on ``main`` becomes ``target_qos``;
    6. ``drop_buffer_replica``: the file's work area on ``buffer`` is removed;
    7. ``wait_archived``: until the raw file has the QoS asked for (on tape for ``tape``/``disk+tape``);
    8. ``record_lineage``: marks the input version processed (xattr, compare-and-set) and emits the
       lineage record (event key, input checksum, outputs, activation record) on
       ``dcache://main/data/processed``.

In chunks (the default design)
    The stages are mapped over *chunks* of files (at most ``chunk_max_files`` files and
    ``chunk_max_bytes`` bytes, defaults 50 files / 2 GiB or ``$AIRFLOW_DCACHE_CHUNK_MAX_FILES`` /
    ``$AIRFLOW_DCACHE_CHUNK_MAX_BYTES``; a burst of more than ``chunk_max_files`` times ``chunk_max_count``
    files, default 12 chunks or ``$AIRFLOW_DCACHE_CHUNK_MAX_COUNT``, gets bigger chunks instead of more):
    ``collect`` → ``chunk`` → per chunk ``process`` → ``record_when_archived`` → ``report``.
    ``process`` takes each file of its chunk through steps 1-6 on its own
    (``$AIRFLOW_DCACHE_CHUNK_CONCURRENCY`` files at once, default 8; the function on a few warm
    instances shared by the chunk): a file's outputs are published as soon as its own steps are done,
    not when its chunk's slowest file is. ``record_when_archived`` is steps 7-8: one deferred wait for
    the chunk's files, then their lineage in the same task. A run costs 2 tasks per chunk instead of 8
    per file, and is not capped by ``[core] max_map_length`` files. A file that fails is carried with
    its step and reason, later steps skip it, its chunk-mates go on. ``report`` fails the run naming
    every failed file, step and reason; trigger with ``only_failed_of`` = that run's id (or press
    *Re-run failed* in the dCache view) to re-run just those files. One asset event per chunk carries
    the list of per-file lineage records.

Per file (``$AIRFLOW_DCACHE_PIPELINE_DESIGN=per_file``, read when the DAG is parsed)
    Same DAG id, asset, steps and rules, the task group mapped over files: each file is its own row in
    the grid and moves on as soon as its own step is done. For runs of a handful of files that is the
    more readable view; from tens of files on, its 8 task instances per file cost more than the work
    (``docs/pipelines.md``).

Idempotent by the event key: a redelivered event, or a run over files already done, finds the marker
(``airflow_dcache.done.<dag_id>`` on the input) and skips them — unless ``reprocess`` is set. The
marker is set only by ``record_lineage``, the last step, so a failed run leaves none and the next run
(or the cleared task) processes the file.

When a site is down
    The two cross-site copies (``replicate``, ``publish``; in chunks the ``process`` task) retry with
    exponential backoff: 3 retries 30 s apart, doubling, at most 10 min (``$AIRFLOW_DCACHE_REPLICATE_RETRIES``,
    ``$AIRFLOW_DCACHE_REPLICATE_RETRY_DELAY``, ``$AIRFLOW_DCACHE_REPLICATE_MAX_RETRY_DELAY`` in seconds,
    read when the DAG is parsed). After that the run fails, naming the site that is unreachable;
    nothing on ``main`` was changed, and re-triggering with the same ``paths`` (or clearing the
    failed task) completes once the site is back. A retried ``process`` does not redo the files an
    earlier try published (their raw file may be on tape only by then): they get their QoS rule and
    buffer clean-up again, the others start over.

Billing instead of SSE
    Sites that publish dCache billing records to Kafka get the same pipeline as
    ``dcache_ingest_billing``, scheduled by a ``DCacheBillingEventTrigger`` (write transfers of
    ``*.h5`` under ``/data/incoming``, pool-to-pool and failed transfers excluded). It is defined when
    ``$AIRFLOW_DCACHE_BILLING_TOPIC`` names the topic (connection ``kafka_billing``).

Connections: ``dcache_main`` and ``dcache_buffer`` (``site`` extras ``main``/``buffer``). The function
runtime is ``$AIRFLOW_DCACHE_FUNCTION_RUNTIME`` (``local`` or ``docker``; the demo picks it).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Asset, AssetWatcher, Param, dag, task, task_group

from airflow_dcache.operators import (
    DCacheDeleteOperator,
    DCacheFunctionOperator,
    DCacheReplicateOperator,
    DCacheSetQosOperator,
)
from airflow_dcache.pipelines import design
from airflow_dcache.pipelines.chunks import DEFAULT_MAX_BYTES, DEFAULT_MAX_CHUNKS, DEFAULT_MAX_FILES
from airflow_dcache.retry_policy import DCacheRetryPolicy
from airflow_dcache.sensors import DCacheFileSensor
from airflow_dcache.triggers import DCacheBillingEventTrigger, DCacheStorageEventTrigger

MAIN, BUFFER = "dcache_main", "dcache_buffer"
RUNTIME = os.environ.get("AIRFLOW_DCACHE_FUNCTION_RUNTIME", "local")
SOURCE_ROOT, BUFFER_ROOT, OUTPUT_ROOT = "/data/incoming", "/data/work", "/data/processed"
# [START ingest_roots]
# The trees this pipeline may act on: files are chosen only below SELECT_ROOTS (the watched tree),
# whoever triggers the run, and every dCache task refuses paths outside ALLOWED_ROOTS.
SELECT_ROOTS = [SOURCE_ROOT]
ALLOWED_ROOTS = [SOURCE_ROOT, BUFFER_ROOT, OUTPUT_ROOT]
# [END ingest_roots]
BILLING_TOPIC = os.environ.get("AIRFLOW_DCACHE_BILLING_TOPIC")
# chunked (the default): the stages mapped over chunks of files, a few tasks per chunk; per_file: mapped over
# files, 8 tasks per file, each file its own grid row (airflow_dcache.pipelines.design, docs/pipelines.md)
DESIGN = design.from_env().name


def _env_number(name: str, default: float, *, minimum: float, whole: bool = False) -> float:
    """A number from the environment at parse time; a bad value is an import error naming the variable."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    kind = "a whole number" if whole else "a number"
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        raise ValueError(f"${name}: expected {kind}, got {raw!r}") from None
    if not value >= minimum:  # also refuses nan
        raise ValueError(f"${name}: expected {kind} >= {minimum:g}, got {raw!r}")
    return value


# [START ingest_retries]
# The cross-site copies retry with exponential backoff: a site down for minutes only delays the run.
# Waits are retry_delay * 2**(try-1) (Airflow adds up to as much again, deterministic per task), capped.
REPLICATE_RETRIES: dict[str, Any] = {
    "retries": int(_env_number("AIRFLOW_DCACHE_REPLICATE_RETRIES", 3, minimum=0, whole=True)),
    "retry_delay": timedelta(seconds=_env_number("AIRFLOW_DCACHE_REPLICATE_RETRY_DELAY", 30, minimum=1)),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(seconds=_env_number("AIRFLOW_DCACHE_REPLICATE_MAX_RETRY_DELAY", 600, minimum=1)),
}
# [END ingest_retries]

# [START ingest_assets]
incoming = Asset(
    "dcache://main/data/incoming",
    watchers=[AssetWatcher(name="incoming_h5", trigger=DCacheStorageEventTrigger(
        dcache_conn_id=MAIN, paths=["/data/incoming"], recursive=True,
        events=["IN_CLOSE_WRITE", "IN_MOVED_TO"], include=["*.h5"],
        # the contract's largest batches: a burst of 2,000 files is two runs of at most 12 chunks each
        batch_max_events=1000, batch_max_bytes=512 * 1024,
        # under steady uploads one run per this many seconds: fewer, larger runs keep the tasks per file low
        batch_min_interval=_env_number("AIRFLOW_DCACHE_BATCH_MIN_INTERVAL", 3, minimum=0)))],
)
processed = Asset("dcache://main/data/processed")
# [END ingest_assets]

PARAMS = {
    "paths": Param([], type="array", items={"type": "string"}, title="Files (manual runs)",
                   description="dCache paths or globs on main, e.g. /data/incoming/*.h5. "
                               "Empty: the files of the triggering storage events."),
    "function": Param("hdf5-preview", type="string", enum=["hdf5-preview"], title="Function"),
    "function_parameters": Param({}, type="object", title="Function parameters",
                                 description='e.g. {"frame": 0} for one frame instead of the mean'),
    "target_qos": Param("disk+tape", type="string", enum=["disk", "tape", "disk+tape"],
                        title="QoS of the raw file afterwards"),
    "reprocess": Param(False, type="boolean", title="Reprocess files already done"),
    "allow_empty": Param(False, type="boolean", title="Allow a selection that matches nothing",
                         description="Off: a manual run whose paths match no file fails, naming the pattern."),
}

# [START ingest_chunk_params]
# The chunked design's own params; their defaults come from the environment when the DAG is parsed.
CHUNK_PARAMS = {
    "chunk_max_files": Param(int(_env_number(
        "AIRFLOW_DCACHE_CHUNK_MAX_FILES", DEFAULT_MAX_FILES, minimum=1, whole=True)),
                             type="integer", minimum=1, title="Files per chunk (at most)"),
    "chunk_max_bytes": Param(int(_env_number(
        "AIRFLOW_DCACHE_CHUNK_MAX_BYTES", DEFAULT_MAX_BYTES, minimum=1, whole=True)),
                             type="integer", minimum=1, title="Bytes per chunk (at most)"),
    "chunk_max_count": Param(int(_env_number(
        "AIRFLOW_DCACHE_CHUNK_MAX_COUNT", DEFAULT_MAX_CHUNKS, minimum=1, whole=True)),
                             type="integer", minimum=1, title="Chunks per run (at most, while the bytes allow)",
                             description="More files than chunk_max_files times this make bigger chunks, not more "
                                         "tasks."),
    "only_failed_of": Param("", type="string", title="Re-run only the files that failed in run",
                            description="A run id of this DAG: its failed files (its report) are the selection."),
}
CHUNK_CONCURRENCY = int(_env_number("AIRFLOW_DCACHE_CHUNK_CONCURRENCY", 8, minimum=1, whole=True))
# [END ingest_chunk_params]


def ingest_pipeline(dag_id: str, source: Asset) -> DAG:
    """The pipeline scheduled on ``source``: the SSE and the billing variant share every task."""

    @dag(dag_id=dag_id, schedule=[source], catchup=False, render_template_as_native_obj=True, max_active_runs=16,
         tags=["dcache", "ingest", "example"], doc_md=__doc__,
         params={**PARAMS, **CHUNK_PARAMS} if DESIGN == "chunked" else PARAMS,
         # a 403/404 or a changed file fails at once; every dCache task stays inside ALLOWED_ROOTS
         default_args={"retry_policy": DCacheRetryPolicy(), "allowed_roots": ALLOWED_ROOTS})
    def pipeline() -> None:
        @task
        def collect(params: dict[str, Any], run_id: str, ti: Any = None, dag_run: Any = None,
                    triggering_asset_events: Any = None) -> list[dict[str, Any]]:
            """The run's work items (file versions): the events' files or the UI's ``paths``, minus those done.

            The versions not processed here (done before, replaced, gone) are pushed as XCom ``skipped``
            with their reasons.
            """
            from airflow_dcache.hooks import DCacheHook
            from airflow_dcache.pipelines import chunk_steps, steps

            skipped: list[dict[str, Any]] = []
            if (params or {}).get("only_failed_of"):  # the chunked design's "re-run the failures"
                failed = ti.xcom_pull(task_ids="report", key="failed", run_id=params["only_failed_of"])
                params = chunk_steps.rerun_params(params, failed)
            # files chosen by a person (trigger form, REST, CLI, backfill conf) are selected with that
            # person's dCache identity when the site mapped one, else plainly (no admin role) in SELECT_ROOTS
            selector, person = steps.person_selector(MAIN, dag_run, params, SELECT_ROOTS)
            with DCacheHook(MAIN, allowed_roots=SELECT_ROOTS) as hook, selector:
                items = steps.collect_work_items(hook, params, triggering_asset_events, consumer=dag_id, site="main",
                                                 run_id=run_id, buffer_root=BUFFER_ROOT, output_root=OUTPUT_ROOT,
                                                 source_root=SOURCE_ROOT, skipped=skipped, allowed_roots=SELECT_ROOTS,
                                                 selector=selector, selector_name=person)
            if (params or {}).get("only_failed_of"):
                chunk_steps.note_missing(params["paths"], items, skipped)
            ti.xcom_push(key="skipped", value=skipped)
            return items

        @task
        def clean_up(run_id: str, ti: Any = None) -> None:
            """Leave nothing behind whatever the outcome: outputs of files this run did not finish, the buffer area.

            Outputs already published for a file whose later step failed (e.g. it was replaced while
            waiting for tape) have no lineage record: they go. Then the run's buffer area, and areas
            older runs could not remove.
            """
            from airflow_dcache.hooks import DCacheHook
            from airflow_dcache.pipelines import steps

            items = ti.xcom_pull(task_ids="collect") or []
            # what this run recorded lineage for keeps its outputs, even if the file was overwritten since
            recorded = steps.recorded_versions(ti.xcom_pull(task_ids=design.DESIGNS[DESIGN].task("record_lineage")))
            with DCacheHook(MAIN, allowed_roots=ALLOWED_ROOTS) as hook:
                steps.discard_unprocessed(hook, items, dag_id, run_id, recorded)
            with DCacheHook(BUFFER, allowed_roots=ALLOWED_ROOTS) as hook:
                steps.clean_run_area(hook, BUFFER_ROOT, run_id)

        @task_group(group_id="file")
        def per_file(item: dict[str, Any]) -> None:
            @task(multiple_outputs=True)
            def validate(item: dict[str, Any]) -> dict[str, Any]:
                from airflow_dcache.hooks import DCacheHook
                from airflow_dcache.pipelines import steps

                with DCacheHook(MAIN, allowed_roots=ALLOWED_ROOTS) as hook:
                    return steps.check_hdf5(hook, item)

            # [START ingest_per_file]
            checked = validate(item)
            # every step that acts on the raw file names the version it is for: a file replaced since
            # the event fails the step at once (VersionChanged), the newer version's own run processes it
            replicate = DCacheReplicateOperator(
                task_id="replicate", source_conn_id=MAIN, destination_conn_id=BUFFER,
                source_path=checked["path"], destination_path=checked["buffer_path"],
                expected_version=checked["version"], **REPLICATE_RETRIES)
            preview = DCacheFunctionOperator(
                task_id="preview", dcache_conn_id=BUFFER, runtime=RUNTIME, function="{{ params.function }}",
                inputs=checked["buffer_path"], output_dir=checked["buffer_output_dir"], origins=checked["origin"],
                parameters="{{ params.function_parameters }}", timeout=300)
            publish = DCacheReplicateOperator(
                task_id="publish", source_conn_id=BUFFER, destination_conn_id=MAIN,
                # the outputs and the activation record: the buffer work area goes away afterwards
                source_path="{% set r = ti.xcom_pull(task_ids='file.preview', map_indexes=ti.map_index) %}"
                            "{{ r['outputs'] + [r['activation_record']] }}",
                destination_dir=checked["output_dir"], **REPLICATE_RETRIES)
            archive_rule = DCacheSetQosOperator(
                task_id="archive_rule", dcache_conn_id=MAIN, path=checked["path"], expected_version=checked["version"],
                target_qos="{{ params.target_qos }}", wait_for_completion=False)
            drop = DCacheDeleteOperator(task_id="drop_buffer_replica", dcache_conn_id=BUFFER,
                                        path=checked["buffer_dir"], recursive=True, missing_ok=True)
            archived = DCacheFileSensor(task_id="wait_archived", dcache_conn_id=MAIN, path=checked["path"],
                                        expected_version=checked["version"], condition="qos", poke_interval=1,
                                        # the wait follows the rule: disk → ONLINE, tape → NEARLINE, disk+tape → both
                                        target_qos="{{ params.target_qos }}",
                                        locality="{{ {'disk': 'ONLINE', 'tape': 'NEARLINE'}"
                                                 ".get(params.target_qos, 'ONLINE_AND_NEARLINE') }}",
                                        timeout=600, mode="poke")

            @task(outlets=[processed])
            def record_lineage(item: dict[str, Any], result: dict[str, Any], copies: dict[str, Any], run_id: str,
                               params: Any = None, outlet_events: Any = None) -> dict[str, Any]:
                """Mark the input version processed (compare-and-set) and emit the lineage asset event."""
                from airflow_dcache.hooks import DCacheHook
                from airflow_dcache.pipelines import steps

                published = {o["source"]: o["destination"] for o in copies.get("files", [])}
                with DCacheHook(MAIN, allowed_roots=ALLOWED_ROOTS) as hook:
                    lineage = steps.record_processed(hook, item, result, published, dag_id=dag_id, run_id=run_id,
                                                     function_name=(params or {}).get("function"))
                if lineage is None:  # another run processed this version first: its result stands, ours went
                    from airflow.sdk.exceptions import AirflowSkipException

                    raise AirflowSkipException(f"{item['path']} ({item['pnfsid']}) was processed by another run "
                                               "first; this run's outputs were removed")
                outlet_events[processed].extra = lineage
                return lineage

            lineage = record_lineage(checked, preview.output, publish.output)
            checked >> replicate >> preview >> publish >> [archive_rule, drop]
            archive_rule >> archived >> lineage
            drop >> lineage
            # [END ingest_per_file]

        items = collect()
        if DESIGN == "chunked":
            chunked_design(dag_id, items, clean_up)
            return
        # a teardown: runs when the files are done whatever their outcome, and does not decide the run's state
        per_file.expand(item=items) >> clean_up().as_teardown()

    return pipeline()


def chunked_design(dag_id: str, items: Any, clean_up: Any) -> None:
    """``chunk`` → the chunk group mapped over chunks → ``report``; the stage bodies are in ``chunk_steps``."""

    def config() -> Any:
        from airflow_dcache.pipelines.chunk_steps import Config

        return Config(main=MAIN, buffer=BUFFER, allowed_roots=ALLOWED_ROOTS, concurrency=CHUNK_CONCURRENCY)

    @task
    def chunk(items: list[dict[str, Any]], params: dict[str, Any]) -> list[dict[str, Any]]:
        """The run's work items in chunks of at most ``chunk_max_files`` files and ``chunk_max_bytes`` bytes;
        a burst that would need more than ``chunk_max_count`` chunks gets bigger chunks instead."""
        from airflow_dcache.pipelines.chunks import make_chunks

        return make_chunks(items, params["chunk_max_files"], params["chunk_max_bytes"], params["chunk_max_count"])

    # [START ingest_chunked]
    @task_group(group_id="chunks")
    def per_chunk(chunk: dict[str, Any]) -> None:
        from airflow_dcache.pipelines import chunk_steps as cs

        # retried when a site is unreachable (a step failing on a file fails only that file): every step is
        # safe to repeat, and files an earlier try published only get their QoS rule and buffer clean-up again
        @task(**REPLICATE_RETRIES)
        def process(chunk: dict[str, Any], params: dict[str, Any], run_id: str, ti: Any = None) -> dict[str, Any]:
            """Each file on its own: validate → replicate → preview → publish → archive_rule → drop_buffer_replica."""
            ids = {"dag_id": dag_id, "task_id": ti.task_id, "run_id": run_id, "map_index": ti.map_index}
            return cs.process(chunk, config(), runtime=RUNTIME, function=params["function"],
                              parameters=params["function_parameters"], ids=ids, target_qos=params["target_qos"],
                              resume=(ti.try_number or 1) > 1)

        def record_lineage(archived: dict[str, Any], context: Any) -> dict[str, Any]:
            """Mark each file version processed and emit one asset event with the chunk's lineage records."""
            ti, run_id = context["ti"], context["run_id"]
            state, records = cs.record_lineage(archived, config(), dag_id=dag_id, run_id=run_id,
                                               function_name=(context["params"] or {}).get("function"))
            ti.xcom_push(key="outcome", value=state)  # read by report, also when no event is emitted
            if not records:  # nothing processed in this chunk: no asset event that says nothing
                from airflow.sdk.exceptions import AirflowSkipException

                raise AirflowSkipException(f"chunk {state.get('index')}: no file of this chunk was processed here")
            from airflow_dcache.events import lineage_chunk

            context["outlet_events"][processed].extra = lineage_chunk(records, dag_id=dag_id, run_id=run_id,
                                                                      chunk=state.get("index", ti.map_index))
            return state

        def record_when_archived(chunk: Any) -> Any:
            """One deferred wait for the chunk's files (one trigger, one listing per directory and round), then
            ``record_lineage`` in the same task: a file is marked processed only once it is archived.

            The condition follows ``target_qos`` (disk: ONLINE, tape: NEARLINE, disk+tape: both); a file
            gone, replaced or late is failed alone. Safe to repeat (the marker is a compare-and-set, this
            run's own marker is success), so a site outage is retried as a whole.
            """
            from airflow_dcache.operators.chunk_wait import DCacheChunkWaitOperator

            return DCacheChunkWaitOperator(
                task_id="record_when_archived", dcache_conn_id=MAIN, chunk=chunk, stage="wait_archived",
                target_qos="{{ params.target_qos }}", then=record_lineage, outlets=[processed],
                timeout=600, poll_interval=1, max_poll_interval=5, concurrency=CHUNK_CONCURRENCY,
                **REPLICATE_RETRIES).output

        record_when_archived(process(chunk))
    # [END ingest_chunked]

    @task(trigger_rule="all_done", retries=0)
    def report(ti: Any = None) -> dict[str, Any]:
        """Per-file outcomes and timings (XCom); fails the run naming every failed file, its stage and reason."""
        from airflow_dcache.pipelines import chunk_steps

        return chunk_steps.report(ti, group="chunks")

    chunks = chunk(items)
    done = per_chunk.expand(chunk=chunks)
    done >> report()
    # a teardown: runs when the chunks are done whatever their outcome, and does not decide the run's state
    done >> clean_up().as_teardown()


dcache_ingest_pipeline = ingest_pipeline("dcache_ingest_pipeline", incoming)

# [START ingest_billing]
if BILLING_TOPIC:
    incoming_billing = Asset(
        "dcache://main/data/incoming-billing",  # one asset per watcher: the SSE one has its own
        watchers=[AssetWatcher(name="incoming_h5_billing", trigger=DCacheBillingEventTrigger(
            kafka_config_id="kafka_billing", topics=[BILLING_TOPIC], site="main", include=["/data/incoming"],
            name_regex=r".*\.h5", kinds=["closed_after_write"]))],
    )
    dcache_ingest_billing = ingest_pipeline("dcache_ingest_billing", incoming_billing)
# [END ingest_billing]
