"""Import, once, what every task of this provider imports: for the process that forks the tasks.

Why: Airflow's LocalExecutor (and Celery's prefork pool) forks each task from a long-lived worker,
and the task then imports its DAG file and whatever that imports. For the chunked ingest pipeline
that import was about 0.37 s of CPU per task start on this project's 2-core reference machine
(``requests``, this provider's hooks, operators, triggers and pipeline steps, Airflow's ``@task``
decorator and asset models), paid again by every one of a run's task instances: under a steady
10 uploads/s, more CPU than the files' own work. Imported in the process the workers are forked from,
the modules are already in every task's memory, and a task start pays only for building its DAG.

Use it from the site's ``airflow_local_settings.py``: Airflow imports that module early in every
process (the scheduler before it forks its LocalExecutor workers, a Celery worker before it forks
its pool). :func:`preload_if_forking` imports only in those two, so a CLI call or the API server does
not pay for modules it never uses::

    from airflow_dcache.preload import preload_if_forking

    preload_if_forking()

Only modules are imported: nothing connects, starts a thread or reads a connection, so what the
forked tasks inherit is code, not state. A module that cannot be imported is named in a warning and
skipped: the task that needs it imports it itself and fails there with the real error.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterable, Sequence

log = logging.getLogger(__name__)

#: The ``airflow`` commands whose process forks task processes: LocalExecutor's scheduler, Celery's worker.
FORKING_COMMANDS = ("scheduler", "celery")

#: What a task of the example pipelines imports, heaviest first: its DAG file's imports, then the
#: modules its task bodies import when they run.
TASK_MODULES = (
    "requests",
    "airflow.models.asset",
    "airflow.providers.standard.decorators.python",
    "airflow.providers.common.compat.assets",
    "airflow.sdk.definitions.decorators.setup_teardown",
    "airflow_dcache.assets",
    "airflow_dcache.assets.dcache",
    "airflow_dcache.hooks",
    "airflow_dcache.operators",
    "airflow_dcache.operators.chunk_wait",
    "airflow_dcache.sensors",
    "airflow_dcache.triggers",
    "airflow_dcache.retry_policy",
    "airflow_dcache.events",
    "airflow_dcache.pipelines.design",
    "airflow_dcache.pipelines.steps",
    "airflow_dcache.pipelines.chunk_steps",
    "airflow_dcache.functions.activation",
    "airflow_dcache.functions.local",
)


def preload(modules: Iterable[str] = TASK_MODULES) -> list[str]:
    """Import ``modules`` and every name in their ``__all__``; the modules that failed (each logged as a warning)."""
    missing = []
    for name in modules:
        try:
            module = importlib.import_module(name)
            # packages that import their classes lazily (operators, sensors, triggers): resolve them all, so
            # the submodules behind them (and what those import, e.g. the Kafka client) are loaded too
            for attribute in getattr(module, "__all__", ()):
                getattr(module, attribute)
        except Exception as exc:  # an optimisation must not stop the component that runs it
            log.warning("airflow_dcache.preload: %s not preloaded (%s: %s)", name, type(exc).__name__, exc)
            missing.append(name)
    return missing


def preload_if_forking(argv: Sequence[str] | None = None) -> bool:
    """:func:`preload` when this process is an ``airflow`` command that forks tasks; whether it did."""
    args = list(sys.argv if argv is None else argv)
    if args[1:2] and args[1] in FORKING_COMMANDS:
        preload()
        return True
    return False


#: An ``airflow_local_settings.py`` that preloads (what :class:`~airflow_dcache.testing.airflow_stack.AirflowStack`
#: writes, and what a site can copy).
LOCAL_SETTINGS = (
    '"""Site settings: import this provider once in the processes that fork tasks (airflow_dcache.preload)."""\n'
    "from airflow_dcache.preload import preload_if_forking\n\n"
    "preload_if_forking()\n"
)
