"""The one place a function runtime is built from its settings (the operator and the chunked pipeline use it).

Kept apart from both callers so a new runtime option (a CPU limit, a functions folder) reaches every
way a function runs, and a warm pool starts its instances from exactly what a cold run would use.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from airflow_dcache.functions.runtime import FunctionRuntime

RUNTIMES = ("local", "docker")


def check_runtime(kind: str) -> str:
    """``kind`` when it is a known runtime, else a ``ValueError`` naming the choices."""
    if kind not in RUNTIMES:
        raise ValueError(f"runtime: expected one of {', '.join(RUNTIMES)}, got {kind!r}")
    return kind


def make_runtime(kind: str, function: str, *, image: str | None = None, command: list[str] | None = None,
                 docker_url: str | None = None, cpus: float | None = None, memory: str | None = None,
                 functions_dir: str | os.PathLike[str] | None = None) -> FunctionRuntime:
    """A new runtime object for ``function``: ``local`` (subprocess) or ``docker`` (a container).

    One object runs one function at a time; the docker-only options are ignored by ``local``.
    """
    if check_runtime(kind) == "docker":
        from airflow_dcache.functions.container import DockerRuntime

        return DockerRuntime(function, image, docker_url=docker_url, cpus=cpus, memory=memory, command=command,
                             functions_dir=functions_dir)
    from airflow_dcache.functions.local import LocalRuntime

    return LocalRuntime(function, functions_dir)


def runtime_factory(kind: str, function: str, **options: object) -> Callable[[], FunctionRuntime]:
    """``make_runtime`` with its arguments bound (checked now): what a :class:`~.warm.WarmPool` starts from."""
    check_runtime(kind)

    def make() -> FunctionRuntime:
        return make_runtime(kind, function, **options)  # type: ignore[arg-type]

    return make
