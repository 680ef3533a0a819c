"""Admin only where dCache requires it (issue 17): the pipeline's reads, listings and copies go out with
a plain login; its role is asserted only for a metadata change that the plain login was refused.

The evidence is the bundled service's access log (``--access-log``): one JSON line per authenticated
request with the roles that request asserted.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.pipelines import steps
from airflow_dcache.testing.server import DCacheTestServer, start_server, stop_process

HDF5 = b"\x89HDF\r\n\x1a\n" + b"\0" * 64
USERS = (
    {"username": "pipeline", "uid": 2000, "gids": [2000], "home": "/home/pipeline", "roles": ["admin"]},
    {"username": "alice", "uid": 1000, "gids": [1000], "home": "/home/alice"},
    {"username": "root", "uid": 0, "gids": [0], "home": "/"},
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DCacheTestServer, Path]]:
    base = tmp_path_factory.mktemp("roles")
    log = base / "access.jsonl"
    srv = start_server(base, "--access-log", str(log), users=USERS)
    try:
        yield srv, log
    finally:
        stop_process(srv.process)


def _conn(monkeypatch: pytest.MonkeyPatch, srv: DCacheTestServer, user: str, **extra: Any) -> str:
    conn_id = f"roles_{user}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", srv.connection_json(user, **extra))
    return conn_id


def _lines(log: Path, start: int) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()[start:] if line.strip()]


def test_reads_are_plain_and_the_role_only_goes_with_a_refused_metadata_change(
        server: tuple[DCacheTestServer, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    srv, log = server
    # a drop box as a facility has it: made by root, sticky and world-writable; alice uploads into it
    with requests.Session() as s:
        root = ("root", srv.passwords["root"])
        for path in ("/data", "/data/incoming"):
            s.request("MKCOL", srv.webdav + path, auth=root, timeout=10)
            s.post(f"{srv.api}/namespace{path}", json={"action": "chmod", "mode": 0o1777}, auth=root,
                   timeout=10).raise_for_status()
    alice = DCacheHook(_conn(monkeypatch, srv, "alice"))
    path = "/data/incoming/r1.h5"
    alice.upload(io.BytesIO(HDF5), path)
    pipeline = DCacheHook(_conn(monkeypatch, srv, "pipeline", roles="admin"))
    start = len(log.read_text().splitlines()) if log.exists() else 0

    # what the ingest pipeline does to an uploader's file: collect, validate, then mark it processed
    item = steps.work_items_from_selection([{"path": path, "name": "r1.h5", "pnfsid": pipeline.stat(path).pnfsid}],
                                           site="main", run_id="manual__x", buffer_root="/data/work",
                                           output_root="/data/processed")[0]
    state = steps.current_state(pipeline, item, "ingest")
    assert isinstance(state, dict), state
    checked = steps.check_hdf5(pipeline, state)
    pipeline.list_dir("/data/incoming")
    pipeline.mint_macaroon(path, activities=["DOWNLOAD"], validity=60)
    reads = _lines(log, start)
    assert reads and all(r["roles"] == [] for r in reads), [r for r in reads if r["roles"]]

    before = len(log.read_text().splitlines())
    assert steps.mark_processed(pipeline, path, "ingest", "ingest/manual__x", version=checked["version"])
    pipeline.set_qos(path, "disk+tape")
    changes = _lines(log, before)
    elevated = [r for r in changes if r["roles"]]
    # each metadata change (the marker, the QoS) was first refused plainly, then sent with the role
    assert [r["roles"] for r in elevated] == [["admin"], ["admin"]], changes
    assert all(r["method"] == "POST" for r in elevated)
    # the version re-checks around the marker stayed plain
    assert any(r["method"] == "GET" and r["roles"] == [] for r in changes)

    # a bulk request is processed later as its submitter, so a refusal never reaches the submit: the
    # role goes with it at once (one request, no plain try first)
    before = len(log.read_text().splitlines())
    pipeline.submit_bulk_request("UPDATE_QOS", [path], arguments={"targetQos": "disk"})
    bulk = [r for r in _lines(log, before) if r["path"].endswith("/bulk-requests")]
    assert [r["roles"] for r in bulk] == [["admin"]], bulk


def test_assert_roles_always_keeps_the_old_behaviour(server: tuple[DCacheTestServer, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    srv, log = server
    start = len(log.read_text().splitlines())
    hook = DCacheHook(_conn(monkeypatch, srv, "pipeline", roles="admin", assert_roles="always"))
    assert hook.whoami().roles == ["admin"]
    assert all(r["roles"] == ["admin"] for r in _lines(log, start))
