"""File links pushed by dCache tasks: the frontend resource and the same file in the dCache view."""

from __future__ import annotations

from typing import Any

from airflow_dcache.links.dcache import DCacheFileLink, DCacheViewLink, persist_file_links


class RecordingTI:
    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def test_both_links_are_pushed_without_credentials() -> None:
    ti = RecordingTI()
    persist_file_links({"ti": ti}, "dcache_main", "http://127.0.0.1:3880/api/v1", "/data/in/run 1.h5")
    assert ti.pushed[DCacheFileLink.key] == "http://127.0.0.1:3880/api/v1/namespace/data/in/run%201.h5"
    view = ti.pushed[DCacheViewLink.key]
    assert view.endswith("/dcache/ui/?conn=dcache_main&path=%2Fdata%2Fin%2Frun+1.h5")


def test_an_unlinkable_path_leaves_the_view_button_empty_not_the_task_failed() -> None:
    ti = RecordingTI()
    persist_file_links({"ti": ti}, "dcache_main", "http://127.0.0.1:3880/api/v1", "relative/../x")
    assert DCacheViewLink.key not in ti.pushed


def test_a_task_that_never_set_a_link_answers_empty_without_a_lookup() -> None:
    """A delete task has no file to open: reading the missing XCom would log an error in its task log."""
    from airflow_dcache.operators.namespace import DCacheDeleteOperator

    task = DCacheDeleteOperator(task_id="delete", path="/data/x")
    assert DCacheFileLink().get_link(task, ti_key=None) == ""  # type: ignore[arg-type]  (no XCom reachable here)


def test_a_link_set_in_this_process_is_answered_from_the_task() -> None:
    from airflow_dcache.operators.namespace import DCacheCreateDirectoryOperator

    task = DCacheCreateDirectoryOperator(task_id="mkdir", path="/data/x")
    ti = RecordingTI()
    persist_file_links({"ti": ti, "task": task}, "dcache_main", "http://127.0.0.1:3880/api/v1", "/data/x")
    assert DCacheFileLink().get_link(task, ti_key=None) == ti.pushed[DCacheFileLink.key]  # type: ignore[arg-type]
    assert DCacheViewLink().get_link(task, ti_key=None) == ti.pushed[DCacheViewLink.key]  # type: ignore[arg-type]
