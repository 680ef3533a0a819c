"""Measure function run times: local subprocess vs docker container, cold and warm (not a test).

    .venv/bin/python -m tests.functions.measure_runtimes [--restart-engine] [--repeat 5]

*cold*: the first container of an image after the engine (re)started (and, when permitted, after
dropping the page cache); *warm*: the following runs. Reported: the runtime's own wall time for a
trivial function (start -> exit, including stdin hand-over and container create/remove), and the
whole operator run (macaroons, transfers, checks, move) for hdf5-preview and deshake on the bundled
service.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tests.conftest import start_server
from tests.functions.support import FIXTURE_FUNCTIONS, REPO, FakeTI, write_cxi

TRIVIAL = json.dumps({"schema": "airflow-dcache/function-task/v1", "function": "misbehave", "inputs": [],
                      "output": None, "parameters": {"mode": "ok"}, "deadline": None}).encode()


def engine(restart: bool) -> str:
    script = str(REPO / "scripts/docker-engine")
    if restart:
        subprocess.run([script, "stop"], check=True)
        subprocess.run(["sync"], check=False)
        with contextlib.suppress(OSError):  # not permitted in every container
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
    out = subprocess.run([script], check=True, capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1].split("=", 1)[1]


def trivial(runtime, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        result = runtime.run(TRIVIAL, env={}, timeout=60)
        times.append(time.perf_counter() - began)
        assert result.exit_code == 0, result.stderr
    return times


def main() -> None:
    from airflow_dcache.functions.container import DockerRuntime
    from airflow_dcache.functions.local import LocalRuntime
    from airflow_dcache.operators.function import DCacheFunctionOperator

    parser = argparse.ArgumentParser()
    parser.add_argument("--restart-engine", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    url = engine(args.restart_engine)
    rows: dict[str, object] = {}
    local = LocalRuntime("misbehave", FIXTURE_FUNCTIONS)
    docker = DockerRuntime("misbehave", docker_url=url)
    docker.identify()
    rows["trivial docker (first after engine start, s)"] = round(trivial(docker, 1)[0], 3)
    warm = trivial(docker, args.repeat)
    rows["trivial docker warm median (s)"] = round(statistics.median(warm), 3)
    rows["trivial local median (s)"] = round(statistics.median(trivial(local, args.repeat)), 3)

    base = Path(tempfile.mkdtemp(prefix="measure-"))
    server = start_server(base, "--allow-insecure-macaroons")
    conn = f"measure_{uuid.uuid4().hex[:6]}"
    os.environ[f"AIRFLOW_CONN_{conn.upper()}"] = json.dumps({
        "conn_type": "dcache", "host": server.webdav, "login": "alice", "password": server.passwords["alice"],
        "extra": {"frontend_url": server.frontend}})
    try:
        from airflow_dcache.hooks.dcache import DCacheHook

        hook = DCacheHook(conn)
        write_cxi(base / "run.cxi", frames=100, height=256, width=256)
        hook.upload(base / "run.cxi", "/home/alice/m/run.cxi", make_parents=True)
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        "testsrc=size=320x240:rate=25:duration=4", "-vf",
                        "crop=256:192:32+24*sin(n*1.9):24+18*cos(n*2.7)", "-c:v", "libx264", "-preset", "ultrafast",
                        "-pix_fmt", "yuv420p", str(base / "shaky.mp4")], check=True)
        hook.upload(base / "shaky.mp4", "/home/alice/m/shaky.mp4")
        for function, path in (("hdf5-preview", "/home/alice/m/run.cxi"), ("deshake", "/home/alice/m/shaky.mp4")):
            for runtime in ("local", "docker"):
                times = []
                for i in range(3):
                    kwargs = {"docker_url": url} if runtime == "docker" else {}
                    op = DCacheFunctionOperator(task_id="m", function=function, inputs=path, runtime=runtime,
                                                output_dir=f"/home/alice/m/out-{runtime}-{i}", dcache_conn_id=conn,
                                                timeout=300, **kwargs)
                    began = time.perf_counter()
                    op.execute({"ti": FakeTI(), "run_id": f"m{i}"})
                    times.append(round(time.perf_counter() - began, 2))
                rows[f"{function} operator {runtime} (s, 3 runs)"] = times
    finally:
        server.stop()
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
