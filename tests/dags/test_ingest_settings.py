"""The ingest DAG's parse-time settings from the environment: a bad value is an import error naming the variable."""

from __future__ import annotations

import importlib.util
import re
import uuid
from pathlib import Path
from types import ModuleType

import pytest

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "dcache_ingest_pipeline.py"
#: every number the DAG file reads when it is parsed, and whether it must be whole
SETTINGS = {
    "AIRFLOW_DCACHE_BATCH_MIN_INTERVAL": False,
    "AIRFLOW_DCACHE_REPLICATE_RETRIES": True,
    "AIRFLOW_DCACHE_REPLICATE_RETRY_DELAY": False,
    "AIRFLOW_DCACHE_REPLICATE_MAX_RETRY_DELAY": False,
    "AIRFLOW_DCACHE_CHUNK_MAX_FILES": True,
    "AIRFLOW_DCACHE_CHUNK_MAX_BYTES": True,
    "AIRFLOW_DCACHE_CHUNK_MAX_COUNT": True,
    "AIRFLOW_DCACHE_CHUNK_CONCURRENCY": True,
}


def _parse() -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"ingest_{uuid.uuid4().hex}", DAG_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_setting_is_listed() -> None:
    source = DAG_FILE.read_text()
    read = set(re.findall(r'_env_number\(\s*"([A-Z_]+)"', source))
    assert read == set(SETTINGS)


@pytest.mark.parametrize("name", sorted(SETTINGS))
@pytest.mark.parametrize("bad", ["soon", "-1", "nan"])
def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, bad: str) -> None:
    monkeypatch.setenv(name, bad)
    with pytest.raises(ValueError, match=rf"^\${name}: expected a (whole )?number"):
        _parse()


def test_empty_values_mean_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTINGS:
        monkeypatch.setenv(name, " ")
    (watcher,) = _parse().incoming.watchers
    assert watcher.trigger.batch_min_interval == 3


@pytest.mark.parametrize("name", sorted(n for n, whole in SETTINGS.items() if whole))
def test_a_fraction_is_refused_where_a_whole_number_is_needed(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "2.5")
    with pytest.raises(ValueError, match=rf"^\${name}: expected a whole number, got '2.5'"):
        _parse()


def test_the_watchers_pacing_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_DCACHE_BATCH_MIN_INTERVAL", "7.5")
    (watcher,) = _parse().incoming.watchers
    assert watcher.trigger.batch_min_interval == 7.5
