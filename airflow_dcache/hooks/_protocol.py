"""Transport-independent pieces of the dCache wire protocol: credentials, redirects, retries, errors.

Both hooks execute the same requests through different HTTP clients; everything that decides *what* is
sent and *how a reply is read* lives here as pure functions, so the two clients differ only in I/O.
URLs are built by the public :mod:`airflow_dcache.hooks.urls`, token files read by
:mod:`airflow_dcache.hooks.token_file`.
"""

from __future__ import annotations

import base64
import email.utils
import json
import os
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any
from urllib.parse import urljoin, urlsplit

from airflow_dcache.exceptions import (
    AlreadyExists,
    DCacheError,
    InvalidConnection,
    UnexpectedResponse,
    error_class_for_status,
)
from airflow_dcache.hooks._settings import AuthType, ConnectionSettings
from airflow_dcache.hooks.urls import mask_url, same_origin

MACAROON_REQUEST_TYPE = "application/macaroon-request"
# Safe to repeat after a dropped connection or a 5xx; bodies of PUT/POST/COPY are streams we cannot replay.
RETRY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PROPFIND"})
RETRY_STATUSES = frozenset({500, 502, 503, 504})
BACKOFF_FACTOR = 0.5
BACKOFF_MAX = 30.0
#: The longest single wait a server's ``Retry-After`` may impose; a longer ask fails the call instead.
RETRY_AFTER_MAX = 60.0
MAX_REDIRECTS = 5


# ------------------------------------------------------------------------------------ credentials


def auth_headers(settings: ConnectionSettings, token: str | None = None, *, elevated: bool = False) -> dict[str, str]:
    """The ``Authorization`` header for the configured scheme; ``token`` overrides for token files.

    Roles a user holds are inactive in dCache until the login asserts them. The configured ``roles``
    go out as a ``Roles`` header only for an ``elevated`` request (a metadata change a plain login was
    refused), or on every request with the extra ``assert_roles: always``; a macaroon carries none.
    """
    kind = settings.auth_type
    asserting = settings.roles and kind is not AuthType.MACAROON and (elevated or settings.roles_always)
    headers = {"Roles": ",".join(settings.roles)} if asserting else {}
    if kind is AuthType.BASIC:
        raw = f"{settings.login or ''}:{settings.password or ''}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
    elif kind in (AuthType.BEARER, AuthType.MACAROON, AuthType.TOKEN_FILE):
        value = token if token is not None else settings.token
        if not value:
            raise DCacheError(f"auth_type {kind.value} has no token")
        headers["Authorization"] = f"Bearer {value}"
    return headers  # x509 authenticates in the TLS handshake; none is anonymous


def may_elevate(call: Any, settings: ConnectionSettings) -> bool:
    """Whether a refused call is sent again asserting the connection's roles (see ``Call.elevate``)."""
    return bool(getattr(call, "elevate", False) and settings.roles and not settings.roles_always
                and settings.auth_type is not AuthType.MACAROON)


def elevation_message(call: Any, settings: ConnectionSettings) -> str:
    """The log line of an elevation: which role, for which request (no secret: URLs are masked)."""
    return (f"asserting role(s) {','.join(settings.roles)} for {call.method} {mask_url(call.url)}: "
            "a plain login was refused (403)")


def client_cert(settings: ConnectionSettings) -> str | tuple[str, str] | None:
    """The requests-style ``cert`` argument; a proxy certificate carries its key in the same file."""
    if settings.auth_type is not AuthType.X509 and not settings.client_cert:
        return None
    if not settings.client_cert:
        return None
    if settings.client_key:
        return (os.path.expanduser(settings.client_cert), os.path.expanduser(settings.client_key))
    return os.path.expanduser(settings.client_cert)


def requests_verify(settings: ConnectionSettings) -> bool | str:
    if not settings.verify:
        return False
    return os.path.expanduser(settings.ca_bundle) if settings.ca_bundle else True


def check_tls_files(settings: ConnectionSettings) -> None:
    """Name a missing CA bundle or certificate up front instead of failing inside the TLS stack."""
    for label, path in (
        ("ca_bundle", settings.ca_bundle if settings.verify else None),
        ("client_cert", settings.client_cert),
        ("client_key", settings.client_key),
    ):
        if path and not os.access(os.path.expanduser(path), os.R_OK):
            raise InvalidConnection(f"{label} file {path!r} does not exist or is not readable on this host")


def ssl_context(settings: ConnectionSettings) -> ssl.SSLContext:
    """One SSL context for httpx (which deprecates path arguments) with the same meaning as requests'."""
    check_tls_files(settings)
    try:
        return _ssl_context(settings)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidConnection(f"cannot load the TLS files of the connection: {exc}") from None


def _ssl_context(settings: ConnectionSettings) -> ssl.SSLContext:
    if settings.verify:
        ctx = ssl.create_default_context(cafile=os.path.expanduser(settings.ca_bundle) if settings.ca_bundle else None)
    else:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    cert = client_cert(settings)
    if isinstance(cert, tuple):
        ctx.load_cert_chain(cert[0], cert[1])
    elif cert:
        ctx.load_cert_chain(cert)
    return ctx


# -------------------------------------------------------------------------------------- redirects


@dataclass(frozen=True)
class Hop:
    """Where to go after a 3xx, and whether the original credentials may come along."""

    method: str
    url: str
    keep_credentials: bool
    keep_body: bool


def next_hop(method: str, url: str, status: int, location: str | None) -> Hop:
    """Follow dCache's redirects: GET → pool (302 or 307), PUT → pool (307), directory → trailing ``/``.

    307/308 keep the method and body; 301-303 turn a non-GET into GET as browsers and RFC 9110 do.
    """
    if not location:
        raise UnexpectedResponse(f"redirect {status} without Location", status=status, method=method, url=url)
    target = urljoin(url, location.strip())
    if urlsplit(target).scheme not in ("http", "https"):
        raise UnexpectedResponse(f"redirect to unsupported URL scheme: {mask_url(target)}", status=status)
    keep_method = status in (307, 308) or method in ("GET", "HEAD")
    return Hop(
        method=method if keep_method else "GET",
        url=target,
        keep_credentials=same_origin(url, target),
        keep_body=keep_method and status in (307, 308),
    )


def backoff_delay(attempt: int) -> float:
    """Exponential backoff (0.5 s, 1 s, 2 s …) capped, for the retry loop of the async client."""
    return float(min(BACKOFF_MAX, BACKOFF_FACTOR * (2**attempt)))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` asks for (delta-seconds or an HTTP-date, RFC 9110 §10.2.3); None if unreadable.

    A date in the past means "now" (0); garbage is ignored rather than trusted or raised.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else time.time()
    return max(0.0, when.timestamp() - current)


def call_deadline(settings: ConnectionSettings) -> float:
    """The monotonic time after which a call stops waiting out ``Retry-After``/backoff: as long as every
    allowed attempt timing out would take, so retries never make a call slower than its worst case."""
    return time.monotonic() + settings.timeout * (settings.retries + 1)


def retry_wait(status: int, headers: Mapping[str, str], method: str, attempt: int, retries: int,
               remaining: float) -> float | None:
    """How long to wait before sending a refused request again, or None to fail now.

    - 413 never: a limit (targets per bulk request, upload size) does not move by waiting.
    - 429 only with ``Retry-After``: dCache's rate limiter sends one and refused the request before
      doing anything, so any method may go again; its bulk quota (unfinished requests per user) sends
      none and does not clear in seconds.
    - 503 and the other retryable 5xx: idempotent methods only, after ``Retry-After`` or the backoff.

    A wait longer than :data:`RETRY_AFTER_MAX` or than the call has left (``remaining``) is not made.
    """
    if status == 413 or attempt >= retries:
        return None
    after = parse_retry_after(_header(headers, "retry-after"))
    if status == 429:
        if after is None:
            return None
        delay = after
    elif status in RETRY_STATUSES and method in RETRY_METHODS:
        delay = after if after is not None else backoff_delay(attempt)
    else:
        return None
    return delay if delay <= min(RETRY_AFTER_MAX, remaining) else None


# ----------------------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class ResponseInfo:
    """What error mapping needs from any client's response object."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes = field(default=b"", repr=False)


def error_message(info: ResponseInfo) -> str:
    """The server's own explanation, wherever this dCache component put it.

    Frontend: ``{"status","title","detail"}`` or legacy ``{"errors":[{"message","status"}]}``; tape
    cancel uses ``title``/``detail`` *headers*; WebDAV puts its text in the reason phrase.
    """
    parsed = _json_or_none(info.body)
    if isinstance(parsed, dict):
        detail = parsed.get("detail")
        title = parsed.get("title")
        if detail or title:
            return _join(str(title) if title else None, str(detail) if detail else None)
        errors = parsed.get("errors")
        if isinstance(errors, list):
            messages = [str(e.get("message")) for e in errors if isinstance(e, dict) and e.get("message")]
            if messages:
                return "; ".join(messages)
        for key in ("message", "error", "msg"):
            if parsed.get(key):
                return str(parsed[key])
    header_title = _header(info.headers, "title")
    header_detail = _header(info.headers, "detail")
    if header_title or header_detail:
        return _join(header_title, header_detail)
    if info.reason:
        return info.reason
    text = _plain_text(info.body)
    return text or f"HTTP {info.status}"


def _join(title: str | None, detail: str | None) -> str:
    if title and detail and detail.lower() != title.lower() and not detail.startswith(title):
        return f"{title}: {detail}"
    return detail or title or ""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _json_or_none(body: bytes) -> Any:
    if not body or body.lstrip()[:1] not in (b"{", b"["):
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _plain_text(body: bytes) -> str:
    """A short message from an HTML or text body, for servers that leave the reason phrase empty."""
    text = body[:2000].decode("utf-8", "replace")
    title = re.search(r"(?is)<title>(.*?)</title>", text)
    if title:
        text = title.group(1)
    text = re.sub(r"<[^>]+>", " ", text)
    return " ".join(text.split())[:300]


def error_for(info: ResponseInfo, method: str, url: str, *, exists: bool = False) -> DCacheError:
    """Build the typed exception for an unsuccessful reply; the URL is masked before it is stored.

    ``exists`` marks a status the caller knows to mean "target already exists" (MKCOL 405, MOVE 412).
    """
    message = error_message(info)
    cls = AlreadyExists if exists else error_class_for_status(info.status)
    return cls(message, status=info.status, method=method, url=mask_url(url))


def parse_json(info: ResponseInfo, method: str, url: str) -> Any:
    """Decode a JSON success body, turning garbage into a typed error instead of a traceback."""
    try:
        return json.loads(info.body) if info.body else None
    except ValueError:
        raise UnexpectedResponse("response is not JSON", status=info.status, method=method, url=mask_url(url)) from None
