"""The sdist and wheel as users get them: built, checked by twine, installed into a fresh venv, used there.

Marked ``packaging`` (deselect with ``-m 'not packaging'``). The build is cached by a digest of the
sources under ``build/wheel-cache/``; the fresh venv reuses the project venv's dependencies through a
``.pth`` overlay, so only the wheel itself is installed (``--no-deps --no-index``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_dcache.functions.registry import LIBRARY_DIR
from tests.packaging.wheelenv import ROOT, Dists, FreshVenv, build_dists, fresh_venv

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(600)]
pytest.importorskip("build", reason="the packaging tests need the 'build' package in the venv")


@pytest.fixture(scope="module")
def dists() -> Dists:
    return build_dists()


@pytest.fixture(scope="module")
def venv(dists: Dists, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreshVenv]:
    yield fresh_venv(tmp_path_factory.mktemp("wheel-venv") / "venv", dists.wheel)


@pytest.fixture(scope="module")
def installed(venv: FreshVenv) -> dict:
    done = venv.run(str(venv.python), str(Path(__file__).with_name("check_installed.py")))
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_twine_check_passes(dists: Dists) -> None:
    pytest.importorskip("twine")
    done = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(dists.wheel), str(dists.sdist)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_wheel_ships_service_and_functions_not_tests(dists: Dists) -> None:
    names = zipfile.ZipFile(dists.wheel).namelist()
    assert "airflow_dcache/server/app.py" in names
    assert "airflow_dcache/functions/sdk/dcache_fn.py" in names
    assert "airflow_dcache/testing/plugin.py" in names
    for function_dir in sorted(LIBRARY_DIR.iterdir()):
        if (function_dir / "main.py").is_file():
            for f in ("main.py", "Dockerfile"):
                assert f"airflow_dcache/functions/library/{function_dir.name}/{f}" in names
    assets = [p.relative_to(ROOT).as_posix() for p in (ROOT / "airflow_dcache").rglob("*")
              if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert not [a for a in assets if a not in names]  # e.g. the UI plugin's static bundle
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"airflow_dcache", "airflow_dcache-0.1.0.dist-info"}, tops  # no tests/, benchmarks/, dags/
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "conftest" in n]


def test_wheel_declares_entry_points_and_extras(dists: Dists) -> None:
    wheel = zipfile.ZipFile(dists.wheel)
    entry_points = wheel.read("airflow_dcache-0.1.0.dist-info/entry_points.txt").decode()
    provider = "[apache_airflow_provider]\nprovider_info = airflow_dcache.get_provider_info:get_provider_info"
    assert provider in entry_points
    assert "[pytest11]\ndcache = airflow_dcache.testing.plugin" in entry_points
    assert "[airflow.plugins]\ndcache = airflow_dcache.plugins.dcache:DCachePlugin" in entry_points
    assert "airflow-dcache = airflow_dcache.cli:main" in entry_points
    metadata = wheel.read("airflow_dcache-0.1.0.dist-info/METADATA").decode()
    assert "Requires-Dist: apache-airflow>=3.3.2" in metadata
    extras = {line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Provides-Extra:")}
    assert {"kafka", "docker", "hdf5", "ui", "server", "testing"} <= extras
    # A production install pulls neither the service's web stack nor Kafka/Docker/HDF5 clients.
    base = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert not [line for line in base if any(p in line for p in ("aiohttp", "confluent", "docker", "h5py"))], base


def test_every_public_class_imports_from_the_installed_wheel(installed: dict, venv: FreshVenv) -> None:
    assert installed["errors"] == []
    site = str(venv.path)
    assert installed["package"].startswith(site)
    outside = {m: f for m, f in installed["module_files"].items() if not str(f).startswith(site)}
    assert outside == {}, "imported from the checkout, not the wheel"
    classes = set(installed["classes"])
    for expected in ("airflow_dcache.hooks.dcache.DCacheHook", "airflow_dcache.hooks.dcache_async.DCacheAsyncHook",
                     "airflow_dcache.hooks.models.NamespaceEntry", "airflow_dcache.hooks.models.AuthType",
                     "airflow_dcache.hooks.models.TransferResult", "airflow_dcache.sensors.dcache.DCacheFileSensor",
                     "airflow_dcache.events.model.StorageEvent", "airflow_dcache.events.filters.EventFilter"):
        assert expected in classes
    assert "airflow_dcache.hooks.dcache.DCacheHook" in installed["objects"]


def test_installed_functions_have_the_checkout_digests(installed: dict, venv: FreshVenv) -> None:
    from airflow_dcache.functions import registry

    assert installed["functions_dir"].startswith(str(venv.path))
    expected = {d.name: registry.find_function(d.name, LIBRARY_DIR).digest
                for d in sorted(LIBRARY_DIR.iterdir()) if (d / "main.py").is_file()}
    assert expected
    assert installed["functions"] == expected  # same identity (image tag) from a wheel as from a checkout


def _airflow(venv: FreshVenv, tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    env = {"AIRFLOW_HOME": str(tmp_path / "airflow-home"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = venv.run(str(venv.python), "-m", "airflow", *args, "-o", "json", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return list(json.loads(done.stdout))


def test_airflow_lists_the_provider_from_the_wheel(venv: FreshVenv, tmp_path: Path) -> None:
    from airflow_dcache.get_provider_info import get_provider_info

    info = get_provider_info()
    full = _airflow(venv, tmp_path, "providers", "get", "airflow-dcache", "--full")[0]
    assert full["package-name"] == "airflow-dcache"
    assert [c["connection-type"] for c in full["connection-types"]] == ["dcache"]
    assert full["asset-uris"][0]["schemes"] == ["dcache"]
    for key in ("triggers", "sensors", "operators", "plugins", "filesystems", "queues", "extra-links"):
        assert info.get(key), f"{key} is not declared"  # else None == None would pass for any key
        assert full.get(key) == info.get(key), key  # everything declared reaches Airflow unchanged

    listed = {t["class"] for t in _airflow(venv, tmp_path, "providers", "triggers")}
    declared = {m for item in info["triggers"] for m in item["python-modules"]}
    assert declared <= listed
    hooks = _airflow(venv, tmp_path, "providers", "hooks")
    assert any(h.get("connection_type") == "dcache" for h in hooks)
    if info.get("plugins"):
        names = {p["name"] for p in _airflow(venv, tmp_path, "plugins")}
        assert {p["name"] for p in info["plugins"]} <= names


def test_bench_is_not_a_command_of_the_wheel(venv: FreshVenv) -> None:
    done = venv.run(str(venv.bin / "airflow-dcache"), "--help")
    assert done.returncode == 0, done.stderr
    assert "{server,demo,topology,function}" in done.stdout
    refused = venv.run(str(venv.bin / "airflow-dcache"), "bench", "transfer")
    assert refused.returncode == 2 and "invalid choice: 'bench'" in refused.stderr
    checkout = subprocess.run([sys.executable, "-m", "airflow_dcache.cli", "--help"], capture_output=True,
                              text=True, timeout=60, cwd=ROOT)
    assert "{server,demo,topology,function,bench}" in checkout.stdout  # the checkout keeps it (benchmarks/ is there)
