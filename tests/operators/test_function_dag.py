"""The function operator through ``dag.test()``: select-files -> hdf5-preview mapped over the selected files,
and ``@task.dcache_function`` choosing its inputs from the selection.

Covers what direct ``execute`` calls cannot: templated fields and XComArgs resolved by Airflow, mapped
task instances (one activation record per map index), the return value as XCom, and the extra link's
XCom. The DAG runs in a child process with its own AIRFLOW_HOME and migrated SQLite DB.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from tests.functions.support import *  # noqa: F403 - fixtures
from tests.functions.support import write_cxi

DAG = textwrap.dedent('''
    import json, os
    from datetime import datetime
    from airflow.sdk import dag, task
    from airflow_dcache.operators import DCacheFunctionOperator

    ROOT, OUT, RESULT = os.environ["DAG_ROOT"], os.environ["DAG_OUT"], os.environ["DAG_RESULT"]

    @dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
    def previews():
        select = DCacheFunctionOperator(
            task_id="select", function="select-files", inputs=ROOT, input_activities=["LIST"],
            output_dir=OUT + "/lists", parameters={"name_glob": "*.cxi"}, dcache_conn_id="fn_dag",
        )
        @task
        def files(result):
            return result["files"]

        preview = DCacheFunctionOperator.partial(
            task_id="preview", function="hdf5-preview", output_dir=OUT + "/{{ run_id | replace(':', '_') }}",
            parameters={"frame": 0}, versioned=True, dcache_conn_id="fn_dag",
        ).expand(inputs=files(select.output))

        @task
        def report(results):
            with open(RESULT, "w") as fh:
                json.dump(list(results), fh)

        report(preview.output)

        @task.dcache_function(function="hdf5-preview", output_dir=OUT + "/decorated", dcache_conn_id="fn_dag")
        def first_frame(result):
            return {"inputs": result["files"][:1], "parameters": {"frame": 1}}

        first_frame(select.output)

    d = previews()
    if __name__ == "__main__":
        print("STATE", d.test().state)
''')


def test_select_then_mapped_preview(dc: Any, area: str, dcache_server: Any, tmp_path: Path) -> None:
    for name in ("a.cxi", "b.cxi"):
        write_cxi(tmp_path / name, frames=3, height=8, width=8)
        dc.upload(tmp_path / name, f"{area}/in/{name}")
    dc.upload(tmp_path / "a.cxi", f"{area}/in/ignored.h5")
    home = tmp_path / "airflow-home"
    home.mkdir()
    conn = json.dumps({"conn_type": "dcache", "host": dcache_server.webdav, "login": "alice",
                       "password": dcache_server.passwords["alice"], "extra": {"frontend_url": dcache_server.frontend}})
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__UNIT_TEST_MODE": "False", "AIRFLOW_CONN_FN_DAG": conn,
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
           "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "dags"), "PYTHONPATH": os.getcwd()}
    airflow = Path(sys.executable).with_name("airflow")
    migrate = subprocess.run([str(airflow), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    (tmp_path / "dags").mkdir()
    dag_file = tmp_path / "dags" / "previews.py"
    dag_file.write_text(DAG)
    result_file = tmp_path / "result.json"
    env.update(DAG_ROOT=f"{area}/in", DAG_OUT=f"{area}/out", DAG_RESULT=str(result_file))
    proc = subprocess.run([sys.executable, str(dag_file)], env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "STATE success" in proc.stdout, log[-4000:]
    assert dcache_server.passwords["alice"] not in log
    results = json.loads(result_file.read_text())
    assert sorted(r["summaries"][0]["input"] for r in results) == [f"{area}/in/a.cxi", f"{area}/in/b.cxi"]
    digest = results[0]["function_digest"].split(":", 1)[1][:12]
    run_dir = results[0]["outputs"][0]["path"].rsplit("/", 2)[0]
    assert run_dir.startswith(f"{area}/out/manual__")
    listing = sorted(e.name for e in dc.list_dir(f"{run_dir}/{digest}"))
    assert [n for n in listing if n.startswith(".activation-")] and len(
        [n for n in listing if n.startswith(".activation-")]) == 2  # one per map index
    assert {"a.preview.png", "b.preview.png", "a.summary.json", "b.summary.json"} <= set(listing)
    assert not [n for n in listing if n.startswith(".tmp-")]
    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute("SELECT task_id, map_index, key, value FROM xcom").fetchall()
    keys = {(task, key) for task, _, key, _ in rows}
    assert {("select", "activation_record"), ("preview", "activation_record"), ("preview", "output_url"),
            ("preview", "return_value")} <= keys
    assert all(dcache_server.passwords["alice"] not in str(value) for *_, value in rows)
    decorated = [json.loads(v) for task, _, key, v in rows if task == "first_frame" and key == "return_value"]
    assert decorated and decorated[0]["summaries"][0]["preview"] == "frame 1"
    assert decorated[0]["outputs"][0]["path"].startswith(f"{area}/out/decorated/a.")
    assert not any("authz=" in str(value) and "authz=***" not in str(value) for *_, value in rows)
