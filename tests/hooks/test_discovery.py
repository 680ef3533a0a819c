"""QoS classes and capabilities, lookup by PNFS-ID and WLCG tape discovery, on both hooks."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest

from airflow_dcache.exceptions import AuthenticationFailed, NotFound, PermissionDenied
from airflow_dcache.hooks import _operations as ops
from airflow_dcache.hooks._settings import AuthType, ConnectionSettings
from airflow_dcache.hooks.dcache import DCacheHook
from tests.hooks.conftest import ConnFactory, server_conn, sync_only

Run = Callable[..., Any]


@pytest.fixture
def alice_id(set_conn: ConnFactory, dcache_server: Any) -> str:
    return server_conn(set_conn, dcache_server, "alice")


@pytest.fixture
def admin_id(set_conn: ConnFactory, dcache_server: Any) -> str:
    return server_conn(set_conn, dcache_server, "admin", roles="admin")


@sync_only
def test_qos_classes(run: Run, alice_id: str) -> None:
    assert run(alice_id, "qos_classes") == ["disk", "tape", "disk+tape", "volatile"]
    assert run(alice_id, "qos_classes", "directory") == ["disk", "tape", "disk+tape", "volatile"]
    with pytest.raises(ValueError, match="kind"):
        run(alice_id, "qos_classes", "pool")


@sync_only
def test_qos_capability(run: Run, alice_id: str) -> None:
    disk = run(alice_id, "qos_capability", "disk")
    assert disk["name"] == "disk" and disk["transition"] == ["tape", "disk+tape"]
    assert disk["metadata"]["cdmi_latency_provided"] == "100"
    both = run(alice_id, "qos_capability", "disk+tape")  # the "+" must reach the server as "+"
    assert both["name"] == "disk+tape" and both["metadata"]["cdmi_data_redundancy_provided"] == "2"
    assert run(alice_id, "qos_capability", "tape", kind="directory")["transition"] == ["disk"]
    with pytest.raises(NotFound):
        run(alice_id, "qos_capability", "gold")


@sync_only
def test_qos_needs_authentication(run: Run, set_conn: ConnFactory, dcache_server: Any) -> None:
    with pytest.raises(AuthenticationFailed):
        run(server_conn(set_conn, dcache_server, None), "qos_classes")


def test_stat_by_pnfsid(run: Run, admin_id: str, alice: DCacheHook, workdir: str) -> None:
    alice.upload(io.BytesIO(b"0123456789"), f"{workdir}/f.dat")
    pnfsid = alice.stat(f"{workdir}/f.dat").pnfsid
    assert pnfsid
    entry = run(admin_id, "stat_by_pnfsid", pnfsid)
    assert (entry.path, entry.name, entry.size, entry.pnfsid) == (f"{workdir}/f.dat", "f.dat", 10, pnfsid)
    assert entry.is_file and entry.checksums and entry.locality  # every flag is on
    with pytest.raises(NotFound):
        run(admin_id, "stat_by_pnfsid", "F" * 36)
    with pytest.raises(ValueError, match="PNFS-ID"):
        run(admin_id, "stat_by_pnfsid", "../user")


def test_stat_by_pnfsid_is_for_admins_only(run: Run, alice_id: str, alice: DCacheHook, workdir: str) -> None:
    pnfsid = alice.stat(workdir).pnfsid
    with pytest.raises(PermissionDenied):
        run(alice_id, "stat_by_pnfsid", pnfsid)


@sync_only
def test_tape_api_endpoints(run: Run, alice_id: str, set_conn: ConnFactory, dcache_server: Any) -> None:
    endpoints = run(alice_id, "tape_api_endpoints")
    assert endpoints == [{"uri": dcache_server.api + "/tape", "version": "v1", "metadata": {}}]
    # Public document: anonymous callers may read it too.
    assert run(server_conn(set_conn, dcache_server, None), "tape_api_endpoints") == endpoints


def test_well_known_is_at_the_frontend_origin() -> None:
    settings = ConnectionSettings(
        door_url="https://door:2880", frontend_url="https://door:3880/dcache", auth_type=AuthType.NONE
    )
    operation = ops.tape_api_endpoints(settings)
    assert next(operation).url == "https://door:3880/.well-known/wlcg-tape-rest-api"


def test_roles_are_asserted_only_when_needed_or_configured_always(run: Run, set_conn: ConnFactory, dcache_server: Any,
                                                 alice: DCacheHook, workdir: str) -> None:
    plain = server_conn(set_conn, dcache_server, "admin")
    me = run(plain, "whoami")
    assert me.roles == [] and me.unasserted_roles == ["admin"]
    alice.upload(io.BytesIO(b"r"), f"{workdir}/r.dat")
    pnfsid = alice.stat(f"{workdir}/r.dat").pnfsid
    with pytest.raises(PermissionDenied):
        run(plain, "stat_by_pnfsid", pnfsid)
    # Least privilege (issue 17): configured roles are asserted only when a plain login is refused a
    # call that needs them; reads like whoami stay plain.
    when_needed = server_conn(set_conn, dcache_server, "admin", roles="admin")
    me = run(when_needed, "whoami")
    assert me.roles == [] and me.unasserted_roles == ["admin"]
    assert run(when_needed, "stat_by_pnfsid", pnfsid).pnfsid == pnfsid  # refused plainly, allowed with the role
    asserted = server_conn(set_conn, dcache_server, "admin", roles="admin", assert_roles="always")
    me = run(asserted, "whoami")
    assert me.roles == ["admin"] and me.unasserted_roles == []
    pretender = server_conn(set_conn, dcache_server, "alice", roles=["admin"])
    assert run(pretender, "whoami").roles == []
    with pytest.raises(AuthenticationFailed, match="not authorised to assert role admin"):
        run(pretender, "stat_by_pnfsid", pnfsid)
