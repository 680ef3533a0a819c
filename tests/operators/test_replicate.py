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


# ------------------------------------------------------------- a site that is down or goes away (issue 12)


def _site_conn(server, site: str) -> str:
    import json

    return json.dumps({"conn_type": "dcache", "host": server.webdav, "login": "alice",
                       "password": server.passwords["alice"],
                       "extra": {"frontend_url": server.frontend, "site": site, "retries": 1}})


def _source_state(main: DCacheHook, path: str) -> tuple:
    entry = main.stat(path, checksum=True, xattr=True, qos=True)
    return entry.pnfsid, entry.size, entry.checksums, entry.xattrs, entry.current_qos, entry.mtime


def test_unreachable_destination_names_site_step_and_cause(main: DCacheHook, main_conn: str, workdir: str,
                                                          context: dict, tmp_path, monkeypatch) -> None:
    from airflow_dcache.exceptions import DCacheConnectionError
    from tests.conftest import start_server

    down = start_server(tmp_path / "down", "--allow-insecure-macaroons", "--site", "buffer")
    monkeypatch.setenv("AIRFLOW_CONN_DC_DOWN", _site_conn(down, "buffer"))
    down.stop()
    put(main, f"{workdir}/raw.h5", b"raw" * 1000)
    before = _source_state(main, f"{workdir}/raw.h5")
    op = DCacheReplicateOperator(task_id="rep", source_conn_id=main_conn, destination_conn_id="dc_down",
                                 source_path=f"{workdir}/raw.h5", destination_path="/home/alice/w/raw.h5")
    with pytest.raises(DCacheConnectionError) as caught:
        op.execute(context)
    message = str(caught.value)
    assert isinstance(caught.value, AirflowException)  # so the task's retries apply
    assert message.startswith(f"destination site 'buffer' (connection dc_down, {down.webdav}) is unreachable "
                              "while creating /home/alice/w: "), message
    assert "Connection refused" in message and f"{workdir}/raw.h5 was not replicated" in message
    assert "HTTPConnectionPool" not in message and "Traceback" not in message
    assert _source_state(main, f"{workdir}/raw.h5") == before
    assert "destinations" not in context["ti"].xcom


def test_destination_killed_during_copy_names_the_site_and_keeps_no_partial_file(
        main: DCacheHook, main_conn: str, workdir: str, context: dict, tmp_path, monkeypatch) -> None:
    import io
    import threading
    import time

    from airflow_dcache.exceptions import DCacheConnectionError, NotFound
    from tests.conftest import start_server

    dest = start_server(tmp_path / "dest", "--allow-insecure-macaroons", "--site", "buffer")
    try:
        monkeypatch.setenv("AIRFLOW_CONN_DC_DEST", _site_conn(dest, "buffer"))
        size = 128 << 20
        main.upload(io.BytesIO(bytes(size)), f"{workdir}/big.bin")
        before = _source_state(main, f"{workdir}/big.bin")
        killed = threading.Event()

        def kill_when_writing() -> None:  # the pool's temporary file grows while the COPY runs
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not killed.is_set():
                for part in dest.data_dir.rglob("*.part"):
                    try:
                        if part.stat().st_size > 0:
                            dest.process.kill()
                            killed.set()
                            return
                    except FileNotFoundError:
                        pass
                time.sleep(0.005)

        watcher = threading.Thread(target=kill_when_writing, daemon=True)
        watcher.start()
        op = DCacheReplicateOperator(task_id="rep", source_conn_id=main_conn, destination_conn_id="dc_dest",
                                     source_path=f"{workdir}/big.bin", destination_path="/home/alice/cut/big.bin")
        with pytest.raises(DCacheConnectionError) as caught:
            op.execute(context)
        watcher.join(10)
        assert killed.is_set()
        message = str(caught.value)
        assert message.startswith(f"destination site 'buffer' (connection dc_dest, {dest.webdav}) went away during "
                                  f"the copy {workdir}/big.bin -> /home/alice/cut/big.bin ("), message
        assert "is unreachable now: [Errno 111] Connection refused" in message, message
        assert _source_state(main, f"{workdir}/big.bin") == before
        dest.process.wait(10)
        dest.restart()  # same data directory: the interrupted copy is not there
        monkeypatch.setenv("AIRFLOW_CONN_DC_DEST", _site_conn(dest, "buffer"))
        with DCacheHook("dc_dest") as hook, pytest.raises(NotFound):
            hook.stat("/home/alice/cut/big.bin")
        assert not list(dest.data_dir.rglob("*.part"))
    finally:
        dest.stop()


def test_copy_failure_of_a_reachable_site_keeps_the_remote_reason(main_conn: str, buffer_conn: str, workdir: str,
                                                                 context: dict) -> None:
    """A COPY that fails while both sites answer is not reported as a site outage."""
    from airflow_dcache.exceptions import DCacheConnectionError

    op = DCacheReplicateOperator(task_id="rep", source_conn_id=main_conn, destination_conn_id=buffer_conn,
                                 source_path=f"{workdir}/absent", destination_path=f"/home/alice/x-{uuid.uuid4().hex}")
    with pytest.raises(AirflowException) as caught:
        op.execute(context)
    assert not isinstance(caught.value, DCacheConnectionError), caught.value


def test_connection_cause_keeps_the_innermost_reason() -> None:
    from airflow_dcache.exceptions import DCacheConnectionError
    from airflow_dcache.operators.replicate import connection_cause

    refused = DCacheConnectionError(
        "cannot reach dCache: HTTPConnectionPool(host='127.0.0.1', port=4): Max retries exceeded with url: /w "
        "(Caused by NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=4): Failed to establish a new "
        "connection: [Errno 111] Connection refused\"))", method="MKCOL", url="http://127.0.0.1:4/w")
    assert connection_cause(refused) == "[Errno 111] Connection refused"
    timeout = DCacheConnectionError("cannot reach dCache: HTTPConnectionPool(host='h', port=1): Read timed out. "
                                    "(read timeout=30)")
    assert connection_cause(timeout) == "Read timed out"
    assert connection_cause(DCacheConnectionError("cannot reach dCache: odd")) == "odd"
    assert len(connection_cause(DCacheConnectionError("x" * 1000))) == 300


@pytest.mark.parametrize("mode", ["pull", "push"])
def test_copy_macaroons_are_not_registered_with_the_log_masker(mode: str, main: DCacheHook, buffer: DCacheHook,
                                                               main_conn: str, buffer_conn: str, workdir: str,
                                                               context: dict, caplog: pytest.LogCaptureFixture) -> None:
    """A copy's two macaroons go only into its request headers: no masker registration (each one rebuilds the
    masker's regular expression of every secret), and still nothing of them in the log. A macaroon minted
    for the caller is registered as before."""
    from airflow.sdk.log import _secrets_masker

    put(main, f"{workdir}/m.bin", b"m" * 1000)
    dest = f"/home/alice/nomask-{uuid.uuid4().hex[:8]}/m.bin"
    masker = _secrets_masker()
    op = DCacheReplicateOperator(task_id="rep", source_conn_id=main_conn, destination_conn_id=buffer_conn,
                                 source_path=f"{workdir}/m.bin", destination_path=dest, mode=mode)
    op.execute(context)  # connection secrets registered here, once
    before = set(masker.patterns)
    with caplog.at_level(logging.DEBUG):
        result = op.execute(context)
    assert result["destinations"] == [dest]
    assert set(masker.patterns) == before
    assert "Bearer" not in caplog.text and "authz=" not in caplog.text and "macaroon" not in repr(result)
    minted = main.mint_macaroon(workdir, activities=["LIST"], validity=60)
    assert minted.macaroon not in str(masker.redact(f"fetching with {minted.macaroon}"))
    buffer.delete(dest.rsplit("/", 1)[0], recursive=True)
