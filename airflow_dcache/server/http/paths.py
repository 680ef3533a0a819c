"""Turning request targets into namespace paths, rejecting every traversal trick up front.

We decode the raw (percent-encoded) target ourselves, so ``%2e%2e``, ``%2f``, ``%00`` and friends
are judged after decoding, exactly once, and never reach the services. Whatever the spelling, the
path the caveat and permission checks see is the one string the operation then acts on.

Two rules, one per kind of endpoint:

- **The WebDAV door and the pool mover** (:func:`parse_raw_path`) decode segment by segment and
  refuse an encoded ``/``, empty segments (``//``), ``.`` and ``..``: one name, one spelling.
  That is stricter than dCache's door. There Jetty 9.4 (``HttpCompliance.RFC7230``, the default
  that ``org.dcache.util.jetty.ConnectorFactoryBean`` leaves in place) lets ``%2F`` and ``%2e%2e``
  through; Milton's ``UrlAdapterImpl.getUrl`` decodes the whole path at once
  (``HttpManager.decodeUrl`` → ``Utils.decodePath``), so ``%2F`` becomes a separator; and
  ``DcacheResourceFactory.getResource`` → ``PathMapper.asDcachePath`` → ``FsPath.chroot`` skips
  empty and ``.`` segments and resolves ``..`` without leaving the root. Being stricter only turns
  odd spellings into 400s. Clients need not send them (they produce ``/a/b``), so the door stays
  as it is.
- **The frontend's REST ``{path}`` parameter** (:func:`rest_path`, for ``/namespace/{path}`` and
  ``/labels/{path}``) follows dCache's frontend. There Jersey matches ``@Path("{path : .*}")``,
  hands ``@PathParam`` over decoded once, and ``PathMapper.asDcachePath`` resolves it with
  ``FsPath.chroot``. So ``/namespace/%2Fdata%2Fx`` (``quote(path, safe="")``, ``jq @uri``) and
  ``/namespace//data/x`` both name ``/data/x``. The path is decoded exactly once (``%252F`` stays a
  literal ``%2F`` in a name), and empty segments collapse. Unlike dCache, ``.`` and ``..``
  segments (``%2e%2e``, ``a%2F..%2Fb``) are refused with 400 instead of being resolved. The
  normalised string is what every check and the operation see.

Paths inside JSON bodies (``mv`` destinations, bulk and tape targets) are never percent-decoded, as
in dCache: :func:`normalise_path` for the frontend's own fields, the services' ``join_under`` for
bulk and tape targets (like the bulk service's ``FsPath.create``).
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


def check_name(name: str, *, backslash: bool = False) -> str:
    """One literal (already decoded) path component: what the namespace may store as a name.

    ``backslash``: allow ``\\`` (label names may hold one; namespace names may not, here).
    """
    if name in ("", ".", ".."):
        raise BadRequest("Path traversal is not allowed: '.' and '..' segments are rejected" if name
                         else "Empty name")
    if "/" in name or ("\\" in name and not backslash):
        raise BadRequest("A name must not contain '/' or '\\'")
    _check_characters(name)
    if len(name.encode()) > MAX_NAME_BYTES:
        raise BadRequest(f"Path component longer than {MAX_NAME_BYTES} bytes")
    return name


def _check_characters(text: str) -> None:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise BadRequest("Control characters (including NUL) are not allowed in paths")


def normalise_path(path: str, *, backslash: bool = False) -> str:
    """A decoded path as the frontend resolves its ``{path}``: empty segments collapse, nothing else.

    ``/a//b/`` is ``/a/b`` and ``""`` is ``/``. ``.`` and ``..`` segments are refused, not resolved,
    so a path never changes meaning after it has been checked. So are control characters and
    backslashes (the door refuses those too). The text is not percent-decoded.
    """
    _check_characters(path)
    if "\\" in path and not backslash:
        raise BadRequest("'\\' is not allowed in paths")
    parts = [p for p in path.split("/") if p]
    for part in parts:
        check_name(part, backslash=backslash)
    result = "/" + "/".join(parts)
    if len(result.encode()) > MAX_PATH_BYTES:
        raise PathTooLong(f"Path longer than {MAX_PATH_BYTES} bytes")
    return result


def rest_path(raw: str, *, backslash: bool = False) -> str:
    """The frontend's REST ``{path}`` from its raw, percent-encoded form: decoded exactly once, then
    :func:`normalise_path`. ``%2F`` and ``//`` work as in dCache, and ``%252F`` is a literal ``%2F``."""
    if len(raw) > 3 * MAX_PATH_BYTES:
        raise PathTooLong(f"Path longer than {MAX_PATH_BYTES} bytes")
    try:
        decoded = unquote(raw, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadRequest(f"Path is not valid UTF-8: {raw[:64]!r}") from None
    return normalise_path(decoded, backslash=backslash)


def raw_tail(raw_path: str, prefix_segments: int) -> str:
    """What follows the route's first ``prefix_segments`` segments of a raw request path (``""`` or
    ``/…``), still percent-encoded.

    The router matched those segments after decoding them, so a prefix spelled ``/api/v1/%6Eamespace``
    is as long as it is written, not as ``/api/v1/namespace``. An encoded ``/`` never ends a prefix
    segment (aiohttp does not route ``/api/v1/namespace%2Fx`` here).
    """
    parts = raw_path.split("/", prefix_segments + 1)
    return "/" + parts[prefix_segments + 1] if len(parts) > prefix_segments + 1 else ""
