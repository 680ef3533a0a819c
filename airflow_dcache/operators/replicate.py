"""Replicate files between two dCache instances (two sites) by HTTP third-party copy.

The data flows door to door; the worker only sends one ``COPY`` per file and reads the performance
markers (logged by the hook as progress). Both sides are authorised by macaroons minted for that one
file just before its copy: DOWNLOAD on the source file, UPLOAD (plus DELETE when overwriting) on the
destination file. The ``COPY`` itself is sent with the macaroon of the side that receives it, and the
other side's macaroon travels as ``TransferHeaderAuthorization``, so neither site ever sees the
other's long-lived credential. After each copy the adler32 checksums of both replicas are compared.

Not deferrable: dCache reports a copy's progress and outcome only on the open ``COPY`` response, so
the request must stay with the worker; killing the task closes it, which makes dCache abandon the
copy (a pull leaves no partial file).

A site that cannot be reached (connection refused, reset, timed out, after the hook's own short
connect retries) or that goes away while the ``COPY`` runs fails the task with a
:class:`~airflow_dcache.exceptions.DCacheConnectionError` that names the site, its connection and
URL, the step and the cause, e.g. ``destination site 'buffer' (connection dcache_buffer,
http://buffer:2880) is unreachable while creating /data/work/r1: [Errno 111] Connection refused``.
It is an ``AirflowException``, so the task's ``retries`` (with ``retry_exponential_backoff``) apply;
the source is only read, so a retry, a cleared task or a new run starts from the same state.

The per-file logic (macaroons, ``COPY``, checksum check, site errors) is
:class:`airflow_dcache.transfers.tpc.ThirdPartyCopy`, which the chunked ingest pipeline uses too.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.links.dcache import DCacheFileLink, DCacheViewLink, persist_file_links
from airflow_dcache.operators.base import check_versions, expected_versions
from airflow_dcache.paths import check_at_parse, clean_roots, is_template, paths_from
from airflow_dcache.retry_policy import DCacheRetryPolicy
from airflow_dcache.transfers.tpc import MODES, ThirdPartyCopy, connection_cause, macaroon_hook

__all__ = ["DCacheReplicateOperator", "connection_cause", "destination_for", "macaroon_hook"]


def destination_for(source: str, *, destination_path: str | None, destination_dir: str | None,
                    source_root: str | None) -> str:
    """Where ``source`` goes: the explicit path, or below ``destination_dir`` keeping the layout under
    ``source_root`` (the bare file name when no root is given or the source is outside it)."""
    if destination_path:
        return destination_path
    assert destination_dir is not None
    relative = posixpath.basename(source)
    if source_root:
        root = source_root.rstrip("/") + "/"
        if source.startswith(root):
            relative = source[len(root):]
    return posixpath.join(destination_dir.rstrip("/") or "/", relative)


class DCacheReplicateOperator(BaseOperator):
    """Copy a file or a list of files from one dCache connection to another by HTTP-TPC.

    :param source_conn_id: the dCache holding the files (templated).
    :param destination_conn_id: the dCache receiving them (templated).
    :param source_path: a path, a list of paths or file records from the list operator (templated;
        ``.expand(source_path=...)`` works).
    :param destination_path: the target of a single file (templated).
    :param destination_dir: target directory for a list (templated); with ``source_root`` the layout
        below that root is kept, else files land by name.
    :param source_root: see ``destination_dir`` (templated).
    :param mode: ``"pull"`` (the destination fetches; default) or ``"push"`` (the source sends).
    :param overwrite: replace existing destination files.
    :param macaroon_validity: seconds each per-file macaroon is valid (default one hour).
    :param verify_checksum: compare adler32 of source and copy afterwards (a mismatch deletes the copy).
    :param expected_version: the source file version(s) to copy (templated): a version id or dict for one
        source, or ``{path: version}``. The source is checked before the copy, and the copy's checksum
        against the version's afterwards: a source replaced meanwhile fails the task at once
        (``VersionChanged``, the copy deleted) instead of copying the newer version in this one's name.
    :param allowed_roots: the trees this task may act on (a DAG sets it for all its dCache tasks with
        ``default_args={"allowed_roots": [...]}``); a path outside fails the task before any request.
    :return: ``{"source_conn_id", "destination_conn_id", "mode", "files": [{"source", "destination",
        "size", "adler32", "markers"}], "destinations": [...]}``; path-taking operators accept this result
        as their ``path`` (they read ``destinations``), e.g. to delete the copies afterwards;
        ``destinations`` is also pushed as an XCom key.
    """

    template_fields: Sequence[str] = (
        "source_conn_id", "destination_conn_id", "source_path", "destination_path", "destination_dir", "source_root",
        "expected_version",
    )
    operator_extra_links = (DCacheFileLink(), DCacheViewLink())
    ui_color = "#8fd3f4"

    def __init__(
        self,
        *,
        source_conn_id: str,
        destination_conn_id: str,
        source_path: str | Sequence[Any],
        destination_path: str | None = None,
        destination_dir: str | None = None,
        source_root: str | None = None,
        mode: str = "pull",
        overwrite: bool = True,
        macaroon_validity: int = 3600,
        verify_checksum: bool = True,
        expected_version: Any = None,
        allowed_roots: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("retry_policy", DCacheRetryPolicy())
        super().__init__(**kwargs)
        check_at_parse(source_path, field="source_path")
        if (destination_path is None) == (destination_dir is None):
            raise ValueError("destination_path, destination_dir: give exactly one")
        check_at_parse(destination_path, field="destination_path")
        check_at_parse(destination_dir, field="destination_dir")
        check_at_parse(source_root, field="source_root")
        if mode not in MODES:
            raise ValueError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
        if isinstance(macaroon_validity, bool) or not isinstance(macaroon_validity, int) or macaroon_validity < 60:
            raise ValueError(f"macaroon_validity: expected whole seconds >= 60, got {macaroon_validity!r}")
        if destination_path is not None and isinstance(source_path, (list, tuple)) and len(source_path) != 1 \
                and not is_template(destination_path):
            raise ValueError("destination_path: names one file; use destination_dir for a list of sources")
        self.source_conn_id = source_conn_id
        self.destination_conn_id = destination_conn_id
        self.source_path = source_path
        self.destination_path = destination_path
        self.destination_dir = destination_dir
        self.source_root = source_root
        self.mode = mode
        self.overwrite = overwrite
        self.macaroon_validity = macaroon_validity
        self.verify_checksum = verify_checksum
        self.expected_version = expected_version
        self.allowed_roots = clean_roots(allowed_roots)

    @cached_property
    def source_hook(self) -> DCacheHook:
        return DCacheHook(self.source_conn_id, allowed_roots=self.allowed_roots)

    @cached_property
    def destination_hook(self) -> DCacheHook:
        return DCacheHook(self.destination_conn_id, allowed_roots=self.allowed_roots)

    def execute(self, context: Any) -> dict[str, Any]:
        sources = paths_from(self.source_path, field="source_path")
        if self.destination_path and len(sources) != 1:
            raise ValueError(f"destination_path: names one file but {len(sources)} sources were given")
        versions = expected_versions(sources, self.expected_version)
        with self.copier.step("source", "checking the source versions", sources[0]):
            check_versions(self.source_hook, versions, step="replicate")
        files = []
        for index, source in enumerate(sources, 1):
            destination = destination_for(source, destination_path=self.destination_path,
                                          destination_dir=self.destination_dir, source_root=self.source_root)
            self.log.info("[%d/%d] %s %s -> %s", index, len(sources), self.mode, source, destination)
            files.append(self.copier.copy(source, destination, versions.get(source)))
        destinations = [f["destination"] for f in files]
        persist_file_links(context, self.destination_conn_id, self.destination_hook.settings.api_url,
                           destinations[0])
        context["ti"].xcom_push(key="destinations", value=destinations)
        return {"source_conn_id": self.source_conn_id, "destination_conn_id": self.destination_conn_id,
                "mode": self.mode, "files": files, "destinations": destinations}

    @cached_property
    def copier(self) -> ThirdPartyCopy:
        """The copy logic (per-file macaroons, checksum check, site errors), shared with the chunked pipeline."""
        return ThirdPartyCopy(self.source_hook, self.destination_hook, mode=self.mode, overwrite=self.overwrite,
                              macaroon_validity=self.macaroon_validity, verify_checksum=self.verify_checksum,
                              log=self.log, failure=AirflowException)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage, when its provider is installed: each source file read and each copy written.

        :param task_instance: the finished task instance (its result is read back from XCom).
        """
        from airflow_dcache.operators import _lineage

        if not _lineage.available():
            return None
        inputs, outputs = _lineage.replicate_datasets(
            _lineage.pull_result(task_instance), self.source_hook.settings.site, self.destination_hook.settings.site)
        return _lineage.operator_lineage(inputs, outputs)

    def on_kill(self) -> None:
        """Close the open COPY streams: dCache abandons a copy whose client went away."""
        if "copier" in self.__dict__:  # a copy was started
            self.copier.abort()
