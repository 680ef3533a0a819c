"""The smallest DAG the harness runs: one task that talks to the ``main`` site through the hook."""

from __future__ import annotations

from airflow.sdk import dag, task


@dag(schedule=None, dag_id="e2e_smoke")
def e2e_smoke() -> None:
    @task
    def whoami() -> dict[str, object]:
        from airflow_dcache.hooks import DCacheHook

        with DCacheHook("dcache_main") as hook:
            me = hook.whoami()
        return {"username": me.username, "incoming": hook.exists("/data/incoming")}

    whoami()


e2e_smoke()
