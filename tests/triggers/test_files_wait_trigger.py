"""One trigger for many files (``DCacheFilesWaitTrigger``) against the real bundled server over HTTP.

Each file keeps its own outcome (reached, gone, replaced, failed, timeout) in the one event; a round
costs one listing per directory plus one bulk status, counted in the server's access log.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.module_loading import import_string

from airflow_dcache.events.version import FileVersion
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.triggers.files_wait import DCacheFilesWaitTrigger, judge, qos_condition
from tests.conftest import DCacheServer, connection_json, fresh_dir, start_server
from tests.operators.conftest import run_trigger

TAPE = ("--tape-flush-delay", "0.3", "--tape-stage-delay", "0.3")


def _conn(server: DCacheServer, **extra: Any) -> str:
    return connection_json(server, "alice", timeout=30, **extra)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DCacheServer]:
    base = tmp_path_factory.mktemp("files-wait")
    server = start_server(base, *TAPE, "--access-log", str(base / "access.log"))
    server.info["access_log"] = base / "access.log"
    yield server
    server.stop()


@pytest.fixture
def conn(site: DCacheServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_DC_FILES", _conn(site))
    return "dc_files"


@pytest.fixture
def hook(conn: str) -> Iterator[DCacheHook]:
    with DCacheHook(conn) as h:
        yield h


@pytest.fixture
def workdir(hook: DCacheHook) -> Iterator[str]:
    with fresh_dir(hook, "/home/alice/fw") as path:
        yield path


def _put(hook: DCacheHook, path: str, data: bytes | None = None) -> dict[str, Any]:
    """Upload ``path``; its ``files`` entry for the trigger (path and version)."""
    hook.upload(io.BytesIO(data if data is not None else path.encode() * 64), path)
    return {"path": path, "version": FileVersion.of(hook.stat(path, checksum=True)).id}


def _files(hook: DCacheHook, workdir: str, dirs: int, per_dir: int) -> list[dict[str, Any]]:
    files = []
    for d in range(dirs):
        hook.mkdir(f"{workdir}/d{d}")
        files += [_put(hook, f"{workdir}/d{d}/f{i:03d}.h5") for i in range(per_dir)]
    return files


def _qos(hook: DCacheHook, files: list[dict[str, Any]], target: str = "disk+tape") -> str:
    return hook.submit_bulk_request("UPDATE_QOS", [f["path"] for f in files], arguments={"targetQos": target}).id


def _trigger(conn: str, files: list[dict[str, Any]], target: str = "disk+tape", *, timeout: float = 60,
             **kwargs: Any) -> DCacheFilesWaitTrigger:
    condition = qos_condition(target)
    kwargs.setdefault("poll_interval", 0.2)
    kwargs.setdefault("max_poll_interval", 0.5)
    return DCacheFilesWaitTrigger(files=files, dcache_conn_id=conn, target_qos=condition.target_qos,
                                  locality=sorted(condition.locality), deadline=time.time() + timeout,
                                  started=time.time(), **kwargs)


def _outcomes(ev: dict[str, Any]) -> dict[str, str]:
    return {f["path"].rsplit("/", 1)[-1]: f["outcome"] for f in ev["files"]}


def test_all_files_reach_the_qos_in_one_event_in_input_order(conn: str, hook: DCacheHook, workdir: str) -> None:
    files = _files(hook, workdir, dirs=2, per_dir=3)
    request = _qos(hook, files)
    ev = run_trigger(_trigger(conn, files, bulk_request_id=request))
    assert ev["status"] == "success", ev
    assert [f["path"] for f in ev["files"]] == [f["path"] for f in files]
    assert {f["outcome"] for f in ev["files"]} == {"reached"} and ev["counts"] == {"reached": 6}
    assert all(f["reason"] is None and f["at"] >= ev["started"] for f in ev["files"])
    assert ev["bulk_request_id"] == request
    for f in files:  # what the event says is true of the files
        entry = hook.stat(f["path"], qos=True, locality=True)
        assert entry.current_qos == "disk+tape" and entry.locality == "ONLINE_AND_NEARLINE"


@pytest.mark.parametrize(("target", "locality"), [("disk", "ONLINE"), ("tape", "NEARLINE")])
def test_the_condition_follows_the_target_qos(conn: str, hook: DCacheHook, workdir: str, target: str,
                                              locality: str) -> None:
    files = _files(hook, workdir, dirs=1, per_dir=2)
    ev = run_trigger(_trigger(conn, files, target, bulk_request_id=_qos(hook, files, target)))
    assert ev["status"] == "success", ev
    for f in files:
        entry = hook.stat(f["path"], qos=True, locality=True)
        assert entry.current_qos == target and entry.locality == locality, entry


def test_disk_is_not_waited_for_on_tape() -> None:
    """The condition of a ``disk`` rule is QoS disk and ONLINE: a disk-only file meets it (no NEARLINE wait)."""
    from airflow_dcache.hooks.models import NamespaceEntry

    disk = NamespaceEntry(path="/a/x", name="x", file_type="REGULAR", pnfsid="0001", locality="ONLINE",
                          current_qos="disk")
    assert judge("/a/x", disk, None, qos_condition("disk"), what="w") == ("reached", None)
    assert judge("/a/x", disk, None, qos_condition("disk+tape"), what="w") is None
    assert judge("/a/x", disk, None, qos_condition("tape"), what="w") is None


def test_a_gone_file_fails_alone_and_its_mates_go_on(conn: str, hook: DCacheHook, workdir: str) -> None:
    files = _files(hook, workdir, dirs=1, per_dir=4)
    request = _qos(hook, files)
    hook.delete(files[1]["path"])
    hook.delete(f"{workdir}/nodir", missing_ok=True)
    gone_dir = {"path": f"{workdir}/nodir/x.h5", "version": files[0]["version"]}  # a whole directory gone
    ev = run_trigger(_trigger(conn, [*files, gone_dir], bulk_request_id=request))
    assert ev["status"] == "error", ev
    assert _outcomes(ev) == {"f000.h5": "reached", "f001.h5": "gone", "f002.h5": "reached", "f003.h5": "reached",
                             "x.h5": "gone"}
    reason = ev["files"][1]["reason"]
    assert files[1]["path"] in reason and "gone" in reason
    assert files[1]["path"] in ev["message"]


def test_a_file_replaced_mid_wait_is_failed_not_confused_with_the_new_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = start_server(tmp_path / "slow", "--tape-flush-delay", "3", "--tape-stage-delay", "0.3")
    try:
        monkeypatch.setenv("AIRFLOW_CONN_DC_SLOW", _conn(server))
        with DCacheHook("dc_slow") as hook:
            hook.mkdir("/home/alice/rep")
            files = [_put(hook, f"/home/alice/rep/f{i}.h5") for i in range(3)]
            request = _qos(hook, files)
            trigger = _trigger("dc_slow", files, bulk_request_id=request)

            async def wait_and_replace() -> dict[str, Any]:
                events = trigger.run()
                waiting = asyncio.ensure_future(events.__anext__())
                await asyncio.sleep(1.0)  # the wait is under way: nothing is on tape yet
                assert not waiting.done()
                await asyncio.to_thread(_put, hook, files[2]["path"], b"a newer version" * 100)
                try:
                    return (await asyncio.wait_for(waiting, 60)).payload
                finally:
                    await events.aclose()

            ev = asyncio.run(wait_and_replace())
            assert _outcomes(ev) == {"f0.h5": "reached", "f1.h5": "reached", "f2.h5": "replaced"}, ev
            reason = ev["files"][2]["reason"]
            old = FileVersion.parse(files[2]["version"])
            assert old.pnfsid in reason and "changed since the event" in reason
            new = FileVersion.of(hook.stat(files[2]["path"], checksum=True))
            assert new.pnfsid != old.pnfsid and new.pnfsid in reason  # the newer file is named as such
    finally:
        server.stop()


def test_a_timeout_names_the_late_files_and_keeps_the_decided_ones(conn: str, hook: DCacheHook, workdir: str) -> None:
    files = _files(hook, workdir, dirs=1, per_dir=3)
    request = _qos(hook, files[:1])  # only the first gets a tape copy; the others stay on disk
    ev = run_trigger(_trigger(conn, files, timeout=2.5, bulk_request_id=request))
    assert ev["status"] == "timeout", ev
    assert _outcomes(ev) == {"f000.h5": "reached", "f001.h5": "timeout", "f002.h5": "timeout"}
    for f in ev["files"][1:]:
        assert f["path"] in f["reason"] and "timed out" in f["reason"] and f["unreachable"] is False
        assert f["path"] in ev["message"]


def test_transient_errors_wait_for_the_next_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 429 from dCache's rate limiter (no client retries) leaves the files of that listing for the next round."""
    server = start_server(tmp_path / "busy", *TAPE, "--rate-limit", "3")
    try:
        monkeypatch.setenv("AIRFLOW_CONN_DC_BUSY", _conn(server, retries=0))
        monkeypatch.setenv("AIRFLOW_CONN_DC_BUSY_SETUP", _conn(server))
        with DCacheHook("dc_busy_setup") as hook:
            hook.mkdir("/home/alice/busy")
            files = _files(hook, "/home/alice/busy", dirs=6, per_dir=1)
            _qos(hook, files)
        time.sleep(1.5)  # a full bucket: 3 permits for the 6 listings of the first round
        trigger = _trigger("dc_busy", files, poll_interval=0.1, max_poll_interval=0.3)
        seen: list[str] = []
        original = trigger._list

        async def listing(hook: Any, directory: str, indexes: list[int]) -> None:
            await original(hook, directory, indexes)
            if directory in trigger._errors:
                seen.append(trigger._errors[directory][0])

        monkeypatch.setattr(trigger, "_list", listing)
        ev = run_trigger(trigger)
        assert ev["status"] == "success", ev
        assert seen and all("LimitExceeded" in s for s in seen), seen
        assert ev["rounds"] > 1
    finally:
        server.stop()


def test_an_unreachable_site_times_out_marked_unreachable(refused_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DC_DOWN", json.dumps({
        "conn_type": "dcache", "host": f"http://127.0.0.1:{refused_port}", "login": "a", "password": "b",
        "extra": {"retries": 0, "timeout": 2}}))
    files = [{"path": "/data/a/x.h5", "version": None}, {"path": "/data/b/y.h5", "version": None}]
    ev = run_trigger(_trigger("dc_down", files, timeout=1, poll_interval=0.1), timeout=60)
    assert ev["status"] == "timeout", ev
    assert all(f["outcome"] == "timeout" and f["unreachable"] for f in ev["files"])
    assert "last listing failed" in ev["files"][0]["reason"]


def test_a_refused_listing_fails_its_files_with_the_real_reason(
        site: DCacheServer, hook: DCacheHook, workdir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DC_BOB", json.dumps({
        "conn_type": "dcache", "host": site.webdav, "login": "bob", "password": site.passwords["bob"],
        "extra": {"frontend_url": site.frontend}}))
    private = f"{workdir}/private"
    hook.mkdir(private)
    hook.chmod(private, 0o700)
    _put(hook, f"{private}/x.h5")
    ev = run_trigger(_trigger("dc_bob", [{"path": f"{private}/x.h5", "version": None}], timeout=10))
    assert ev["files"][0]["outcome"] == "failed", ev
    reason = ev["files"][0]["reason"]
    assert f"{private}/x.h5" in reason and "403 Forbidden" in reason and "gone" not in reason


def test_a_failed_bulk_target_fails_its_file(conn: str, hook: DCacheHook, workdir: str) -> None:
    files = _files(hook, workdir, dirs=1, per_dir=2)
    request = _qos(hook, files, "tape")
    # wait for disk+tape while the request asks for tape: nothing fails by itself, so cancel the request
    hook.cancel_bulk_request(request)
    ev = run_trigger(_trigger(conn, files, "disk+tape", timeout=20, bulk_request_id=request))
    assert ev["status"] == "error", ev
    assert all(f["outcome"] == "failed" and "cancelled" in f["reason"] for f in ev["files"]), ev


def test_serialize_round_trip_carries_no_secret(site: DCacheServer, conn: str) -> None:
    trigger = DCacheFilesWaitTrigger(
        files=[{"path": "/b/x.h5", "version": "0000AB;adler32:0a1b2c3d"}, {"path": "/a/y.h5", "version": None}],
        dcache_conn_id=conn, target_qos="tape+disk", locality="ONLINE_AND_NEARLINE", deadline=5.0,
        bulk_request_id="r1", started=1.0, poll_interval=1, max_poll_interval=5, allowed_roots=["/b", "/a"])
    classpath, kwargs = trigger.serialize()
    text = json.dumps(kwargs)
    assert import_string(classpath)(**kwargs).serialize() == (classpath, kwargs)
    assert kwargs["target_qos"] == "disk+tape" and kwargs["locality"] == ["NEARLINE", "ONLINE"]
    assert all(p not in text for p in site.passwords.values())
    assert classpath == "airflow_dcache.triggers.files_wait.DCacheFilesWaitTrigger"
    for bad in ([], [{"path": "relative"}], [{"path": "/x", "version": "has space;x"}]):
        with pytest.raises(ValueError, match=r"files|version"):
            DCacheFilesWaitTrigger(files=bad)


def _requests_in(log: Path, start: int) -> list[dict[str, Any]]:
    with log.open() as f:
        f.seek(start)
        return [json.loads(line) for line in f if line.strip()]


def test_500_files_cost_one_listing_per_directory_and_round(site: DCacheServer, conn: str, hook: DCacheHook,
                                                            workdir: str) -> None:
    import requests as http

    files = []
    with http.Session() as s:  # 500 uploads through one session: the set-up, not what is measured
        s.auth = site.auth("alice")
        for d in range(2):
            hook.mkdir(f"{workdir}/d{d}")
            for i in range(250):
                path = f"{workdir}/d{d}/f{i:03d}.h5"
                s.put(site.webdav + path, data=path.encode(), timeout=30).raise_for_status()
                files.append(path)
    listed = {e.path: e for d in range(2) for e in hook.list_dir(f"{workdir}/d{d}", checksum=True)}
    wanted = [{"path": p, "version": FileVersion.of(listed[p]).id} for p in files]
    request = _qos(hook, wanted)
    log: Path = site.info["access_log"]
    mark = log.stat().st_size
    ev = run_trigger(_trigger(conn, wanted, bulk_request_id=request, poll_interval=0.5, max_poll_interval=1),
                     timeout=120)
    seen = _requests_in(log, mark)
    assert ev["status"] == "success" and ev["counts"] == {"reached": 500}, ev["message"]
    listings = [r for r in seen if r["path"].startswith("/api/v1/namespace")]
    status = [r for r in seen if r["path"].startswith("/api/v1/bulk-requests")]
    rounds = ev["rounds"]
    # every round lists each of the 2 directories once and reads the bulk request once at most
    assert len(listings) <= 2 * rounds and len(status) <= rounds, (len(listings), len(status), rounds)
    assert ev["requests"] == len(listings) + len(status)
    assert not any(r["path"].endswith(".h5") for r in listings)  # no stat per file
    print(f"\n500 files in 2 directories: {rounds} round(s), {len(listings)} listing(s), "
          f"{len(status)} bulk status request(s), {len(seen)} request(s) in all")
