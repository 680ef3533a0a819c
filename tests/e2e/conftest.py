"""End-to-end fixtures: the two-site facility and a real Airflow (scheduler, triggerer, dag-processor, API).

Both come from :mod:`airflow_dcache.demo`, so the tests run exactly what ``make demo`` runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from airflow_dcache.testing.airflow_stack import COMPONENTS, AirflowStack
from airflow_dcache.testing.sites import Sites, start_sites


@pytest.fixture
def dcache_sites(tmp_path: Path) -> Iterator[Sites]:
    """``main`` (emulated tape, 1 s flush/stage) and ``buffer``, laid out as in the demo."""
    sites = start_sites(tmp_path / "sites", fast_hash=True, log_dir=tmp_path)
    yield sites
    sites.stop()


StackFactory = Callable[..., AirflowStack]


@pytest.fixture
def airflow_stack(tmp_path: Path) -> Iterator[StackFactory]:
    """Factory: ``airflow_stack(dags_folder, env={...}, dag_ids=[...])`` starts Airflow and waits for the DAGs.

    Every component is stopped (process groups killed) at the end of the test; on failure the
    component logs are printed, since they are the only place a triggerer's error shows.
    """
    started: list[AirflowStack] = []

    def factory(dags_folder: Path, env: Mapping[str, str] | None = None, *, dag_ids: list[str] = (),  # type: ignore[assignment]
                components: tuple[str, ...] = COMPONENTS, **kwargs: object) -> AirflowStack:
        stack = AirflowStack(tmp_path / "airflow", dags_folder, env, **kwargs)  # type: ignore[arg-type]
        started.append(stack)
        stack.start(components)
        if dag_ids:
            stack.wait_dags(dag_ids)
        return stack

    yield factory
    for stack in started:
        stack.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        home = None
        for name in ("tmp_path",):
            if name in getattr(item, "funcargs", {}):
                home = Path(item.funcargs[name]) / "airflow" / "component-logs"
        if home and home.exists():
            for log in sorted(home.glob("*.log")):
                tail = log.read_text(errors="replace")[-3000:]
                report.sections.append((f"airflow {log.stem} (tail)", tail))
