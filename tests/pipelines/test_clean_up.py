"""A run's clean-up removes the outputs of files it did not finish, and never those its lineage names.

Found by the facility day: a file overwritten after its run recorded lineage (the run was fast, the
overwrite came before the clean-up) no longer carries the run's marker, since the new version is
another file; the clean-up took that for "not finished" and removed outputs a lineage record names.
"""

from __future__ import annotations

from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.pipelines import steps
from tests.pipelines.conftest import put

RUN = "asset_triggered__2026-12-07T04:39:45.389833+00:00_Viwte9XH"


def _item(hook: DCacheHook, workdir: str, name: str) -> dict:
    path = f"{workdir}/in/{name}"
    put(hook, path, b"\x89HDF\r\n\x1a\nfirst version")
    entry = hook.stat(path, checksum=True)
    (item,) = steps.work_items_from_selection(
        [{"path": path, "name": name, "pnfsid": entry.pnfsid, "checksums": dict(entry.checksums or {}),
          "size": entry.size}], site="main", run_id=RUN, buffer_root=f"{workdir}/work",
        output_root=f"{workdir}/out", source_root=f"{workdir}/in")
    put(hook, f"{item['output_dir']}/{name}.summary.json", b"{}")
    return item


def test_outputs_of_a_recorded_version_stay_after_the_file_is_overwritten(pipe_main: DCacheHook,
                                                                          pipe_workdir: str) -> None:
    recorded, unfinished = _item(pipe_main, pipe_workdir, "a.h5"), _item(pipe_main, pipe_workdir, "b.h5")
    for item in (recorded, unfinished):  # both overwritten before the clean-up: a new pnfsid, no marker
        put(pipe_main, item["path"], b"\x89HDF\r\n\x1a\nsecond version")
    algo, value = str(steps.item_version(recorded).checksum).split(":", 1)  # as validate leaves it on the item
    lineage = {"schema": "x", "input": {"path": recorded["path"], "pnfsid": recorded["pnfsid"],
                                        "checksums": {algo: value}}}
    # as the chunked design's record_lineage leaves it (the per-file design's result is the record itself)
    chunk = {"index": 0, "files": [{"item": recorded, "failed": None, "lineage": lineage},
                                   {"item": unfinished, "failed": {"stage": "wait_archived", "reason": "changed"}}]}
    versions = steps.recorded_versions(chunk)  # one mapped task's result, or a list of them
    assert [v.id for v in versions] == [v.id for v in steps.recorded_versions([lineage, None])]
    assert [v.id for v in versions] == [steps.item_version(recorded).id]

    removed = steps.discard_unprocessed(pipe_main, [recorded, unfinished], "d", RUN, versions)
    assert removed == [unfinished["output_dir"]]
    assert pipe_main.exists(f"{recorded['output_dir']}/a.h5.summary.json")
    assert not pipe_main.exists(unfinished["output_dir"])


def test_a_recorded_pnfsid_with_another_checksum_is_not_this_items_version(pipe_main: DCacheHook,
                                                                          pipe_workdir: str) -> None:
    """A version is pnfsid and checksum: a lineage record of the same pnfsid with another checksum keeps nothing."""
    item = _item(pipe_main, pipe_workdir, "c.h5")
    put(pipe_main, item["path"], b"\x89HDF\r\n\x1a\nsecond version")
    other = {"input": {"path": item["path"], "pnfsid": item["pnfsid"], "checksums": {"adler32": "00000001"}}}
    removed = steps.discard_unprocessed(pipe_main, [item], "d", RUN, steps.recorded_versions(other))
    assert removed == [item["output_dir"]]
