"""Run one DAG with ``dag.test()`` in a child process against a migrated, throw-away Airflow home.

``dag.test()`` needs a metadata database, and Airflow reads ``AIRFLOW_HOME`` once, when first
imported, which in a test session has usually already happened. So the DAG runs in a child Python
with its own home: the SQLite database is migrated once per session (``airflow db migrate``) and
copied for every run, so each run starts from an empty, migrated database. The child inherits the
test's environment, including ``AIRFLOW_CONN_*`` set by the ``dcache_connection`` fixture.

Run as ``python -m airflow_dcache.testing.dagrun DAG_FILE DAG_ID CONF_JSON [EVENTS_FILE]``; it prints
one ``DAGRUN-RESULT <json>`` line with the run's state and each task's state.

``EVENTS_FILE`` (JSON, as :meth:`airflow_dcache.testing.watchers.WatchedEvents.asset_events` gives
them) makes the run *asset-triggered* as the scheduler would: each entry becomes an asset event of the
DAG's schedule asset, recorded as the triggerer records a watcher's ``TriggerEvent``, and is attached to
the run before its first task starts, so the tasks read them from ``triggering_asset_events``.
``dag.test()`` has no parameter for that; the run is created through Airflow's
``get_or_create_dagrun``, wrapped for this child only (see :mod:`airflow_dcache.version_compat`).
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


#: Airflow masks every string extra of a connection it reads, secret or not, and warns "Skipping masking
#: for a secret as it's too short" in every task log for one shorter than 5 characters (``site: "main"``,
#: ``protocol: "http"``). A value is masked only when it is passed as a secret or sits under a sensitive
#: key: with a threshold of 1 short *secrets* are masked too (safer) and nothing else is, and the warning
#: ends. ``docs/connections.md`` gives sites the same advice.
QUIET_SHORT_EXTRAS = {"AIRFLOW__LOGGING__MIN_LENGTH_MASKED_SECRET": "1"}


def _home_env(home: Path) -> dict[str, str]:
    return {"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"), **QUIET_SHORT_EXTRAS}


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
            asset_events: list[dict[str, Any]] | None = None, timeout: float = RUN_TIMEOUT) -> DagRunResult:
    """Run ``dag_id`` from ``dag_file`` once with ``dag.test(run_conf=conf)`` in a child process.

    :param dag_file: the DAG's Python file (as it lies in the dags folder).
    :param dag_id: which DAG of the file to run.
    :param template_db: the migrated database from :func:`migrated_template`.
    :param home: a fresh directory for this run's Airflow home.
    :param conf: the run's ``conf`` (overrides ``params`` defaults).
    :param env: extra environment for the child (on top of the test's own).
    :param asset_events: the run's triggering asset events (``{"uri", "extra"}``), e.g. what the DAG's
        watchers reported (:func:`airflow_dcache.testing.watchers.watch`).
    :param timeout: bound of the whole run in seconds.
    """
    home.mkdir(parents=True, exist_ok=True)
    (home / "dags").mkdir(exist_ok=True)
    shutil.copy2(template_db, home / "airflow.db")
    child_env = {**os.environ, **_home_env(home), **(env or {})}
    child_env["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(dag_file).resolve().parent)
    argv = [sys.executable, "-m", "airflow_dcache.testing.dagrun", str(dag_file), dag_id, json.dumps(conf or {})]
    if asset_events is not None:
        events_file = home / "asset-events.json"
        events_file.write_text(json.dumps(asset_events))
        argv.append(str(events_file))
    done = subprocess.run(argv, env=child_env, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            data = json.loads(line[len(RESULT_MARK):])
            return DagRunResult(data["state"], data["tasks"], output)
    raise RuntimeError(f"dag.test() of {dag_id} gave no result (exit {done.returncode}):\n{output[-4000:]}")


def _main(argv: list[str]) -> int:
    from airflow.dag_processing.dagbag import DagBag

    dag_file, dag_id, conf = argv[0], argv[1], json.loads(argv[2])
    events = json.loads(Path(argv[3]).read_text()) if len(argv) > 3 else None
    # Parsed as the DAG processor would (a DAG need not be assigned to a module-level name).
    bag = DagBag(dag_folder=dag_file, safe_mode=False)
    if bag.import_errors:
        print(f"import errors: {bag.import_errors}", file=sys.stderr)
        return 2
    dag = bag.dags.get(dag_id)
    if dag is None:
        print(f"no DAG {dag_id!r} in {dag_file} (found {sorted(bag.dags)})", file=sys.stderr)
        return 2
    if events is not None:
        _attach_asset_events(events)
    run = dag.test(run_conf=conf)
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id)
        tasks = {ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]":
                 (str(ti.state) if ti.state else None) for ti in tis}
    print(RESULT_MARK + json.dumps({"state": str(run.state), "tasks": tasks}), flush=True)
    return 0


def _attach_asset_events(events: list[dict[str, Any]]) -> None:
    """Make the run ``dag.test()`` creates consume ``events`` (this child process only)."""
    from airflow.models import dagrun
    from airflow.models.asset import AssetEvent, AssetModel
    from sqlalchemy import select

    create = dagrun.get_or_create_dagrun

    def with_events(*args: Any, **kwargs: Any) -> Any:
        run = create(*args, **kwargs)
        session = kwargs["session"]
        for entry in events:
            asset_id = session.scalar(select(AssetModel.id).where(AssetModel.uri == entry["uri"]))
            if asset_id is None:
                raise RuntimeError(f"asset {entry['uri']} is not in the DAG's schedule")
            event = AssetEvent(asset_id=asset_id, extra=entry["extra"])
            session.add(event)
            session.flush()
            run.consumed_asset_events.append(event)
        session.commit()
        return run

    dagrun.get_or_create_dagrun = with_events


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
