"""A whole DAG through ``dag.test()``: list → mapped, deferred QoS change (trigger run in-process, then
resumed) → deferrable sensor → a task reading the XCom results.

``dag.test()`` needs a migrated metadata DB, and Airflow reads ``AIRFLOW_HOME`` when it is first
imported, so the DAG runs in a child process with its own temporary home (``airflow db migrate``).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from airflow_dcache.hooks.dcache import DCacheHook
from tests.operators.conftest import conn_json, put

DAG = textwrap.dedent('''
    import json, os
    from datetime import datetime
    from airflow.sdk import dag, task
    from airflow_dcache.operators import DCacheListOperator, DCacheSetQosOperator
    from airflow_dcache.sensors import DCacheFileSensor

    ROOT, OUT = os.environ["DAG_ROOT"], os.environ["DAG_OUT"]

    @dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
    def archive():
        ls = DCacheListOperator(task_id="select", path=ROOT, name_glob="*.h5", dcache_conn_id="dc_main")
        qos = DCacheSetQosOperator.partial(
            task_id="archive", target_qos="disk+tape", wait_for_locality="NEARLINE", deferrable=True,
            poll_interval=0.2, max_poll_interval=1, dcache_conn_id="dc_main",
        ).expand(path=ls.output)
        done = DCacheFileSensor(task_id="archived", path=ls.output,
                                condition="nearline", deferrable=True, poke_interval=0.2, dcache_conn_id="dc_main")

        @task
        def report(selected, results):
            with open(OUT, "w") as fh:
                json.dump({"selected": selected, "results": list(results)}, fh)

        r = report(ls.output, qos.output)
        qos >> done >> r

    d = archive()
    if __name__ == "__main__":  # the DAG processor parses this file too
        print("STATE", d.test().state)
''')


def test_dag_defers_resumes_and_chains(main: DCacheHook, main_site, workdir: str, tmp_path: Path) -> None:
    for name in ("a.h5", "b.h5", "skip.txt"):
        put(main, f"{workdir}/{name}")
    home = tmp_path / "airflow-home"
    home.mkdir()
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__UNIT_TEST_MODE": "False", "AIRFLOW_CONN_DC_MAIN": conn_json(main_site),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
           "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path), "PYTHONPATH": os.getcwd()}
    airflow = Path(sys.executable).with_name("airflow")
    migrate = subprocess.run([str(airflow), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    dag_file = tmp_path / "archive_dag.py"
    dag_file.write_text(DAG)
    out = tmp_path / "out.json"
    env.update(DAG_ROOT=workdir, DAG_OUT=str(out))
    proc = subprocess.run([sys.executable, str(dag_file)], env=env, capture_output=True,
                          text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "STATE success" in proc.stdout, log[-4000:]
    assert "deferred" in log.lower()  # the mapped QoS tasks really went through their trigger
    assert "operator extra link" not in log  # the links' get_link ran without error at finalize
    with sqlite3.connect(home / "airflow.db") as db:
        links = db.execute("SELECT task_id, value FROM xcom WHERE key = '_link_dcache_file_url'").fetchall()
    assert any(task == "select" and f"/namespace{workdir}" in str(value) for task, value in links), links
    # the deferred QoS tasks keep the link their first process stored; nothing looks up a missing XCom
    assert sum(task == "archive" and f"/namespace{workdir}" in str(value) for task, value in links) == 2, links
    assert not [line for line in log.splitlines() if "XCom not found" in line and "key=dcache_" in line]
    report = json.loads(out.read_text())
    assert [r["name"] for r in report["selected"]] == ["a.h5", "b.h5"]
    assert sorted(r["paths"][0] for r in report["results"]) == [f"{workdir}/a.h5", f"{workdir}/b.h5"]
    assert all(r["status"] == "reached" for r in report["results"])
    for name in ("a.h5", "b.h5"):
        assert main.stat(f"{workdir}/{name}", locality=True).locality == "ONLINE_AND_NEARLINE"
    assert main.stat(f"{workdir}/skip.txt", qos=True).current_qos == "disk"
