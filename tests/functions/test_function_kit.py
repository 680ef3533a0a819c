"""``airflow-dcache function new|build|test``, and the docker runtime's refusal of an image older than its folder.

A user's function is made with ``new`` in a temporary folder, its generated pytest is run in a child
pytest, it is built on the real engine and run through both runtimes against the bundled service.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.exceptions import AirflowException

from airflow_dcache.cli import main as cli
from airflow_dcache.functions.container import REBUILD_ENV, DockerRuntime, StaleImage
from airflow_dcache.functions.images import base_tag, docker_client
from airflow_dcache.functions.kit import scaffold_test_name
from airflow_dcache.functions.registry import FUNCTIONS_ENV, SOURCE_LABEL, find_function
from airflow_dcache.operators.function import DCacheFunctionOperator
from tests.functions.support import *  # noqa: F403 - fixtures

CLI = [sys.executable, "-m", "airflow_dcache.cli"]


@pytest.fixture
def name() -> str:
    return f"kit-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def user_function(tmp_path: Path, name: str) -> Path:
    """A function made by ``function new`` in ``tmp_path/functions``."""
    assert cli(["function", "new", name, "--dir", str(tmp_path / "functions")]) == 0
    return tmp_path / "functions" / name


@pytest.fixture
def engine_images(docker_url: str, name: str) -> Iterator[Any]:
    """A client on the engine; removes the test function's tags afterwards (only those: an image may carry others)."""
    client = docker_client(docker_url)
    yield client
    for image in client.images.list(name=f"airflow-dcache/{name}"):
        for tag in image.tags:
            if tag.startswith(f"airflow-dcache/{name}:"):
                client.images.remove(tag)


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, **(env or {})})


# ------------------------------------------------------------------------------------------------ new


def test_new_writes_a_function_whose_own_test_passes(user_function: Path, name: str) -> None:
    test_file = user_function / scaffold_test_name(name)
    assert sorted(p.name for p in user_function.iterdir()) == sorted(
        ["Dockerfile", "function.json", "main.py", test_file.name])
    assert json.loads((user_function / "function.json").read_text())["name"] == name
    assert "ARG BASE=airflow-dcache/function-base:latest" in (user_function / "Dockerfile").read_text()
    # The generated pytest, in a project of its own: only the installed plugin's fixtures.
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
                          capture_output=True, text=True, timeout=300, cwd=user_function.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout


def test_new_refuses_a_bad_name_and_an_existing_folder(user_function: Path, name: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["function", "new", "Bad Name", "--dir", str(user_function.parent)]) == 1
    assert "'Bad Name' is not a valid function name" in capsys.readouterr().err
    before = (user_function / "main.py").read_text()
    assert cli(["function", "new", name, "--dir", str(user_function.parent)]) == 1
    assert "exists already" in capsys.readouterr().err
    assert (user_function / "main.py").read_text() == before
    assert not (user_function.parent / "Bad Name").exists()


# ---------------------------------------------------------------------------------------------- build


def test_build_without_an_engine_says_how_to_start_one(user_function: Path, name: str, tmp_path: Path) -> None:
    proc = run_cli("function", "build", name, "--dir", str(user_function.parent),
                   env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}, timeout=120)
    assert proc.returncode == 1
    assert "no Docker engine answers" in proc.stderr and "airflow-dcache function engine start" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_build_refuses_an_unknown_function(tmp_path: Path) -> None:
    proc = run_cli("function", "build", "nothing-here", "--dir", str(tmp_path), timeout=120)
    assert proc.returncode == 1 and "no nothing-here/main.py" in proc.stderr and "Traceback" not in proc.stderr


def test_build_then_test_in_both_runtimes(user_function: Path, name: str, docker_url: str, engine_images: Any,
                                          tmp_path: Path) -> None:
    source = find_function(name, user_function.parent)
    # From the folder that holds the function, as a user would after `new`: no --dir needed.
    built = run_cli("function", "build", name, cwd=user_function.parent, env={"DOCKER_HOST": docker_url})
    assert built.returncode == 0, built.stderr[-2000:]
    assert built.stdout.splitlines()[-1] == f"{name} {source.image_tag}"
    assert engine_images.images.get(source.image_tag).labels[SOURCE_LABEL] == source.digest
    assert engine_images.images.get(f"airflow-dcache/{name}:latest").id == engine_images.images.get(
        source.image_tag).id
    assert engine_images.images.get(base_tag())  # the existing base was reused

    sample = tmp_path / "sample.txt"
    sample.write_text("a\nb\n")
    for runtime in ("local", "docker"):
        out = tmp_path / f"out-{runtime}"
        proc = run_cli("function", "test", name, "--dir", str(user_function.parent), "--runtime", runtime,
                       "--input", str(sample), "--out", str(out), env={"DOCKER_HOST": docker_url})
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert f"{runtime} runtime, digest {source.digest}" in proc.stdout
        assert "status: success, exit code 0" in proc.stdout and "output: inventory.json" in proc.stdout
        inventory = json.loads((out / "inventory.json").read_text())
        assert [(f["name"], f["size"], f["lines"]) for f in inventory["files"]] == [("sample.txt", 4, 2)]

    failed = run_cli("function", "test", name, "--dir", str(user_function.parent), "--input", str(sample),
                     "--param", "algorithm=nope")
    assert failed.returncode == 1 and "status: failed, exit code 1" in failed.stdout
    assert "'nope' is not a hashlib algorithm" in failed.stdout


# ---------------------------------------------------------------------------------- the digest refusal


def test_an_image_older_than_its_folder_is_refused_until_rebuilt(
        user_function: Path, name: str, docker_url: str, engine_images: Any, dc: Any, area: str, alice_conn: str,
        make_context: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    built = run_cli("function", "build", name, "--dir", str(user_function.parent), env={"DOCKER_HOST": docker_url})
    assert built.returncode == 0, built.stderr[-2000:]
    old = find_function(name, user_function.parent).digest
    monkeypatch.setenv(FUNCTIONS_ENV, str(user_function.parent))  # where the docker runtime finds the folder
    monkeypatch.delenv(REBUILD_ENV, raising=False)
    dc.upload(io.BytesIO(b"x\n"), f"{area}/in/x.txt")

    def run() -> dict[str, Any]:
        op = DCacheFunctionOperator(task_id="kit", function=name, inputs=[f"{area}/in/x.txt"],
                                    output_dir=f"{area}/out", runtime="docker", docker_url=docker_url,
                                    dcache_conn_id=alice_conn, timeout=120)
        return op.execute(make_context())

    unchanged = run()
    assert unchanged["files"] == 1 and unchanged["function_digest"] == old

    main = user_function / "main.py"
    code = main.read_text()
    main.write_text(code.replace('return {"files": len(entries),', 'return {"edited": True, "files": len(entries),'))
    new = find_function(name, user_function.parent).digest
    assert new != old
    with pytest.raises(AirflowException) as refused:
        run()
    message = str(refused.value)
    assert f"function {name}" in message and old in message and new in message
    assert f"airflow-dcache function build {name} --dir {user_function.parent.resolve()}" in message
    assert REBUILD_ENV in message

    monkeypatch.setenv(REBUILD_ENV, "1")
    rebuilt = run()
    assert rebuilt["edited"] is True and rebuilt["function_digest"] == new
    assert engine_images.images.get(f"airflow-dcache/{name}:latest").labels[SOURCE_LABEL] == new


def test_an_image_without_the_label_is_refused_when_the_folder_is_there(
        user_function: Path, name: str, docker_url: str, engine_images: Any) -> None:
    # An image made by hand (here: the base, tagged as the function) cannot be shown to hold the folder's code.
    engine_images.images.get(base_tag()).tag(f"airflow-dcache/{name}", "latest")
    runtime = DockerRuntime(name, docker_url=docker_url, functions_dir=user_function.parent, rebuild=False)
    with pytest.raises(StaleImage, match=f"has no {SOURCE_LABEL} label"):
        runtime.identify()
    # Without the folder (a worker with images only) the image is what there is: its id is the identity.
    elsewhere = DockerRuntime(name, docker_url=docker_url, functions_dir=user_function.parent / "absent")
    assert elsewhere.identify().digest == engine_images.images.get(base_tag()).id
