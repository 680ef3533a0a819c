"""The example DAGs import with no error and have the structure their docstrings describe."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory):
    import os

    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow-home")))
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}


def test_every_dag_has_a_howto_docstring(dagbag) -> None:
    assert set(dagbag.dag_ids) >= {"dcache_ingest_pipeline", "dcache_video_deshake", "dcache_reprocess",
                                   "dcache_stage_and_process"}
    for dag in dagbag.dags.values():
        assert dag.doc_md and len(dag.doc_md) > 200, dag.dag_id


def _upstream(dag, task_id: str) -> set[str]:
    return set(dag.get_task(task_id).upstream_task_ids)


def _ingest_as(design: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The ingest DAG parsed with ``$AIRFLOW_DCACHE_PIPELINE_DESIGN`` = ``design`` (read at parse time)."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW_DCACHE_PIPELINE_DESIGN", design)
    bag = DagBag(dag_folder=str(DAGS / "dcache_ingest_pipeline.py"))
    assert bag.import_errors == {}
    return bag.dags["dcache_ingest_pipeline"]


def test_ingest_pipeline_is_chunked_by_default(dagbag) -> None:
    from airflow_dcache.pipelines.design import CHUNKED

    dag = dagbag.dags["dcache_ingest_pipeline"]
    assert {"collect", "chunk", "report", *(t for t, _ in CHUNKED.task_ids())} <= set(dag.task_ids)
    stages = [t for t, _ in CHUNKED.task_ids()]
    assert stages == ["chunks.process", "chunks.record_when_archived"]
    for before, after in itertools.pairwise(stages):  # process → archived, then lineage
        assert before in _upstream(dag, after)
    assert dag.get_task("chunks.process").retries >= 1
    assert {"paths", "function", "function_parameters", "target_qos", "reprocess", "chunk_max_files",
            "chunk_max_bytes", "only_failed_of"} <= set(dag.params)
    assert [o.uri for o in dag.get_task("chunks.record_when_archived").outlets] == ["dcache://main/data/processed"]
    assert not any(t.startswith("file.") for t in dag.task_ids)


def test_ingest_pipeline_chain_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dag = _ingest_as("per_file", tmp_path, monkeypatch)
    assert {"collect", "file.validate", "file.replicate", "file.preview", "file.publish", "file.archive_rule",
            "file.drop_buffer_replica", "file.wait_archived", "file.record_lineage"} <= set(dag.task_ids)
    assert "file.validate" in _upstream(dag, "file.replicate")
    assert "file.replicate" in _upstream(dag, "file.preview")
    assert "file.preview" in _upstream(dag, "file.publish")
    assert "file.publish" in _upstream(dag, "file.archive_rule")
    assert "file.publish" in _upstream(dag, "file.drop_buffer_replica")
    assert "file.archive_rule" in _upstream(dag, "file.wait_archived")
    assert {"file.wait_archived", "file.drop_buffer_replica"} <= _upstream(dag, "file.record_lineage")
    # Scheduled by the storage-event watcher of /data/incoming; UI form params present.
    assert {"paths", "function", "function_parameters", "target_qos", "reprocess"} <= set(dag.params)
    assert "chunk_max_files" not in dag.params
    outlets = dag.get_task("file.record_lineage").outlets
    assert [o.uri for o in outlets] == ["dcache://main/data/processed"]


def test_an_unknown_design_is_an_import_error_naming_the_variable(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW_DCACHE_PIPELINE_DESIGN", "per-file")
    bag = DagBag(dag_folder=str(DAGS / "dcache_ingest_pipeline.py"))
    (error,) = bag.import_errors.values()
    assert "$AIRFLOW_DCACHE_PIPELINE_DESIGN: expected one of chunked, per_file, got 'per-file'" in error


def test_ingest_watcher_trigger_kwargs_hold_no_secret(dagbag) -> None:
    from airflow.serialization.serialized_objects import SerializedDAG  # noqa: F401 - import check only

    dag = dagbag.dags["dcache_ingest_pipeline"]
    assets = list(dag.timetable.asset_condition.objects)
    assert [a.uri for a in assets] == ["dcache://main/data/incoming"]
    (watcher,) = assets[0].watchers
    classpath, kwargs = watcher.trigger.serialize()
    assert classpath == "airflow_dcache.triggers.storage_events.DCacheStorageEventTrigger"
    assert kwargs["dcache_conn_id"] == "dcache_main"
    assert not any(k in kwargs for k in ("password", "token", "macaroon"))


def test_reprocess_is_daily_without_catchup_and_chunked(dagbag) -> None:
    dag = dagbag.dags["dcache_reprocess"]
    assert dag.catchup is False
    assert _upstream(dag, "chunk") == {"select"} and _upstream(dag, "reprocess") == {"chunk"}
    assert _upstream(dag, "report") == {"reprocess"} and dag.get_task("report").trigger_rule == "all_done"
    assert {"directory", "name_glob", "function", "chunk_max_files", "chunk_max_count"} <= set(dag.params)


def test_reprocess_work_items_keep_one_folder_per_version() -> None:
    """a.h5 and a.hdf5, or a re-upload under the same name, never share an output folder."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("reprocess_dag", DAGS / "dcache_reprocess.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    a = module.work_item({"path": "/data/incoming/r1/a.h5", "pnfsid": "0000A1", "size": 3})
    b = module.work_item({"path": "/data/incoming/r1/a.hdf5", "pnfsid": "0000B2", "size": 3})
    again = module.work_item({"path": "/data/incoming/r1/a.h5", "pnfsid": "0000C3", "size": 3})
    assert len({a["output_dir"], b["output_dir"], again["output_dir"]}) == 3
    assert a["output_dir"].startswith("/data/processed/reprocess/data/incoming/r1/a.h5/")
    assert a["version"]["pnfsid"] == "0000A1"


def test_stage_and_process_waits_per_file(dagbag) -> None:
    dag = dagbag.dags["dcache_stage_and_process"]
    assert "stage" in _upstream(dag, "file.wait_online")
    assert _upstream(dag, "file.preview") - {"select"} == {"file.wait_online"}  # its own file, nothing else
