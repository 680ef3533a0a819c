"""The preload a site puts in ``airflow_local_settings.py``: modules in the processes that fork tasks only."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_dcache.preload import LOCAL_SETTINGS, TASK_MODULES, preload, preload_if_forking


def test_every_module_a_task_imports_is_preloaded() -> None:
    assert preload() == []
    assert all(name in sys.modules for name in TASK_MODULES)


def test_a_module_that_cannot_be_imported_is_named_and_the_rest_still_load(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="airflow_dcache.preload"):
        assert preload(["airflow_dcache.no_such_module", "airflow_dcache.paths"]) == ["airflow_dcache.no_such_module"]
    assert "airflow_dcache.no_such_module not preloaded" in caplog.text


@pytest.mark.parametrize(("argv", "forks"), [
    (["airflow", "scheduler"], True), (["airflow", "celery", "worker"], True),
    (["airflow", "api-server"], False), (["airflow", "dags", "trigger", "x"], False), (["airflow"], False), ([], False),
])
def test_only_the_commands_that_fork_tasks_preload(argv: list[str], forks: bool) -> None:
    assert preload_if_forking(argv) is forks


@pytest.mark.parametrize(("command", "loaded"), [("scheduler", True), ("version", False)])
def test_the_local_settings_file_preloads_when_airflow_starts(tmp_path: Path, command: str, loaded: bool) -> None:
    """As AirflowStack writes it: Airflow imports it while it initialises, before a scheduler forks workers."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "airflow_local_settings.py").write_text(LOCAL_SETTINGS)
    probe = (f"import sys; sys.argv = ['airflow', {command!r}]; import airflow, json; "
             "print(json.dumps('airflow_dcache.pipelines.chunk_steps' in sys.modules))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {"AIRFLOW_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) is loaded
    assert "not preloaded" not in out.stderr


def test_after_the_preload_parsing_the_example_dags_imports_nothing_more_of_ours(tmp_path: Path) -> None:
    """TASK_MODULES follows what the DAG files import: a module they load that the preload missed is named.

    The first version missed the classes the operator, sensor and trigger packages import lazily (the
    Kafka client among them); only a profile found it. Run in a fresh interpreter, so nothing else is loaded.
    """
    dags = sorted(str(p) for p in (Path(__file__).resolve().parents[1] / "dags").glob("*.py"))
    probe = (
        "import importlib.util, json, sys\n"
        "from airflow_dcache.preload import preload\n"
        "assert preload() == []\n"
        "before = set(sys.modules)\n"
        "for i, path in enumerate(sys.argv[1:]):\n"
        "    spec = importlib.util.spec_from_file_location(f'dag_{i}', path)\n"
        "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "new = sorted(n for n in set(sys.modules) - before\n"
        "             if n.split('.')[0] in ('airflow_dcache', 'requests', 'confluent_kafka'))\n"
        "print(json.dumps(new))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {"AIRFLOW_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", probe, *dags], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(dags) >= 4 and json.loads(out.stdout.strip().splitlines()[-1]) == []
