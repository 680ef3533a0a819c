"""A DAG whose task reads and writes dCache through ``ObjectStoragePath`` (run by tests/fs/test_dag_run.py).

The input is named by connection id, the output by the connection's asset site (``_`` as ``-``): both
spellings of ``dcache://`` resolve to the same connection.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import ObjectStoragePath, dag, task

CONN = os.environ.get("FS_DAG_CONN", "dcache_default")
ROOT = os.environ.get("FS_DAG_ROOT", "/data")


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["dcache", "objectstorage"])
def dcache_object_storage() -> None:
    @task
    def transform() -> dict[str, object]:
        source = ObjectStoragePath(f"dcache://{CONN}{ROOT}/in/records.csv")
        target = ObjectStoragePath(f"dcache://{CONN.replace('_', '-')}{ROOT}/out") / "records.upper.csv"
        target.parent.mkdir(parents=True, exist_ok=True)
        with source.open("r") as reader, target.open("w") as writer:
            for line in reader:  # streamed: ranged reads in, one verified upload out at close
                writer.write(line.upper())
        return {"target": str(target), "size": target.stat().st_size, "checksum": target.checksum()}

    transform()


dag_object = dcache_object_storage()

if __name__ == "__main__":  # the DAG processor parses this file too
    print("STATE", dag_object.test().state)
