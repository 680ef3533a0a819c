"""Typed errors for expected dCache failures.

Operators and sensors catch these by type (``NotFound`` for "not there yet", ``Conflict`` for "already
there") instead of parsing status codes. Each error keeps the server's own message, because dCache puts
the useful part of a failure (``macaroon login denied: …``, ``Checksum mismatch …``) in the reason phrase
or the JSON ``detail``. URLs are stored with ``authz=`` values masked so that an exception message can be
logged safely.
"""

from __future__ import annotations

import re

from airflow.sdk.exceptions import AirflowException, AirflowFailException


class DCacheError(AirflowException):
    """Base of every error this provider raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.method = method
        self.url = url
        super().__init__(self._render())

    def _render(self) -> str:
        where = f"{self.method} {self.url}: " if self.method and self.url else ""
        code = f"{self.status} " if self.status is not None else ""
        return f"{where}{code}{self.message}".strip()

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments would otherwise be lost when the error crosses a process boundary.
        return (_rebuild, (type(self), self.message, self.status, self.method, self.url))


def _rebuild(
    cls: type[DCacheError], message: str, status: int | None, method: str | None, url: str | None
) -> DCacheError:
    return cls(message, status=status, method=method, url=url)


class InvalidConnection(DCacheError):
    """The Airflow connection cannot describe a dCache endpoint; raised before any request is made."""


class DCacheConnectionError(DCacheError):
    """The server could not be reached, or the connection broke (after retries where they apply)."""


class BadRequest(DCacheError):
    """400: malformed request, bad header or caveat, bad checksum header, non-empty directory (REST)."""


class AuthenticationFailed(DCacheError):
    """401: no credential, or the credential (password, token, macaroon) was refused."""


class PermissionDenied(DCacheError):
    """403: authenticated, but namespace permissions or macaroon restrictions forbid the operation."""


class NotFound(DCacheError):
    """404: the path, request or channel does not exist."""


class MethodNotAllowed(DCacheError):
    """405: the method does not apply; WebDAV uses it for MKCOL on an existing path."""


class AlreadyExists(DCacheError):
    """The target exists and the operation does not overwrite (MKCOL 405, MOVE/COPY ``Overwrite: F`` 412)."""


class Conflict(DCacheError):
    """409: conflicts with the namespace state, e.g. a missing parent or an xattr mode violation."""


class PreconditionFailed(DCacheError):
    """412: an ``Overwrite: F`` MOVE or COPY onto an existing target."""


class PayloadTooLarge(DCacheError):
    """413: the upload or request exceeds a size limit (``max-upload`` caveat, too many paths)."""


class LimitExceeded(DCacheError):
    """429: a per-user limit was reached (unfinished bulk requests, event channels)."""


class QuotaExceeded(DCacheError):
    """507: insufficient storage."""


class ServerError(DCacheError):
    """5xx other than 507: the server failed, e.g. ``Server is busy (internal timeout)``."""


class UnexpectedResponse(DCacheError):
    """A reply that does not follow the documented protocol (wrong status, unparsable body)."""


class ChecksumMismatch(DCacheError):
    """The data received or stored does not match the checksum computed on this side."""


class TransferFailed(DCacheError):
    """A third-party copy ended with ``failure: …``; the message is the remote side's reason."""


class VersionChanged(DCacheError, AirflowFailException):
    """The file at a path is no longer the version a step was given (overwritten, moved or deleted).

    Permanent for the step (an ``AirflowFailException``: no retry can make it the old version again);
    the newer version is processed by its own event's run.
    """


#: Client errors that a retry may cure: request timeout and rate limiting.
RETRYABLE_CLIENT_STATUSES = frozenset({408, 429})
#: How a third-party copy reports the remote side's refusal: ``failure: rejected GET: 403 Forbidden``.
_REMOTE_REFUSAL = re.compile(r"\brejected (?:GET|PUT|HEAD|DELETE|MKCOL): (\d{3})\b")


def is_permanent(exc: BaseException) -> bool:
    """Whether retrying ``exc`` cannot help: a refusal, not an outage.

    A 4xx other than 408/429 (bad request, refused credential or permission, not found, conflict,
    too large) — also when the remote door of a third-party copy answered it — a connection that
    cannot describe a dCache endpoint, a changed file version, and an unusable path or one outside
    the allowed roots are permanent; 5xx, 408, 429,
    connection errors and anything else are not.
    """
    from airflow_dcache.paths import InvalidPath, OutsideAllowedRoots

    if isinstance(exc, (VersionChanged, InvalidConnection, InvalidPath, OutsideAllowedRoots)):
        return True
    status = exc.status if isinstance(exc, DCacheError) else None
    if isinstance(exc, TransferFailed) and status is None:
        # the copy itself was accepted; the *remote* door refused it (its status is only in the message)
        match = _REMOTE_REFUSAL.search(exc.message)
        status = int(match.group(1)) if match else None
    if status is not None:
        return 400 <= status < 500 and status not in RETRYABLE_CLIENT_STATUSES
    return False


STATUS_ERRORS: dict[int, type[DCacheError]] = {
    400: BadRequest,
    401: AuthenticationFailed,
    403: PermissionDenied,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    412: PreconditionFailed,
    413: PayloadTooLarge,
    429: LimitExceeded,
    507: QuotaExceeded,
}


def error_class_for_status(status: int) -> type[DCacheError]:
    """Pick the most specific class; unknown 4xx stay ``DCacheError`` so callers can still catch them."""
    if status in STATUS_ERRORS:
        return STATUS_ERRORS[status]
    if status >= 500:
        return ServerError
    return DCacheError


__all__ = [
    "AlreadyExists",
    "AuthenticationFailed",
    "BadRequest",
    "ChecksumMismatch",
    "Conflict",
    "DCacheConnectionError",
    "DCacheError",
    "InvalidConnection",
    "LimitExceeded",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "PreconditionFailed",
    "QuotaExceeded",
    "ServerError",
    "TransferFailed",
    "UnexpectedResponse",
    "VersionChanged",
    "error_class_for_status",
    "is_permanent",
]
