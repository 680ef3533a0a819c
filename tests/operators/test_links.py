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
