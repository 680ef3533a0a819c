"""The review leftovers around the runtimes: one factory, the build hint, cached digests, extras read once."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_dcache.functions import registry
from airflow_dcache.functions.activation import Activation, ActivationOptions, RunIds
from airflow_dcache.functions.container import DockerRuntime
from airflow_dcache.functions.credentials import connection_extras
from airflow_dcache.functions.factory import make_runtime, runtime_factory
from airflow_dcache.functions.local import LocalRuntime
from airflow_dcache.functions.runtime import FunctionRunError, env_secrets
from airflow_dcache.functions.warm import WarmPool
from airflow_dcache.operators.function import DCacheFunctionOperator
from tests.functions.support import *  # noqa: F403 - fixtures
from tests.functions.support import FIXTURE_FUNCTIONS


def test_one_factory_for_the_operator_and_the_pipeline() -> None:
    docker = make_runtime("docker", "misbehave", image="x/y:z", cpus=1.5, memory="256m", docker_url="unix:///nowhere",
                          functions_dir=FIXTURE_FUNCTIONS)
    assert isinstance(docker, DockerRuntime) and (docker.image, docker.cpus, docker.memory) == ("x/y:z", 1.5, "256m")
    local = make_runtime("local", "misbehave", functions_dir=FIXTURE_FUNCTIONS)
    assert isinstance(local, LocalRuntime) and local.functions_dir == FIXTURE_FUNCTIONS
    with pytest.raises(ValueError, match="local, docker"):
        runtime_factory("lambda", "misbehave")
    op = DCacheFunctionOperator(task_id="t", function="misbehave", inputs=[], output_dir="/o", runtime="docker",
                                image="x/y:z", cpus=2.0, functions_dir=str(FIXTURE_FUNCTIONS))
    made = op.make_runtime()
    assert isinstance(made, DockerRuntime) and made.image == "x/y:z" and made.cpus == 2.0


def test_missing_image_hint_names_the_functions_folder(docker_url: str) -> None:
    runtime = DockerRuntime("warm-probe", "airflow-dcache/warm-probe:never-built", docker_url=docker_url,
                            functions_dir=FIXTURE_FUNCTIONS, rebuild=False)
    with pytest.raises(FunctionRunError) as caught:
        runtime.identify()
    assert f"airflow-dcache function build warm-probe --dir {FIXTURE_FUNCTIONS.resolve()}" in str(caught.value)


def test_the_digest_is_cached_until_a_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "main.py").write_text("print(1)\n")
    source = registry.find_function("fn", tmp_path)
    hashed: list[Path] = []
    real = registry._tree_digest

    def counting(root: Path, extra: Any = None) -> str:
        hashed.append(root)
        return real(root, extra)

    monkeypatch.setattr(registry, "_tree_digest", counting)
    first = source.digest
    assert source.digest == first and source.image_tag.endswith(first[7:19]) and len(hashed) == 1
    (tmp_path / "fn" / "main.py").write_text("print(2)\n")
    assert source.digest != first and len(hashed) == 2
    (tmp_path / "fn" / "helper.py").write_text("")
    third = source.digest
    assert third not in (first,) and len(hashed) == 3 and source.digest == third and len(hashed) == 3


def test_env_secret_rule_is_one_rule() -> None:
    assert env_secrets({"A": "abc", "B": "abcd", "C": ""}) == ["abcd"]


def test_a_chunk_reads_the_connection_once(dc: Any, area: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Activations given the extras do not look the connection up again (it may be a secrets backend)."""
    extras = connection_extras(dc)
    lookups: list[str] = []
    real = type(dc).get_connection

    def counting(conn_id: str) -> Any:
        lookups.append(conn_id)
        return real(conn_id)

    monkeypatch.setattr(type(dc), "get_connection", staticmethod(counting))
    (tmp_path / "a.txt").write_text("a\n")
    dc.upload(tmp_path / "a.txt", f"{area}/in/a.txt")
    with WarmPool(lambda: LocalRuntime("misbehave", FIXTURE_FUNCTIONS, python=sys.executable), 1) as pool:
        for i in range(3):
            Activation(dc, pool, "misbehave", ActivationOptions(timeout=60), connection_extras=extras).run(
                [f"{area}/in/a.txt"], output_dir=f"{area}/out/{i}", parameters={"mode": "ok"},
                ids=RunIds(run_id=f"r{i}"))
        assert lookups == []
        Activation(dc, pool, "misbehave", ActivationOptions(timeout=60)).run(  # without: one lookup
            [f"{area}/in/a.txt"], output_dir=f"{area}/out/x", parameters={"mode": "ok"}, ids=RunIds(run_id="x"))
    assert lookups == [dc.dcache_conn_id]
    assert json.dumps(extras)  # plain data, safe to share between a chunk's threads
