"""Run one DAG with ``dag.test()`` in a child process against a migrated, throw-away Airflow home.

``dag.test()`` needs a metadata database, and Airflow reads ``AIRFLOW_HOME`` once, when first
imported, which in a test session has usually already happened. So the DAG runs in a child Python
with its own home: the SQLite database is migrated once per session (``airflow db migrate``) and
copied for every run, so each run starts from an empty, migrated database. The child inherits the
test's environment, including ``AIRFLOW_CONN_*`` set by the ``dcache_connection`` fixture.

Run as ``python -m airflow_dcache.testing.dagrun DAG_FILE DAG_ID CONF_JSON``; it prints one
``DAGRUN-RESULT <json>`` line with the run's state and each task's state.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULT_MARK = "DAGRUN-RESULT "
MIGRATE_TIMEOUT = 300.0
RUN_TIMEOUT = 300.0


@dataclass(frozen=True)
class DagRunResult:
    """The outcome of one ``dag.test()`` run: the run's state, each task's state, and the child's output."""

    state: str
    task_states: dict[str, str | None]
    output: str = field(repr=False)

    @property
    def succeeded(self) -> bool:
        return self.state == "success"


def _home_env(home: Path) -> dict[str, str]:
    return {"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags")}


def migrated_template(base: Path) -> Path:
    """``airflow db migrate`` once into ``base``; returns the migrated SQLite file to copy per run.

    :param base: an empty directory (the template's Airflow home).
    """
    base.mkdir(parents=True, exist_ok=True)
    (base / "dags").mkdir(exist_ok=True)
    env = {**os.environ, **_home_env(base)}
    done = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True,
                          text=True, timeout=MIGRATE_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{done.stderr[-3000:]}")
    return base / "airflow.db"


def run_dag(dag_file: str | os.PathLike[str], dag_id: str, template_db: Path, home: Path, *,
            conf: dict[str, Any] | None = None, env: dict[str, str] | None = None,
            timeout: float = RUN_TIMEOUT) -> DagRunResult:
    """Run ``dag_id`` from ``dag_file`` once with ``dag.test(run_conf=conf)`` in a child process.

    :param dag_file: the DAG's Python file (as it lies in the dags folder).
    :param dag_id: which DAG of the file to run.
    :param template_db: the migrated database from :func:`migrated_template`.
    :param home: a fresh directory for this run's Airflow home.
    :param conf: the run's ``conf`` (overrides ``params`` defaults).
    :param env: extra environment for the child (on top of the test's own).
    :param timeout: bound of the whole run in seconds.
    """
    home.mkdir(parents=True, exist_ok=True)
    (home / "dags").mkdir(exist_ok=True)
    shutil.copy2(template_db, home / "airflow.db")
    child_env = {**os.environ, **_home_env(home), **(env or {})}
    child_env["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(dag_file).resolve().parent)
    done = subprocess.run([sys.executable, "-m", "airflow_dcache.testing.dagrun", str(dag_file), dag_id,
                           json.dumps(conf or {})], env=child_env, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            data = json.loads(line[len(RESULT_MARK):])
            return DagRunResult(data["state"], data["tasks"], output)
    raise RuntimeError(f"dag.test() of {dag_id} gave no result (exit {done.returncode}):\n{output[-4000:]}")


def _main(argv: list[str]) -> int:
    from airflow.dag_processing.dagbag import DagBag

    dag_file, dag_id, conf = argv[0], argv[1], json.loads(argv[2])
    # Parsed as the DAG processor would (a DAG need not be assigned to a module-level name).
    bag = DagBag(dag_folder=dag_file, safe_mode=False)
    if bag.import_errors:
        print(f"import errors: {bag.import_errors}", file=sys.stderr)
        return 2
    dag = bag.dags.get(dag_id)
    if dag is None:
        print(f"no DAG {dag_id!r} in {dag_file} (found {sorted(bag.dags)})", file=sys.stderr)
        return 2
    run = dag.test(run_conf=conf)
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id)
        tasks = {ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]":
                 (str(ti.state) if ti.state else None) for ti in tis}
    print(RESULT_MARK + json.dumps({"state": str(run.state), "tasks": tasks}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
