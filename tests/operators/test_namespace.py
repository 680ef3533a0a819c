"""Namespace operators and transfers against the bundled service."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from airflow_dcache.exceptions import AlreadyExists, NotFound
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.operators.namespace import (
    DCacheCreateDirectoryOperator,
    DCacheDeleteOperator,
    DCacheListOperator,
    DCacheMoveOperator,
    DCacheSetAttributesOperator,
)
from airflow_dcache.transfers.dcache_to_local import DCacheToLocalFilesystemOperator
from airflow_dcache.transfers.local_to_dcache import LocalFilesystemToDCacheOperator
from tests.operators.conftest import put


def test_create_move_attributes_delete(main: DCacheHook, main_conn: str, workdir: str, context: dict) -> None:
    made = DCacheCreateDirectoryOperator(task_id="mk", path=f"{workdir}/a/b/c", dcache_conn_id=main_conn)
    assert made.execute(context) == {"path": f"{workdir}/a/b/c", "created": True}
    assert made.execute(context)["created"] is False
    assert context["ti"].xcom["dcache_file_url"].endswith(f"/api/v1/namespace{workdir}/a/b/c")

    put(main, f"{workdir}/a/f.bin")
    DCacheMoveOperator(task_id="mv", source_path=f"{workdir}/a/f.bin", destination_path=f"{workdir}/a/b/g.bin",
                       dcache_conn_id=main_conn).execute(context)
    assert main.exists(f"{workdir}/a/b/g.bin") and not main.exists(f"{workdir}/a/f.bin")
    put(main, f"{workdir}/a/h.bin")
    with pytest.raises(AlreadyExists):
        DCacheMoveOperator(task_id="mv2", source_path=f"{workdir}/a/h.bin", destination_path=f"{workdir}/a/b/g.bin",
                           dcache_conn_id=main_conn).execute(context)

    DCacheSetAttributesOperator(task_id="attr", path=[f"{workdir}/a/b/g.bin"], xattrs={"run": "42"},
                                labels=["raw", "2026"], dcache_conn_id=main_conn).execute(context)
    entry = main.stat(f"{workdir}/a/b/g.bin", xattr=True, labels=True)
    assert entry.xattrs == {"run": "42"} and sorted(entry.labels or []) == ["2026", "raw"]

    out = DCacheDeleteOperator(task_id="rm", path=[f"{workdir}/a/h.bin", f"{workdir}/nope"], missing_ok=True,
                               dcache_conn_id=main_conn).execute(context)
    assert out == {"deleted": [f"{workdir}/a/h.bin"], "missing": [f"{workdir}/nope"]}
    with pytest.raises(NotFound):
        DCacheDeleteOperator(task_id="rm2", path=f"{workdir}/nope", dcache_conn_id=main_conn).execute(context)
    DCacheDeleteOperator(task_id="rm3", path=f"{workdir}/a", recursive=True, dcache_conn_id=main_conn).execute(context)
    assert not main.exists(f"{workdir}/a")


def test_list_select(main: DCacheHook, main_conn: str, workdir: str, context: dict) -> None:
    put(main, f"{workdir}/r1.h5", b"x" * 100)
    put(main, f"{workdir}/r2.txt", b"y" * 10)
    main.mkdir(f"{workdir}/sub")
    put(main, f"{workdir}/sub/r3.h5", b"z" * 1000)
    main.set_labels(f"{workdir}/sub/r3.h5", ["keep"])

    def run(**kwargs: Any) -> list[dict]:
        return DCacheListOperator(task_id="ls", path=workdir, dcache_conn_id=main_conn, **kwargs).execute(context)

    everything = run(recursive=True)
    assert [r["name"] for r in everything] == ["r1.h5", "r2.txt", "r3.h5"]
    first = everything[0]
    assert set(first) == {"path", "name", "pnfsid", "size", "mtime", "checksums", "locality"}
    assert first["size"] == 100 and first["pnfsid"] and first["locality"] == "ONLINE"
    assert first["checksums"].get("adler32") and first["mtime"].endswith("Z")
    assert context["ti"].xcom["paths"] == [r["path"] for r in everything]

    assert [r["name"] for r in run()] == ["r1.h5", "r2.txt"]
    assert [r["name"] for r in run(recursive=True, name_glob="*.h5", min_size=500)] == ["r3.h5"]
    assert [r["name"] for r in run(recursive=True, path_regex=r"r[12]\.")] == ["r1.h5", "r2.txt"]
    assert [r["name"] for r in run(recursive=True, labels=["keep"])] == ["r3.h5"]
    assert run(recursive=True, locality="NEARLINE") == []
    assert run(mtime_after="2000-01-01T00:00:00Z", mtime_before="2001-01-01T00:00:00Z") == []


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"path_regex": "[unclosed"}, "path_regex"),
    ({"locality": "SOMEWHERE"}, "locality"),
    ({"mtime_after": "not a time"}, "mtime_after"),
    ({"path": "relative/dir"}, "path"),
])
def test_list_bad_input_fails_at_parse(kwargs: dict, field: str) -> None:
    args = {"task_id": "ls", "path": "/data", **kwargs}
    with pytest.raises(ValueError, match=field):
        DCacheListOperator(**args)


def test_list_templates_are_checked_after_rendering(main_conn: str, workdir: str, context: dict) -> None:
    op = DCacheListOperator(task_id="ls", path=workdir, mtime_after="{{ data_interval_start }}",
                            dcache_conn_id=main_conn)  # a template passes at parse time
    op.mtime_after = "garbage"  # what a bad rendering leaves
    with pytest.raises(ValueError, match="mtime_after"):
        op.execute(context)


def test_other_bad_input() -> None:
    with pytest.raises(ValueError, match="path"):
        DCacheDeleteOperator(task_id="rm", path=[])
    with pytest.raises(ValueError, match="xattrs, labels"):
        DCacheSetAttributesOperator(task_id="a", path="/x")
    with pytest.raises(ValueError, match="xattr_mode"):
        DCacheSetAttributesOperator(task_id="a", path="/x", xattrs={"a": "b"}, xattr_mode="SOMETIMES")
    with pytest.raises(ValueError, match="checksum"):
        LocalFilesystemToDCacheOperator(task_id="up", local_path="/tmp/x", path="/x", checksum="crc64")


def test_upload_download_roundtrip(main: DCacheHook, main_conn: str, workdir: str, context: dict,
                                   tmp_path: Path) -> None:
    data = os.urandom(300_000)
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    up = LocalFilesystemToDCacheOperator(task_id="up", local_path=str(src), path=f"{workdir}/new/in.bin",
                                         checksum="sha-256", dcache_conn_id=main_conn).execute(context)
    assert up["size"] == len(data) and up["verified_by"] == "sha-256"
    down = DCacheToLocalFilesystemOperator(task_id="down", path=f"{workdir}/new/in.bin",
                                           local_path=str(tmp_path / "out"), dcache_conn_id=main_conn)
    (tmp_path / "out").mkdir()
    result = down.execute(context)
    assert result["local_path"] == str(tmp_path / "out" / "in.bin") and result["verified_by"] == "adler32"
    assert (tmp_path / "out" / "in.bin").read_bytes() == data
    with pytest.raises(FileNotFoundError, match="local_path"):
        LocalFilesystemToDCacheOperator(task_id="up2", local_path=str(tmp_path / "missing"), path=f"{workdir}/m",
                                        dcache_conn_id=main_conn).execute(context)
