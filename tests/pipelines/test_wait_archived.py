"""The ingest DAG's wait for the QoS rule: one deferrable wait per chunk, and a condition that follows
``target_qos`` in both designs (a ``disk`` rule is not waited for on tape)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"


def _ingest(design: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIRFLOW_DCACHE_PIPELINE_DESIGN", design)
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / "dcache_ingest_pipeline.py"))
    assert bag.import_errors == {}
    return bag.dags["dcache_ingest_pipeline"]


def test_the_chunked_wait_is_one_deferrable_operator_per_chunk(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    from airflow_dcache.operators.chunk_wait import DCacheChunkWaitOperator

    dag = _ingest("chunked", monkeypatch, tmp_path)
    task = dag.get_task("chunks.record_when_archived")
    assert isinstance(task, DCacheChunkWaitOperator)
    assert task.deferrable and task.target_qos == "{{ params.target_qos }}" and task.stage == "wait_archived"
    assert task.retries >= 1  # read-only: an unreachable site is retried as a whole
    assert task.dcache_conn_id == "dcache_main" and "/data/incoming" in task.allowed_roots
    assert "chunks.process" in task.upstream_task_ids
    assert callable(task.then)  # the lineage is recorded in the same task, once the wait is over


@pytest.mark.parametrize(("target", "locality"), [
    ("disk", {"ONLINE"}), ("tape", {"NEARLINE"}), ("disk+tape", {"ONLINE", "NEARLINE"})])
def test_the_per_file_sensor_follows_the_target_qos(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    target: str, locality: set[str]) -> None:
    from jinja2.nativetypes import NativeEnvironment

    from airflow_dcache.waits import FileCondition

    dag = _ingest("per_file", monkeypatch, tmp_path)
    sensor = dag.get_task("file.wait_archived")
    env = NativeEnvironment()
    context = {"params": {"target_qos": target}}
    rendered_qos = env.from_string(sensor.target_qos).render(context)
    rendered_locality = env.from_string(sensor.locality).render(context)
    condition = FileCondition.build(rendered_qos, rendered_locality)
    assert condition.target_qos == target and condition.locality == locality


@pytest.mark.parametrize(("target", "locality"), [
    ("disk", {"ONLINE"}), ("tape", {"NEARLINE"}), ("disk+tape", {"ONLINE", "NEARLINE"})])
def test_the_chunk_wait_condition_follows_the_target_qos(target: str, locality: set[str]) -> None:
    from airflow_dcache.triggers.files_wait import qos_condition

    condition = qos_condition(target)
    assert condition.target_qos == target and condition.locality == locality
