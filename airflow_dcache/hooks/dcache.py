"""Synchronous dCache hook: WebDAV door + frontend REST through one pooled ``requests`` session.

The request logic lives in the shared ``_operations``/``_transfers`` modules; this class only moves
bytes. Redirects are followed here, not by ``requests``, so that credentials are kept only for the same
origin (the door's pool redirects carry their own one-time authorisation).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import IO, Any, TypeVar

import requests
from airflow.sdk.log import mask_secret
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

from airflow_dcache.exceptions import DCacheConnectionError, DCacheError, UnexpectedResponse
from airflow_dcache.hooks import _operations as ops
from airflow_dcache.hooks import _transfers as tx
from airflow_dcache.hooks._base import (
    DCacheHookBase,
    door_check_message,
    frontend_check_message,
    identity_message,
)
from airflow_dcache.hooks._checksums import digests_from_headers
from airflow_dcache.hooks._models import (
    ArchivedBulkRequest,
    ArchiveInfo,
    BulkRequestInfo,
    BulkSubmission,
    MacaroonResponse,
    NamespaceEntry,
    StageRequestInfo,
    StorageEvent,
    TransferResult,
    UserInfo,
)
from airflow_dcache.hooks._perfmarkers import PerfMarker, PerfMarkerParser
from airflow_dcache.hooks._protocol import (
    BACKOFF_FACTOR,
    MAX_REDIRECTS,
    RETRY_METHODS,
    RETRY_STATUSES,
    ResponseInfo,
    TokenFileReader,
    auth_headers,
    check_tls_files,
    client_cert,
    door_url,
    error_for,
    mask_url,
    next_hop,
    normalize_path,
    requests_verify,
)
from airflow_dcache.hooks._settings import AuthType
from airflow_dcache.hooks._sse import SSEParser

T = TypeVar("T")
_ERROR_BODY_LIMIT = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class _Adapter(HTTPAdapter):
    """urllib3 sends request bodies in 16 KiB reads by default; 1 MiB halves the CPU cost of uploads."""

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        pool_kwargs.setdefault("blocksize", tx.CHUNK_SIZE)
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)


class DCacheHook(DCacheHookBase):
    """Talk to a dCache instance (WebDAV door and frontend) described by a ``dcache`` connection.

    :param dcache_conn_id: id of a connection of type ``dcache``.
    """

    def __init__(self, dcache_conn_id: str = DCacheHookBase.default_conn_name, **kwargs: Any) -> None:
        super().__init__(dcache_conn_id, **kwargs)
        self._session: requests.Session | None = None
        self._token_reader: TokenFileReader | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------ plumbing

    def get_conn(self) -> requests.Session:
        """The pooled session; retries cover only idempotent methods, because bodies are streams."""
        with self._lock:
            if self._session is None:
                check_tls_files(self.settings)
                retry = Retry(
                    total=self.settings.retries,
                    connect=self.settings.retries,
                    read=self.settings.retries,
                    status=self.settings.retries,
                    backoff_factor=BACKOFF_FACTOR,
                    status_forcelist=sorted(RETRY_STATUSES),
                    allowed_methods=RETRY_METHODS,
                    raise_on_status=False,
                    respect_retry_after_header=True,
                )
                session = requests.Session()
                session.trust_env = False  # never route to a proxy the task environment happens to set
                adapter = _Adapter(max_retries=retry, pool_connections=4, pool_maxsize=16)
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                self._session = session
            return self._session

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def __enter__(self) -> DCacheHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _auth(self) -> dict[str, str]:
        settings = self.settings
        if settings.auth_type is AuthType.TOKEN_FILE:
            if self._token_reader is None:
                self._token_reader = TokenFileReader(settings.token_file or "")
            token, changed = self._token_reader.read()
            if changed:
                self._mask_token(token)
            return auth_headers(settings, token)
        return auth_headers(settings)

    @staticmethod
    def _mask_token(token: str) -> None:
        mask_secret(token)

    def _request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        *,
        stream: bool = False,
        follow_redirects: bool = False,
        exists_statuses: tuple[int, ...] = (),
        ok_statuses: tuple[int, ...] = (),
        timeout: float | tuple[float, float | None] | None = None,
    ) -> requests.Response:
        """Send one request (and its redirects); return a 2xx (or ``ok_statuses``) response or raise."""
        session = self.get_conn()
        settings = self.settings
        credentials = True
        for _ in range(MAX_REDIRECTS + 1):
            all_headers = dict(headers or {})
            if credentials:
                all_headers.update(self._auth())
            try:
                response = session.request(
                    method,
                    url,
                    headers=all_headers,
                    data=body,
                    stream=stream,
                    allow_redirects=False,
                    timeout=timeout if timeout is not None else settings.timeout,
                    verify=requests_verify(settings),
                    cert=client_cert(settings) if credentials else None,
                )
            except requests.RequestException as exc:
                raise DCacheConnectionError(
                    f"cannot reach dCache: {mask_url(str(exc))}", method=method, url=mask_url(url)
                ) from None
            if follow_redirects and response.status_code in _REDIRECTS:
                hop = next_hop(method, url, response.status_code, response.headers.get("Location"))
                response.close()
                self.log.debug("following %s redirect to %s", response.status_code, mask_url(hop.url))
                if hop.keep_body and isinstance(body, tx.HashingReader):
                    body.rewind()
                elif not hop.keep_body:
                    body = None
                method, url = hop.method, hop.url
                credentials = credentials and hop.keep_credentials
                continue
            if response.status_code >= 300 and response.status_code not in ok_statuses:
                raise self._error(response, method, url, exists_statuses)
            return response
        raise UnexpectedResponse(f"more than {MAX_REDIRECTS} redirects", method=method, url=mask_url(url))

    @staticmethod
    def _info(response: requests.Response, body: bytes = b"") -> ResponseInfo:
        return ResponseInfo(response.status_code, response.reason or "", dict(response.headers), body)

    def _error(
        self, response: requests.Response, method: str, url: str, exists_statuses: tuple[int, ...] = ()
    ) -> DCacheError:
        try:
            body = b""
            for chunk in response.iter_content(8192):
                body += chunk
                if len(body) >= _ERROR_BODY_LIMIT:
                    break
        except requests.RequestException:
            body = b""
        finally:
            response.close()
        info = self._info(response, body)
        error = error_for(info, method, url, exists=response.status_code in exists_statuses)
        return error

    def _run(self, operation: ops.Operation[T]) -> T:
        """Drive a shared operation: send each ``Call``, feed back the reply or throw the error in."""
        try:
            call = next(operation)
            while True:
                try:
                    response = self._request(
                        call.method,
                        call.url,
                        call.headers,
                        call.body,
                        follow_redirects=call.follow_redirects,
                        exists_statuses=call.exists_statuses,
                        ok_statuses=call.ok_statuses,
                    )
                except DCacheError as exc:
                    call = operation.throw(exc)
                    continue
                with response:
                    info = self._info(response, response.content)
                call = operation.send(info)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    # ------------------------------------------------------------------------- connection test

    def test_connection(self) -> tuple[bool, str]:
        """Check the door (PROPFIND /) and the frontend (``GET /user`` must say AUTHENTICATED)."""
        try:
            settings = self.settings
        except DCacheError as exc:
            return False, f"invalid connection: {exc}"
        except Exception as exc:  # the UI shows the message; a traceback helps nobody here
            return False, f"cannot load connection {self.dcache_conn_id!r}: {exc}"
        try:
            self._run(ops.door_probe(settings))
        except DCacheError as exc:
            return False, door_check_message(exc)
        try:
            user = self.whoami()
        except DCacheError as exc:
            return False, frontend_check_message(exc)
        return identity_message(user.status, user.username, settings.door_url, settings.api_url)

    # ------------------------------------------------------------------------------- namespace

    def whoami(self) -> UserInfo:
        """``GET /api/v1/user``."""
        return self._run(ops.whoami(self.settings))

    def stat(self, path: str, **flags: Any) -> NamespaceEntry:
        """Frontend metadata; flags: children, locality, locations, qos, checksum, xattr, labels, optional."""
        return self._run(ops.stat(self.settings, path, **flags))

    def stat_by_pnfsid(self, pnfsid: str) -> NamespaceEntry:
        """``GET /api/v1/id/{pnfsid}``: admins only on dCache (``PermissionDenied`` otherwise)."""
        return self._run(ops.stat_by_pnfsid(self.settings, pnfsid))

    def list_dir(self, path: str, *, page_size: int | None = None, **flags: Any) -> list[NamespaceEntry]:
        """Directory entries (frontend ``children=true``); set ``page_size`` for very large directories."""
        return self._run(ops.list_dir(self.settings, path, page_size, **flags))

    def exists(self, path: str) -> bool:
        return self._run(ops.exists(self.settings, path))

    def mkdir(self, path: str, *, parents: bool = True, exist_ok: bool = True) -> bool:
        """Create a directory (MKCOL); returns False when it already existed."""
        return self._run(ops.mkdir(self.settings, path, parents, exist_ok))

    def move(self, source: str, destination: str, *, overwrite: bool = False) -> None:
        """Rename or move within this dCache (WebDAV MOVE)."""
        self._run(ops.move(self.settings, source, destination, overwrite))

    def delete(self, path: str, *, recursive: bool = False, missing_ok: bool = False) -> bool:
        """Delete a file or directory; returns False if it was missing and ``missing_ok``."""
        return self._run(ops.delete(self.settings, path, recursive, missing_ok))

    def set_xattr(self, path: str, attributes: Mapping[str, Any], *, mode: str = "EITHER") -> None:
        self._run(ops.set_xattr(self.settings, path, attributes, mode))

    def remove_xattr(self, path: str, names: Iterable[str]) -> None:
        self._run(ops.remove_xattr(self.settings, path, names))

    def set_labels(self, path: str, labels: Iterable[str], *, replace: bool = False) -> list[str]:
        return self._run(ops.set_labels(self.settings, path, labels, replace))

    def checksum(self, path: str, algorithms: Iterable[str] = ("adler32", "md5")) -> dict[str, str]:
        """Stored checksums as lowercase hex, keyed by RFC 3230 name (``adler32``, ``md5``, …)."""
        return self._run(ops.checksum(self.settings, path, algorithms))

    # -------------------------------------------------------------------------------- QoS, pins

    def set_qos(
        self, path: str, target: str | None = None, *, policy: str | None = None, state: int | None = None
    ) -> None:
        """Request a QoS transition; it runs asynchronously on the server."""
        self._run(ops.set_qos(self.settings, path, target, policy, state))

    def qos_classes(self, kind: str = "file") -> list[str]:
        """QoS names for ``kind`` ``"file"`` or ``"directory"`` (``/qos-management/qos/{kind}``)."""
        return self._run(ops.qos_classes(self.settings, kind))

    def qos_capability(self, qos: str, kind: str = "file") -> dict[str, Any]:
        """``backendCapability`` of one QoS: ``name``, allowed ``transition`` targets, CDMI ``metadata``."""
        return self._run(ops.qos_capability(self.settings, qos, kind))

    def pin(self, path: str, lifetime: float, unit: str = "SECONDS") -> None:
        self._run(ops.pin(self.settings, path, lifetime, unit))

    def unpin(self, path: str) -> None:
        self._run(ops.unpin(self.settings, path))

    # ------------------------------------------------------------------------------------ bulk

    def submit_bulk_request(self, activity: str, targets: Iterable[str], **options: Any) -> BulkSubmission:
        """Options: arguments, target_prefix, expand_directories, cancel_on_failure, clear_on_*."""
        return self._run(ops.submit_bulk_request(self.settings, activity, targets, **options))

    def bulk_request_status(self, request: str) -> BulkRequestInfo:
        return self._run(ops.bulk_request_status(self.settings, request))

    def cancel_bulk_request(self, request: str, paths: Iterable[str] | None = None) -> None:
        self._run(ops.cancel_bulk_request(self.settings, request, paths))

    def clear_bulk_request(self, request: str, *, cancel_if_running: bool = False) -> None:
        self._run(ops.clear_bulk_request(self.settings, request, cancel_if_running))

    def list_bulk_requests(
        self, status: Iterable[str] | None = None, owner: str | None = None, path: str | None = None
    ) -> list[dict[str, Any]]:
        return self._run(ops.list_bulk_requests(self.settings, status, owner, path))

    def list_labels(self) -> list[str]:
        """Every label in use on the instance (``GET /labels``)."""
        return self._run(ops.list_labels(self.settings))

    def labelled_files(self, label: str, **flags: Any) -> list[NamespaceEntry]:
        """Files carrying ``label`` (flags: locality, locations, qos, xattr, labels). dCache gives names, not
        paths: each entry's ``path`` is the file name and its ``pnfsid`` identifies it."""
        return self._run(ops.labelled_files(self.settings, label, **flags))

    def list_archived_bulk_requests(
        self,
        *,
        owner: Iterable[str] | str | None = None,
        activity: Iterable[str] | str | None = None,
        status: Iterable[str] | str | None = None,
        before: datetime | str | None = None,
        after: datetime | str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Summaries of cleared (archived) bulk requests, oldest first; every owner's, as dCache lists them."""
        return self._run(ops.list_archived_bulk_requests(
            self.settings, owner=owner, activity=activity, status=status, before=before, after=after, limit=limit))

    def archived_bulk_request(self, request: str) -> ArchivedBulkRequest:
        """What dCache keeps of a cleared request: initial targets, counts, errors by type."""
        return self._run(ops.archived_bulk_request(self.settings, request))

    # -------------------------------------------------------------------------- storage events

    def create_channel(self, client_id: str | None = None) -> str:
        """``POST /events/channels``; returns the channel URL (``Location``) exactly as the server gave it."""
        return self._run(ops.create_channel(self.settings, client_id))

    def list_channels(self, client_id: str | None = None) -> list[str]:
        """URLs of this user's channels; ``client_id=""`` lists those created without a client id."""
        return self._run(ops.list_channels(self.settings, client_id))

    def channel_timeout(self, channel_url: str) -> int:
        """Seconds the channel may stay disconnected before dCache garbage-collects it."""
        return self._run(ops.channel_timeout(self.settings, channel_url))

    def set_channel_timeout(self, channel_url: str, seconds: int) -> None:
        self._run(ops.set_channel_timeout(self.settings, channel_url, seconds))

    def delete_channel(self, channel_url: str) -> None:
        self._run(ops.delete_channel(self.settings, channel_url))

    def subscribe_inotify(self, channel_url: str, path: str, flags: Iterable[str] | None = None) -> str:
        """Watch ``path``; returns the subscription URL (the existing one when dCache merged the watch)."""
        return self._run(ops.subscribe_inotify(self.settings, channel_url, path, flags))

    def subscribe_metronome(
        self,
        channel_url: str,
        *,
        delay: float | None = None,
        frequency: float | None = None,
        message: str | None = None,
        count: int | None = None,
    ) -> str:
        return self._run(
            ops.subscribe_metronome(
                self.settings, channel_url, delay=delay, frequency=frequency, message=message, count=count
            )
        )

    def list_subscriptions(self, channel_url: str) -> list[str]:
        return self._run(ops.list_subscriptions(self.settings, channel_url))

    def unsubscribe(self, subscription_url: str) -> None:
        self._run(ops.unsubscribe(self.settings, subscription_url))

    def event_types(self) -> list[str]:
        return self._run(ops.event_types(self.settings))

    def event_schema(self, event_type: str, part: str = "selector") -> dict[str, Any]:
        """JSON Schema of ``event_type``'s selector (``part="selector"``) or of its events (``"event"``)."""
        return self._run(ops.event_schema(self.settings, event_type, part))

    def stream_events(
        self,
        channel_url: str,
        *,
        last_event_id: str | int | None = None,
        read_timeout: float | None = None,
    ) -> Iterator[StorageEvent]:
        """Generator over a channel's SSE stream; same contract as :meth:`DCacheAsyncHook.stream_events`.

        Close it (``contextlib.closing``) when stopping early, so the connection is released.
        """
        settings = self.settings
        call = ops.event_stream_call(settings, channel_url, last_event_id)
        response = self._request(
            call.method, call.url, call.headers, stream=True, timeout=(settings.timeout, read_timeout)
        )
        with response:
            ops.check_event_stream(self._info(response), call)
            parser = SSEParser()
            try:
                for chunk in response.iter_content(chunk_size=None):
                    yield from parser.feed(chunk)
            except requests.RequestException as exc:
                if exc.args and isinstance(exc.args[0], ReadTimeoutError):
                    message = f"no data on the event stream for {read_timeout} s"
                else:
                    message = f"event stream interrupted: {mask_url(str(exc))}"
                raise DCacheConnectionError(message, method="GET", url=mask_url(call.url)) from None

    # ------------------------------------------------------------------------------------ tape

    def stage(
        self,
        files: Iterable[str] | Mapping[str, timedelta | int | float | str | None],
        *,
        disk_lifetime: timedelta | int | float | str | None = None,
    ) -> BulkSubmission:
        """Recall files from tape (WLCG Tape REST); returns the stage request id."""
        return self._run(ops.stage(self.settings, files, disk_lifetime))

    def stage_status(self, request: str) -> StageRequestInfo:
        return self._run(ops.stage_status(self.settings, request))

    def cancel_stage(self, request: str, paths: Iterable[str]) -> None:
        self._run(ops.cancel_stage(self.settings, request, paths))

    def delete_stage(self, request: str) -> None:
        self._run(ops.delete_stage(self.settings, request))

    def release(self, request: str, paths: Iterable[str]) -> None:
        self._run(ops.release(self.settings, request, paths))

    def tape_api_endpoints(self) -> list[dict[str, Any]]:
        """WLCG discovery document's ``endpoints`` (``<frontend origin>/.well-known/wlcg-tape-rest-api``)."""
        return self._run(ops.tape_api_endpoints(self.settings))

    def archive_info(self, paths: Iterable[str]) -> list[ArchiveInfo]:
        return self._run(ops.archive_info(self.settings, paths))

    # ------------------------------------------------------------------------------- macaroons

    def mint_macaroon(
        self,
        path: str = "/",
        caveats: Any = None,
        *,
        activities: Iterable[str] | str | None = None,
        validity: timedelta | int | float | str | None = None,
        ip: Iterable[str] | str | None = None,
        before: datetime | None = None,
        max_upload: int | None = None,
    ) -> MacaroonResponse:
        """Ask the door for a macaroon limited to ``path``; the token is masked in logs at once."""
        result = self._run(
            ops.mint_macaroon(
                self.settings,
                path,
                caveats,
                activities=activities,
                validity=validity,
                ip=ip,
                before=before,
                max_upload=max_upload,
            )
        )
        self._mask_token(result.macaroon)
        return result

    def presigned_url(
        self,
        path: str,
        activities: Iterable[str] | str,
        validity: timedelta | int | float | str,
        ip: Iterable[str] | str | None = None,
    ) -> str:
        """A pre-authorised URL (``…?authz=<macaroon>``) for handing one file to a worker."""
        return self.mint_macaroon(path, activities=activities, validity=validity, ip=ip).target_with_macaroon

    # ------------------------------------------------------------------------------------ data

    def upload(
        self,
        source: str | os.PathLike[str] | IO[bytes],
        path: str,
        *,
        checksum: tx.ChecksumMode = "adler32",
        overwrite: bool = True,
        make_parents: bool = False,
        xattrs: Mapping[str, Any] | None = None,
        size: int | None = None,
        chunk_size: int = tx.CHUNK_SIZE,
    ) -> TransferResult:
        """Stream a local file or binary stream to ``path`` and verify what the server stored.

        ``adler32``: hashed while sending, compared with the server's ``Digest`` (HEAD as a fallback);
        on mismatch the remote file is deleted. ``sha-256``/``sha-512``: the same, with the pool asked to
        compute that checksum too (``Want-Digest``), so the file is stored with it. ``md5``: computed first
        and sent as ``Content-MD5`` so dCache itself refuses corrupted data (needs a seekable source).
        """
        mode = tx.check_mode(checksum)
        path = normalize_path(path)
        if not overwrite:
            self._run(ops.ensure_not_exists(self.settings, path))
        if make_parents:
            parent = path.rsplit("/", 1)[0] or "/"
            if parent != "/":
                self.mkdir(parent)
        with contextlib.ExitStack() as stack:
            if isinstance(source, (str, os.PathLike)):
                stream: IO[bytes] = stack.enter_context(open(source, "rb"))
            else:
                stream = source
            if size is None:
                size = tx.remaining_size(stream)
            md5 = tx.precompute_md5(stream, chunk_size) if mode == "md5" else None
            reader = tx.hashing_reader(stream, tx.local_algorithms(mode), size, chunk_size)
            body: Any = reader if size != 0 else b""
            url = tx.upload_url(self.settings, path, xattrs)
            headers = tx.upload_headers(mode, md5, size)
            self.log.info("uploading %s bytes to %s", size if size is not None else "?", mask_url(url))
            response = self._request("PUT", url, headers, body, follow_redirects=True)
            with response:
                remote = digests_from_headers(response.headers)
        return self._verify_upload(path, url, reader, mode, remote, md5)

    def _verify_upload(
        self,
        path: str,
        url: str,
        reader: tx.HashingReader,
        mode: tx.ChecksumMode,
        remote: dict[str, str],
        md5: str | None,
    ) -> TransferResult:
        local = reader.hasher.hexdigests()
        if md5:
            local["md5"] = md5
        verified: str | None = None
        if mode != "none":
            if not any(a in remote for a in local):
                remote = {**remote, **self.checksum(path, tuple(local))}
            try:
                verified = tx.verify(local, remote, what=f"upload of {path}", method="PUT", url=url)
            except DCacheError:
                with contextlib.suppress(DCacheError):
                    self.delete(path, missing_ok=True)
                raise
            if verified is None and md5:
                verified = "content-md5"
            if verified is None:
                self.log.warning("server reported no comparable checksum for %s; upload not verified", path)
        return TransferResult(path=path, size=reader.hasher.size, checksums=local, verified_by=verified)

    def download(
        self,
        path: str,
        destination: str | os.PathLike[str] | IO[bytes],
        *,
        verify: bool = True,
        chunk_size: int = tx.CHUNK_SIZE,
    ) -> TransferResult:
        """Stream ``path`` to a local file (written atomically) or to a binary stream.

        The door redirects GET to a pool; the redirect is followed without the door credentials, and
        ``Want-Digest`` is sent again so the pool reports a checksum to verify against.
        """
        path = normalize_path(path)
        url = door_url(self.settings, path)
        response = self._request("GET", url, {"Want-Digest": "adler32"}, stream=True, follow_redirects=True)
        with response:
            tx.refuse_directory(path, url, response.url)
            receiver = tx.DownloadReceiver(path, url, dict(response.headers), verify)

            def write(out: IO[bytes]) -> None:
                try:
                    for chunk in response.iter_content(chunk_size):
                        receiver.update(chunk)
                        out.write(chunk)
                except requests.RequestException as exc:
                    raise DCacheConnectionError(
                        f"download interrupted: {mask_url(str(exc))}", method="GET", url=mask_url(url)
                    ) from None
                receiver.finish()

            if isinstance(destination, (str, os.PathLike)):
                tx.write_atomically(os.fspath(destination), write)
            else:
                write(destination)
        if verify and receiver.result.verified_by is None:
            self.log.info("no checksum from the server for %s; size checked only", path)
        return receiver.result

    # ------------------------------------------------------------------------ third-party copy

    def copy_pull(self, remote_url: str, path: str, **options: Any) -> TransferResult:
        """Have dCache fetch ``remote_url`` into ``path`` (HTTP-TPC pull).

        Options: remote_token (sent as ``TransferHeaderAuthorization``), remote_headers, credential,
        require_checksum, overwrite, want_digest.
        """
        return self._copy(tx.copy_request(self.settings, path, remote_url, direction="pull", **options))

    def copy_push(self, path: str, remote_url: str, **options: Any) -> TransferResult:
        """Have dCache send ``path`` to ``remote_url`` (HTTP-TPC push); same options as :meth:`copy_pull`."""
        return self._copy(tx.copy_request(self.settings, path, remote_url, direction="push", **options))

    def _copy(self, request: tx.CopyRequest) -> TransferResult:
        for secret in tx.copy_secrets(request):
            self._mask_token(secret)
        self.log.info("third-party copy %s <-> %s", request.local_path, mask_url(request.remote_url))
        response = self._request(request.method, request.url, request.headers, stream=True)
        parser = PerfMarkerParser()
        with response:
            try:
                # Bytes, decoded here: requests yields bytes when the Content-Type has no charset.
                for raw in response.iter_lines():
                    item = parser.feed(raw.decode("utf-8", "replace"))
                    if isinstance(item, PerfMarker):
                        self.log.info("copy %s: %s", request.local_path, item.describe())
                    elif item is not None:
                        break
            except requests.RequestException as exc:
                self.log.warning("copy stream broke: %s", mask_url(str(exc)))
            headers = dict(response.headers)
        return tx.copy_result(request, parser, headers, response.status_code)
