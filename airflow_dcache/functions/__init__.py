"""The function runner's runtime package: task documents, runtimes, activation records, images, SDK.

``DCacheFunctionOperator`` (``airflow_dcache.operators.function``) is built on these modules:

- ``taskdoc``: the ``airflow-dcache/function-task/v1`` document a function reads on stdin;
- ``runtime`` (shared parts), ``local`` (subprocess) and ``container`` (Docker engine), built by
  ``factory.make_runtime`` (the one place both the operator and the chunked pipeline build them);
- ``warm``: warm instances (one process/container serving a chunk's task documents in turn) and the
  pool the chunked pipeline's ``preview`` runs them in;
- ``record``: the ``airflow-dcache/activation/v1`` record;
- ``registry``: where function sources live and their digest; ``images``: building the images;
- ``sdk/dcache_fn.py``: the stdlib-only function-side SDK.
"""

from __future__ import annotations


def choose_runtime(function: str | None = None, docker_url: str | None = None) -> str:
    """``"docker"`` when an engine answers (and has ``function``'s image, if named), else ``"local"``.

    For demos and DAGs that should use containers where a machine has them and subprocesses elsewhere.
    """
    from airflow_dcache.functions.container import DockerRuntime, docker_available
    from airflow_dcache.functions.runtime import FunctionRunError

    if not docker_available(docker_url):
        return "local"
    if function is None:
        return "docker"
    try:
        DockerRuntime(function, docker_url=docker_url).identify()
    except (FunctionRunError, ValueError):
        return "local"
    return "docker"


__all__ = ["choose_runtime"]
