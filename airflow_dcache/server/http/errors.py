"""Mapping service errors to HTTP: dCache's status codes, a reason phrase and a JSON body.

The frontend answers ``{"status": "404", "title": ..., "detail": ...}`` like dCache's
ErrorResponseProvider; the door puts the message in the reason phrase, as dCache does, and adds
the same JSON body so scripts get a precise message either way. Unexpected exceptions become a
generic 500 without internals; the traceback goes to the server log only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web

from airflow_dcache.server.http.paths import PathTooLong
from airflow_dcache.server.services import errors as e

log = logging.getLogger(__name__)

CHALLENGE = 'Basic realm="dCache"'

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_STATUS: list[tuple[type[e.ServiceError], int]] = [
    (PathTooLong, 414),
    (e.NotAuthenticated, 401),
    (e.PermissionDenied, 403),
    (e.NotFound, 404),
    (e.NotAllowed, 405),
    (e.AlreadyExists, 409),
    (e.Conflict, 409),
    (e.PayloadTooLarge, 413),
    (e.TooManyRequests, 429),
    (e.InsufficientStorage, 507),
    (e.BadRequest, 400),
]


def status_for(error: e.ServiceError) -> int:
    for cls, status in _STATUS:
        if isinstance(error, cls):
            return status
    return 400


def _reason(message: str) -> str:
    """A reason phrase must be one latin-1 line; bounded, yet long enough for a checksum-mismatch text
    that lists several SHA-512 values (clients such as gfal2 show only the reason)."""
    text = " ".join(message.split())[:1024]
    return text.encode("latin-1", "replace").decode("latin-1")


def error_response(status: int, message: str, *, reason: bool = False,
                   headers: dict[str, str] | None = None, suppress_challenge: bool = False) -> web.Response:
    """The error as dCache renders it.

    A 401 carries exactly one challenge, ``WWW-Authenticate: Basic realm="dCache"``, as dCache's
    AuthenticationHandler sets it: clients such as davix (ROOT, gfal2) give up on a single header that
    lists several schemes. With ``Suppress-WWW-Authenticate`` in the request (browser scripts that
    must not trigger a password dialog) the challenge is left out and ``Suppress-WWW-Authenticate:
    suppressed`` is answered instead, also as dCache does.
    """
    title = HTTPStatus(status).phrase
    body = json.dumps({"status": str(status), "title": title, "detail": message})
    response = web.Response(status=status, text=body, content_type="application/json",
                            reason=_reason(message) if reason else None, headers=headers)
    if status == 401:
        if suppress_challenge:
            response.headers["Suppress-WWW-Authenticate"] = "suppressed"
        else:
            response.headers["WWW-Authenticate"] = CHALLENGE
    return response


def _suppressed(request: web.Request) -> bool:
    return "Suppress-WWW-Authenticate" in request.headers


def error_middleware(*, door: bool, status_override: Callable[[e.ServiceError], int | None] | None = None):
    """Build the middleware; ``door`` puts messages into the reason phrase as the WebDAV door does."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except e.ServiceError as err:
            status = (status_override(err) if status_override else None) or status_for(err)
            response = error_response(status, err.message, reason=door, suppress_challenge=_suppressed(request))
            challenge = getattr(err, "challenge", None)  # a refused JWT: Bearer error="invalid_token"
            if challenge and "WWW-Authenticate" in response.headers:
                response.headers["WWW-Authenticate"] = challenge
            return response
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(exc.status, exc.reason or HTTPStatus(exc.status).phrase, reason=door,
                                  headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
                                  suppress_challenge=_suppressed(request))
        except (ConnectionResetError, BrokenPipeError):
            raise
        except Exception:
            log.exception("unexpected error handling %s %s", request.method, request.path)
            return error_response(500, "Internal server error", reason=door)

    return middleware
