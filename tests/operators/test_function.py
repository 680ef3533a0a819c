"""DCacheFunctionOperator against the bundled dCache service, in the local runtime and on a real Docker engine."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.exceptions import AirflowException

from airflow_dcache.operators.function import DCacheFunctionOperator, input_paths
from tests.functions.support import *  # noqa: F403 - fixtures
from tests.functions.support import FIXTURE_FUNCTIONS, FakeTI

RUNTIMES = ["local", "docker"]


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Operator kwargs for one runtime; docker ones build the images they need."""
    if request.param == "docker":
        docker_url = request.getfixturevalue("docker_url")
        build = request.getfixturevalue("function_image")
        return {"runtime": "docker", "docker_url": docker_url, "_build": build}
    return {"runtime": "local", "_build": None}


def operator(runtime: dict[str, Any], function: str, **kwargs: Any) -> DCacheFunctionOperator:
    opts = {k: v for k, v in runtime.items() if not k.startswith("_")}
    if runtime["_build"] is not None:
        opts["image"] = runtime["_build"](function)
    elif (FIXTURE_FUNCTIONS / function).is_dir():
        opts["functions_dir"] = str(FIXTURE_FUNCTIONS)
    return DCacheFunctionOperator(task_id=f"t_{function.replace('-', '_')}", function=function, **opts, **kwargs)


def names(dc: Any, path: str) -> list[str]:
    return sorted(e.name for e in dc.list_dir(path))


def test_hdf5_preview_success(runtime: dict, dc: Any, area: str, alice_conn: str, cxi_file: Path,
                              make_context: Any) -> None:
    dc.upload(cxi_file, f"{area}/in/run42.cxi")
    op = operator(runtime, "hdf5-preview", inputs=[f"{area}/in/run42.cxi"], output_dir=f"{area}/out",
                  parameters={"frame": 2}, dcache_conn_id=alice_conn, timeout=120)
    ctx = make_context(run_id="manual__2026-01-01T00:00:00+00:00")
    value = op.execute(ctx)
    assert value["summaries"][0]["shape"] == [5, 32, 48]
    assert value["summaries"][0]["frames"] == 5 and value["summaries"][0]["max"] == 60000
    outputs = {o["name"]: o for o in value["outputs"]}
    assert set(outputs) == {"run42.preview.png", "run42.summary.json"}
    listing = names(dc, f"{area}/out")
    assert listing == [".activation-manual__2026-01-01T00_00_00_00_00.json", "run42.preview.png", "run42.summary.json"]
    png = io.BytesIO()
    dc.download(f"{area}/out/run42.preview.png", png)
    assert png.getvalue().startswith(b"\x89PNG\r\n\x1a\n")
    record = ctx["ti"].xcom["activation_record"]
    assert record["status"] == "success" and record["exit_code"] == 0
    assert record["function"]["runtime"] == runtime["runtime"]
    assert record["function"]["digest"].startswith("sha256:")
    assert record["inputs"][0]["checksums"]["adler32"] and record["inputs"][0]["path"].endswith("run42.cxi")
    assert all(o["checksums"]["adler32"] for o in record["outputs"])
    stored = io.BytesIO()
    dc.download(f"{area}/out/.activation-manual__2026-01-01T00_00_00_00_00.json", stored)
    assert json.loads(stored.getvalue())["outputs"] == record["outputs"]
    if runtime["runtime"] == "docker":
        assert record["function"]["image_id"].startswith("sha256:")
    assert ctx["ti"].xcom["output_url"].endswith(f"{area}/out")


def test_versioned_outputs_use_the_source_digest(runtime: dict, dc: Any, area: str, alice_conn: str,
                                                 make_context: Any) -> None:
    dc.upload(io.BytesIO(b"payload"), f"{area}/in/a.txt")
    op = operator(runtime, "misbehave", inputs=f"{area}/in/a.txt", output_dir=f"{area}/out", versioned=True,
                  dcache_conn_id=alice_conn)
    value = op.execute(make_context())
    digest = value["function_digest"].split(":", 1)[1][:12]
    assert value["outputs"][0]["path"] == f"{area}/out/{digest}/copy/a.txt"
    assert names(dc, f"{area}/out/{digest}/copy") == ["a.txt"]


def _assert_failed_cleanly(dc: Any, area: str, ctx: dict) -> dict:
    listing = names(dc, f"{area}/out")
    assert len(listing) == 1 and listing[0].endswith(".failed.json"), listing
    record = ctx["ti"].xcom["activation_record"]
    assert record["status"] == "failed"
    return record


def test_non_zero_exit_fails_with_last_log_lines(runtime: dict, dc: Any, area: str, alice_conn: str,
                                                 make_context: Any) -> None:
    op = operator(runtime, "misbehave", inputs=[], output_dir=f"{area}/out", parameters={"mode": "exit"},
                  dcache_conn_id=alice_conn)
    ctx = make_context()
    with pytest.raises(AirflowException, match=r"exited with code 3(.|\n)*about to fail on purpose"):
        op.execute(ctx)
    record = _assert_failed_cleanly(dc, area, ctx)
    assert record["exit_code"] == 3 and "about to fail on purpose" in record["logs"]


def test_partial_upload_then_failure_leaves_nothing(runtime: dict, dc: Any, area: str, alice_conn: str,
                                                    make_context: Any) -> None:
    op = operator(runtime, "misbehave", inputs=[], output_dir=f"{area}/out",
                  parameters={"mode": "partial-then-fail"}, dcache_conn_id=alice_conn)
    ctx = make_context()
    with pytest.raises(AirflowException, match="failing after a partial upload"):
        op.execute(ctx)
    _assert_failed_cleanly(dc, area, ctx)


def test_timeout(runtime: dict, dc: Any, area: str, alice_conn: str, make_context: Any) -> None:
    op = operator(runtime, "misbehave", inputs=[], output_dir=f"{area}/out", parameters={"mode": "sleep"},
                  timeout=3, dcache_conn_id=alice_conn)
    ctx = make_context()
    began = time.monotonic()
    with pytest.raises(AirflowException, match="timed out"):
        op.execute(ctx)
    assert time.monotonic() - began < 60  # does not hang
    record = _assert_failed_cleanly(dc, area, ctx)
    assert record["timed_out"] is True


def test_on_kill_stops_the_function(runtime: dict, dc: Any, area: str, alice_conn: str, make_context: Any) -> None:
    op = operator(runtime, "misbehave", inputs=[], output_dir=f"{area}/out",
                  parameters={"mode": "sleep", "seconds": 120}, timeout=200, dcache_conn_id=alice_conn)
    ctx = make_context()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            op.execute(ctx)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until the function has uploaded its partial file
        tmp = [n for n in names(dc, f"{area}/out") if n.startswith(".tmp-")] if dc.exists(f"{area}/out") else []
        if tmp and dc.exists(f"{area}/out/{tmp[0]}/partial.bin"):
            break
        time.sleep(0.2)
    op.on_kill()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert errors and "killed" in str(errors[0])
    _assert_failed_cleanly(dc, area, ctx)
    if runtime["runtime"] == "docker":
        import docker

        client = docker.DockerClient(base_url=runtime["docker_url"], version="auto")
        left = client.containers.list(all=True, filters={"label": "org.airflow-dcache.function=misbehave"})
        assert left == []


def test_output_checksum_mismatch(runtime: dict, dc: Any, area: str, alice_conn: str, make_context: Any) -> None:
    op = operator(runtime, "misbehave", inputs=[], output_dir=f"{area}/out", parameters={"mode": "bad-checksum"},
                  dcache_conn_id=alice_conn)
    ctx = make_context()
    with pytest.raises(AirflowException, match="adler32 checksum mismatch"):
        op.execute(ctx)
    _assert_failed_cleanly(dc, area, ctx)


def test_reading_outside_the_macaroons_is_refused(runtime: dict, dc: Any, area: str, alice_conn: str,
                                                  make_context: Any) -> None:
    dc.upload(io.BytesIO(b"allowed"), f"{area}/in/allowed.txt")
    dc.upload(io.BytesIO(b"private"), f"{area}/in/private.txt")
    op = operator(runtime, "misbehave", inputs=[f"{area}/in/allowed.txt"], output_dir=f"{area}/out",
                  parameters={"mode": "read-outside", "other_path": f"{area}/in/private.txt"},
                  dcache_conn_id=alice_conn)
    value = op.execute(make_context())
    assert value["refused"] is True and value["status"] == 403


def test_writing_outside_the_output_area_is_refused(runtime: dict, dc: Any, area: str, alice_conn: str,
                                                    make_context: Any) -> None:
    dc.mkdir(f"{area}/elsewhere")
    op = operator(runtime, "misbehave", inputs=[], output_dir=f"{area}/out",
                  parameters={"mode": "write-outside", "other_dir": f"{area}/elsewhere"}, dcache_conn_id=alice_conn)
    value = op.execute(make_context())
    assert value["attempts"] == {"parent": 403, "other": 403}
    assert names(dc, f"{area}/elsewhere") == []
    assert [n for n in names(dc, f"{area}/out") if not n.startswith(".activation-")] == []


def test_secrets_stay_out_of_record_logs_and_xcom(runtime: dict, dc: Any, area: str, alice_conn: str,
                                                  dcache_server: Any, make_context: Any,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    dc.upload(io.BytesIO(b"payload"), f"{area}/in/a.txt")
    op = operator(runtime, "misbehave", inputs=[f"{area}/in/a.txt"], output_dir=f"{area}/out",
                  parameters={"mode": "leak"}, env={"API_KEY": "very-secret-api-key"}, dcache_conn_id=alice_conn)
    ctx = make_context()
    value = op.execute(ctx)
    everything = json.dumps([value, ctx["ti"].xcom]) + capsys.readouterr().out + capsys.readouterr().err
    assert value["token"] == "***"
    assert "very-secret-api-key" not in everything
    assert dcache_server.passwords["alice"] not in everything
    assert "authz=" not in everything or "authz=***" in everything
    record = ctx["ti"].xcom["activation_record"]
    assert record["env_keys"] == ["API_KEY"]
    assert "leaking the token: ***" in record["logs"]
    # the function never saw the worker's environment (AIRFLOW_CONN_* holds alice's password)
    assert not any(k.startswith("AIRFLOW_CONN") for k in value["env"])


def test_bad_image_fails_before_minting(dc: Any, area: str, alice_conn: str, docker_url: str,
                                        make_context: Any) -> None:
    op = DCacheFunctionOperator(task_id="t", function="hdf5-preview", runtime="docker", docker_url=docker_url,
                                image="airflow-dcache/does-not-exist:nope", inputs=[], output_dir=f"{area}/out",
                                dcache_conn_id=alice_conn)
    with pytest.raises(AirflowException, match="is not on the engine"):
        op.execute(make_context())
    assert not dc.exists(f"{area}/out")


def test_missing_local_function(alice_conn: str, area: str, make_context: Any) -> None:
    op = DCacheFunctionOperator(task_id="t", function="no-such-function", inputs=[], output_dir=f"{area}/out",
                                dcache_conn_id=alice_conn)
    with pytest.raises(AirflowException, match=r"no no-such-function/main\.py"):
        op.execute(make_context())


def test_no_result_line(dc: Any, area: str, alice_conn: str, make_context: Any) -> None:
    op = operator({"runtime": "local", "_build": None}, "misbehave", inputs=[], output_dir=f"{area}/out",
                  parameters={"mode": "no-result"}, dcache_conn_id=alice_conn)
    ctx = make_context()
    with pytest.raises(AirflowException, match="not JSON"):
        op.execute(ctx)
    _assert_failed_cleanly(dc, area, ctx)


def test_mapped_runs_write_separate_records(dc: Any, area: str, alice_conn: str) -> None:
    dc.upload(io.BytesIO(b"payload"), f"{area}/in/a.txt")
    for index in (0, 1):
        op = operator({"runtime": "local", "_build": None}, "misbehave", inputs=[f"{area}/in/a.txt"],
                      output_dir=f"{area}/out", dcache_conn_id=alice_conn)
        op.execute({"ti": FakeTI(map_index=index), "run_id": "r1"})
    assert [n for n in names(dc, f"{area}/out") if n.startswith(".activation")] == [
        ".activation-r1-0.json", ".activation-r1-1.json"]


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"runtime": "lambda"}, "runtime"),
    ({"function": "Bad Name"}, "function"),
    ({"timeout": 0}, "timeout"),
    ({"output_dir": "relative/dir"}, "output_dir"),
    ({"input_activities": ["DOWNLOAD", "FLY"]}, "input_activities"),
    ({"parameters": [1, 2]}, "parameters"),
])
def test_bad_arguments_name_the_field(kwargs: dict, field: str) -> None:
    base = {"task_id": "t", "function": "hdf5-preview", "inputs": [], "output_dir": "/out"}
    with pytest.raises(ValueError, match=field):
        DCacheFunctionOperator(**{**base, **kwargs})


def test_input_paths_accepts_file_lists() -> None:
    assert input_paths("/a/b") == ["/a/b"]
    assert input_paths([{"path": "/a/b", "size": 1}, "/c"]) == ["/a/b", "/c"]
    assert input_paths({"files": [{"path": "/x//y/"}]}) == ["/x/y"]
    assert input_paths({"path": "/one", "size": 3}) == ["/one"]
    with pytest.raises(ValueError, match="inputs"):
        input_paths(["relative"])
    with pytest.raises(ValueError, match="inputs"):
        input_paths(["/a", "/a"])


SIGTERM_CHILD = """
import json, signal, sys
from airflow_dcache.operators.function import DCacheFunctionOperator
from tests.functions.support import FakeTI
kwargs = json.loads(sys.argv[1])
op = DCacheFunctionOperator(task_id="t", function="misbehave", **kwargs)
signal.signal(signal.SIGTERM, lambda *_: op.on_kill())  # what Airflow's task runner installs
try:
    op.execute({"ti": FakeTI(), "run_id": "sigterm"})
except Exception as exc:
    print("FAILED", str(exc).splitlines()[0], flush=True)
    sys.exit(1)
print("SUCCEEDED", flush=True)
"""


def test_sigterm_runs_on_kill_like_the_task_runner(runtime: dict, dc: Any, area: str, alice_conn: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """on_kill from a SIGTERM handler on the thread that waits for the function (the real situation)."""
    import os
    import signal
    import subprocess
    import sys

    kwargs = {k: v for k, v in runtime.items() if not k.startswith("_")}
    if runtime["_build"] is not None:
        kwargs["image"] = runtime["_build"]("misbehave")
    else:
        kwargs["functions_dir"] = str(FIXTURE_FUNCTIONS)
    kwargs.update(inputs=[], output_dir=f"{area}/out", parameters={"mode": "sleep", "seconds": 120}, timeout=200,
                  dcache_conn_id=alice_conn)
    child = subprocess.Popen([sys.executable, "-c", SIGTERM_CHILD, json.dumps(kwargs)], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            tmp = [n for n in names(dc, f"{area}/out") if n.startswith(".tmp-")] if dc.exists(f"{area}/out") else []
            if tmp and dc.exists(f"{area}/out/{tmp[0]}/partial.bin"):
                break
            time.sleep(0.2)
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 1 and "FAILED function misbehave failed: killed (on_kill)" in out, out
    listing = names(dc, f"{area}/out")
    assert len(listing) == 1 and listing[0].endswith(".failed.json"), listing
