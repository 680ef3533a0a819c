"""The engine command (packaged, and scripts/docker-engine) is idempotent; image builds are cached by content
hash; containers get no bridge."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from airflow_dcache.functions.images import base_tag, build_all, debian_mirror, docker_client
from airflow_dcache.functions.registry import LIBRARY_DIR, SOURCE_LABEL, find_function
from tests.functions.support import *  # noqa: F403 - fixtures
from tests.functions.support import REPO


def test_engine_script_is_idempotent(docker_url: str) -> None:
    again = subprocess.run([str(REPO / "scripts/docker-engine")], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout.strip() == f"DOCKER_HOST={docker_url}"
    status = subprocess.run([str(REPO / "scripts/docker-engine"), "status"], capture_output=True, text=True,
                            timeout=60)
    assert status.returncode == 0


def test_packaged_engine_command_is_the_script(docker_url: str) -> None:
    """``airflow-dcache function engine`` prints what scripts/docker-engine prints (the script wraps it)."""
    for action in ([], ["start"], ["status"]):
        proc = subprocess.run([sys.executable, "-m", "airflow_dcache.cli", "function", "engine", *action],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and proc.stdout.strip() == f"DOCKER_HOST={docker_url}", proc.stderr


def test_engine_command_without_an_engine(tmp_path: Path) -> None:
    """status fails with a message, stop touches nothing, start explains a missing dockerd; none starts one."""
    env = {**os.environ, "AIRFLOW_DCACHE_DOCKER_ROOT": str(tmp_path / "root"),
           "AIRFLOW_DCACHE_DOCKER_SOCK": str(tmp_path / "engine.sock")}
    script = str(REPO / "scripts/docker-engine")
    status = subprocess.run([script, "status"], capture_output=True, text=True, timeout=60, env=env)
    assert status.returncode == 1 and f"not answering on {tmp_path / 'engine.sock'}" in status.stderr
    stop = subprocess.run([script, "stop"], capture_output=True, text=True, timeout=60, env=env)
    assert stop.returncode == 0 and not (tmp_path / "root").exists()
    start = subprocess.run([sys.executable, "-m", "airflow_dcache.functions.engine"], capture_output=True, text=True,
                           timeout=60, env={**env, "PATH": str(tmp_path)})  # no dockerd on this PATH
    assert start.returncode == 1 and start.stdout == ""
    assert start.stderr.strip() in {"docker-engine: dockerd not installed (apt-get install docker.io)",
                                    "docker-engine: dockerd needs root"}
    usage = subprocess.run([script, "restart"], capture_output=True, text=True, timeout=60, env=env)
    assert usage.returncode == 2


def test_engine_has_no_bridge(docker_url: str) -> None:
    client = docker_client(docker_url)
    assert {n.name for n in client.networks.list()} == {"host", "none"}  # --bridge=none: no docker0


def test_function_images_are_cached_and_labelled(docker_url: str, function_image: Callable[[str], str]) -> None:
    function_image("select-files")  # built once
    lines: list[str] = []
    tags = build_all(["select-files"], LIBRARY_DIR, client=docker_client(docker_url), log=lines.append)
    source = find_function("select-files", LIBRARY_DIR)
    assert tags == {"select-files": source.image_tag}
    assert any("exists" in line for line in lines) and not any(line.startswith("built") for line in lines)
    image = docker_client(docker_url).images.get(source.image_tag)
    assert image.labels[SOURCE_LABEL] == source.digest
    assert docker_client(docker_url).images.get(base_tag())


def test_mirror_comes_from_apt_configuration() -> None:
    assert debian_mirror().startswith(("http://", "https://"))
