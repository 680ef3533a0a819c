"""The function SDK as a package, for functions run from an environment with airflow-dcache installed.

The code lives in ``dcache_fn.py`` so that the very same file can be copied into images (which do not
install airflow-dcache) and put on the local runtime's ``PYTHONPATH``.
"""

from airflow_dcache.functions.sdk.dcache_fn import (
    SCHEMA,
    AccessRefused,
    FunctionError,
    Input,
    Output,
    Task,
    emit,
    log,
    main,
)

__all__ = ["SCHEMA", "AccessRefused", "FunctionError", "Input", "Output", "Task", "emit", "log", "main"]
