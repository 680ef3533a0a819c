"""The distributed topology (Postgres, Redis, Celery workers, two schedulers, two triggerers) for the tests here.

Select these tests with ``-m distributed`` (or deselect them with ``-m 'not distributed'``). They need
Debian's ``postgresql`` and ``redis-server`` (``scripts/system-deps``) and the ``celery`` extra.
"""

from __future__ import annotations

import glob
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "distributed: runs on the distributed topology (Postgres, Redis, Celery, "
                                       "2 schedulers, 2 triggerers); select with -m distributed")


def missing_parts() -> list[str]:
    """What the topology needs and this machine lacks (empty: it can run)."""
    missing = []
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb") and not shutil.which("initdb"):
        missing.append("postgresql (scripts/system-deps)")
    if not shutil.which("redis-server"):
        missing.append("redis-server (scripts/system-deps)")
    for module in ("celery", "asyncpg", "psycopg2", "redis", "airflow.providers.celery"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"{module} (the celery extra)")
    return missing


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On failure, the tails of the component logs: a triggerer's or worker's error shows only there."""
    outcome = yield
    report = outcome.get_result()
    topo = getattr(item.module, "TOPOLOGY", None)
    if report.when == "call" and report.failed and topo is not None and topo.stack is not None:
        for log in sorted(Path(topo.airflow.log_dir).glob("*.log")):
            report.sections.append((f"airflow {log.stem} (tail)", log.read_text(errors="replace")[-2500:]))
