"""Per-request decisions both hooks make the same way, kept free of I/O: redirects and role elevation.

The sync and async hooks differ only in how they send bytes; where a request goes next, which
credentials go with it and when a refused call is sent again asserting roles is decided here, once.
"""

from __future__ import annotations

from typing import Any

from airflow_dcache.exceptions import UnexpectedResponse
from airflow_dcache.hooks._protocol import MAX_REDIRECTS, Hop, elevation_message, may_elevate, next_hop
from airflow_dcache.hooks._settings import ConnectionSettings
from airflow_dcache.hooks.urls import mask_url

REDIRECTS = frozenset({301, 302, 303, 307, 308})
ERROR_BODY_LIMIT = 64 * 1024  # bytes of an error reply read for its message; the rest is dropped


class Route:
    """Where one request is sent while its redirects are followed.

    Credentials go along only while every hop stays on the same origin: a pool's redirect carries its
    own one-time authorisation, and a host named by a response must never see the door's secrets.
    """

    def __init__(self, method: str, url: str, follow: bool) -> None:
        self.method, self.url, self.follow = method, url, follow
        self.credentials = True
        self.answers = 0  # answers read so far (retries of a refused request do not count)

    @property
    def open(self) -> bool:
        """Whether another answer may still be read; past ``MAX_REDIRECTS`` hops the request fails."""
        return self.answers <= MAX_REDIRECTS

    def after(self, status: int, location: str | None) -> Hop | None:
        """Count an answer; the hop to take when it is a redirect to follow, ``None`` when it is final."""
        self.answers += 1
        if not (self.follow and status in REDIRECTS):
            return None
        hop = next_hop(self.method, self.url, status, location)
        self.method, self.url = hop.method, hop.url
        self.credentials = self.credentials and hop.keep_credentials
        return hop

    def too_many(self) -> UnexpectedResponse:
        return UnexpectedResponse(f"more than {MAX_REDIRECTS} redirects", method=self.method, url=mask_url(self.url))


class Elevation:
    """Whether a call asserts the connection's roles: at once (``elevate="always"``) or, for a metadata
    change a plain login was refused (403), once more with them (see ``Call.elevate``)."""

    def __init__(self, call: Any, settings: ConnectionSettings) -> None:
        self.call, self.settings = call, settings
        self.elevated = call.elevate == "always" and may_elevate(call, settings)

    def retry(self, log: Any) -> bool:
        """After a refusal: ``True`` (and the log line saying so) when the call goes again elevated."""
        if self.elevated or not may_elevate(self.call, self.settings):
            return False
        log.info("%s", elevation_message(self.call, self.settings))
        self.elevated = True
        return True
