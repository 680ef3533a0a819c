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
    result = stack.api.xcom("e2e_smoke", run_id, "whoami")
    assert {k: result[k] for k in ("username", "incoming")} == {"username": "pipeline", "incoming": True}
    # the connection's short extras (site "main") are no secrets: no masking warning in the task's log
    log = stack.task_log("e2e_smoke", run_id, "whoami")
    assert "Pushing xcom" in log and "too short" not in log, log[-2000:]
    # a macaroon minted during the task is masked where the task's logs are masked (its supervisor), whether
    # logged or printed: its signature tail never reaches the log
    lines = [line for line in log.splitlines() if "minted: " in line or "printed: " in line]
    assert len(lines) == 2 and all("***" in line for line in lines), lines
    tail = result["tail_reversed"][::-1]
    assert tail not in log, [line for line in log.splitlines() if tail in line]
