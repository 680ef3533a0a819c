"""Domain errors raised by services; the HTTP layer maps each to a status code.

Services never know about HTTP. Each error carries the message the client sees, so handlers
can render it as a dCache-style reason phrase or a frontend JSON error body.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every expected failure; ``message`` is safe to show to the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ServiceError):
    """Malformed input (bad path, bad JSON, unknown action, bad header value)."""


class NotAuthenticated(ServiceError):
    """No credential, or a credential that was refused (bad password, invalid macaroon)."""


class PermissionDenied(ServiceError):
    """Authenticated, but the namespace permissions or the credential's restrictions forbid it."""


class NotFound(ServiceError):
    """The path or object does not exist."""


class AlreadyExists(ServiceError):
    """The target exists and the operation does not overwrite."""


class Conflict(ServiceError):
    """The operation conflicts with the namespace state (missing parent, non-empty directory)."""


class NotEmpty(Conflict):
    """A directory still has entries (the frontend reports this as 400, the door as 409)."""


class NotAllowed(ServiceError):
    """The method is not allowed on this kind of object (MKCOL on an existing path)."""


class PayloadTooLarge(ServiceError):
    """The upload exceeds a size limit (``max-upload`` caveat, configured maximum)."""


class InsufficientStorage(ServiceError):
    """The pool's disk (or quota) is full: the upload was refused and nothing was kept."""


class TooManyRequests(ServiceError):
    """A per-user limit was reached."""
