"""Synchronous dCache hook: WebDAV door + frontend REST through one pooled ``requests`` session.

The request logic lives in the shared ``_operations``/``_transfers`` modules; this class only moves
bytes. Redirects are followed here, not by ``requests``, so that credentials are kept only for the same
origin (the door's pool redirects carry their own one-time authorisation).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Generator, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import IO, Any, TypeVar

import requests
from requests.adapters import BaseAdapter, HTTPAdapter
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

from airflow_dcache.exceptions import DCacheConnectionError, DCacheError, PermissionDenied
from airflow_dcache.hooks import _operations as ops
from airflow_dcache.hooks import _tape_discovery as tape_discovery
from airflow_dcache.hooks import _transfers as tx
from airflow_dcache.hooks._base import (
    DCacheHookBase,
    door_check_message,
    frontend_check_message,
    identity_message,
)
from airflow_dcache.hooks._checksums import digests_from_headers
from airflow_dcache.hooks._perfmarkers import PerfMarker, PerfMarkerParser
from airflow_dcache.hooks._protocol import (
    BACKOFF_FACTOR,
    RETRY_AFTER_MAX,
    RETRY_METHODS,
    RETRY_STATUSES,
    ResponseInfo,
    call_deadline,
    check_tls_files,
    client_cert,
    error_for,
    parse_retry_after,
    requests_verify,
    retry_wait,
)
from airflow_dcache.hooks._routing import ERROR_BODY_LIMIT, Elevation, Route
from airflow_dcache.hooks._settings import ConnectionSettings
from airflow_dcache.hooks._sse import SSEParser
from airflow_dcache.hooks.models import (
    ArchivedBulkRequest,
    ArchiveInfo,
    BulkRequestInfo,
    BulkSubmission,
    ChannelMessage,
    MacaroonResponse,
    NamespaceEntry,
    StageRequestInfo,
    TransferResult,
    UserInfo,
)
from airflow_dcache.hooks.urls import door_url, mask_url, normalize_path
from airflow_dcache.utils.masking import masked_part
from airflow_dcache.version_compat import mask_for_task_logs

T = TypeVar("T")


def _replayable(body: Any) -> bool:
    """Whether a refused request can be sent again: no body, bytes, or an upload that can rewind."""
    if body is None or isinstance(body, (bytes, str)):
        return True
    return isinstance(body, tx.HashingReader) and body.rewindable


class _Adapter(HTTPAdapter):
    """urllib3 sends request bodies in 16 KiB reads by default; 1 MiB halves the CPU cost of uploads."""

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        pool_kwargs.setdefault("blocksize", tx.CHUNK_SIZE)
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)


class _Retry(Retry):
    """urllib3's retry, minus two surprises: it would honour ``Retry-After`` on a 413 (a limit never
    moves) and wait for any ``Retry-After`` up to six hours. Here only 503 waits inside urllib3 (for the
    idempotent methods), capped at ``RETRY_AFTER_MAX``; a 429 is retried by ``DCacheHook._request`` for
    every method, because a rate-limited request was refused before anything happened."""

    RETRY_AFTER_STATUS_CODES = frozenset({503})

    def get_retry_after(self, response: Any) -> float | None:
        after = parse_retry_after(response.headers.get("Retry-After"))
        return None if after is None else min(after, RETRY_AFTER_MAX)


#: Pieces (lines or chunks) of a reply read after the part that was wanted, so its connection is reused.
DRAIN_LIMIT = 64


def _drain(pieces: Iterator[Any], limit: int = DRAIN_LIMIT) -> None:
    """Read the rest of a streamed reply (at most ``limit`` more pieces) so its connection goes back to the pool.

    ``pieces`` is the iterator the reply was being read with (``iter_lines``, ``iter_content``): only
    it knows where the body stands. A reply closed before its end closes its connection, and the next
    request opens another: for a third-party copy, which stops at its final ``success:`` line, or a
    range read that has its bytes, that was a new connection per request on both sides. What is left is
    usually the end of the chunked encoding; a reply that goes on past ``limit`` is closed as before.
    """
    with contextlib.suppress(Exception):  # best effort: the caller has what it needs, closing is the fallback
        for _ in itertools.islice(pieces, limit):
            pass


class DCacheHook(DCacheHookBase):
    """Talk to a dCache instance (WebDAV door and frontend) described by a ``dcache`` connection.

    :param dcache_conn_id: id of a connection of type ``dcache``.
    :param kwargs: passed on to Airflow's ``BaseHook``.
    """

    def __init__(self, dcache_conn_id: str = DCacheHookBase.default_conn_name, *,
                 connections_of: DCacheHook | None = None, **kwargs: Any) -> None:
        """``connections_of``: send over that hook's pooled connections (see :meth:`sharing_connections`)."""
        super().__init__(dcache_conn_id, **kwargs)
        self._session: requests.Session | None = None
        self._lock = threading.Lock()
        self._connections_of = connections_of
        self._tape = tape_discovery.TapeEndpoint()  # from the WLCG discovery document, on first use

    # ------------------------------------------------------------------------------ plumbing

    def get_conn(self) -> requests.Session:
        """The pooled session; retries cover only idempotent methods, because bodies are streams.

        A hook made by :meth:`sharing_connections` has a session of its own (its own cookies) mounted on
        the other hook's adapters (its connections)."""
        with self._lock:
            if self._session is None:
                check_tls_files(self.settings)
                session = requests.Session()
                session.trust_env = False  # never route to a proxy the task environment happens to set
                for prefix, adapter in self._adapters().items():
                    session.mount(prefix, adapter)
                self._session = session
            return self._session

    def _adapters(self) -> dict[str, BaseAdapter]:
        if self._connections_of is not None:
            return dict(self._connections_of.get_conn().adapters)
        retry = _Retry(
            total=self.settings.retries,
            connect=self.settings.retries,
            read=self.settings.retries,
            status=self.settings.retries,
            backoff_factor=BACKOFF_FACTOR,
            status_forcelist=sorted(RETRY_STATUSES),
            allowed_methods=RETRY_METHODS,
            raise_on_status=False,
            respect_retry_after_header=True,  # capped by _Retry.get_retry_after
        )
        adapter = _Adapter(max_retries=retry, pool_connections=4, pool_maxsize=16)
        return {"http://": adapter, "https://": adapter}

    def close(self) -> None:
        """Close the pooled session; the next call opens a new one.
        """
        with self._lock:
            if self._session is not None and self._connections_of is None:
                self._session.close()
            self._session = None  # shared connections stay open for the hook they belong to

    def sharing_connections(self, settings: ConnectionSettings, *, mask_settings: bool = True) -> DCacheHook:
        """A hook with other ``settings`` (another credential) that sends over this hook's pooled connections.

        For a short-lived credential used many times in a row, a third-party copy's macaroon: a hook of
        its own would open a connection per copy, on both sides. Only the connections are shared:
        the credential goes with every request, the cookies are the new hook's own, and a connection
        is reused only for the same TLS settings (client certificate and verification are part of
        urllib3's pool key), so a connection made with this hook's client certificate never carries
        the other credential's requests. Closing the new hook leaves the connections open.
        """
        return DCacheHook(self.dcache_conn_id, settings=settings, mask_settings=mask_settings, connections_of=self)

    def __enter__(self) -> DCacheHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _auth(self, elevated: bool = False) -> dict[str, str]:
        headers, fresh_token = self._auth_headers(self.settings, elevated)
        if fresh_token:
            self._mask_token(fresh_token)
        return headers

    @staticmethod
    def _mask_token(token: str) -> None:
        """A credential obtained while the task runs (minted, refreshed): masked in the task's logs."""
        mask_for_task_logs(masked_part(token))

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
        elevated: bool = False,
    ) -> requests.Response:
        """Send one request (and its redirects); return a 2xx (or ``ok_statuses``) response or raise."""
        session = self.get_conn()
        settings = self.settings
        route = Route(method, url, follow_redirects)
        deadline = call_deadline(settings)  # Retry-After waits of this call end here
        limited = 0  # 429 answers waited out so far
        while route.open:
            all_headers = dict(headers or {})
            if route.credentials:
                all_headers.update(self._auth(elevated))
            try:
                response = session.request(
                    route.method,
                    route.url,
                    headers=all_headers,
                    data=body,
                    stream=stream,
                    allow_redirects=False,
                    timeout=timeout if timeout is not None else settings.timeout,
                    verify=requests_verify(settings),
                    cert=client_cert(settings) if route.credentials else None,
                )
            except requests.RequestException as exc:
                raise DCacheConnectionError(
                    f"cannot reach dCache: {mask_url(str(exc))}", method=route.method, url=mask_url(route.url)
                ) from None
            if response.status_code == 429 and _replayable(body):
                wait = retry_wait(429, response.headers, route.method, limited, settings.retries,
                                  deadline - time.monotonic())
                if wait is not None:
                    response.close()
                    self.log.info("dCache is rate limiting (429); retrying %s %s after %.1f s",
                                  route.method, mask_url(route.url), wait)
                    time.sleep(wait)
                    if isinstance(body, tx.HashingReader):
                        body.rewind()
                    limited += 1
                    continue
            hop = route.after(response.status_code, response.headers.get("Location"))
            if hop is not None:
                response.close()
                self.log.debug("following %s redirect to %s", response.status_code, mask_url(hop.url))
                if not hop.keep_body:
                    body = None
                elif isinstance(body, tx.HashingReader):
                    body.rewind()
                continue
            if response.status_code >= 300 and response.status_code not in ok_statuses:
                raise self._error(response, route.method, route.url, exists_statuses)
            return response
        raise route.too_many()

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
                if len(body) >= ERROR_BODY_LIMIT:
                    break
        except requests.RequestException:
            body = b""
        finally:
            response.close()
        info = self._info(response, body)
        error = error_for(info, method, url, exists=response.status_code in exists_statuses)
        return error

    def _send_call(self, call: ops.Call) -> requests.Response:
        """Send a shared operation's call; a refused metadata change goes once more asserting the roles."""
        elevation = Elevation(call, self.settings)
        while True:
            try:
                return self._request(call.method, call.url, call.headers, call.body,
                                     follow_redirects=call.follow_redirects, exists_statuses=call.exists_statuses,
                                     ok_statuses=call.ok_statuses, elevated=elevation.elevated)
            except PermissionDenied:
                if not elevation.retry(self.log):
                    raise

    def _run(self, operation: ops.Operation[T]) -> T:
        """Drive a shared operation: send each ``Call``, feed back the reply or throw the error in."""
        try:
            call = next(operation)
            while True:
                try:
                    response = self._send_call(call)
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
        """Frontend metadata; flags: children, locality, locations, qos, checksum, xattr, labels, optional.

        :param path: absolute path in dCache's namespace.
        :param flags: ``True`` for each extra to fetch: ``children``, ``locality``, ``locations``, ``qos``,
            ``checksum``, ``xattr``, ``labels``, ``optional``. ``offset``/``limit`` page the children.
        """
        return self._run(ops.stat(self.settings, path, **flags))

    def stat_by_pnfsid(self, pnfsid: str) -> NamespaceEntry:
        """``GET /api/v1/id/{pnfsid}``: admins only on dCache (``PermissionDenied`` otherwise).

        :param pnfsid: the file's PNFS id.
        """
        return self._run(ops.stat_by_pnfsid(self.settings, pnfsid))

    def list_dir(self, path: str, *, page_size: int | None = None, **flags: Any) -> list[NamespaceEntry]:
        """Directory entries (frontend ``children=true``); set ``page_size`` for very large directories.

        :param path: absolute path in dCache's namespace.
        :param page_size: entries per request (``offset``/``limit`` paging); ``None`` asks for all at once.
        :param flags: extras per entry, as for :meth:`stat`.
        """
        return self._run(ops.list_dir(self.settings, path, page_size, **flags))

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists (a frontend stat; ``NotFound`` means no).

        :param path: absolute path in dCache's namespace.
        """
        return self._run(ops.exists(self.settings, path))

    def mkdir(self, path: str, *, parents: bool = True, exist_ok: bool = True) -> bool:
        """Create a directory (MKCOL); returns False when it already existed.

        :param path: absolute path in dCache's namespace.
        :param parents: create missing parent directories too.
        :param exist_ok: when ``False``, an existing directory is an error.
        """
        return self._run(ops.mkdir(self.settings, path, parents, exist_ok))

    def move(self, source: str, destination: str, *, overwrite: bool = False) -> None:
        """Rename or move within this dCache (WebDAV MOVE).

        :param source: path to move.
        :param destination: new path on the same dCache.
        :param overwrite: replace an existing ``destination``.
        """
        self._run(ops.move(self.settings, source, destination, overwrite))

    def delete(self, path: str, *, recursive: bool = False, missing_ok: bool = False, directory: bool = False) -> bool:
        """Delete a file or directory; returns False if it was missing and ``missing_ok``.

        :param path: absolute path in dCache's namespace.
        :param recursive: delete a directory with everything in it.
        :param missing_ok: return ``False`` instead of raising ``NotFound``.
        :param directory: with ``recursive``, the caller knows ``path`` is a directory (one it made): one
            request fewer, no stat before the listing; a file there is refused (``Conflict``), not deleted.
        """
        return self._run(ops.delete(self.settings, path, recursive, missing_ok, directory))

    def set_xattr(self, path: str, attributes: Mapping[str, Any], *, mode: str = "EITHER") -> None:
        """Set extended attributes on ``path`` (frontend ``set-xattr``).

        :param path: absolute path in dCache's namespace.
        :param attributes: names and values; values are sent as strings.
        :param mode: ``CREATE`` (must not exist yet), ``MODIFY`` (must exist) or ``EITHER``.
        """
        self._run(ops.set_xattr(self.settings, path, attributes, mode))

    def remove_xattr(self, path: str, names: Iterable[str]) -> None:
        """Remove extended attributes from ``path`` (frontend ``rm-xattr``).

        :param path: absolute path in dCache's namespace.
        :param names: attribute names to remove.
        """
        self._run(ops.remove_xattr(self.settings, path, names))

    def set_labels(self, path: str, labels: Iterable[str], *, replace: bool = False) -> list[str]:
        """Add labels to ``path``; returns the labels now set.

        :param path: absolute path in dCache's namespace.
        :param labels: labels to add.
        :param replace: also remove the labels not listed.
        """
        return self._run(ops.set_labels(self.settings, path, labels, replace))

    def remove_labels(self, path: str, labels: Iterable[str]) -> list[str]:
        """Remove labels from ``path`` (ones it lacks are skipped); returns the labels left.

        :param path: absolute path in dCache's namespace.
        :param labels: labels to remove.
        """
        return self._run(ops.remove_labels(self.settings, path, labels))

    def get_labels(self, path: str) -> list[str]:
        """The labels of ``path`` (:meth:`list_labels` lists every label in use).

        :param path: absolute path in dCache's namespace.
        """
        return self._run(ops.path_labels(self.settings, path))

    def chmod(self, path: str, mode: int | str) -> None:
        """Set the permission bits of ``path``; only its owner (or an asserted role) may.

        :param path: absolute path in dCache's namespace.
        :param mode: an int (``0o775``) or an octal string (``"775"``, ``"0775"``).
        """
        self._run(ops.chmod(self.settings, path, mode))

    def chgrp(self, path: str, gid: int | str) -> None:
        """Set the group of ``path``; the owner must be a member of ``gid`` (dCache takes ids, not names).

        :param path: absolute path in dCache's namespace.
        :param gid: numeric group id.
        """
        self._run(ops.chgrp(self.settings, path, gid))

    def checksum(self, path: str, algorithms: Iterable[str] = ("adler32", "md5")) -> dict[str, str]:
        """Stored checksums as lowercase hex, keyed by RFC 3230 name (``adler32``, ``md5``, …).

        :param path: absolute path in dCache's namespace.
        :param algorithms: RFC 3230 names to ask for; ones the file lacks are absent from the result.
        """
        return self._run(ops.checksum(self.settings, path, algorithms))

    # -------------------------------------------------------------------------------- QoS, pins

    def set_qos(
        self, path: str, target: str | None = None, *, policy: str | None = None, state: int | None = None
    ) -> None:
        """Request a QoS transition; it runs asynchronously on the server.

        :param path: absolute path in dCache's namespace.
        :param target: ``disk``, ``tape``, ``disk+tape``, ``tape+disk`` or ``volatile``.
        :param policy: a QoS policy name, instead of ``target`` (give exactly one).
        :param state: with ``policy``: the index of the state to start in (default 0).
        """
        self._run(ops.set_qos(self.settings, path, target, policy, state))

    def qos_classes(self, kind: str = "file") -> list[str]:
        """QoS names for ``kind`` ``"file"`` or ``"directory"`` (``/qos-management/qos/{kind}``).

        :param kind: ``file`` or ``directory``.
        """
        return self._run(ops.qos_classes(self.settings, kind))

    def qos_capability(self, qos: str, kind: str = "file") -> dict[str, Any]:
        """``backendCapability`` of one QoS: ``name``, allowed ``transition`` targets, CDMI ``metadata``.

        :param qos: a name from :meth:`qos_classes`.
        :param kind: ``file`` or ``directory``.
        """
        return self._run(ops.qos_capability(self.settings, qos, kind))

    def pin(self, path: str, lifetime: float, unit: str = "SECONDS") -> None:
        """Pin ``path`` on disk for ``lifetime`` (frontend ``pin`` action).

        :param path: absolute path in dCache's namespace.
        :param lifetime: how long the pin lasts, in ``unit``.
        :param unit: a Java ``TimeUnit`` name in any case (``NANOSECONDS`` … ``DAYS``); sent upper-case.
        """
        self._run(ops.pin(self.settings, path, lifetime, unit))

    def unpin(self, path: str) -> None:
        """Remove the pin :meth:`pin` set on ``path`` (frontend ``unpin`` action).

        :param path: absolute path in dCache's namespace.
        """
        self._run(ops.unpin(self.settings, path))

    # ------------------------------------------------------------------------------------ bulk

    def submit_bulk_request(self, activity: str, targets: Iterable[str], **options: Any) -> BulkSubmission:
        """Submit a bulk request (frontend ``POST /bulk-requests``); returns its id and URL.

        :param activity: ``PIN``, ``UNPIN``, ``STAGE``, ``RELEASE``, ``DELETE``, ``UPDATE_QOS`` or ``LOG_TARGET``.
        :param targets: paths the activity applies to (at least one).
        :param options: ``arguments`` (the activity's own), ``target_prefix``, ``expand_directories`` (``NONE``,
            ``TARGETS``, ``ALL``), ``cancel_on_failure``, ``clear_on_success``, ``clear_on_failure``.
        """
        return self._run(ops.submit_bulk_request(self.settings, activity, targets, **options))

    def bulk_request_status(self, request: str) -> BulkRequestInfo:
        """State of a bulk request and of each of its targets.

        :param request: the request id, or the URL dCache returned for it.
        """
        return self._run(ops.bulk_request_status(self.settings, request))

    def cancel_bulk_request(self, request: str, paths: Iterable[str] | None = None) -> None:
        """Cancel a bulk request, or only some of its targets.

        :param request: the request id, or the URL dCache returned for it.
        :param paths: targets to cancel; ``None`` cancels the whole request.
        """
        self._run(ops.cancel_bulk_request(self.settings, request, paths))

    def clear_bulk_request(self, request: str, *, cancel_if_running: bool = False) -> None:
        """Clear a bulk request (dCache archives what is left of it).

        :param request: the request id, or the URL dCache returned for it.
        :param cancel_if_running: cancel the request first if it is still running.
        """
        self._run(ops.clear_bulk_request(self.settings, request, cancel_if_running))

    def list_bulk_requests(
        self, status: Iterable[str] | None = None, owner: str | None = None, path: str | None = None
    ) -> list[dict[str, Any]]:
        """Bulk requests this user can see, as dCache lists them.

        :param status: only requests in these states, e.g. ``started``, ``completed``.
        :param owner: only this owner's requests.
        :param path: dCache's ``path`` filter.
        """
        return self._run(ops.list_bulk_requests(self.settings, status, owner, path))

    def list_labels(self) -> list[str]:
        """Every label in use on the instance (``GET /labels``)."""
        return self._run(ops.list_labels(self.settings))

    def labelled_files(self, label: str, **flags: Any) -> list[NamespaceEntry]:
        """Files carrying ``label`` (flags: locality, locations, qos, xattr, labels). dCache gives names, not
        paths: each entry's ``path`` is the file name and its ``pnfsid`` identifies it.

        :param label: the label to look up.
        :param flags: extras per entry: ``locality``, ``locations``, ``qos``, ``xattr``, ``labels``.
        """
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
        """Summaries of cleared (archived) bulk requests, oldest first; every owner's, as dCache lists them.

        :param owner: one or more owners to filter on.
        :param activity: one or more activities to filter on.
        :param status: one or more final states to filter on.
        :param before: only requests last modified before this (naive: the server's local time).
        :param after: only requests last modified after this (naive: the server's local time).
        :param limit: at most this many summaries.
        """
        return self._run(ops.list_archived_bulk_requests(
            self.settings, owner=owner, activity=activity, status=status, before=before, after=after, limit=limit))

    def archived_bulk_request(self, request: str) -> ArchivedBulkRequest:
        """What dCache keeps of a cleared request: initial targets, counts, errors by type.

        :param request: the request id, or the URL dCache returned for it.
        """
        return self._run(ops.archived_bulk_request(self.settings, request))

    # -------------------------------------------------------------------------- storage events

    def create_channel(self, client_id: str | None = None) -> str:
        """``POST /events/channels``; returns the channel URL (``Location``) exactly as the server gave it.

        :param client_id: optional label, so :meth:`list_channels` can find the channel again.
        """
        return self._run(ops.create_channel(self.settings, client_id))

    def list_channels(self, client_id: str | None = None) -> list[str]:
        """URLs of this user's channels; ``client_id=""`` lists those created without a client id.

        :param client_id: only channels with this client id; ``""`` those without one, ``None`` all.
        """
        return self._run(ops.list_channels(self.settings, client_id))

    def channel_timeout(self, channel_url: str) -> int:
        """Seconds the channel may stay disconnected before dCache garbage-collects it.

        :param channel_url: the channel URL as :meth:`create_channel` returned it.
        """
        return self._run(ops.channel_timeout(self.settings, channel_url))

    def set_channel_timeout(self, channel_url: str, seconds: int) -> None:
        """Set how long the channel may stay disconnected before dCache removes it.

        :param channel_url: the channel URL as :meth:`create_channel` returned it.
        :param seconds: whole seconds, at least 1.
        """
        self._run(ops.set_channel_timeout(self.settings, channel_url, seconds))

    def delete_channel(self, channel_url: str) -> None:
        """Delete an event channel, ending its subscriptions and streams.

        :param channel_url: the channel URL as :meth:`create_channel` returned it.
        """
        self._run(ops.delete_channel(self.settings, channel_url))

    def subscribe_inotify(self, channel_url: str, path: str, flags: Iterable[str] | None = None) -> str:
        """Watch ``path``; returns the subscription URL (the existing one when dCache merged the watch).

        :param channel_url: the channel URL as :meth:`create_channel` returned it.
        :param path: file or directory to watch (not recursive).
        :param flags: inotify event names, e.g. ``IN_CLOSE_WRITE``; ``None`` means every event.
        """
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
        """Subscribe to dCache's metronome test source; returns the subscription URL.

        :param channel_url: the channel URL as :meth:`create_channel` returned it.
        :param delay: seconds between events.
        :param frequency: events per second, instead of ``delay``.
        :param message: the text each event carries.
        :param count: stop after this many events.
        """
        return self._run(
            ops.subscribe_metronome(
                self.settings, channel_url, delay=delay, frequency=frequency, message=message, count=count
            )
        )

    def list_subscriptions(self, channel_url: str) -> list[str]:
        """URLs of the channel's subscriptions.

        :param channel_url: the channel URL as :meth:`create_channel` returned it.
        """
        return self._run(ops.list_subscriptions(self.settings, channel_url))

    def unsubscribe(self, subscription_url: str) -> None:
        """Cancel one subscription.

        :param subscription_url: the URL a ``subscribe_*`` call returned.
        """
        self._run(ops.unsubscribe(self.settings, subscription_url))

    def event_types(self) -> list[str]:
        """Event types the frontend offers (e.g. ``inotify``, ``metronome``).
        """
        return self._run(ops.event_types(self.settings))

    def event_schema(self, event_type: str, part: str = "selector") -> dict[str, Any]:
        """JSON Schema of ``event_type``'s selector (``part="selector"``) or of its events (``"event"``).

        :param event_type: e.g. ``inotify``.
        :param part: ``selector`` or ``event``.
        """
        return self._run(ops.event_schema(self.settings, event_type, part))

    def stream_events(
        self,
        channel_url: str,
        *,
        last_event_id: str | int | None = None,
        read_timeout: float | None = None,
    ) -> Generator[ChannelMessage, None, None]:
        """Read a channel's SSE stream until the server closes it; reconnecting is the caller's job.

        Pass the ``id`` of the last event processed as ``last_event_id`` to have dCache replay what came
        after it (``SYSTEM`` ``EVENT_LOSS`` if it is no longer in the backlog). ``read_timeout`` bounds
        the wait for the next bytes (``DCacheConnectionError`` when exceeded); ``None`` waits for ever,
        because dCache sends no keep-alives on a quiet channel. A channel that is gone raises
        ``NotFound``, another user's ``PermissionDenied``, anonymous access ``AuthenticationFailed``.
        Close the generator when stopping early (``contextlib.closing``; ``contextlib.aclosing`` for the
        async hook's) to release the connection.

        :param channel_url: the channel URL as :meth:`create_channel` returned it.
        :param last_event_id: replay what came after this event id.
        :param read_timeout: seconds to wait for the next bytes; ``None`` waits for ever.
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
                timed_out = bool(exc.args) and isinstance(exc.args[0], ReadTimeoutError)
                raise ops.event_stream_broken(call, read_timeout, timed_out, str(exc)) from None

    # ------------------------------------------------------------------------------------ tape

    def stage(
        self,
        files: Iterable[str] | Mapping[str, timedelta | int | float | str | None],
        *,
        disk_lifetime: timedelta | int | float | str | None = None,
    ) -> BulkSubmission:
        """Recall files from tape (WLCG Tape REST); returns the stage request id.

        :param files: paths, or a mapping of path to its own disk lifetime.
        :param disk_lifetime: how long the staged copies stay on disk: seconds, ``timedelta`` or ISO-8601
            (``PT1H``).
        """
        return self._run(ops.stage(self.settings, files, disk_lifetime, endpoint=self._tape))

    def stage_status(self, request: str) -> StageRequestInfo:
        """Progress of a stage request, file by file (WLCG Tape REST).

        :param request: the request id, or the URL dCache returned for it.
        """
        return self._run(ops.stage_status(self.settings, request, endpoint=self._tape))

    def cancel_stage(self, request: str, paths: Iterable[str]) -> None:
        """Cancel the staging of some files of a request.

        :param request: the request id, or the URL dCache returned for it.
        :param paths: files of the request to cancel.
        """
        self._run(ops.cancel_stage(self.settings, request, paths, endpoint=self._tape))

    def delete_stage(self, request: str) -> None:
        """Delete a stage request on the server.

        :param request: the request id, or the URL dCache returned for it.
        """
        self._run(ops.delete_stage(self.settings, request, endpoint=self._tape))

    def release(self, request: str, paths: Iterable[str]) -> None:
        """Release staged files, so dCache may evict their disk copies.

        :param request: the request id, or the URL dCache returned for it.
        :param paths: files of the request to release.
        """
        self._run(ops.release(self.settings, request, paths, endpoint=self._tape))

    def tape_api_endpoints(self) -> list[dict[str, Any]]:
        """WLCG discovery document's ``endpoints`` (``<frontend origin>/.well-known/wlcg-tape-rest-api``)."""
        return self._run(ops.tape_api_endpoints(self.settings))

    def archive_info(self, paths: Iterable[str]) -> list[ArchiveInfo]:
        """Locality of each path (e.g. ``ONLINE``, ``NEARLINE``), or the error for it (WLCG ``archiveinfo``).

        :param paths: absolute paths in dCache's namespace.
        """
        return self._run(ops.archive_info(self.settings, paths, endpoint=self._tape))

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
        mask: bool = True,
    ) -> MacaroonResponse:
        """Ask the door for a macaroon limited to ``path``; the token is masked in logs at once.

        :param path: the macaroon is limited to this path (dCache adds the ``path:`` caveat).
        :param caveats: caveat strings or a :class:`~airflow_dcache.macaroons.caveats.CaveatBuilder`.
        :param activities: allowed activities, e.g. ``DOWNLOAD``, ``LIST``.
        :param validity: lifetime: seconds, ``timedelta`` or an ISO-8601 duration (no weeks).
        :param ip: client addresses or subnets, all alternatives in one caveat.
        :param before: absolute expiry (timezone-aware).
        :param max_upload: largest upload allowed, in bytes.
        :param mask: ``False`` only for a macaroon that goes nowhere but into a request header to the
            dCache it authorises (the third-party copies of :class:`~airflow_dcache.transfers.tpc.ThirdPartyCopy`):
            Airflow's masker rebuilds one regular expression of every registered secret at each
            registration, so a task that registers hundreds pays CPU quadratic in their number.
        """
        result = self._run(ops.mint_macaroon(self.settings, path, caveats, activities=activities, validity=validity,
                                             ip=ip, before=before, max_upload=max_upload))
        if mask:
            self._mask_token(result.macaroon)
        return result

    def presigned_url(
        self,
        path: str,
        activities: Iterable[str] | str,
        validity: timedelta | int | float | str,
        ip: Iterable[str] | str | None = None,
    ) -> str:
        """A pre-authorised URL (``…?authz=<macaroon>``) for handing one file to a worker.

        :param path: the one file the URL is for.
        :param activities: allowed activities, e.g. ``DOWNLOAD``.
        :param validity: lifetime: seconds, ``timedelta`` or an ISO-8601 duration.
        :param ip: client addresses or subnets allowed to use it.
        """
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

        :param source: a local file path or a binary stream.
        :param path: destination in dCache.
        :param checksum: ``adler32``, ``md5``, ``sha-256``, ``sha-512`` or ``none`` (see above).
        :param overwrite: when ``False``, fail if ``path`` exists.
        :param make_parents: create the parent directory first.
        :param xattrs: extended attributes set with the file (``xattr.<name>`` on the PUT URL).
        :param size: bytes to send, when the stream's length cannot be worked out.
        :param chunk_size: bytes per read.
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

        :param path: absolute path in dCache's namespace.
        :param destination: a local file path (written atomically) or a binary stream.
        :param verify: check the received data against the pool's checksum (size only if none).
        :param chunk_size: bytes per read.
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

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of ``path`` from ``offset`` (a ``Range`` GET through the door).

        Only those bytes are moved: a ``206`` is checked (its ``Content-Range`` must start at
        ``offset``); a server that ignores ``Range`` and answers ``200`` with the whole file is read only
        up to ``offset + length`` and then dropped. Fewer bytes come back when the file ends first, and
        ``b""`` when ``offset`` is at or beyond its end (``416``). A directory is refused with ``Conflict``.

        :param path: absolute path in dCache's namespace.
        :param offset: first byte, from 0.
        :param length: at most this many bytes (at least 1).
        """
        read = ops.range_read(self.settings, path, offset, length)
        response = self._request("GET", read.url, read.headers, stream=True, follow_redirects=True,
                                 ok_statuses=(416,))
        with response:
            receiver = ops.RangeReceiver(read, self._info(response), response.url)
            try:
                if not receiver.done:
                    chunks = response.iter_content(min(tx.CHUNK_SIZE, read.offset + read.length))
                    for chunk in chunks:
                        if receiver.feed(chunk):
                            _drain(chunks)
                            break
            except requests.RequestException as exc:
                raise DCacheConnectionError(
                    f"range read interrupted: {mask_url(str(exc))}", method="GET", url=mask_url(read.url)
                ) from None
        return receiver.finish()

    # ------------------------------------------------------------------------ third-party copy

    def copy_pull(self, remote_url: str, path: str, *, mask: bool = True, **options: Any) -> TransferResult:
        """Have dCache fetch ``remote_url`` into ``path`` (HTTP-TPC pull).

        Options: remote_token (sent as ``TransferHeaderAuthorization``), remote_headers, credential,
        require_checksum, overwrite, want_digest.

        :param remote_url: absolute URL to fetch.
        :param path: destination in this dCache.
        :param mask: register the remote credentials with the log masker (``False`` only for one minted
            with ``mint_macaroon(mask=False)``: see there).
        :param options: ``remote_token``, ``remote_headers``, ``credential`` (``none``, ``gridsite``, ``oidc``),
            ``require_checksum``, ``overwrite``, ``want_digest``.
        """
        return self._copy(tx.copy_request(self.settings, path, remote_url, direction="pull", **options), mask=mask)

    def copy_push(self, path: str, remote_url: str, *, mask: bool = True, **options: Any) -> TransferResult:
        """Have dCache send ``path`` to ``remote_url`` (HTTP-TPC push); same options as :meth:`copy_pull`.

        :param path: file in this dCache to send.
        :param remote_url: absolute URL to write to.
        :param mask: as for :meth:`copy_pull`.
        :param options: as for :meth:`copy_pull`.
        """
        return self._copy(tx.copy_request(self.settings, path, remote_url, direction="push", **options), mask=mask)

    def _copy(self, request: tx.CopyRequest, *, mask: bool = True) -> TransferResult:
        if mask:
            for secret in tx.copy_secrets(request):
                self._mask_token(secret)
        self.log.info("third-party copy %s <-> %s", request.local_path, mask_url(request.remote_url))
        response = self._request(request.method, request.url, request.headers, stream=True)
        parser = PerfMarkerParser()
        with response:
            try:
                # Bytes, decoded here: requests yields bytes when the Content-Type has no charset.
                lines = response.iter_lines()
                for raw in lines:
                    item = parser.feed(raw.decode("utf-8", "replace"))
                    if isinstance(item, PerfMarker):
                        self.log.info("copy %s: %s", request.local_path, item.describe())
                    elif item is not None:
                        _drain(lines)
                        break
            except requests.RequestException as exc:
                self.log.warning("copy stream broke: %s", mask_url(str(exc)))
            headers = dict(response.headers)
        return tx.copy_result(request, parser, headers, response.status_code)
