"""Asynchronous dCache hook on ``httpx.AsyncClient``, for triggers and async operators.

It runs the same shared operations as :class:`~airflow_dcache.hooks.dcache.DCacheHook`; only the I/O
differs. Connection lookups use ``aget_connection`` so a trigger never blocks the triggerer's loop, and
secrets are registered with ``amask_secret``, which is safe while another supervisor call is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import IO, Any, TypeVar

import httpx
from airflow.sdk.log import amask_secret

from airflow_dcache.exceptions import DCacheConnectionError, DCacheError, PermissionDenied, UnexpectedResponse
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
    MAX_REDIRECTS,
    RETRY_METHODS,
    RETRY_STATUSES,
    ResponseInfo,
    TokenFileReader,
    auth_headers,
    backoff_delay,
    call_deadline,
    door_url,
    elevation_message,
    error_for,
    mask_url,
    may_elevate,
    next_hop,
    normalize_path,
    retry_wait,
    ssl_context,
)
from airflow_dcache.hooks._settings import AuthType, ConnectionSettings, settings_from_connection
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

T = TypeVar("T")
_ERROR_BODY_LIMIT = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
BodyFactory = Callable[[], AsyncIterator[bytes]]


class DCacheAsyncHook(DCacheHookBase):
    """Async twin of :class:`DCacheHook`; use as ``async with DCacheAsyncHook(conn_id) as hook``.

    :param dcache_conn_id: id of a connection of type ``dcache``.
    :param kwargs: passed on to Airflow's ``BaseHook``.
    """

    def __init__(self, dcache_conn_id: str = DCacheHookBase.default_conn_name, **kwargs: Any) -> None:
        super().__init__(dcache_conn_id, **kwargs)
        self._client: httpx.AsyncClient | None = None
        self._plain_client: httpx.AsyncClient | None = None
        self._token_reader: TokenFileReader | None = None
        self._tape = tape_discovery.TapeEndpoint()  # from the WLCG discovery document, on first use

    # ------------------------------------------------------------------------------ plumbing

    async def aget_settings(self) -> ConnectionSettings:
        """Load the connection without blocking the event loop (the sync ``settings`` would)."""
        if self._settings is None:
            conn = await self.aget_connection(self.dcache_conn_id)
            settings = settings_from_connection(conn)
            for secret in settings.secrets:
                await amask_secret(secret)
            self._settings = self._roles_applied(settings)
        return self._settings

    def _make_client(self, settings: ConnectionSettings, with_cert: bool) -> httpx.AsyncClient:
        if not with_cert and settings.client_cert:
            settings = _without_cert(settings)
        # Transport retries cover failed connects only (nothing was sent, so any method is safe);
        # 5xx and read errors are retried in ``_request`` for idempotent methods.
        transport = httpx.AsyncHTTPTransport(
            verify=ssl_context(settings),
            retries=settings.retries,
            trust_env=False,
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
        )
        return httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(settings.timeout),
            follow_redirects=False,
            trust_env=False,
        )

    async def get_async_conn(self, *, with_cert: bool = True) -> httpx.AsyncClient:
        """The shared client; a second one without the client certificate serves cross-origin hops.

        :param with_cert: ``False`` gives the client without the client certificate, for hops to another origin.
        """
        settings = await self.aget_settings()
        if with_cert or not settings.client_cert:
            if self._client is None:
                self._client = self._make_client(settings, True)
            return self._client
        if self._plain_client is None:
            self._plain_client = self._make_client(settings, False)
        return self._plain_client

    async def aclose(self) -> None:
        """Close the HTTP clients; the next call opens new ones.
        """
        for client in (self._client, self._plain_client):
            if client is not None:
                await client.aclose()
        self._client = self._plain_client = None

    async def __aenter__(self) -> DCacheAsyncHook:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _auth(self, elevated: bool = False) -> dict[str, str]:
        settings = await self.aget_settings()
        if settings.auth_type is AuthType.TOKEN_FILE:
            if self._token_reader is None:
                self._token_reader = TokenFileReader(settings.token_file or "")
            token, changed = self._token_reader.read()
            if changed:
                await amask_secret(token)
            return auth_headers(settings, token, elevated=elevated)
        return auth_headers(settings, elevated=elevated)

    async def _send_once(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        body: bytes | BodyFactory | None,
        credentials: bool,
        timeout: httpx.Timeout | None = None,
        elevated: bool = False,
    ) -> httpx.Response:
        """One request with retries: idempotent methods after connection errors and 5xx, any method after
        a 429 that says ``Retry-After`` (see :func:`retry_wait`); never after a 413."""
        client = await self.get_async_conn(with_cert=credentials)
        settings = await self.aget_settings()
        retry = method in RETRY_METHODS
        attempt = 0
        deadline = call_deadline(settings)  # Retry-After waits of this call end here
        while True:
            all_headers = dict(headers or {})
            if credentials:
                all_headers.update(await self._auth(elevated))
            content = body() if callable(body) else body
            request = client.build_request(
                method, url, headers=all_headers, content=content, timeout=timeout or httpx.USE_CLIENT_DEFAULT
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.TransportError as exc:
                if retry and attempt < settings.retries:
                    await asyncio.sleep(backoff_delay(attempt))
                    attempt += 1
                    continue
                raise DCacheConnectionError(
                    f"cannot reach dCache: {mask_url(str(exc)) or type(exc).__name__}",
                    method=method,
                    url=mask_url(url),
                ) from None
            if response.status_code == 429 or response.status_code in RETRY_STATUSES:
                wait = retry_wait(response.status_code, response.headers, method, attempt, settings.retries,
                                  deadline - time.monotonic())
                if wait is not None:
                    await response.aclose()
                    self.log.info("dCache answered %s; retrying %s %s after %.1f s",
                                  response.status_code, method, mask_url(url), wait)
                    await asyncio.sleep(wait)
                    attempt += 1
                    continue
            return response

    async def _request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | BodyFactory | None = None,
        *,
        follow_redirects: bool = False,
        exists_statuses: tuple[int, ...] = (),
        ok_statuses: tuple[int, ...] = (),
        timeout: httpx.Timeout | None = None,
        elevated: bool = False,
    ) -> httpx.Response:
        """A streamed 2xx (or ``ok_statuses``) response (caller closes it), after same-origin redirects."""
        credentials = True
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._send_once(method, url, headers, body, credentials, timeout, elevated)
            if follow_redirects and response.status_code in _REDIRECTS:
                hop = next_hop(method, url, response.status_code, response.headers.get("Location"))
                await response.aclose()
                self.log.debug("following %s redirect to %s", response.status_code, mask_url(hop.url))
                if not hop.keep_body:
                    body = None
                method, url = hop.method, hop.url
                credentials = credentials and hop.keep_credentials
                continue
            if response.status_code >= 300 and response.status_code not in ok_statuses:
                raise await self._error(response, method, url, exists_statuses)
            return response
        raise UnexpectedResponse(f"more than {MAX_REDIRECTS} redirects", method=method, url=mask_url(url))

    @staticmethod
    def _info(response: httpx.Response, body: bytes) -> ResponseInfo:
        return ResponseInfo(response.status_code, response.reason_phrase or "", dict(response.headers), body)

    async def _error(
        self, response: httpx.Response, method: str, url: str, exists_statuses: tuple[int, ...]
    ) -> DCacheError:
        body = b""
        try:
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) >= _ERROR_BODY_LIMIT:
                    break
        except httpx.HTTPError:
            pass
        finally:
            await response.aclose()
        return error_for(self._info(response, body), method, url, exists=response.status_code in exists_statuses)

    async def _send_call(self, call: ops.Call) -> httpx.Response:
        """Send a shared operation's call; a refused metadata change goes once more asserting the roles."""
        elevated = call.elevate == "always" and may_elevate(call, await self.aget_settings())
        while True:
            try:
                return await self._request(call.method, call.url, call.headers, call.body,
                                           follow_redirects=call.follow_redirects,
                                           exists_statuses=call.exists_statuses, ok_statuses=call.ok_statuses,
                                           elevated=elevated)
            except PermissionDenied:
                settings = await self.aget_settings()
                if elevated or not may_elevate(call, settings):
                    raise
                self.log.info("%s", elevation_message(call, settings))
                elevated = True

    async def _run(self, operation: ops.Operation[T]) -> T:
        """Drive a shared operation generator with async I/O."""
        try:
            call = next(operation)
            while True:
                try:
                    response = await self._send_call(call)
                except DCacheError as exc:
                    call = operation.throw(exc)
                    continue
                try:
                    body = await response.aread()
                except httpx.HTTPError as exc:
                    raise DCacheConnectionError(
                        f"reply interrupted: {exc}", method=call.method, url=mask_url(call.url)
                    ) from None
                finally:
                    await response.aclose()
                call = operation.send(self._info(response, body))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    # ------------------------------------------------------------------------- connection test

    async def atest_connection(self) -> tuple[bool, str]:
        """Same checks as :meth:`DCacheHook.test_connection`, for async callers."""
        try:
            settings = await self.aget_settings()
        except DCacheError as exc:
            return False, f"invalid connection: {exc}"
        except Exception as exc:
            return False, f"cannot load connection {self.dcache_conn_id!r}: {exc}"
        try:
            await self._run(ops.door_probe(settings))
        except DCacheError as exc:
            return False, door_check_message(exc)
        try:
            user = await self.whoami()
        except DCacheError as exc:
            return False, frontend_check_message(exc)
        return identity_message(user.status, user.username, settings.door_url, settings.api_url)

    # ------------------------------------------------------------------------------- namespace

    async def whoami(self) -> UserInfo:
        """Async form of :meth:`DCacheHook.whoami`.
        """
        return await self._run(ops.whoami(await self.aget_settings()))

    async def stat(self, path: str, **flags: Any) -> NamespaceEntry:
        """Async form of :meth:`DCacheHook.stat`.

        :param path: absolute path in dCache's namespace.
        :param flags: ``True`` for each extra to fetch: ``children``, ``locality``, ``locations``, ``qos``,
            ``checksum``, ``xattr``, ``labels``, ``optional``. ``offset``/``limit`` page the children.
        """
        return await self._run(ops.stat(await self.aget_settings(), path, **flags))

    async def stat_by_pnfsid(self, pnfsid: str) -> NamespaceEntry:
        """Async form of :meth:`DCacheHook.stat_by_pnfsid`.

        :param pnfsid: the file's PNFS id.
        """
        return await self._run(ops.stat_by_pnfsid(await self.aget_settings(), pnfsid))

    async def list_dir(self, path: str, *, page_size: int | None = None, **flags: Any) -> list[NamespaceEntry]:
        """Async form of :meth:`DCacheHook.list_dir`.

        :param path: absolute path in dCache's namespace.
        :param page_size: entries per request (``offset``/``limit`` paging); ``None`` asks for all at once.
        :param flags: extras per entry, as for :meth:`stat`.
        """
        return await self._run(ops.list_dir(await self.aget_settings(), path, page_size, **flags))

    async def exists(self, path: str) -> bool:
        """Async form of :meth:`DCacheHook.exists`.

        :param path: absolute path in dCache's namespace.
        """
        return await self._run(ops.exists(await self.aget_settings(), path))

    async def mkdir(self, path: str, *, parents: bool = True, exist_ok: bool = True) -> bool:
        """Async form of :meth:`DCacheHook.mkdir`.

        :param path: absolute path in dCache's namespace.
        :param parents: create missing parent directories too.
        :param exist_ok: when ``False``, an existing directory is an error.
        """
        return await self._run(ops.mkdir(await self.aget_settings(), path, parents, exist_ok))

    async def move(self, source: str, destination: str, *, overwrite: bool = False) -> None:
        """Async form of :meth:`DCacheHook.move`.

        :param source: path to move.
        :param destination: new path on the same dCache.
        :param overwrite: replace an existing ``destination``.
        """
        await self._run(ops.move(await self.aget_settings(), source, destination, overwrite))

    async def delete(self, path: str, *, recursive: bool = False, missing_ok: bool = False) -> bool:
        """Async form of :meth:`DCacheHook.delete`.

        :param path: absolute path in dCache's namespace.
        :param recursive: delete a directory with everything in it.
        :param missing_ok: return ``False`` instead of raising ``NotFound``.
        """
        return await self._run(ops.delete(await self.aget_settings(), path, recursive, missing_ok))

    async def set_xattr(self, path: str, attributes: Mapping[str, Any], *, mode: str = "EITHER") -> None:
        """Async form of :meth:`DCacheHook.set_xattr`.

        :param path: absolute path in dCache's namespace.
        :param attributes: names and values; values are sent as strings.
        :param mode: ``CREATE`` (must not exist yet), ``MODIFY`` (must exist) or ``EITHER``.
        """
        await self._run(ops.set_xattr(await self.aget_settings(), path, attributes, mode))

    async def remove_xattr(self, path: str, names: Iterable[str]) -> None:
        """Async form of :meth:`DCacheHook.remove_xattr`.

        :param path: absolute path in dCache's namespace.
        :param names: attribute names to remove.
        """
        await self._run(ops.remove_xattr(await self.aget_settings(), path, names))

    async def set_labels(self, path: str, labels: Iterable[str], *, replace: bool = False) -> list[str]:
        """Async form of :meth:`DCacheHook.set_labels`.

        :param path: absolute path in dCache's namespace.
        :param labels: labels to add.
        :param replace: also remove the labels not listed.
        """
        return await self._run(ops.set_labels(await self.aget_settings(), path, labels, replace))

    async def remove_labels(self, path: str, labels: Iterable[str]) -> list[str]:
        """Async form of :meth:`DCacheHook.remove_labels`.

        :param path: absolute path in dCache's namespace.
        :param labels: labels to remove.
        """
        return await self._run(ops.remove_labels(await self.aget_settings(), path, labels))

    async def get_labels(self, path: str) -> list[str]:
        """Async form of :meth:`DCacheHook.get_labels`.

        :param path: absolute path in dCache's namespace.
        """
        return await self._run(ops.path_labels(await self.aget_settings(), path))

    async def chmod(self, path: str, mode: int | str) -> None:
        """Async form of :meth:`DCacheHook.chmod`.

        :param path: absolute path in dCache's namespace.
        :param mode: an int (``0o775``) or an octal string (``"775"``, ``"0775"``).
        """
        await self._run(ops.chmod(await self.aget_settings(), path, mode))

    async def chgrp(self, path: str, gid: int | str) -> None:
        """Async form of :meth:`DCacheHook.chgrp`.

        :param path: absolute path in dCache's namespace.
        :param gid: numeric group id.
        """
        await self._run(ops.chgrp(await self.aget_settings(), path, gid))

    async def checksum(self, path: str, algorithms: Iterable[str] = ("adler32", "md5")) -> dict[str, str]:
        """Async form of :meth:`DCacheHook.checksum`.

        :param path: absolute path in dCache's namespace.
        :param algorithms: RFC 3230 names to ask for; ones the file lacks are absent from the result.
        """
        return await self._run(ops.checksum(await self.aget_settings(), path, algorithms))

    # -------------------------------------------------------------------------------- QoS, pins

    async def set_qos(
        self, path: str, target: str | None = None, *, policy: str | None = None, state: int | None = None
    ) -> None:
        """Async form of :meth:`DCacheHook.set_qos`.

        :param path: absolute path in dCache's namespace.
        :param target: ``disk``, ``tape``, ``disk+tape``, ``tape+disk`` or ``volatile``.
        :param policy: a QoS policy name, instead of ``target`` (give exactly one).
        :param state: with ``policy``: the index of the state to start in (default 0).
        """
        await self._run(ops.set_qos(await self.aget_settings(), path, target, policy, state))

    async def qos_classes(self, kind: str = "file") -> list[str]:
        """Async form of :meth:`DCacheHook.qos_classes`.

        :param kind: ``file`` or ``directory``.
        """
        return await self._run(ops.qos_classes(await self.aget_settings(), kind))

    async def qos_capability(self, qos: str, kind: str = "file") -> dict[str, Any]:
        """Async form of :meth:`DCacheHook.qos_capability`.

        :param qos: a name from :meth:`qos_classes`.
        :param kind: ``file`` or ``directory``.
        """
        return await self._run(ops.qos_capability(await self.aget_settings(), qos, kind))

    async def pin(self, path: str, lifetime: float, unit: str = "SECONDS") -> None:
        """Async form of :meth:`DCacheHook.pin`.

        :param path: absolute path in dCache's namespace.
        :param lifetime: how long the pin lasts, in ``unit``.
        :param unit: a Java ``TimeUnit`` name in any case (``NANOSECONDS`` … ``DAYS``); sent upper-case.
        """
        await self._run(ops.pin(await self.aget_settings(), path, lifetime, unit))

    async def unpin(self, path: str) -> None:
        """Async form of :meth:`DCacheHook.unpin`.

        :param path: absolute path in dCache's namespace.
        """
        await self._run(ops.unpin(await self.aget_settings(), path))

    # ------------------------------------------------------------------------------------ bulk

    async def submit_bulk_request(self, activity: str, targets: Iterable[str], **options: Any) -> BulkSubmission:
        """Async form of :meth:`DCacheHook.submit_bulk_request`.

        :param activity: ``PIN``, ``UNPIN``, ``STAGE``, ``RELEASE``, ``DELETE``, ``UPDATE_QOS`` or ``LOG_TARGET``.
        :param targets: paths the activity applies to (at least one).
        :param options: ``arguments`` (the activity's own), ``target_prefix``, ``expand_directories`` (``NONE``,
            ``TARGETS``, ``ALL``), ``cancel_on_failure``, ``clear_on_success``, ``clear_on_failure``.
        """
        return await self._run(ops.submit_bulk_request(await self.aget_settings(), activity, targets, **options))

    async def bulk_request_status(self, request: str) -> BulkRequestInfo:
        """Async form of :meth:`DCacheHook.bulk_request_status`.

        :param request: the request id, or the URL dCache returned for it.
        """
        return await self._run(ops.bulk_request_status(await self.aget_settings(), request))

    async def cancel_bulk_request(self, request: str, paths: Iterable[str] | None = None) -> None:
        """Async form of :meth:`DCacheHook.cancel_bulk_request`.

        :param request: the request id, or the URL dCache returned for it.
        :param paths: targets to cancel; ``None`` cancels the whole request.
        """
        await self._run(ops.cancel_bulk_request(await self.aget_settings(), request, paths))

    async def clear_bulk_request(self, request: str, *, cancel_if_running: bool = False) -> None:
        """Async form of :meth:`DCacheHook.clear_bulk_request`.

        :param request: the request id, or the URL dCache returned for it.
        :param cancel_if_running: cancel the request first if it is still running.
        """
        await self._run(ops.clear_bulk_request(await self.aget_settings(), request, cancel_if_running))

    async def list_bulk_requests(
        self, status: Iterable[str] | None = None, owner: str | None = None, path: str | None = None
    ) -> list[dict[str, Any]]:
        """Async form of :meth:`DCacheHook.list_bulk_requests`.

        :param status: only requests in these states, e.g. ``started``, ``completed``.
        :param owner: only this owner's requests.
        :param path: dCache's ``path`` filter.
        """
        return await self._run(ops.list_bulk_requests(await self.aget_settings(), status, owner, path))

    async def list_labels(self) -> list[str]:
        """Async form of :meth:`DCacheHook.list_labels`.
        """
        return await self._run(ops.list_labels(await self.aget_settings()))

    async def labelled_files(self, label: str, **flags: Any) -> list[NamespaceEntry]:
        """Same contract as :meth:`DCacheHook.labelled_files`.

        :param label: the label to look up.
        :param flags: extras per entry: ``locality``, ``locations``, ``qos``, ``xattr``, ``labels``.
        """
        return await self._run(ops.labelled_files(await self.aget_settings(), label, **flags))

    async def list_archived_bulk_requests(
        self,
        *,
        owner: Iterable[str] | str | None = None,
        activity: Iterable[str] | str | None = None,
        status: Iterable[str] | str | None = None,
        before: datetime | str | None = None,
        after: datetime | str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Same contract as :meth:`DCacheHook.list_archived_bulk_requests`.

        :param owner: one or more owners to filter on.
        :param activity: one or more activities to filter on.
        :param status: one or more final states to filter on.
        :param before: only requests last modified before this (naive: the server's local time).
        :param after: only requests last modified after this (naive: the server's local time).
        :param limit: at most this many summaries.
        """
        return await self._run(ops.list_archived_bulk_requests(
            await self.aget_settings(), owner=owner, activity=activity, status=status, before=before, after=after,
            limit=limit))

    async def archived_bulk_request(self, request: str) -> ArchivedBulkRequest:
        """Same contract as :meth:`DCacheHook.archived_bulk_request`.

        :param request: the request id, or the URL dCache returned for it.
        """
        return await self._run(ops.archived_bulk_request(await self.aget_settings(), request))

    # -------------------------------------------------------------------------- storage events

    async def create_channel(self, client_id: str | None = None) -> str:
        """Async form of :meth:`DCacheHook.create_channel`.

        :param client_id: optional label, so :meth:`list_channels` can find the channel again.
        """
        return await self._run(ops.create_channel(await self.aget_settings(), client_id))

    async def list_channels(self, client_id: str | None = None) -> list[str]:
        """Async form of :meth:`DCacheHook.list_channels`.

        :param client_id: only channels with this client id; ``""`` those without one, ``None`` all.
        """
        return await self._run(ops.list_channels(await self.aget_settings(), client_id))

    async def channel_timeout(self, channel_url: str) -> int:
        """Async form of :meth:`DCacheHook.channel_timeout`.

        :param channel_url: the channel URL as :meth:`create_channel` returned it.
        """
        return await self._run(ops.channel_timeout(await self.aget_settings(), channel_url))

    async def set_channel_timeout(self, channel_url: str, seconds: int) -> None:
        """Async form of :meth:`DCacheHook.set_channel_timeout`.

        :param channel_url: the channel URL as :meth:`create_channel` returned it.
        :param seconds: whole seconds, at least 1.
        """
        await self._run(ops.set_channel_timeout(await self.aget_settings(), channel_url, seconds))

    async def delete_channel(self, channel_url: str) -> None:
        """Async form of :meth:`DCacheHook.delete_channel`.

        :param channel_url: the channel URL as :meth:`create_channel` returned it.
        """
        await self._run(ops.delete_channel(await self.aget_settings(), channel_url))

    async def subscribe_inotify(self, channel_url: str, path: str, flags: Iterable[str] | None = None) -> str:
        """Async form of :meth:`DCacheHook.subscribe_inotify`.

        :param channel_url: the channel URL as :meth:`create_channel` returned it.
        :param path: file or directory to watch (not recursive).
        :param flags: inotify event names, e.g. ``IN_CLOSE_WRITE``; ``None`` means every event.
        """
        return await self._run(ops.subscribe_inotify(await self.aget_settings(), channel_url, path, flags))

    async def subscribe_metronome(
        self,
        channel_url: str,
        *,
        delay: float | None = None,
        frequency: float | None = None,
        message: str | None = None,
        count: int | None = None,
    ) -> str:
        """Async form of :meth:`DCacheHook.subscribe_metronome`.

        :param channel_url: the channel URL as :meth:`create_channel` returned it.
        :param delay: seconds between events.
        :param frequency: events per second, instead of ``delay``.
        :param message: the text each event carries.
        :param count: stop after this many events.
        """
        operation = ops.subscribe_metronome(
            await self.aget_settings(), channel_url, delay=delay, frequency=frequency, message=message, count=count
        )
        return await self._run(operation)

    async def list_subscriptions(self, channel_url: str) -> list[str]:
        """Async form of :meth:`DCacheHook.list_subscriptions`.

        :param channel_url: the channel URL as :meth:`create_channel` returned it.
        """
        return await self._run(ops.list_subscriptions(await self.aget_settings(), channel_url))

    async def unsubscribe(self, subscription_url: str) -> None:
        """Async form of :meth:`DCacheHook.unsubscribe`.

        :param subscription_url: the URL a ``subscribe_*`` call returned.
        """
        await self._run(ops.unsubscribe(await self.aget_settings(), subscription_url))

    async def event_types(self) -> list[str]:
        """Async form of :meth:`DCacheHook.event_types`.
        """
        return await self._run(ops.event_types(await self.aget_settings()))

    async def event_schema(self, event_type: str, part: str = "selector") -> dict[str, Any]:
        """JSON Schema of ``event_type``'s selector (``part="selector"``) or of its events (``"event"``).

        :param event_type: e.g. ``inotify``.
        :param part: ``selector`` or ``event``.
        """
        return await self._run(ops.event_schema(await self.aget_settings(), event_type, part))

    async def stream_events(
        self,
        channel_url: str,
        *,
        last_event_id: str | int | None = None,
        read_timeout: float | None = None,
    ) -> AsyncIterator[ChannelMessage]:
        """Read a channel's SSE stream until the server closes it; reconnecting is the caller's job.

        Pass the ``id`` of the last event processed as ``last_event_id`` to have dCache replay what came
        after it (``SYSTEM`` ``EVENT_LOSS`` if it is no longer in the backlog). ``read_timeout`` bounds
        the wait for the next bytes (``DCacheConnectionError`` when exceeded); ``None`` waits for ever,
        because dCache sends no keep-alives on a quiet channel. A channel that is gone raises
        ``NotFound``, another user's ``PermissionDenied``, anonymous access ``AuthenticationFailed``.
        Close the generator when stopping early (``contextlib.aclosing``) to release the connection.

        :param channel_url: the channel URL as :meth:`create_channel` returned it.
        :param last_event_id: replay what came after this event id.
        :param read_timeout: seconds to wait for the next bytes; ``None`` waits for ever.
        """
        settings = await self.aget_settings()
        call = ops.event_stream_call(settings, channel_url, last_event_id)
        timeout = httpx.Timeout(settings.timeout, read=read_timeout)
        response = await self._request(call.method, call.url, call.headers, timeout=timeout)
        try:
            ops.check_event_stream(self._info(response, b""), call)
            parser = SSEParser()
            try:
                async for chunk in response.aiter_bytes():
                    for event in parser.feed(chunk):
                        yield event
            except httpx.ReadTimeout:
                raise DCacheConnectionError(
                    f"no data on the event stream for {read_timeout} s", method="GET", url=mask_url(call.url)
                ) from None
            except httpx.HTTPError as exc:
                raise DCacheConnectionError(
                    f"event stream interrupted: {mask_url(str(exc)) or type(exc).__name__}",
                    method="GET",
                    url=mask_url(call.url),
                ) from None
        finally:
            await response.aclose()

    # ------------------------------------------------------------------------------------ tape

    async def stage(
        self,
        files: Iterable[str] | Mapping[str, timedelta | int | float | str | None],
        *,
        disk_lifetime: timedelta | int | float | str | None = None,
    ) -> BulkSubmission:
        """Async form of :meth:`DCacheHook.stage`.

        :param files: paths, or a mapping of path to its own disk lifetime.
        :param disk_lifetime: how long the staged copies stay on disk: seconds, ``timedelta`` or ISO-8601
            (``PT1H``).
        """
        return await self._run(ops.stage(await self.aget_settings(), files, disk_lifetime,
                                         endpoint=self._tape))

    async def stage_status(self, request: str) -> StageRequestInfo:
        """Async form of :meth:`DCacheHook.stage_status`.

        :param request: the request id, or the URL dCache returned for it.
        """
        return await self._run(ops.stage_status(await self.aget_settings(), request, endpoint=self._tape))

    async def cancel_stage(self, request: str, paths: Iterable[str]) -> None:
        """Async form of :meth:`DCacheHook.cancel_stage`.

        :param request: the request id, or the URL dCache returned for it.
        :param paths: files of the request to cancel.
        """
        await self._run(ops.cancel_stage(await self.aget_settings(), request, paths, endpoint=self._tape))

    async def delete_stage(self, request: str) -> None:
        """Async form of :meth:`DCacheHook.delete_stage`.

        :param request: the request id, or the URL dCache returned for it.
        """
        await self._run(ops.delete_stage(await self.aget_settings(), request, endpoint=self._tape))

    async def release(self, request: str, paths: Iterable[str]) -> None:
        """Async form of :meth:`DCacheHook.release`.

        :param request: the request id, or the URL dCache returned for it.
        :param paths: files of the request to release.
        """
        await self._run(ops.release(await self.aget_settings(), request, paths, endpoint=self._tape))

    async def tape_api_endpoints(self) -> list[dict[str, Any]]:
        """Async form of :meth:`DCacheHook.tape_api_endpoints`.
        """
        return await self._run(ops.tape_api_endpoints(await self.aget_settings()))

    async def archive_info(self, paths: Iterable[str]) -> list[ArchiveInfo]:
        """Async form of :meth:`DCacheHook.archive_info`.

        :param paths: absolute paths in dCache's namespace.
        """
        return await self._run(ops.archive_info(await self.aget_settings(), paths, endpoint=self._tape))

    # ------------------------------------------------------------------------------- macaroons

    async def mint_macaroon(
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
        """Async form of :meth:`DCacheHook.mint_macaroon`.

        :param path: the macaroon is limited to this path (dCache adds the ``path:`` caveat).
        :param caveats: caveat strings or a :class:`~airflow_dcache.macaroons.caveats.CaveatBuilder`.
        :param activities: allowed activities, e.g. ``DOWNLOAD``, ``LIST``.
        :param validity: lifetime: seconds, ``timedelta`` or an ISO-8601 duration (no weeks).
        :param ip: client addresses or subnets, all alternatives in one caveat.
        :param before: absolute expiry (timezone-aware).
        :param max_upload: largest upload allowed, in bytes.
        """
        operation = ops.mint_macaroon(
            await self.aget_settings(),
            path,
            caveats,
            activities=activities,
            validity=validity,
            ip=ip,
            before=before,
            max_upload=max_upload,
        )
        result = await self._run(operation)
        await amask_secret(result.macaroon)
        return result

    async def presigned_url(
        self,
        path: str,
        activities: Iterable[str] | str,
        validity: timedelta | int | float | str,
        ip: Iterable[str] | str | None = None,
    ) -> str:
        """Async form of :meth:`DCacheHook.presigned_url`.

        :param path: the one file the URL is for.
        :param activities: allowed activities, e.g. ``DOWNLOAD``.
        :param validity: lifetime: seconds, ``timedelta`` or an ISO-8601 duration.
        :param ip: client addresses or subnets allowed to use it.
        """
        result = await self.mint_macaroon(path, activities=activities, validity=validity, ip=ip)
        return result.target_with_macaroon

    # ------------------------------------------------------------------------------------ data

    async def upload(
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
        """Same contract as :meth:`DCacheHook.upload`; file reads run in a worker thread.

        :param source: a local file path or a binary stream.
        :param path: destination in dCache.
        :param checksum: ``adler32``, ``md5``, ``sha-256``, ``sha-512`` or ``none`` (see above).
        :param overwrite: when ``False``, fail if ``path`` exists.
        :param make_parents: create the parent directory first.
        :param xattrs: extended attributes set with the file (``xattr.<name>`` on the PUT URL).
        :param size: bytes to send, when the stream's length cannot be worked out.
        :param chunk_size: bytes per read.
        """
        settings = await self.aget_settings()
        mode = tx.check_mode(checksum)
        path = normalize_path(path)
        if not overwrite:
            await self._run(ops.ensure_not_exists(settings, path))
        if make_parents:
            parent = path.rsplit("/", 1)[0] or "/"
            if parent != "/":
                await self.mkdir(parent)
        with contextlib.ExitStack() as stack:
            if isinstance(source, (str, os.PathLike)):
                stream: IO[bytes] = stack.enter_context(open(source, "rb"))
            else:
                stream = source
            if size is None:
                size = tx.remaining_size(stream)
            md5 = await asyncio.to_thread(tx.precompute_md5, stream, chunk_size) if mode == "md5" else None
            reader = tx.hashing_reader(stream, tx.local_algorithms(mode), size, chunk_size)

            sends = 0

            def body() -> AsyncIterator[bytes]:
                # A factory, so a 307 to a pool can send the body again from the start.
                nonlocal sends
                sends += 1
                if sends > 1:
                    reader.rewind()  # raises for pipes: their first bytes are gone
                return _read_async(reader, chunk_size)

            url = tx.upload_url(settings, path, xattrs)
            headers = tx.upload_headers(mode, md5, size)
            self.log.info("uploading %s bytes to %s", size if size is not None else "?", mask_url(url))
            response = await self._request("PUT", url, headers, body if size != 0 else b"", follow_redirects=True)
            await response.aclose()
            remote = digests_from_headers(response.headers)
        return await self._verify_upload(path, url, reader, mode, remote, md5)

    async def _verify_upload(
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
                remote = {**remote, **(await self.checksum(path, tuple(local)))}
            try:
                verified = tx.verify(local, remote, what=f"upload of {path}", method="PUT", url=url)
            except DCacheError:
                with contextlib.suppress(DCacheError):
                    await self.delete(path, missing_ok=True)
                raise
            if verified is None and md5:
                verified = "content-md5"
            if verified is None:
                self.log.warning("server reported no comparable checksum for %s; upload not verified", path)
        return TransferResult(path=path, size=reader.hasher.size, checksums=local, verified_by=verified)

    async def download(
        self,
        path: str,
        destination: str | os.PathLike[str] | IO[bytes],
        *,
        verify: bool = True,
        chunk_size: int = tx.CHUNK_SIZE,
    ) -> TransferResult:
        """Same contract as :meth:`DCacheHook.download`; file writes run in a worker thread.

        :param path: absolute path in dCache's namespace.
        :param destination: a local file path (written atomically) or a binary stream.
        :param verify: check the received data against the pool's checksum (size only if none).
        :param chunk_size: bytes per read.
        """
        settings = await self.aget_settings()
        path = normalize_path(path)
        url = door_url(settings, path)
        response = await self._request("GET", url, {"Want-Digest": "adler32"}, follow_redirects=True)
        tmp: str | None = None
        try:
            tx.refuse_directory(path, url, str(response.url))
            receiver = tx.DownloadReceiver(path, url, dict(response.headers), verify)
            if isinstance(destination, (str, os.PathLike)):
                target = os.fspath(destination)
                fd, tmp = tempfile.mkstemp(
                    prefix=".dcache-", suffix=".part", dir=os.path.dirname(os.path.abspath(target))
                )
                out: IO[bytes] = os.fdopen(fd, "wb")
            else:
                out = destination
            try:
                async for chunk in response.aiter_bytes(chunk_size):
                    receiver.update(chunk)
                    await asyncio.to_thread(out.write, chunk)
            except httpx.HTTPError as exc:
                raise DCacheConnectionError(
                    f"download interrupted: {mask_url(str(exc))}", method="GET", url=mask_url(url)
                ) from None
            finally:
                if tmp is not None:
                    out.close()
            result = receiver.finish()
            if tmp is not None:
                os.replace(tmp, target)
                tmp = None
        finally:
            await response.aclose()
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        if verify and result.verified_by is None:
            self.log.info("no checksum from the server for %s; size checked only", path)
        return result

    async def read_range(self, path: str, offset: int, length: int) -> bytes:
        """Same contract as :meth:`DCacheHook.read_range`.

        :param path: absolute path in dCache's namespace.
        :param offset: first byte, from 0.
        :param length: at most this many bytes (at least 1).
        """
        read = ops.range_read(await self.aget_settings(), path, offset, length)
        response = await self._request("GET", read.url, read.headers, follow_redirects=True, ok_statuses=(416,))
        try:
            receiver = ops.RangeReceiver(read, self._info(response, b""), str(response.url))
            if not receiver.done:
                async for chunk in response.aiter_bytes(min(tx.CHUNK_SIZE, read.offset + read.length)):
                    if receiver.feed(chunk):
                        break
        except httpx.HTTPError as exc:
            raise DCacheConnectionError(
                f"range read interrupted: {mask_url(str(exc))}", method="GET", url=mask_url(read.url)
            ) from None
        finally:
            await response.aclose()
        return receiver.finish()

    # ------------------------------------------------------------------------ third-party copy

    async def copy_pull(self, remote_url: str, path: str, **options: Any) -> TransferResult:
        """Async form of :meth:`DCacheHook.copy_pull`.

        :param remote_url: absolute URL to fetch.
        :param path: destination in this dCache.
        :param options: ``remote_token``, ``remote_headers``, ``credential`` (``none``, ``gridsite``, ``oidc``),
            ``require_checksum``, ``overwrite``, ``want_digest``.
        """
        settings = await self.aget_settings()
        return await self._copy(tx.copy_request(settings, path, remote_url, direction="pull", **options))

    async def copy_push(self, path: str, remote_url: str, **options: Any) -> TransferResult:
        """Async form of :meth:`DCacheHook.copy_push`.

        :param path: file in this dCache to send.
        :param remote_url: absolute URL to write to.
        :param options: as for :meth:`copy_pull`.
        """
        settings = await self.aget_settings()
        return await self._copy(tx.copy_request(settings, path, remote_url, direction="push", **options))

    async def _copy(self, request: tx.CopyRequest) -> TransferResult:
        for secret in tx.copy_secrets(request):
            await amask_secret(secret)
        self.log.info("third-party copy %s <-> %s", request.local_path, mask_url(request.remote_url))
        response = await self._request(request.method, request.url, request.headers)
        parser = PerfMarkerParser()
        try:
            async for line in response.aiter_lines():
                item = parser.feed(line)
                if isinstance(item, PerfMarker):
                    self.log.info("copy %s: %s", request.local_path, item.describe())
                elif item is not None:
                    break
        except httpx.HTTPError as exc:
            self.log.warning("copy stream broke: %s", mask_url(str(exc)))
        finally:
            await response.aclose()
        return tx.copy_result(request, parser, dict(response.headers), response.status_code)


async def _read_async(reader: tx.HashingReader, chunk_size: int) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(reader.read, chunk_size):
        yield chunk


def _without_cert(settings: ConnectionSettings) -> ConnectionSettings:
    from dataclasses import replace

    return replace(settings, client_cert=None, client_key=None, auth_type=AuthType.NONE)
