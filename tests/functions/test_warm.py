"""Warm functions: one instance (process or container) serving one task document per file.

Everything runs for real on both runtimes: the SDK's loop in a subprocess and in a container on the
project's engine (images built as ``make function-images`` builds them), and, for activations, the
bundled dCache service minting the per-file macaroons.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from airflow_dcache.functions.activation import Activation, ActivationOptions, FunctionFailed, RunIds
from airflow_dcache.functions.container import DockerRuntime
from airflow_dcache.functions.credentials import connection_extras
from airflow_dcache.functions.local import LocalRuntime
from airflow_dcache.functions.runtime import FunctionRuntime, RunResult, parse_result
from airflow_dcache.functions.taskdoc import SCHEMA
from airflow_dcache.functions.warm import LineFeed, LogSegments, WarmPool, pool_size
from tests.functions.support import *  # noqa: F403 - fixtures
from tests.functions.support import FIXTURE_FUNCTIONS

Factory = Callable[[str], Callable[[], FunctionRuntime]]


@pytest.fixture(params=["local", "docker"])
def make(request: pytest.FixtureRequest) -> Factory:
    """``make(name)``: a runtime factory for a fixture function on this test's runtime."""
    if request.param == "local":
        return lambda name: (lambda: LocalRuntime(name, FIXTURE_FUNCTIONS))
    docker_url = request.getfixturevalue("docker_url")
    build = request.getfixturevalue("function_image")

    def factory(name: str) -> Callable[[], FunctionRuntime]:
        tag = build(name)
        return lambda: DockerRuntime(name, tag, docker_url=docker_url, functions_dir=FIXTURE_FUNCTIONS)

    return factory


def doc(mode: str, **parameters: Any) -> bytes:
    return json.dumps({"schema": SCHEMA, "function": "warm-probe", "inputs": [], "output": None,
                       "parameters": {"mode": mode, **parameters}, "deadline": time.time() + 120}).encode()


def value(result: RunResult) -> dict[str, Any]:
    assert result.ok, (result.exit_code, result.failure, result.stderr[-2000:])
    parsed, reason = parse_result(result.stdout)
    assert parsed is not None, reason
    return parsed


def test_one_instance_serves_documents_in_turn_each_with_its_own_env_and_directory(make: Factory) -> None:
    with WarmPool(make("warm-probe"), 1) as pool:
        keys = ["TOKEN_A", "TOKEN_B"]
        first = pool.run(doc("probe", keys=keys), env={"TOKEN_A": "first-secret"}, timeout=60)
        second = pool.run(doc("probe", keys=keys), env={"TOKEN_B": "second-secret"}, timeout=60)
        printed = pool.run(doc("print", tag="third"), env={}, timeout=60)
        stats = pool.stats()
    a, b = value(first), value(second)
    assert a["pid"] == b["pid"] and a["loaded_at"] == b["loaded_at"]  # one process, imported once
    assert a["env"] == {"TOKEN_A": "first-secret", "TOKEN_B": None}
    assert b["env"] == {"TOKEN_A": None, "TOKEN_B": "second-secret"}  # nothing of the first file's env
    assert a["cwd"] != b["cwd"] and b["before"] == []  # a fresh directory: the first file left nothing
    assert a["home"] == a["tmp"] == a["cwd"] and a["workdir"].startswith(a["cwd"])
    assert value(printed) == {"printed": True, "outputs": []}  # what it printed is log, not the result
    log = printed.stderr.decode()
    assert "printed to stdout" in log and "logged to stderr: third" in log and "first-secret" not in log
    assert first.warm and first.warm["id"] == second.warm["id"] == printed.warm["id"]  # type: ignore[index]
    assert [r.warm["document"] for r in (first, second, printed)] == [1, 2, 3]  # type: ignore[index]
    assert first.warm["cold_start_seconds"] > 0  # type: ignore[index]
    assert stats["instances_started"] == 1 and stats["documents"] == 3 and stats["replaced"] == 0


def test_a_crash_fails_that_file_only_and_the_next_file_gets_a_new_instance(make: Factory, request: Any) -> None:
    with WarmPool(make("warm-probe"), 1) as pool:
        before = pool.run(doc("probe"), env={}, timeout=60)
        crashed = pool.run(doc("crash"), env={}, timeout=60)
        after = [pool.run(doc("probe"), env={}, timeout=60) for _ in range(2)]
        stats = pool.stats()
    assert not crashed.ok and crashed.exit_code == 17 and "exit code 17" in str(crashed.failure)
    assert "crashing now" in crashed.stderr.decode()
    loaded = [value(r)["loaded_at"] for r in (before, *after)]  # pids repeat in containers (all are 1)
    assert loaded[0] != loaded[1] == loaded[2]
    assert crashed.warm["id"] == before.warm["id"] != after[0].warm["id"]  # type: ignore[index]
    assert after[0].warm["document"] == 1  # type: ignore[index]
    assert stats["instances_started"] == 2 and stats["replaced"] == 1
    if "docker_url" in request.fixturenames:
        from airflow_dcache.functions.images import docker_client

        client = docker_client(request.getfixturevalue("docker_url"))
        left = client.containers.list(all=True, filters={"label": "org.airflow-dcache.function=warm-probe"})
        assert left == [], "warm containers must be removed when the pool closes"


def test_the_timeout_is_per_document(make: Factory) -> None:
    with WarmPool(make("warm-probe"), 1) as pool:
        # three documents of 1.5 s each under a 4 s timeout: the instance's age does not count
        steady = [pool.run(doc("sleep", seconds=1.5), env={}, timeout=4) for _ in range(3)]
        begin = time.monotonic()
        stuck = pool.run(doc("sleep", seconds=60), env={}, timeout=2)
        waited = time.monotonic() - begin
        after = pool.run(doc("probe"), env={}, timeout=60)
        stats = pool.stats()
    assert all(value(r) == {"slept": True, "outputs": []} for r in steady)
    assert len({r.warm["id"] for r in steady}) == 1  # type: ignore[index]
    assert stuck.timed_out and not stuck.ok and waited < 15
    assert value(after) and after.warm["id"] != stuck.warm["id"]  # type: ignore[index]
    assert stats["replaced"] == 1


def test_bad_results_fail_only_their_file_and_keep_the_instance(make: Factory) -> None:
    with WarmPool(make("warm-probe"), 1) as pool:
        results = {mode: pool.run(doc(mode), env={}, timeout=60) for mode in ("not-a-dict", "huge", "exit", "fail")}
        good = pool.run(doc("probe"), env={}, timeout=60)
        stats = pool.stats()
    assert {m: r.exit_code for m, r in results.items()} == {"not-a-dict": 1, "huge": 1, "exit": 5, "fail": 1}
    assert "TypeError" in results["not-a-dict"].stderr.decode()
    assert "the limit is 1048576" in results["huge"].stderr.decode()
    assert "failing on purpose (fail)" in results["fail"].stderr.decode()
    assert value(good) and stats["instances_started"] == 1 and stats["replaced"] == 0


def test_a_malformed_frame_breaks_only_its_file(make: Factory) -> None:
    with WarmPool(make("warm-liar"), 1) as pool:
        runs = [pool.run(doc(mode), env={}, timeout=30) for mode in ("ok", "garbage", "ok", "wrong-seq", "ok")]
        stats = pool.stats()
    assert [r.ok for r in runs] == [True, False, True, False, True]
    assert "malformed frame (a line that is not JSON)" in str(runs[1].failure)
    assert "not the answer to document 2" in str(runs[3].failure)  # the second of its instance
    assert len({r.warm["id"] for r in runs}) == 3 and stats["replaced"] == 2  # type: ignore[index]


def test_a_function_without_the_loop_runs_cold(tmp_path: Path) -> None:
    """A function that reads stdin itself never says ready: each document runs cold, as before."""
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "main.py").write_text(
        "import json, sys\njson.load(sys.stdin)\nprint(json.dumps({'plain': True}))\n")
    with WarmPool(lambda: LocalRuntime("plain", tmp_path), 2, start_timeout=2) as pool:
        first = pool.run(doc("x"), env={}, timeout=30)
        begin = time.monotonic()
        second = pool.run(doc("x"), env={}, timeout=30)
        assert time.monotonic() - begin < 2  # no second attempt to start it warm
    assert value(first) == value(second) == {"plain": True}
    assert first.warm and "no ready frame" in first.warm["fallback"]


def test_stream_helpers_cut_frames_and_logs() -> None:
    import queue

    frames: queue.Queue[bytes | None] = queue.Queue()
    feed = LineFeed(frames, limit=10)
    feed.feed(b'{"a":1}\n{"b"')
    feed.feed(b":2}\n" + b"x" * 30)
    feed.feed(b"yyy\n{}\n")
    feed.close()
    assert [frames.get_nowait() for _ in range(5)] == [b'{"a":1}', b'{"b":2}', b"", b"{}", None]
    logs = LogSegments("n0nce", keep=64)
    logs.feed(b"startup\n\n\x1edcache-fn:n0nce:ready\nline one\npartial")
    logs.feed(b"\n\x1edcache-fn:other:end:1\n\n\x1edcache-fn:n0nce:end:1\ncrash")
    assert logs.take("ready", 0) == b"startup\n"
    assert logs.take("end:1", 0) == b"line one\npartial\n\x1edcache-fn:other:end:1\n"  # another nonce is text
    assert logs.take("end:2", 0) == b"crash"  # late marker: what there is now
    logs.feed(b" and more of document 2\n\n\x1edcache-fn:n0nce:end:2\nthird\n\n\x1edcache-fn:n0nce:end:3\n")
    assert logs.take("end:3", 0) == b"third\n"  # the late rest of document 2 went nowhere
    logs.feed(b"last words")
    logs.close()
    assert logs.take("end:4", 0) == b"last words"


def test_pool_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_DCACHE_WARM_INSTANCES", raising=False)
    assert pool_size(None, 8) == 3 and pool_size(None, 2) == 2 and pool_size(0, 8) == 0
    monkeypatch.setenv("AIRFLOW_DCACHE_WARM_INSTANCES", "4")
    assert pool_size(None, 8) == 4 and pool_size("1", 8) == 1
    with pytest.raises(ValueError, match="AIRFLOW_DCACHE_WARM_INSTANCES"):
        pool_size("many", 8)


# ------------------------------------------------------------------------------------ activations


class RecordingPool(WarmPool):
    """The real pool, keeping each task document it was given (to compare the macaroons of files)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.documents_seen: list[dict[str, Any]] = []

    def run(self, task_document: bytes, *, env: dict[str, str], timeout: float) -> RunResult:
        self.documents_seen.append(json.loads(task_document))
        return super().run(task_document, env=env, timeout=timeout)


def _macaroons(document: dict[str, Any]) -> list[str]:
    found = [parse_qs(urlsplit(i["url"]).query)["authz"][0] for i in document["inputs"]]
    return [*found, document["output"]["authorization"].split(" ", 1)[1]]


def test_activations_on_a_warm_pool(make: Factory, dc: Any, area: str, alice_conn: str, tmp_path: Path,
                                    caplog: pytest.LogCaptureFixture) -> None:
    """Per file: its own macaroons, record (warm, which instance, its cold start), outcome; no secret logged."""
    caplog.set_level(logging.DEBUG)
    modes = ["ok", "leak", "no-result", "ok", "ok"]
    for i in range(len(modes)):
        (tmp_path / f"f{i}.txt").write_text(f"file {i}\n")
        dc.upload(tmp_path / f"f{i}.txt", f"{area}/in/f{i}.txt")
    extras = connection_extras(dc)
    env_values = [f"api-key-{i}-{uuid.uuid4().hex}" for i in range(len(modes))]
    outcomes: list[Any] = []
    with RecordingPool(make("misbehave"), 1) as pool:
        for i, mode in enumerate(modes):
            activation = Activation(dc, pool, "misbehave", ActivationOptions(timeout=60), connection_extras=extras)
            try:
                outcomes.append(activation.run([f"{area}/in/f{i}.txt"], output_dir=f"{area}/out/{i}",
                                               parameters={"mode": mode}, env={"API_KEY": env_values[i]},
                                               ids=RunIds(dag_id="d", task_id="t", run_id=f"r{i}")))
            except FunctionFailed as exc:
                outcomes.append(exc)
        stats = pool.stats()
    macaroons = [m for d in pool.documents_seen for m in _macaroons(d)]
    assert len(pool.documents_seen) == 5 and len(set(macaroons)) == len(macaroons) == 10  # distinct per file
    failed = outcomes[2]
    assert isinstance(failed, FunctionFailed) and "ended (exit code 0)" in str(failed)
    assert all(isinstance(o, dict) for i, o in enumerate(outcomes) if i != 2)
    assert outcomes[0]["copied"] == 1 and outcomes[1]["token"] == "***"  # the leaked macaroon is scrubbed
    records = []
    for i in range(len(modes)):
        name = f".activation-r{i}{'.failed' if i == 2 else ''}.json"
        raw = __import__("io").BytesIO()
        dc.download(f"{area}/out/{i}/{name}", raw)
        records.append(json.loads(raw.getvalue()))
    assert [r["status"] for r in records] == ["success", "success", "failed", "success", "success"]
    assert all(r["warm"] is True for r in records)
    ids = [r["warm_instance"]["id"] for r in records]
    assert ids[0] == ids[1] == ids[2] != ids[3] == ids[4]  # the crash replaced the instance
    assert [r["warm_instance"]["document"] for r in records] == [1, 2, 3, 1, 2]
    assert all(r["warm_instance"]["cold_start_seconds"] > 0 for r in records)
    assert "leaking the token: ***" in records[1]["logs"]
    assert stats["instances_started"] == 2 and stats["replaced"] == 1
    everything = json.dumps(records) + json.dumps(outcomes[:2] + outcomes[3:]) + str(failed) + caplog.text
    for secret in [*macaroons, *env_values]:
        assert secret not in everything


def test_stop_kills_the_running_document_at_once() -> None:
    """``on_kill`` reaches a warm instance: the document in progress ends as killed, not after its timeout."""
    import threading

    with WarmPool(lambda: LocalRuntime("warm-probe", FIXTURE_FUNCTIONS), 1) as pool:
        assert value(pool.run(doc("probe"), env={}, timeout=60))
        results: list[RunResult] = []
        worker = threading.Thread(target=lambda: results.append(pool.run(doc("sleep", seconds=60), env={},
                                                                         timeout=120)))
        worker.start()
        time.sleep(1.0)
        begin = time.monotonic()
        pool.stop()
        worker.join(timeout=30)
        assert not worker.is_alive() and time.monotonic() - begin < 15
    (result,) = results
    assert result.killed and not result.ok
    assert pool.run(doc("probe"), env={}, timeout=60).killed  # a stopped pool starts nothing new
