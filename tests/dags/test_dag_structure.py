"""The example DAGs import with no error and have the structure their docstrings describe."""

from __future__ import annotations

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


def test_ingest_pipeline_chain(dagbag) -> None:
    dag = dagbag.dags["dcache_ingest_pipeline"]
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
    outlets = dag.get_task("file.record_lineage").outlets
    assert [o.uri for o in outlets] == ["dcache://main/data/processed"]


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


def test_reprocess_is_daily_without_catchup_and_versioned(dagbag) -> None:
    dag = dagbag.dags["dcache_reprocess"]
    assert dag.catchup is False
    assert dag.get_task("reprocess").partial_kwargs.get("versioned") is True


def test_stage_and_process_waits_per_file(dagbag) -> None:
    dag = dagbag.dags["dcache_stage_and_process"]
    assert "stage" in _upstream(dag, "file.wait_online")
    assert _upstream(dag, "file.preview") - {"select"} == {"file.wait_online"}  # its own file, nothing else
