"""The fault tests that need Airflow use the end-to-end fixtures: the two sites and a real Airflow stack."""

from __future__ import annotations

from tests.e2e.conftest import airflow_stack, dcache_sites, pytest_runtest_makereport

__all__ = ["airflow_stack", "dcache_sites", "pytest_runtest_makereport"]
