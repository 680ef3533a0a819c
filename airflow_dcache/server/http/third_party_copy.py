"""COPY as HTTP third-party copy: request parsing, and the ``text/perf-marker-stream`` response.

Everything that can be refused is refused before the ``202 Accepted``, with dCache's status codes:
400 for bad headers or URLs, 401 anonymous, 403 not permitted, 412 ``Overwrite: F`` onto an existing
file. Once the 202 and its headers are flushed the status cannot change: the body carries a
performance marker every period and ends with ``success: Created`` or ``failure: <reason>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from airflow_dcache.server.http import digests
from airflow_dcache.server.services.errors import BadRequest
from airflow_dcache.server.services.login import Login
from airflow_dcache.server.services.third_party_copy import (
    RESERVED_HEADERS,
    CopyFailure,
    CopyRequest,
    Direction,
    PreconditionFailed,
    Progress,
    ThirdPartyCopyService,
    check_remote_url,
    marker_text,
)

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/perf-marker-stream"
TRANSFER_HEADER = "transferheader"
CREDENTIALS = ("none", "gridsite", "oidc")


def _bool_header(request: web.Request, name: str, default: bool) -> bool:
    raw = request.headers.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value not in ("true", "false"):
        raise BadRequest(f"Bad {name} header: {raw[:20]!r} (expected true or false)")
    return value == "true"


def _transfer_headers(request: web.Request) -> tuple[tuple[str, str], ...]:
    """``TransferHeader<Name>: value`` → ``(<Name>, value)``, prefix matched case-insensitively."""
    forwarded = []
    for name, value in request.headers.items():
        if not name.lower().startswith(TRANSFER_HEADER):
            continue
        target = name[len(TRANSFER_HEADER):]
        if not target:
            raise BadRequest("Empty header name after the TransferHeader prefix")
        if target.lower() in RESERVED_HEADERS:
            raise BadRequest(f"{name} is not allowed: {target} is controlled by the server")
        forwarded.append((target, value))
    return tuple(forwarded)


def parse_copy(request: web.Request, path: str, trailing: bool) -> CopyRequest:
    """The COPY headers as a :class:`CopyRequest`; any malformed one is a 400 with a precise message."""
    source, destination = request.headers.get("Source"), request.headers.get("Destination")
    if source and destination:
        raise BadRequest("COPY request contains both Source and Destination headers")
    if not source and not destination:
        raise BadRequest("COPY request is missing both Source and Destination headers")
    remote = (source or destination or "").strip()
    if destination and remote.startswith("/"):
        # An ordinary WebDAV COPY within this server, which this service does not offer.
        raise web.HTTPNotImplemented(reason="Local COPY is not supported; use an absolute remote URL "
                                            "for third-party copy")
    check_remote_url(remote)

    credential = request.headers.get("Credential", "none").strip().lower()
    if credential not in CREDENTIALS:
        raise BadRequest(f"Bad Credential header: {credential[:20]!r} (expected none, gridsite or oidc)")
    if credential != "none":
        raise BadRequest(f"Credential: {credential} (delegation) is not supported by this server; use "
                         "Credential: none and pass the remote's credentials in TransferHeaderAuthorization")
    overwrite = request.headers.get("Overwrite", "T").strip().upper()
    if overwrite not in ("T", "F"):
        raise BadRequest(f"Bad Overwrite header: {overwrite[:10]!r} (expected T or F)")
    if source and trailing:
        raise BadRequest(f"Cannot copy into a collection URL: {path}/")
    return CopyRequest(
        direction=Direction.PULL if source else Direction.PUSH, path=path, remote=remote,
        transfer_headers=_transfer_headers(request),
        require_checksum=_bool_header(request, "RequireChecksumVerification", True),
        overwrite=overwrite == "T", client=request.remote or "",
    )


class ThirdPartyCopyHandler:
    """The door's COPY with a remote ``Source`` or ``Destination``."""

    def __init__(self, service: ThirdPartyCopyService) -> None:
        self.service = service

    async def copy(self, request: web.Request, login: Login, path: str, trailing: bool) -> web.StreamResponse:
        req = parse_copy(request, path, trailing)
        try:
            entry = self.service.authorise(login, req)
        except PreconditionFailed as err:
            raise web.HTTPPreconditionFailed(reason=err.message) from None
        await self.service.check_host(req.remote)

        headers = {"Content-Type": CONTENT_TYPE, "Cache-Control": "no-cache"}
        if req.direction is Direction.PUSH and entry is not None:
            headers.update(digests.response_headers(request.headers, entry.inode))
        response = web.StreamResponse(status=202, reason="Accepted", headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)  # the headers go out now, before any transfer work

        progress = Progress()
        source = entry if req.direction is Direction.PUSH else None
        task = asyncio.create_task(self.service.run(login, req, progress, source))
        period = self.service.settings.marker_period
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=period)
                if not task.done():
                    await response.write(marker_text(progress).encode())
            final = self._final_line(task)
            await response.write(final.encode())
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            # The client went away (or the server is stopping): abandon the copy. A pull's upload
            # is aborted with it, so nothing half-written becomes visible.
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise
        return response

    @staticmethod
    def _final_line(task: asyncio.Task[None]) -> str:
        err = task.exception()
        if err is None:
            return "success: Created\n"
        if isinstance(err, CopyFailure):
            return f"failure: {err.message}\n"
        log.error("third-party copy failed unexpectedly", exc_info=err)
        return "failure: internal error during the transfer\n"


__all__ = ["ThirdPartyCopyHandler", "parse_copy"]
