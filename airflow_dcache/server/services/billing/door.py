"""What the WebDAV door knows about a request that billing records need but the services do not.

:func:`door_details` returns the ``TransferEvent.extra`` entries the door adds when it publishes:

* ``protocol``: ``"Https"`` on TLS, else ``"Http"`` (``protocolInfo.protocol``)
* ``client_port``: the client's TCP port (``protocolInfo.port``)
* ``local_endpoint``: the socket that served the transfer (``localEndpoint``; the "pool" here)
* ``macaroon``: ``<iid>:<first 6 signature bytes, base64>`` when a macaroon authorised the request,
  the name of dCache's ``MacaroonPrincipal``
"""

from __future__ import annotations

import base64
from typing import Any

from airflow_dcache.macaroons.codec import MacaroonFormatError, deserialize
from airflow_dcache.server.services.billing.javafmt import uri_host_port


def _bearer(headers: Any, query: Any) -> str | None:
    token = query.get("authz")
    if token:
        return str(token)
    scheme, _, value = str(headers.get("Authorization", "")).strip().partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def macaroon_principal(token: str | None) -> str | None:
    """``MacaroonPrincipal`` name for a macaroon: its ``iid`` (``-`` if none) and signature prefix."""
    if not token:
        return None
    try:
        macaroon = deserialize(token)
    except (MacaroonFormatError, ValueError):
        return None
    iid = "-"
    for caveat in macaroon.caveats:
        if not caveat.is_third_party and caveat.text.startswith("iid:"):
            iid = caveat.text[len("iid:"):]
            break
    return f"{iid}:{base64.b64encode(macaroon.signature[:6]).decode('ascii')}"


def door_details(request: Any) -> dict[str, Any]:
    """Billing details of an aiohttp request (never raises: billing must not fail a request)."""
    details: dict[str, Any] = {"protocol": "Https" if getattr(request, "secure", False) else "Http"}
    try:
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        sock = transport.get_extra_info("sockname") if transport is not None else None
        if isinstance(peer, tuple | list) and len(peer) >= 2:
            details["client_port"] = int(peer[1])
        if isinstance(sock, tuple | list) and len(sock) >= 2:
            details["local_endpoint"] = uri_host_port(str(sock[0]), int(sock[1]))
        principal = macaroon_principal(_bearer(request.headers, request.query))
        if principal is not None:
            details["macaroon"] = principal
    except Exception:  # a detail missing from a record beats a failed transfer
        pass
    return details
