"""scripts/docker-engine is idempotent; image builds are cached by content hash; containers get no bridge."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

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
