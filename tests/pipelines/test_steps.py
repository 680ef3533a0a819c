"""The pure parts of the pipelines' shared steps: work items, run folders, UI path parsing, markers."""

from __future__ import annotations

import pytest

from airflow_dcache.events import StorageEvent
from airflow_dcache.pipelines import steps

WHERE = {"site": "main", "run_id": "asset_triggered__2026-12-02T01:36:02.368204+00:00_AbCd",
         "buffer_root": "/data/work",
         "output_root": "/data/processed"}


def _event(name: str, kind: str = "closed_after_write", pnfsid: str | None = "P1", is_dir: bool = False,
           cursor: str = "c#1") -> StorageEvent:
    return StorageEvent(kind=kind, path=f"/data/incoming/{name}", name=name, is_dir=is_dir,
                        time="2026-12-02T01:36:02.000Z", source="sse", cursor=cursor, pnfsid=pnfsid, size=10)


def test_run_folder_is_short_safe_and_unique_per_run_id() -> None:
    folder = steps.run_folder(WHERE["run_id"])
    assert folder.startswith("2026-12-02T013602_AbCd-") and len(folder) == len("2026-12-02T013602_AbCd-") + 8
    assert steps.run_folder("manual__2026-12-02T01:36:02+00:00").startswith("2026-12-02T013602-")
    assert "/" not in steps.run_folder("a b/../c") and steps.run_folder("a b/../c").startswith("a_b_.._c-")
    # two manual runs in one second (sub-seconds differ) and custom run ids never share a folder
    same_second = {steps.run_folder(f"manual__2026-12-02T01:36:02.{n:06d}+00:00") for n in range(50)}
    assert len(same_second) == 50
    assert steps.run_folder("...") != steps.run_folder("..") and steps.run_folder("").startswith("run-")


def test_work_items_one_per_file_version_with_its_areas() -> None:
    events = [_event("a.h5"), _event("a.h5", kind="moved_in"), _event("b.h5", pnfsid="P2"),
              _event("sub", is_dir=True, pnfsid="P3"), _event("c.h5", kind="deleted", pnfsid="P4")]
    items = steps.work_items_from_events(events, **WHERE)
    assert [i["name"] for i in items] == ["a.h5", "b.h5"]
    a = items[0]
    assert a["key"] == "P1:closed_after_write"
    run = steps.run_folder(WHERE["run_id"])
    assert a["buffer_dir"] == f"/data/work/{run}/P1"
    assert a["buffer_path"] == a["buffer_dir"] + "/in/a.h5"
    assert a["buffer_output_dir"] == a["buffer_dir"] + "/out"
    assert a["output_dir"] == f"/data/processed/{run}/data/incoming/a.h5/P1"
    assert a["version"]["pnfsid"] == "P1"


def test_selected_files_are_keyed_like_uploads() -> None:
    (item,) = steps.work_items_from_selection([{"path": "/data/x/r.h5", "name": "r.h5", "pnfsid": "P9", "size": 3}],
                                              **WHERE)
    assert item["key"] == "P9:closed_after_write"


@pytest.mark.parametrize(("value", "expected"), [
    (None, []), ("", []), ("/a/b.h5", ["/a/b.h5"]), ("/a/*.h5, /b/c.h5\n", ["/a/*.h5", "/b/c.h5"]),
    (["/a", " /b "], ["/a", "/b "]), ("/a//b/./c.h5", ["/a/b/c.h5"]),
])
def test_split_patterns(value, expected) -> None:
    assert steps.split_patterns(value) == expected


@pytest.mark.parametrize("bad", ["relative/x.h5", "/a/../etc", "/a/.."])
def test_split_patterns_refuses_relative_and_dotdot(bad: str) -> None:
    with pytest.raises(ValueError, match="paths"):
        steps.split_patterns([bad])


def test_marker_name_is_an_xattr_name() -> None:
    assert steps.marker_name("dcache_ingest_pipeline") == "airflow_dcache.done.dcache_ingest_pipeline"
    assert steps.marker_name("my dag/x") == "airflow_dcache.done.my_dag_x"
