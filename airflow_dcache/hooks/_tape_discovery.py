"""Where the WLCG Tape REST API lives, as its discovery document says (``/.well-known/wlcg-tape-rest-api``).

dCache serves that document from a file the site writes (``dcache.wellknown!wlcg-tape-rest-api.path``),
so the endpoint may sit under another path, port or host than ``<frontend>/api/v1/tape``; FTS and gfal
find it there. The hooks do the same once per hook instance: pick the highest version this client
speaks, and fall back to the frontend's ``/api/v1/tape`` only when the document is absent (404).

Safety: an endpoint must be an absolute http(s) URL, and a frontend reached over HTTPS is never
downgraded to plain HTTP by a document (credentials go to the endpoint). Paths sent to the endpoint
still pass the connection's ``allowed_roots``, and TLS verification uses the connection's settings.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from airflow_dcache.exceptions import NotFound, UnexpectedResponse
from airflow_dcache.hooks._operations import Call, Operation
from airflow_dcache.hooks._protocol import parse_json
from airflow_dcache.hooks._settings import ConnectionSettings
from airflow_dcache.hooks.urls import api_url, mask_url, well_known_url

log = logging.getLogger(__name__)

DOCUMENT = "wlcg-tape-rest-api"
#: Versions of the WLCG Tape REST API this client speaks, oldest first.
SUPPORTED_VERSIONS = ("v1",)
_VERSION_RE = re.compile(r"^v(\d+)(?:\.(\d+))?$")


def default_endpoint(s: ConnectionSettings) -> str:
    """dCache's own location of the API, ``<frontend>/api/v1/tape``."""
    return api_url(s, "tape")


def _version_key(version: str) -> tuple[int, int]:
    match = _VERSION_RE.match(version.strip().lower())
    return (int(match.group(1)), int(match.group(2) or 0)) if match else (-1, -1)


def choose_endpoint(s: ConnectionSettings, document: Any, url: str) -> str:
    """The URI of the highest supported version in a discovery document (without a trailing ``/``)."""
    endpoints = document.get("endpoints") if isinstance(document, Mapping) else None
    if not isinstance(endpoints, list):
        raise UnexpectedResponse("tape REST discovery has no endpoints list", method="GET", url=mask_url(url))
    usable = [e for e in endpoints if isinstance(e, Mapping) and isinstance(e.get("uri"), str)
              and str(e.get("version", "")).strip().lower() in SUPPORTED_VERSIONS]
    if not usable:
        offered = sorted({str(e.get("version")) for e in endpoints if isinstance(e, Mapping)})
        raise UnexpectedResponse(
            f"tape REST discovery offers no version this client speaks ({', '.join(SUPPORTED_VERSIONS)}); "
            f"offered: {', '.join(offered) or 'none'}", method="GET", url=mask_url(url))
    best = max(usable, key=lambda e: _version_key(str(e["version"])))
    uri = str(best["uri"]).strip().rstrip("/")
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnexpectedResponse(f"tape REST endpoint is not an http(s) URL: {mask_url(uri)!r}",
                                 method="GET", url=mask_url(url))
    if urlsplit(s.frontend_url).scheme == "https" and parts.scheme != "https":
        raise UnexpectedResponse(
            f"tape REST discovery points to plain HTTP ({mask_url(uri)}) while the frontend uses HTTPS; "
            "refusing to send credentials unencrypted", method="GET", url=mask_url(url))
    return uri


def discover(s: ConnectionSettings) -> Operation[str]:
    """Read the discovery document and return the tape endpoint; ``/api/v1/tape`` if there is none (404)."""
    call = Call("GET", well_known_url(s, DOCUMENT), {"Accept": "application/json"})
    try:
        info = yield call
    except NotFound:
        fallback = default_endpoint(s)
        log.debug("no %s discovery document at %s; using %s", DOCUMENT, mask_url(call.url), mask_url(fallback))
        return fallback
    return choose_endpoint(s, parse_json(info, "GET", call.url), call.url)


class TapeEndpoint:
    """One hook's Tape REST endpoint: discovered by the first tape call, then kept for the hook's life."""

    def __init__(self) -> None:
        self.uri: str | None = None

    def resolve(self, s: ConnectionSettings) -> Operation[str]:
        """The endpoint, reading the discovery document only the first time."""
        if self.uri is None:
            self.uri = yield from discover(s)
        return self.uri
