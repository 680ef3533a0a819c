"""The chunked pipeline's ``process`` task body: each file through all its steps on its own, against two real
sites and the local function runtime; and what a second try of the task does to files the first one finished."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.pipelines import chunk_steps as cs
from airflow_dcache.pipelines import chunks as ck
from airflow_dcache.pipelines import steps
from tests.conftest import fresh_dir
from tests.functions.support import write_cxi

RUN = "manual__process_test"


@pytest.fixture
def buffer_dir(pipe_buffer: DCacheHook) -> Iterator[str]:
    with fresh_dir(pipe_buffer, "/home/alice/pb") as path:
        yield path


def _chunk(hook: DCacheHook, workdir: str, buffer_dir: str, tmp_path: Path, bad: set[int]) -> ck.Chunk:
    records = []
    for i in range(4):
        local = tmp_path / f"run{i}.h5"
        if i in bad:
            local.write_bytes(b"this is not HDF5\n")
        else:
            write_cxi(local, frames=2, height=8, width=8, seed=i)
        path = f"{workdir}/in/{local.name}"
        hook.upload(local, path, make_parents=True)
        entry = hook.stat(path, checksum=True)
        records.append({"path": path, "name": local.name, "pnfsid": entry.pnfsid,
                        "checksums": dict(entry.checksums or {}), "size": entry.size})
    items = steps.work_items_from_selection(records, site="main", run_id=RUN, buffer_root=buffer_dir,
                                            output_root=f"{workdir}/out", source_root=f"{workdir}/in")
    (chunk,) = ck.make_chunks(items)
    return chunk


def _process(chunk: ck.Chunk, cfg: cs.Config, **kwargs: Any) -> ck.Chunk:
    return cs.process(chunk, cfg, runtime="local", function="hdf5-preview", parameters={}, target_qos="tape",
                      ids={"dag_id": "d", "task_id": "chunks.process", "run_id": RUN, "map_index": 0},
                      timeout=120, warm_instances=2, **kwargs)


def test_each_file_flows_alone_and_a_second_try_does_not_redo_published_files(
        pipe_main: DCacheHook, pipe_buffer: DCacheHook, pipe_main_conn: str, pipe_buffer_conn: str,
        pipe_workdir: str, buffer_dir: str, tmp_path: Path) -> None:
    chunk = _chunk(pipe_main, pipe_workdir, buffer_dir, tmp_path, bad={1})
    cfg = cs.Config(main=pipe_main_conn, buffer=pipe_buffer_conn, allowed_roots=[pipe_workdir, buffer_dir],
                    concurrency=4)
    first = _process(chunk, cfg)
    entries = first["files"]
    assert [bool(e["failed"]) for e in entries] == [False, True, False, False]
    assert entries[1]["failed"]["stage"] == "validate" and "run1.h5" in entries[1]["failed"]["reason"]
    assert set(entries[1]["timings"]) == {"validate"}
    for entry in ck.live(first):
        item = entry["item"]
        assert list(entry["timings"]) == list(cs.PROCESS_STEPS)
        # a file's own steps follow each other; its outputs were published before its buffer area went
        spans = [entry["timings"][s] for s in cs.PROCESS_STEPS]
        assert all(a[1] <= b[0] + 1e-3 for a, b in itertools.pairwise(spans))
        assert set(entry["published"].values()) >= {f"{item['output_dir'].rstrip('/')}/{Path(item['path']).stem}"
                                                     ".preview.png"}
        assert all(pipe_main.exists(p) for p in entry["published"].values())
        assert entry["qos_request"] and not pipe_buffer.exists(item["buffer_dir"])
    assert len({e["qos_request"] for e in ck.live(first)}) <= 3  # grouped while one is in flight

    # the raw files go to tape only (FAST_TAPE): a second try must not read or copy them again
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        localities = {pipe_main.stat(e["item"]["path"], locality=True).locality for e in ck.live(first)}
        if localities == {"NEARLINE"}:
            break
        time.sleep(0.3)
    assert localities == {"NEARLINE"}
    second = _process(chunk, cfg, resume=True)
    again = second["files"]
    assert [bool(e["failed"]) for e in again] == [False, True, False, False]
    assert again[1]["failed"]["stage"] == "validate"  # started over, and failed for the same reason
    for entry, before in zip(again, entries, strict=True):
        if entry["failed"]:
            continue
        assert entry["resumed"] and set(entry["timings"]) == {"resume", "archive_rule", "drop_buffer_replica"}
        assert entry["published"] == before["published"]
        assert entry["preview"]["activation_record"] == before["preview"]["activation_record"]
        lineage = steps.build_lineage(entry["item"], entry["preview"], output_site="main", dag_id="d", run_id=RUN,
                                      function_name="hdf5-preview")
        assert {o["path"] for o in lineage["outputs"]} == {o["path"] for o in before["preview"]["outputs"]}
        assert lineage["function"]["digest"] == before["preview"]["function_digest"]


def test_a_missing_or_incomplete_earlier_publication_starts_the_file_over(
        pipe_main: DCacheHook, pipe_main_conn: str, pipe_buffer_conn: str, pipe_workdir: str, buffer_dir: str,
        tmp_path: Path) -> None:
    chunk = _chunk(pipe_main, pipe_workdir, buffer_dir, tmp_path, bad=set())
    cfg = cs.Config(main=pipe_main_conn, buffer=pipe_buffer_conn, allowed_roots=[pipe_workdir, buffer_dir],
                    concurrency=4)
    ids = {"run_id": RUN, "map_index": 0}
    assert cs.published_before(pipe_main, chunk["files"][0]["item"], ids) is None  # nothing yet
    first = _process(chunk, cfg)
    item = first["files"][0]["item"]
    assert cs.published_before(pipe_main, item, ids) is not None
    png = next(p for p in first["files"][0]["published"].values() if p.endswith(".png"))
    pipe_main.delete(png)  # an output went missing: the file is processed again, not taken as done
    assert cs.published_before(pipe_main, item, ids) is None
    assert cs.published_before(pipe_main, item, {"run_id": RUN, "map_index": 1}) is None  # another chunk's name
