"""URLs of dCache paths for one connection: the WebDAV door, the REST frontend, ``.well-known``.

Public because operators, the function runner and the UI build links and pre-authorised URLs the same
way the hooks address requests; every path goes through :func:`allowed_path`, so a URL is never built
for a path outside the connection's (or hook's) allowed roots.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from airflow_dcache.hooks._settings import ConnectionSettings
from airflow_dcache.paths import OutsideAllowedRoots, clean_path, within

__all__ = ["allowed_path", "api_url", "door_url", "mask_url", "namespace_url", "normalize_path", "quote_path",
           "same_origin", "well_known_url"]

_MASK = "***"
_AUTHZ_RE = re.compile(r"(?i)([?&]authz=)[^&#\s\"'<>]*")


def quote_path(path: str) -> str:
    """Percent-encode a dCache path; keep ``/`` so the hierarchy survives, encode everything else."""
    if not path.startswith("/"):
        path = "/" + path
    return quote(path, safe="/-._~!$&'()*+,;=:@")


def normalize_path(path: str) -> str:
    """Absolute, no trailing slash (except root), no ``//``: dCache treats these as the same path.

    The one check of :func:`airflow_dcache.paths.clean_path`: ``..``, control characters and
    leading/trailing whitespace are refused, never resolved or stripped.
    """
    if isinstance(path, str) and path.strip() and not path.startswith("/"):
        path = "/" + path  # the hooks' API takes paths relative to the namespace root too
    return clean_path(path, field="path")


def allowed_path(settings: ConnectionSettings, path: str) -> str:
    """:func:`normalize_path`, refusing a path outside the connection's / hook's ``allowed_roots``.

    Every request that names a path goes through here (URLs and JSON bodies alike), so a hook made
    for a pipeline with allowed roots cannot act outside them, whichever operator or task calls it.
    """
    clean = normalize_path(path)
    if settings.allowed_roots and not within(clean, settings.allowed_roots):
        raise OutsideAllowedRoots("path", clean, settings.allowed_roots)
    return clean


def door_url(settings: ConnectionSettings, path: str, query: Mapping[str, Any] | None = None) -> str:
    """URL of ``path`` on the WebDAV door (prefix of the door URL included)."""
    url = settings.door_url + quote_path(allowed_path(settings, path))
    return _with_query(url, query)


def api_url(settings: ConnectionSettings, endpoint: str, query: Mapping[str, Any] | None = None) -> str:
    """URL of a REST endpoint such as ``namespace/data/x`` or ``bulk-requests``."""
    return _with_query(settings.api_url + "/" + endpoint.lstrip("/"), query)


def namespace_url(settings: ConnectionSettings, path: str, query: Mapping[str, Any] | None = None) -> str:
    path = allowed_path(settings, path)
    endpoint = "namespace" + ("" if path == "/" else quote_path(path))
    return api_url(settings, endpoint, query)


def well_known_url(settings: ConnectionSettings, name: str) -> str:
    """``<frontend origin>/.well-known/<name>`` (RFC 8615): at the origin, not under the API prefix."""
    parts = urlsplit(settings.frontend_url)
    return f"{parts.scheme}://{parts.netloc}/.well-known/{quote(name, safe='-._~')}"


def _with_query(url: str, query: Mapping[str, Any] | None) -> str:
    if not query:
        return url
    items = [(k, _query_value(v)) for k, v in query.items() if v is not None]
    return url + ("&" if "?" in url else "?") + urlencode(items) if items else url


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def same_origin(a: str, b: str) -> bool:
    """Credentials follow a redirect only to the same scheme, host and port."""
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port or _default_port(pa.scheme)) == (
        pb.scheme,
        pb.hostname,
        pb.port or _default_port(pb.scheme),
    )


def _default_port(scheme: str) -> int | None:
    return {"http": 80, "https": 443}.get(scheme)


def mask_url(url: str) -> str:
    """Hide ``authz=`` values: a pre-authorised URL in a log line is a leaked credential."""
    return _AUTHZ_RE.sub(lambda m: m.group(1) + _MASK, url)
