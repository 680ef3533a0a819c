"""The smallest DAG the harness runs: one task that talks to the ``main`` site through the hook."""

from __future__ import annotations

import logging

from airflow.sdk import dag, task


@dag(schedule=None, dag_id="e2e_smoke")
def e2e_smoke() -> None:
    @task
    def whoami() -> dict[str, object]:
        from airflow_dcache.hooks import DCacheHook

        with DCacheHook("dcache_main") as hook:
            me = hook.whoami()
            # a credential minted while the task runs, written to the log both ways a careless task could
            minted = hook.mint_macaroon("/data/incoming", activities=["LIST"], validity=60).macaroon
            logging.getLogger("e2e_smoke").info("minted: %s", minted)
            print(f"printed: {minted}", flush=True)
            # its end reversed: the return value is logged, and the test looks for the end in the log
            return {"username": me.username, "incoming": hook.exists("/data/incoming"),
                    "tail_reversed": minted[-8:][::-1]}

    whoami()


e2e_smoke()
