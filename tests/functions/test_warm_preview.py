"""The chunked pipeline's ``preview`` stage runs a chunk's files through warm instances of hdf5-preview."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from airflow_dcache.functions.activation import ActivationOptions
from airflow_dcache.pipelines import chunk_steps as cs
from tests.functions.support import *  # noqa: F403 - fixtures
from tests.functions.support import write_cxi


@pytest.fixture(params=["local", "docker"])
def runtime(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "docker":
        monkeypatch.setenv("DOCKER_HOST", request.getfixturevalue("docker_url"))
        request.getfixturevalue("function_image")("hdf5-preview")  # the library image, as make function-images
    return str(request.param)


def test_preview_of_a_chunk_runs_warm_and_fails_only_the_bad_file(runtime: str, dc: Any, area: str, alice_conn: str,
                                                                   tmp_path: Path) -> None:
    files = []
    for i in range(5):
        local = tmp_path / f"run{i}.cxi"
        if i == 2:
            local.write_bytes(b"this is not HDF5\n")
        else:
            write_cxi(local, frames=3, height=8, width=8, seed=i)
        dc.upload(local, f"{area}/in/{local.name}")
        files.append({"item": {"path": f"{area}/in/{local.name}", "buffer_path": f"{area}/in/{local.name}",
                               "buffer_output_dir": f"{area}/out/{i}"}, "failed": None, "timings": {}})
    cfg = cs.Config(main=alice_conn, buffer=alice_conn, allowed_roots=[area], concurrency=8)
    result = cs.run_function({"index": 0, "files": files}, cfg, cfg.buffer,
                             lambda item: (item["buffer_path"], item["buffer_output_dir"]), runtime=runtime,
                             function="hdf5-preview", parameters={}, stage="preview",
                             ids={"dag_id": "d", "task_id": "preview", "run_id": "r1", "map_index": 0},
                             options=ActivationOptions(timeout=120), warm_instances=2)
    entries = result["files"]
    assert [bool(e["failed"]) for e in entries] == [False, False, True, False, False]
    assert entries[2]["failed"]["stage"] == "preview" and "run2.cxi" in entries[2]["failed"]["reason"]
    instances = set()
    for entry in entries:
        if entry["failed"]:
            continue
        raw = io.BytesIO()
        dc.download(entry["preview"]["activation_record"], raw)
        record = json.loads(raw.getvalue())
        assert record["warm"] is True and record["warm_instance"]["runtime"] == runtime
        assert record["warm_instance"]["cold_start_seconds"] > 0
        instances.add(record["warm_instance"]["id"])
        assert {o["name"] for o in entry["preview"]["outputs"]} >= {f"{Path(entry['item']['path']).stem}.preview.png"}
    assert 1 <= len(instances) <= 2  # at most warm_instances, and the bad file did not cost an instance
