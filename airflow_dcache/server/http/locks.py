"""WebDAV LOCK/UNLOCK as dCache answers them: a fake lock with zero lifetime.

dCache implements locking only because macOS Finder (and davfs2, Cyberduck) refuse to write without
it. Nothing is ever locked: each LOCK is granted with a fresh token and a ``Second-0`` timeout, and
UNLOCK of any token succeeds. The request body is still parsed, so a malformed one gets a 400 rather
than a lock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from xml.sax.saxutils import escape

from airflow_dcache.server.http.propfind import DAV
from airflow_dcache.server.http.xmlbody import parse_xml_body
from airflow_dcache.server.services.errors import BadRequest

TIMEOUT = "Second-0"


@dataclass(frozen=True)
class LockRequest:
    scope: str  # "exclusive" or "shared"
    owner: str  # the owner element's text (a refresh carries none)
    depth: str  # "0" or "infinity"


def parse_lock(body: bytes, depth_header: str | None) -> LockRequest:
    """A ``DAV:lockinfo`` body (empty for a lock refresh) and the ``Depth`` header (0 or infinity)."""
    depth = (depth_header or "infinity").strip().lower()
    if depth not in ("0", "infinity"):
        raise BadRequest(f"Depth must be 0 or infinity for LOCK, got {depth_header!r}")
    if not body.strip():
        return LockRequest("exclusive", "", depth)
    root = parse_xml_body(body, "LOCK")
    if root.tag != f"{{{DAV}}}lockinfo":
        raise BadRequest("LOCK body must be a DAV:lockinfo element")
    scope_el = root.find(f"{{{DAV}}}lockscope")
    scopes = [child.tag for child in scope_el] if scope_el is not None else []
    if scopes not in ([f"{{{DAV}}}exclusive"], [f"{{{DAV}}}shared"]):
        raise BadRequest("DAV:lockinfo needs a lockscope of exclusive or shared")
    type_el = root.find(f"{{{DAV}}}locktype")
    if type_el is None or [child.tag for child in type_el] != [f"{{{DAV}}}write"]:
        raise BadRequest("DAV:lockinfo needs a locktype of write (the only lock type WebDAV defines)")
    owner_el = root.find(f"{{{DAV}}}owner")
    owner = "".join(owner_el.itertext()).strip() if owner_el is not None else ""
    return LockRequest(scopes[0].rsplit("}", 1)[1], owner, depth)


def new_token() -> str:
    return f"opaquelocktoken:{uuid.uuid4()}"


def render_lock(request: LockRequest, token: str, root_href: str) -> bytes:
    owner = f"<D:owner>{escape(request.owner)}</D:owner>" if request.owner else ""
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<D:prop xmlns:D="DAV:"><D:lockdiscovery><D:activelock>'
        f"<D:locktype><D:write/></D:locktype><D:lockscope><D:{request.scope}/></D:lockscope>"
        f"<D:depth>{request.depth}</D:depth>{owner}<D:timeout>{TIMEOUT}</D:timeout>"
        f"<D:locktoken><D:href>{escape(token)}</D:href></D:locktoken>"
        f"<D:lockroot><D:href>{escape(root_href)}</D:href></D:lockroot>"
        "</D:activelock></D:lockdiscovery></D:prop>"
    ).encode()


def parse_lock_token(header: str | None) -> str:
    """UNLOCK's ``Lock-Token: <opaquelocktoken:…>`` (RFC 4918 §10.5: a Coded-URL in angle brackets)."""
    value = (header or "").strip()
    if not (value.startswith("<") and value.endswith(">") and len(value) > 2):
        raise BadRequest("UNLOCK needs a Lock-Token header of the form <opaquelocktoken:...>")
    return value[1:-1]
