"""The harness itself: a real Airflow runs a task that reaches the bundled ``main`` site as ``pipeline``."""

from __future__ import annotations

from pathlib import Path

from airflow_dcache.testing.sites import Sites

DAGS = Path(__file__).parent / "dags_smoke"


def test_task_reaches_site_through_connection(dcache_sites: Sites, airflow_stack) -> None:
    stack = airflow_stack(DAGS, dcache_sites.connections(), dag_ids=["e2e_smoke"])
    run_id = stack.api.trigger("e2e_smoke", note="smoke")
    runs = stack.api.wait_for_runs("e2e_smoke", lambda rs: any(r["state"] in ("success", "failed") for r in rs))
    assert [r["state"] for r in runs] == ["success"], stack.task_log("e2e_smoke", run_id, "whoami")
    assert stack.api.xcom("e2e_smoke", run_id, "whoami") == {"username": "pipeline", "incoming": True}
    # the connection's short extras (site "main") are no secrets: no masking warning in the task's log
    log = stack.task_log("e2e_smoke", run_id, "whoami")
    assert "Pushing xcom" in log and "too short" not in log, log[-2000:]
