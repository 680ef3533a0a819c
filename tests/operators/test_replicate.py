"""Replication between two real instances (site "main" and site "buffer") by HTTP third-party copy,
authorised by per-file macaroons on both sides."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest
from airflow.sdk.exceptions import AirflowException

from airflow_dcache.exceptions import TransferFailed
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.operators.replicate import DCacheReplicateOperator, destination_for
from tests.operators.conftest import put


@pytest.fixture
def buffer(buffer_conn: str) -> Iterator[DCacheHook]:
    with DCacheHook(buffer_conn) as hook:
        yield hook


@pytest.mark.parametrize("mode", ["pull", "push"])
def test_replicate_list_keeps_layout_and_checksums(mode: str, main: DCacheHook, buffer: DCacheHook, main_conn: str,
                                                    buffer_conn: str, workdir: str, context: dict,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    put(main, f"{workdir}/a.bin", b"a" * 200_000)
    main.mkdir(f"{workdir}/sub")
    put(main, f"{workdir}/sub/b.bin")
    target = f"/home/alice/buf-{uuid.uuid4().hex[:8]}"
    op = DCacheReplicateOperator(task_id="rep", source_conn_id=main_conn, destination_conn_id=buffer_conn,
                                 source_path=[{"path": f"{workdir}/a.bin"}, f"{workdir}/sub/b.bin"],
                                 destination_dir=target, source_root=workdir, mode=mode)
    with caplog.at_level(logging.INFO):
        result = op.execute(context)
    assert result["destinations"] == [f"{target}/a.bin", f"{target}/sub/b.bin"]
    assert context["ti"].xcom["destinations"] == result["destinations"]
    for f in result["files"]:
        assert f["adler32"] == buffer.checksum(f["destination"], ("adler32",))["adler32"]
        assert f["adler32"] == main.checksum(f["source"], ("adler32",))["adler32"]
    assert result["files"][0]["size"] in (None, 200_000)
    # no secret in the result or the log
    for minted in ("macaroon", "authz="):
        assert minted not in repr(result)
    assert buffer.stat(f"{target}/a.bin").size == 200_000
    buffer.delete(target, recursive=True)


def test_single_file_with_explicit_destination(main: DCacheHook, buffer: DCacheHook, main_conn: str,
                                               buffer_conn: str, workdir: str, context: dict) -> None:
    put(main, f"{workdir}/one", b"one")
    dest = f"/home/alice/single-{uuid.uuid4().hex[:8]}/copy"
    result = DCacheReplicateOperator(task_id="rep", source_conn_id=main_conn, destination_conn_id=buffer_conn,
                                     source_path=f"{workdir}/one", destination_path=dest).execute(context)
    assert result["destinations"] == [dest]
    assert buffer.checksum(dest, ("adler32",)) == main.checksum(f"{workdir}/one", ("adler32",))
    buffer.delete(dest.rsplit("/", 1)[0], recursive=True)


def test_missing_source_fails_with_remote_reason(main_conn: str, buffer_conn: str, workdir: str,
                                                 buffer: DCacheHook, context: dict) -> None:
    dest = f"/home/alice/missing-{uuid.uuid4().hex[:8]}"
    op = DCacheReplicateOperator(task_id="rep", source_conn_id=main_conn, destination_conn_id=buffer_conn,
                                 source_path=f"{workdir}/nope", destination_path=f"{dest}/x")
    with pytest.raises((TransferFailed, AirflowException)):
        op.execute(context)
    assert not buffer.exists(f"{dest}/x")


def test_destination_mapping_and_bad_input() -> None:
    assert destination_for("/d/r/x/y.h5", destination_path=None, destination_dir="/b", source_root="/d/r") \
        == "/b/x/y.h5"
    assert destination_for("/other/y.h5", destination_path=None, destination_dir="/b/", source_root="/d/r") \
        == "/b/y.h5"
    base = {"task_id": "r", "source_conn_id": "a", "destination_conn_id": "b"}
    with pytest.raises(ValueError, match="destination_path, destination_dir"):
        DCacheReplicateOperator(**base, source_path="/f")
    with pytest.raises(ValueError, match="mode"):
        DCacheReplicateOperator(**base, source_path="/f", destination_dir="/b", mode="sideways")
    with pytest.raises(ValueError, match="destination_path"):
        DCacheReplicateOperator(**base, source_path=["/f", "/g"], destination_path="/b/x")
    with pytest.raises(ValueError, match="source_path"):
        DCacheReplicateOperator(**base, source_path=[], destination_dir="/b")
