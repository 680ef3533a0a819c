"""chmod, chgrp and labels through both hooks and ``DCacheSetPermissionsOperator``, on the bundled service.

The story from the issue: alice opens an ingest directory to her group (3000, which bob is in) without
hand-written REST calls, and bob can then upload into it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest

from airflow_dcache.exceptions import PermissionDenied
from airflow_dcache.hooks._operations import parse_gid, parse_mode
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.operators.namespace import DCacheSetPermissionsOperator
from airflow_dcache.paths import OutsideAllowedRoots
from tests.hooks.conftest import ConnFactory, run, server_conn  # noqa: F401 (fixture)


def _group(hook: DCacheHook, path: str) -> tuple[int, int]:
    entry = hook.stat(path, optional=True)
    return (entry.mode or 0) & 0o7777, entry.raw["group"]


def test_hooks_chmod_chgrp_and_labels(run: Callable[..., Any], conn: str, workdir: str,  # noqa: F811
                                      alice_hook: DCacheHook) -> None:
    ingest = f"{workdir}/ingest"
    alice_hook.mkdir(ingest)
    run(conn, "chgrp", ingest, 3000)
    run(conn, "chmod", ingest, "2775")
    assert _group(alice_hook, ingest) == (0o2775, 3000)
    run(conn, "chmod", ingest, 0o750)
    assert _group(alice_hook, ingest) == (0o750, 3000)
    assert run(conn, "set_labels", ingest, ["raw", "2026"]) == ["raw", "2026"]
    assert sorted(run(conn, "get_labels", ingest)) == ["2026", "raw"]
    assert run(conn, "remove_labels", ingest, ["raw", "never-set"]) == ["2026"]  # absent label skipped
    assert run(conn, "remove_labels", ingest, ["raw"]) == ["2026"]  # and again: no change, no error
    assert run(conn, "get_labels", ingest) == ["2026"]


def test_group_opened_directory_accepts_a_group_member(set_conn: ConnFactory, dcache_server: Any, conn: str,
                                                         workdir: str, alice_hook: DCacheHook) -> None:
    ingest = f"{workdir}/shared"
    alice_hook.mkdir(ingest)
    alice_hook.chmod(workdir, 0o755)  # bob may pass through the test directory
    alice_hook.chmod(ingest, 0o755)
    with DCacheHook(server_conn(set_conn, dcache_server, "bob")) as bob:
        with pytest.raises(PermissionDenied):
            bob.upload(io.BytesIO(b"x"), f"{ingest}/from-bob.txt")
        with pytest.raises(PermissionDenied):
            bob.chmod(ingest, 0o777)  # only the owner may
        alice_hook.chgrp(ingest, 3000)
        alice_hook.chmod(ingest, "0775")
        bob.upload(io.BytesIO(b"x"), f"{ingest}/from-bob.txt")
    assert alice_hook.stat(f"{ingest}/from-bob.txt").size == 1


def test_hook_checks_before_any_request(set_conn: ConnFactory, dcache_server: Any, workdir: str) -> None:
    limited = server_conn(set_conn, dcache_server, "alice", allowed_roots=workdir)
    with DCacheHook(limited) as hook:
        for call in (lambda: hook.chmod("/home/alice", 0o700), lambda: hook.chgrp("/home/bob", 3000),
                     lambda: hook.remove_labels("/home/alice", ["x"])):
            with pytest.raises(OutsideAllowedRoots):
                call()
        with pytest.raises(ValueError, match="mode: expected permission bits"):
            hook.chmod(workdir, "rwxr-xr-x")
        with pytest.raises(ValueError, match="mode: 0o10000 is outside"):
            hook.chmod(workdir, 0o10000)
        with pytest.raises(ValueError, match="gid: expected a numeric group id"):
            hook.chgrp(workdir, "scientists")
        with pytest.raises(ValueError, match="labels: expected a list"):
            hook.remove_labels(workdir, "raw")


@pytest.mark.parametrize(("value", "expected"), [
    (0o775, 0o775), (509, 0o775), ("775", 0o775), ("0775", 0o775), ("0o2775", 0o2775), (" 1777 ", 0o1777)])
def test_parse_mode(value: object, expected: int) -> None:
    assert parse_mode(value) == expected


@pytest.mark.parametrize("value", ["", "778", "0x1ff", "u+rwx", True, 1.5, -1, None, "12345678"])
def test_parse_mode_refuses(value: object) -> None:
    with pytest.raises(ValueError, match=r"^mode: "):
        parse_mode(value)


def test_parse_gid() -> None:
    assert parse_gid("3000") == 3000
    for bad in ("staff", -1, True, None):
        with pytest.raises(ValueError, match=r"^gid: "):
            parse_gid(bad)


def test_operator_sets_only_what_differs(conn: str, workdir: str, alice_hook: DCacheHook) -> None:
    paths = [f"{workdir}/in-a", f"{workdir}/in-b"]
    for path in paths:
        alice_hook.mkdir(path)
    alice_hook.chmod(paths[1], 0o2775)
    op = DCacheSetPermissionsOperator(task_id="open", path=paths, mode="2775", gid=3000, labels=["ingest"],
                                      dcache_conn_id=conn)
    context: dict[str, Any] = {"ti": _TI()}
    first = op.execute(context)
    assert first["changed"] == paths and first["mode"] == "0o2775" and first["gid"] == 3000
    for path in paths:
        assert _group(alice_hook, path) == (0o2775, 3000)
        assert alice_hook.get_labels(path) == ["ingest"]
    assert op.execute(context)["changed"] == []  # a rerun changes nothing
    drop = DCacheSetPermissionsOperator(task_id="close", path=[{"path": paths[0]}], remove_labels=["ingest"],
                                        dcache_conn_id=conn)
    assert drop.execute(context)["changed"] == [paths[0]]
    assert alice_hook.get_labels(paths[0]) == []


def test_operator_templates_and_bad_input(conn: str) -> None:
    from airflow.sdk import DAG

    with pytest.raises(ValueError, match="mode, gid, labels, remove_labels"):
        DCacheSetPermissionsOperator(task_id="t", path="/home/alice/x")
    with pytest.raises(ValueError, match=r"^mode: "):
        DCacheSetPermissionsOperator(task_id="t", path="/home/alice/x", mode="rwx")
    with pytest.raises(ValueError, match=r"^gid: "):
        DCacheSetPermissionsOperator(task_id="t", path="/home/alice/x", gid="staff")
    with pytest.raises(ValueError, match=r"^labels: "):
        DCacheSetPermissionsOperator(task_id="t", path="/home/alice/x", labels="raw")
    with pytest.raises(ValueError, match=r"^path: "):
        DCacheSetPermissionsOperator(task_id="t", path="home/alice/x", mode=0o755)
    with DAG("perm_templates", schedule=None):
        op = DCacheSetPermissionsOperator(task_id="t", path="{{ params.dir }}", mode="{{ params.mode }}",
                                          dcache_conn_id=conn)
    assert set(op.template_fields) >= {"path", "mode", "gid", "labels", "remove_labels"}
    op.mode = "rwx"  # as if rendered: checked again on the worker
    op.path = "/home/alice"
    with pytest.raises(ValueError, match=r"^mode: "):
        op.execute({"ti": _TI()})


class _TI:
    def xcom_push(self, key: str, value: Any) -> None:
        pass
