"""Turning request targets into namespace paths, rejecting every traversal trick up front.

We decode each segment ourselves from the raw (percent-encoded) target, so ``%2e%2e``, ``%2f``,
``%00`` and friends are judged after decoding, exactly once, and never reach the services.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from airflow_dcache.server.services.errors import BadRequest

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096


class PathTooLong(BadRequest):
    """Mapped to 414 by the handlers."""


def _decode_segment(raw: str) -> str:
    try:
        seg = unquote(raw, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadRequest(f"Path segment is not valid UTF-8: {raw[:64]!r}") from None
    if seg in (".", ".."):
        raise BadRequest("Path traversal is not allowed: '.' and '..' segments are rejected")
    if "/" in seg or "\\" in seg:
        raise BadRequest("Encoded '/' or '\\' in a path segment is not allowed")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in seg):
        raise BadRequest("Control characters (including NUL) are not allowed in paths")
    if len(seg.encode()) > MAX_NAME_BYTES:
        raise BadRequest(f"Path component longer than {MAX_NAME_BYTES} bytes")
    return seg


def parse_raw_path(raw: str) -> tuple[str, bool]:
    """Validate a raw, percent-encoded absolute path; return (decoded path, had trailing slash).

    Empty segments (``//``) are refused rather than collapsed, so two spellings never name the
    same file and a caveat check can never be sidestepped by an alternate spelling.
    """
    if len(raw) > 3 * MAX_PATH_BYTES:
        raise PathTooLong(f"Path longer than {MAX_PATH_BYTES} bytes")
    if not raw.startswith("/"):
        raise BadRequest("Path must be absolute")
    trailing = raw.endswith("/") and raw != "/"
    body = raw[1:-1] if trailing else raw[1:]
    if body == "":
        return "/", False
    segments = [_decode_segment(s) for s in body.split("/")] if "//" not in raw else None
    if segments is None or "" in segments:
        raise BadRequest("Empty path segment ('//') is not allowed")
    path = "/" + "/".join(segments)
    if len(path.encode()) > MAX_PATH_BYTES:
        raise PathTooLong(f"Path longer than {MAX_PATH_BYTES} bytes")
    return path, trailing


def path_from_url(value: str) -> str:
    """Path part of a ``Destination`` header, which may be an absolute URL or an absolute path."""
    try:
        parts = urlsplit(value)  # raises ValueError for e.g. "http://[::1" (an unclosed IPv6 bracket)
    except ValueError as err:
        raise BadRequest(f"Malformed Destination header: {err}") from None
    raw = parts.path if (parts.scheme or parts.netloc) else value.split("?", 1)[0]
    return parse_raw_path(raw or "/")[0]
