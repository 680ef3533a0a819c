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
"""

from __future__ import annotations

import contextlib
import dataclasses
import posixpath
import re
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from airflow_dcache.events.version import FileVersion, require_version
from airflow_dcache.exceptions import DCacheConnectionError, DCacheError, TransferFailed, VersionChanged
from airflow_dcache.hooks._settings import AuthType
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.links.dcache import DCacheFileLink, DCacheViewLink, persist_file_links
from airflow_dcache.operators.base import check_versions, expected_versions
from airflow_dcache.paths import check_at_parse, clean_roots, is_template, paths_from
from airflow_dcache.retry_policy import DCacheRetryPolicy

MODES = ("pull", "push")


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


_CAUSES = (
    re.compile(r"\[Errno -?\d+\] [^\"')(]+"),  # [Errno 111] Connection refused
    re.compile(r"(?i)(?:read|connect) timed out"),
    re.compile(r"(?i)remote end closed connection[^\"')]*"),
    re.compile(r"(?i)connection (?:reset|aborted|broken)[^\"')(]*"),
)


def connection_cause(error: DCacheError) -> str:
    """The root cause of a connection error in a few words (``[Errno 111] Connection refused``).

    The hook's message carries urllib3's whole retry story; the operator's message names the site
    and step itself, so only the innermost reason is kept (the full text stays on the chained error).
    """
    text = error.message
    for pattern in _CAUSES:
        found = pattern.findall(text)
        if found:
            return str(found[-1]).strip().rstrip(":;,")
    text = text.removeprefix("cannot reach dCache: ")
    return text if len(text) <= 300 else text[:297] + "..."


def macaroon_hook(base: DCacheHook, macaroon: str) -> DCacheHook:
    """A hook on the same door authenticating only with ``macaroon`` (no password, no client cert)."""
    settings = dataclasses.replace(base.settings, auth_type=AuthType.MACAROON, token=macaroon, login=None,
                                   password=None, token_file=None, client_cert=None, client_key=None, roles=())
    return DCacheHook(base.dcache_conn_id, settings=settings)


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
        self._copy_hooks: list[DCacheHook] = []

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
        with self._step("source", "checking the source versions", sources[0]):
            check_versions(self.source_hook, versions, step="replicate")
        files = []
        for index, source in enumerate(sources, 1):
            destination = destination_for(source, destination_path=self.destination_path,
                                          destination_dir=self.destination_dir, source_root=self.source_root)
            self.log.info("[%d/%d] %s %s -> %s", index, len(sources), self.mode, source, destination)
            files.append(self._replicate(source, destination, versions.get(source)))
        destinations = [f["destination"] for f in files]
        persist_file_links(context, self.destination_conn_id, self.destination_hook.settings.api_url,
                           destinations[0])
        context["ti"].xcom_push(key="destinations", value=destinations)
        return {"source_conn_id": self.source_conn_id, "destination_conn_id": self.destination_conn_id,
                "mode": self.mode, "files": files, "destinations": destinations}

    def _site(self, role: str) -> tuple[DCacheHook, str]:
        """The hook of ``role`` (``source``/``destination``) and how a message names it."""
        hook = self.source_hook if role == "source" else self.destination_hook
        conn_id = self.source_conn_id if role == "source" else self.destination_conn_id
        return hook, f"{role} site {hook.settings.site!r} (connection {conn_id}, {hook.settings.door_url})"

    @contextlib.contextmanager
    def _step(self, role: str, what: str, source: str) -> Iterator[None]:
        """Turn "cannot reach" errors of one step into a message naming the site, the step and the cause."""
        try:
            yield
        except DCacheConnectionError as exc:
            _hook, site = self._site(role)
            raise DCacheConnectionError(
                f"{site} is unreachable while {what}: {connection_cause(exc)}; {source} was not replicated",
                url=exc.url) from exc

    def _went_away(self, role: str, exc: TransferFailed, source: str, destination: str) -> DCacheError:
        """A copy that ended without an outcome: name the site if it is gone (its connection dropped)."""
        hook, site = self._site(role)
        try:
            # probe a path of this copy (inside the task's allowed roots), not "/"
            hook.exists(source if role == "source" else posixpath.dirname(destination) or "/")
        except DCacheConnectionError as probe:
            return DCacheConnectionError(
                f"{site} went away during the copy {source} -> {destination} ({exc.message}) and is unreachable "
                f"now: {connection_cause(probe)}; an interrupted copy leaves no file behind", url=exc.url)
        except DCacheError:
            pass  # it answers (even if only to refuse "/"): the copy failed for its own reason
        return exc

    def _replicate(self, source: str, destination: str, version: FileVersion | None = None) -> dict[str, Any]:
        src, dst = self.source_hook, self.destination_hook
        parent = posixpath.dirname(destination)
        if parent not in ("", "/"):
            with self._step("destination", f"creating {parent}", source):
                dst.mkdir(parent)
        validity = self.macaroon_validity
        with self._step("source", f"authorising the download of {source}", source):
            download = src.mint_macaroon(source, activities=["DOWNLOAD"], validity=validity)
        with self._step("destination", f"authorising the upload of {destination}", source):
            upload = dst.mint_macaroon(destination, activities=["UPLOAD", "DELETE"] if self.overwrite
                                       else ["UPLOAD"], validity=validity)
        # the COPY goes to the side that moves the data; the other one is its remote
        receiver = "destination" if self.mode == "pull" else "source"
        hook = macaroon_hook(dst, upload.macaroon) if self.mode == "pull" else macaroon_hook(src, download.macaroon)
        self._copy_hooks.append(hook)
        try:
            with self._step(receiver, f"starting the copy {source} -> {destination}", source), hook:
                if self.mode == "pull":
                    result = hook.copy_pull(download.target, destination, remote_token=download.macaroon,
                                            overwrite=self.overwrite)
                else:
                    result = hook.copy_push(source, upload.target, remote_token=upload.macaroon,
                                            overwrite=self.overwrite)
        except TransferFailed as exc:
            error = self._went_away(receiver, exc, source, destination)
            if error is exc:
                raise
            raise error from exc
        finally:
            self._copy_hooks.remove(hook)
        adler32 = self._verify(source, destination, version) if self.verify_checksum or version else None
        return {"source": source, "destination": destination, "size": result.size, "adler32": adler32,
                "markers": result.markers}

    def _verify(self, source: str, destination: str, version: FileVersion | None = None) -> str | None:
        """Compare the copy's checksum with what it must be; a mismatch deletes the copy.

        With a ``version`` that knows its checksum, the copy must have that one: one read of the copy,
        none of the source (which may hold a newer upload by now), and a mismatch is ``VersionChanged``.
        Without it, the source's current adler32 is read, and a version without a checksum is checked
        by pnfsid after the copy.
        """
        algo, want = version.checksum.split(":", 1) if version and version.checksum else ("adler32", None)
        if want is None:
            with self._step("source", f"reading the checksum of {source}", source):
                want = self.source_hook.checksum(source, (algo,)).get(algo)
        with self._step("destination", f"reading the checksum of the copy {destination}", source):
            theirs = self.destination_hook.checksum(destination, (algo,)).get(algo)
        try:
            if version is not None and not version.checksum:
                require_version(self.source_hook, source, version, step="replicate")
            if want and theirs and theirs.lower() != want.lower() and version is not None:
                raise VersionChanged(f"{source} changed since the event: the copy {destination} has {algo} "
                                     f"{theirs}, the version to process ({version.describe()}) has {want}")
            if not want or want.lower() != (theirs or "").lower():
                raise AirflowException(
                    f"checksum of the copy {destination} ({theirs}) differs from the source {source} ({want})")
        except (VersionChanged, AirflowException):
            try:
                self.destination_hook.delete(destination, missing_ok=True)
            except DCacheError as exc:
                self.log.warning("could not delete the copy %s: %s", destination, exc)
            raise
        return theirs if algo == "adler32" else None

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
        for hook in list(self._copy_hooks):
            hook.close()
