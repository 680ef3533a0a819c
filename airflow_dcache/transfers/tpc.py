"""One HTTP third-party copy between two dCache sites, with per-file macaroons and a checksum check.

:class:`~airflow_dcache.operators.replicate.DCacheReplicateOperator` copies one file or a list with it,
and the chunked ingest pipeline (:mod:`airflow_dcache.pipelines.chunk_steps`) copies many files of a
chunk concurrently with it, so both follow the same rules:

* both sides are authorised by a macaroon minted for that one file just before its copy (DOWNLOAD on
  the source, UPLOAD, plus DELETE when overwriting, on the destination); the ``COPY`` goes with the
  receiving side's macaroon and the other one travels as ``TransferHeaderAuthorization``, so neither
  site ever sees the other's long-lived credential;
* afterwards the checksum of the copy is compared with the expected version's (or the source's): a
  mismatch deletes the copy (``VersionChanged`` when the source was replaced meanwhile);
* a site that cannot be reached, or that goes away during the ``COPY``, is a
  :class:`~airflow_dcache.exceptions.DCacheConnectionError` naming the site, its connection and URL,
  the step and the innermost cause.

One :class:`ThirdPartyCopy` holds two hooks and is used by one thread at a time; a caller copying
concurrently gives each worker thread its own (hooks share a ``requests`` session, which is not meant
to be shared between threads).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import posixpath
import re
from collections.abc import Iterator, Sequence
from typing import Any

from airflow_dcache.events.version import FileVersion, require_version
from airflow_dcache.exceptions import DCacheConnectionError, DCacheError, TransferFailed, VersionChanged
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.hooks.models import AuthType

MODES = ("pull", "push")

_CAUSES = (
    re.compile(r"\[Errno -?\d+\] [^\"')(]+"),  # [Errno 111] Connection refused
    re.compile(r"(?i)(?:read|connect) timed out"),
    re.compile(r"(?i)remote end closed connection[^\"')]*"),
    re.compile(r"(?i)connection (?:reset|aborted|broken)[^\"')(]*"),
)


class ChecksumMismatch(DCacheError):
    """The copy's checksum differs from the source's (the copy was deleted)."""


def connection_cause(error: DCacheError) -> str:
    """The root cause of a connection error in a few words (``[Errno 111] Connection refused``).

    The hook's message carries urllib3's whole retry story; the caller's message names the site
    and step itself, so only the innermost reason is kept (the full text stays on the chained error).
    """
    text = error.message
    for pattern in _CAUSES:
        found = pattern.findall(text)
        if found:
            return str(found[-1]).strip().rstrip(":;,")
    text = text.removeprefix("cannot reach dCache: ")
    return text if len(text) <= 300 else text[:297] + "..."


def macaroon_hook(base: DCacheHook, macaroon: str, *, mask: bool = True) -> DCacheHook:
    """A hook on the same door authenticating only with ``macaroon`` (no password, no client cert).

    ``mask=False`` for a copy's own macaroon, which :meth:`ThirdPartyCopy._grant` keeps out of the masker.
    """
    settings = dataclasses.replace(base.settings, auth_type=AuthType.MACAROON, token=macaroon, login=None,
                                   password=None, token_file=None, client_cert=None, client_key=None, roles=())
    return base.sharing_connections(settings, mask_settings=mask)


class ThirdPartyCopy:
    """Copies files from ``source`` to ``destination`` (two hooks, two sites) one ``COPY`` at a time.

    :param source: hook of the site holding the files.
    :param destination: hook of the site receiving them.
    :param mode: ``"pull"`` (the destination fetches) or ``"push"`` (the source sends).
    :param overwrite: replace existing destination files.
    :param macaroon_validity: seconds each per-file macaroon is valid.
    :param verify_checksum: compare the checksums of source and copy afterwards.
    :param log: where warnings go (a task's logger).
    :param failure: the exception type of a checksum mismatch: the operator passes ``AirflowException``
        (what its users catch), others keep :class:`ChecksumMismatch`.
    """

    def __init__(self, source: DCacheHook, destination: DCacheHook, *, mode: str = "pull", overwrite: bool = True,
                 macaroon_validity: int = 3600, verify_checksum: bool = True, log: Any = None,
                 failure: type[Exception] = ChecksumMismatch) -> None:
        if mode not in MODES:
            raise ValueError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
        self.source_hook = source
        self.destination_hook = destination
        self.mode = mode
        self.overwrite = overwrite
        self.macaroon_validity = macaroon_validity
        self.verify_checksum = verify_checksum
        self.log = log or logging.getLogger(__name__)
        self.failure = failure
        self._copy_hooks: list[DCacheHook] = []

    def site(self, role: str) -> tuple[DCacheHook, str]:
        """The hook of ``role`` (``source``/``destination``) and how a message names it."""
        hook = self.source_hook if role == "source" else self.destination_hook
        return hook, f"{role} site {hook.settings.site!r} (connection {hook.dcache_conn_id}, {hook.settings.door_url})"

    @contextlib.contextmanager
    def step(self, role: str, what: str, source: str) -> Iterator[None]:
        """Turn "cannot reach" errors of one step into a message naming the site, the step and the cause."""
        try:
            yield
        except DCacheConnectionError as exc:
            _hook, site = self.site(role)
            raise DCacheConnectionError(
                f"{site} is unreachable while {what}: {connection_cause(exc)}; {source} was not replicated",
                url=exc.url) from exc

    def _went_away(self, role: str, exc: TransferFailed, source: str, destination: str) -> DCacheError:
        """A copy that ended without an outcome: name the site if it is gone (its connection dropped)."""
        hook, site = self.site(role)
        try:
            # probe a path of this copy (inside the hook's allowed roots), not "/"
            hook.exists(source if role == "source" else posixpath.dirname(destination) or "/")
        except DCacheConnectionError as probe:
            return DCacheConnectionError(
                f"{site} went away during the copy {source} -> {destination} ({exc.message}) and is unreachable "
                f"now: {connection_cause(probe)}; an interrupted copy leaves no file behind", url=exc.url)
        except DCacheError:
            pass  # it answers (even if only to refuse "/"): the copy failed for its own reason
        return exc

    def copy(self, source: str, destination: str, version: FileVersion | None = None, *,
             adler32: str | None = None, make_parent: bool = True) -> dict[str, Any]:
        """Copy one file; ``{"source", "destination", "size", "adler32", "markers"}``.

        :param version: the source version to copy: the copy must have its checksum (else
            ``VersionChanged`` and the copy is deleted).
        :param adler32: the source's adler32 when the caller knows it (a function's verified output):
            the copy is compared with it, without reading the source's checksum again.
        :param make_parent: create the destination's folder first (a caller copying many files into
            one folder creates it once).
        """
        parent = posixpath.dirname(destination)
        if make_parent and parent not in ("", "/"):
            with self.step("destination", f"creating {parent}", source):
                self.destination_hook.mkdir(parent)
        download, upload = self._grant(source, destination)
        return self._transfer(source, destination, download.target, download.macaroon, upload.target,
                              upload.macaroon, version=version, adler32=adler32)

    def copy_folder(self, files: Sequence[tuple[str, str | None]], source_dir: str,
                    destination_dir: str) -> list[dict[str, Any]]:
        """Copy ``files`` (``(name, adler32 or None)``) from ``source_dir`` into ``destination_dir``.

        One macaroon per side for the folder pair instead of one per file and side: for the outputs of
        one input (a function's results and its activation record) the folders hold nothing else, so
        the grant is as narrow as the files', and a site whose every minted macaroon costs a write
        (dCache keeps their secrets) gets two requests per folder instead of two per file.
        """
        from airflow_dcache.hooks.urls import door_url

        src, dst = self.source_hook, self.destination_hook
        with self.step("destination", f"creating {destination_dir}", source_dir):
            dst.mkdir(destination_dir)
        download, upload = self._grant(source_dir, destination_dir)
        copied = []
        for name, adler32 in files:
            source, destination = f"{source_dir.rstrip('/')}/{name}", f"{destination_dir.rstrip('/')}/{name}"
            copied.append(self._transfer(source, destination, door_url(src.settings, source), download.macaroon,
                                         door_url(dst.settings, destination), upload.macaroon, adler32=adler32))
        return copied

    def _grant(self, source: str, destination: str) -> tuple[Any, Any]:
        """A DOWNLOAD macaroon for ``source`` and an UPLOAD (and DELETE) one for ``destination``.

        Not registered with Airflow's log masker: they go nowhere but into the headers of this copy's
        ``COPY`` (and the copy hook's ``Authorization``), to the dCache doors they are for; they are never
        returned, logged or pushed. The masker rebuilds one regular expression of every secret at each
        registration, so a chunk of 50 files paid for its 200 copy macaroons about 40 ms of CPU per file,
        growing with the chunk. Credentials that reach a function (which may print them) stay masked.
        """
        validity = self.macaroon_validity
        with self.step("source", f"authorising the download of {source}", source):
            download = self.source_hook.mint_macaroon(source, activities=["DOWNLOAD"], validity=validity, mask=False)
        with self.step("destination", f"authorising the upload of {destination}", source):
            upload = self.destination_hook.mint_macaroon(
                destination, activities=["UPLOAD", "DELETE"] if self.overwrite else ["UPLOAD"], validity=validity,
                mask=False)
        return download, upload

    def _transfer(self, source: str, destination: str, source_url: str, download: str, destination_url: str,
                  upload: str, *, version: FileVersion | None = None, adler32: str | None = None) -> dict[str, Any]:
        """The ``COPY`` (to the side that moves the data; the other one is its remote), then the check."""
        src, dst = self.source_hook, self.destination_hook
        receiver = "destination" if self.mode == "pull" else "source"
        hook = macaroon_hook(*((dst, upload) if self.mode == "pull" else (src, download)), mask=False)
        self._copy_hooks.append(hook)
        try:
            with self.step(receiver, f"starting the copy {source} -> {destination}", source), hook:
                if self.mode == "pull":
                    result = hook.copy_pull(source_url, destination, remote_token=download, overwrite=self.overwrite,
                                            mask=False)
                else:
                    result = hook.copy_push(source, destination_url, remote_token=upload, overwrite=self.overwrite,
                                            mask=False)
        except TransferFailed as exc:
            error = self._went_away(receiver, exc, source, destination)
            if error is exc:
                raise
            raise error from exc
        finally:
            self._copy_hooks.remove(hook)
        checked = self.verify(source, destination, version, adler32=adler32) if self.verify_checksum or version \
            else None
        return {"source": source, "destination": destination, "size": result.size, "adler32": checked,
                "markers": result.markers}

    def verify(self, source: str, destination: str, version: FileVersion | None = None, *,
               adler32: str | None = None) -> str | None:
        """Compare the copy's checksum with what it must be; a mismatch deletes the copy.

        With a ``version`` that knows its checksum, the copy must have that one: one read of the copy,
        none of the source (which may hold a newer upload by now), and a mismatch is ``VersionChanged``.
        Without it, the source's current adler32 is read, and a version without a checksum is checked
        by pnfsid after the copy.
        """
        algo, want = version.checksum.split(":", 1) if version and version.checksum else ("adler32", adler32)
        if want is None:
            with self.step("source", f"reading the checksum of {source}", source):
                want = self.source_hook.checksum(source, (algo,)).get(algo)
        with self.step("destination", f"reading the checksum of the copy {destination}", source):
            theirs = self.destination_hook.checksum(destination, (algo,)).get(algo)
        try:
            if version is not None and not version.checksum:
                require_version(self.source_hook, source, version, step="replicate")
            if want and theirs and theirs.lower() != want.lower() and version is not None:
                raise VersionChanged(f"{source} changed since the event: the copy {destination} has {algo} "
                                     f"{theirs}, the version to process ({version.describe()}) has {want}")
            if not want or want.lower() != (theirs or "").lower():
                raise self.failure(
                    f"checksum of the copy {destination} ({theirs}) differs from the source {source} ({want})")
        except (VersionChanged, self.failure):
            try:
                self.destination_hook.delete(destination, missing_ok=True)
            except DCacheError as exc:
                self.log.warning("could not delete the copy %s: %s", destination, exc)
            raise
        return theirs if algo == "adler32" else None

    def abort(self) -> None:
        """Close the open COPY streams: dCache abandons a copy whose client went away."""
        for hook in list(self._copy_hooks):
            hook.close()
