"""``ObjectStoragePath("dcache://…")`` inside a real DAG run: ``dag.test()`` (a DagRun in Airflow's DB, the
real task runner) in a child process with its own migrated ``AIRFLOW_HOME``; no scheduler is started.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

from airflow_dcache.hooks.dcache import DCacheHook

DAG_FILE = Path(__file__).resolve().parents[1] / "dags_fs" / "objectstorage_dag.py"
CONN = "dc_fs_dag"


def test_dag_reads_and_writes_through_object_storage_path(dcache_server: Any, workdir: str, alice_hook: DCacheHook,
                                                          tmp_path: Path) -> None:
    lines = b"id,name\n1,alice\n2,b\xc3\xb6b\n"
    alice_hook.mkdir(f"{workdir}/in")
    alice_hook.upload(io.BytesIO(lines), f"{workdir}/in/records.csv")
    home = tmp_path / "airflow-home"
    home.mkdir()
    conn = {"conn_type": "dcache", "host": dcache_server.webdav, "login": "alice",
            "password": dcache_server.passwords["alice"], "extra": {"frontend_url": dcache_server.frontend}}
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__UNIT_TEST_MODE": "False", f"AIRFLOW_CONN_{CONN.upper()}": json.dumps(conn),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
           "AIRFLOW__CORE__DAGS_FOLDER": str(DAG_FILE.parent), "PYTHONPATH": os.getcwd(),
           "FS_DAG_CONN": CONN, "FS_DAG_ROOT": workdir}
    airflow = Path(sys.executable).with_name("airflow")
    migrate = subprocess.run([str(airflow), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    proc = subprocess.run([sys.executable, str(DAG_FILE)], env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "STATE success" in proc.stdout, log[-4000:]
    assert dcache_server.passwords["alice"] not in log  # the connection's secret never reaches the task log
    expected = lines.decode().upper().encode()
    out = f"{workdir}/out/records.upper.csv"
    assert alice_hook.stat(out).size == len(expected)
    buffer = io.BytesIO()
    alice_hook.download(out, buffer)
    assert buffer.getvalue() == expected
    with sqlite3.connect(home / "airflow.db") as db:
        (value,) = db.execute("SELECT value FROM xcom WHERE dag_id = 'dcache_object_storage' "
                              "AND key = 'return_value'").fetchone()
    result = json.loads(value if isinstance(value, str) else value.decode())
    assert result["target"] == f"dcache://{CONN.replace('_', '-')}{out}"
    assert result["size"] == len(expected) and result["checksum"] == zlib.adler32(expected)
